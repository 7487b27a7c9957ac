"""Ingest tables: gateways, events (partitioned by month on PostgreSQL), ingest_rejects.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

"""

from collections.abc import Sequence
from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Partitions are prepared from the first month any gateway can have data for through this many
# months after the migration runs; the cloud keeps extending them at start
# (cloud.events.partitions.ensure_event_partitions). Anything outside lands in events_default.
FIRST_MONTH = date(2024, 1, 1)
MONTHS_AHEAD = 36

_PG_EVENTS = """
CREATE TABLE events (
    id bigserial NOT NULL,
    gateway_id text NOT NULL,
    store_id text NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    lane smallint NOT NULL,
    reported_time timestamptz NOT NULL,
    received_time timestamptz NOT NULL,
    boot_id text NOT NULL,
    mono_ns bigint NOT NULL,
    clock_synced boolean NOT NULL,
    source text NOT NULL,
    data jsonb NOT NULL
) PARTITION BY RANGE (reported_time)
"""

# A resend repeats gateway_id, store_id, seq and reported_time exactly, so this key (which must
# include the partition column) still stores a resent event once.
_PG_EVENT_INDEXES = (
    "CREATE UNIQUE INDEX events_key ON events (gateway_id, store_id, seq, reported_time)",
    "CREATE INDEX events_id ON events (id)",
    "CREATE INDEX events_gateway_time ON events (gateway_id, reported_time)",
    "CREATE INDEX events_kind ON events (kind)",
)


def _add_month(d: date, months: int = 1) -> date:
    index = d.year * 12 + d.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _pg_partitions(first: date, last: date) -> list[str]:
    statements = []
    month = first
    while month <= last:
        end = _add_month(month)
        statements.append(
            f"CREATE TABLE events_p{month:%Y_%m} PARTITION OF events "
            f"FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') TO ('{end.isoformat()} 00:00:00+00')"
        )
        month = end
    return statements


def _common_tables() -> None:
    op.create_table(
        "gateways",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("site", sa.Text(), nullable=False, server_default=""),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("version", sa.Text(), nullable=False, server_default=""),
        sa.Column("config_version", sa.Text(), nullable=False, server_default=""),
        sa.Column("boot_id", sa.Text(), nullable=False, server_default=""),
        sa.Column("clock_synced", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("store_id", sa.Text(), nullable=False, server_default=""),
        sa.Column("state_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event_count", sa.BigInteger(), nullable=False, server_default="0"),
    )
    bigid = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "ingest_rejects",
        sa.Column("id", bigid, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gateway_id", sa.Text(), nullable=True),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("store_id", sa.Text(), nullable=True),
        sa.Column("ranges", json, nullable=True),
    )
    op.create_index("ingest_rejects_at", "ingest_rejects", ["at"])


def _sqlite_events() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("gateway_id", sa.Text(), nullable=False),
        sa.Column("store_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("lane", sa.SmallInteger(), nullable=False),
        sa.Column("reported_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("boot_id", sa.Text(), nullable=False),
        sa.Column("mono_ns", sa.BigInteger(), nullable=False),
        sa.Column("clock_synced", sa.Boolean(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("events_key", "events", ["gateway_id", "store_id", "seq"], unique=True)
    op.create_index("events_gateway_time", "events", ["gateway_id", "reported_time"])
    op.create_index("events_kind", "events", ["kind"])


def upgrade() -> None:
    _common_tables()
    if op.get_context().dialect.name == "postgresql":
        op.execute(_PG_EVENTS)
        for statement in _PG_EVENT_INDEXES:
            op.execute(statement)
        # The default partition catches what no month holds, e.g. a Pi whose clock says 1970.
        op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
        today = datetime.now(UTC).date().replace(day=1)
        for statement in _pg_partitions(FIRST_MONTH, _add_month(today, MONTHS_AHEAD)):
            op.execute(statement)
    else:
        _sqlite_events()


def downgrade() -> None:
    op.drop_table("events")  # on PostgreSQL this drops every partition with it
    op.drop_index("ingest_rejects_at", table_name="ingest_rejects")
    op.drop_table("ingest_rejects")
    op.drop_table("gateways")
