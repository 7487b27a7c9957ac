"""Commands sent to gateways, each site's access-control data, and the access version each
gateway last reported.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACCESS_TABLES = ("access_schedules", "access_levels", "access_holidays", "access_credentials")


def upgrade() -> None:
    bigid = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    ts = sa.DateTime(timezone=True)

    op.add_column(
        "gateways", sa.Column("access_version", sa.BigInteger(), nullable=False, server_default="0")
    )

    op.create_table(
        "gateway_commands",
        sa.Column("seq", bigid, primary_key=True, autoincrement=True),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("gateway_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("args", json, nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("requested_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("sent_at", ts, nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("result_code", sa.Text(), nullable=True),
        sa.Column("result_detail", sa.Text(), nullable=True),
        sa.Column("result_data", json, nullable=True),
        sa.Column("result_at", ts, nullable=True),
    )
    op.create_index("gateway_commands_id", "gateway_commands", ["id"], unique=True)
    op.create_index("gateway_commands_gateway", "gateway_commands", ["gateway_id", "seq"])

    op.create_table(
        "access_versions",
        sa.Column("site", sa.Text(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"),
    )

    def versioned() -> list[sa.Column[object]]:
        return [
            sa.Column("version", sa.BigInteger(), nullable=False),
            sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        ]

    op.create_table(
        "access_schedules",
        sa.Column("site", sa.Text(), primary_key=True),
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("intervals", json, nullable=False),
        sa.Column("holiday", json, nullable=False),
        *versioned(),
    )
    op.create_table(
        "access_levels",
        sa.Column("site", sa.Text(), primary_key=True),
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("doors", json, nullable=False),
        sa.Column("schedule", sa.Text(), nullable=False),
        *versioned(),
    )
    op.create_table(
        "access_holidays",
        sa.Column("site", sa.Text(), primary_key=True),
        sa.Column("date", sa.Date(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        *versioned(),
    )
    op.create_table(
        "access_credentials",
        sa.Column("site", sa.Text(), primary_key=True),
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("card", sa.Text(), nullable=False),
        sa.Column("facility", sa.BigInteger(), nullable=True),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("levels", json, nullable=False),
        sa.Column("valid_from_ms", sa.BigInteger(), nullable=True),
        sa.Column("valid_until_ms", sa.BigInteger(), nullable=True),
        sa.Column("pin_hash", sa.Text(), nullable=True),
        sa.Column("suspended", sa.Boolean(), nullable=False),
        sa.Column("offline_ok", sa.Boolean(), nullable=False),
        sa.Column("clock_free", sa.Boolean(), nullable=False),
        sa.Column("first_person_in", sa.Boolean(), nullable=False),
        sa.Column("antipassback_exempt", sa.Boolean(), nullable=False),
        *versioned(),
    )
    for table in _ACCESS_TABLES:
        op.create_index(f"{table}_version", table, ["site", "version"])
    op.create_index("access_credentials_card", "access_credentials", ["site", "card"])


def downgrade() -> None:
    op.drop_index("access_credentials_card", table_name="access_credentials")
    for table in reversed(_ACCESS_TABLES):
        op.drop_index(f"{table}_version", table_name=table)
        op.drop_table(table)
    op.drop_table("access_versions")
    op.drop_index("gateway_commands_gateway", table_name="gateway_commands")
    op.drop_index("gateway_commands_id", table_name="gateway_commands")
    op.drop_table("gateway_commands")
    with op.batch_alter_table("gateways") as batch:
        batch.drop_column("access_version")
