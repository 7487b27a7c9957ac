"""Alerts and notifications: alerts and their timelines, the events the engine took, the
notifications outbox, webhooks, on-call rotas and overrides, escalation policies, people's notice
preferences (quiet hours), silences, maintenance tickets for flapping devices, alert photos and
the engine's catch-up checkpoint. New tables only; nothing existing changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import cloud.models

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "alert_engine_state",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("checkpoint", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "alert_event_keys",
        sa.Column("gateway_id", sa.Text(), nullable=False),
        sa.Column("store_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.Column("taken_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("gateway_id", "store_id", "seq"),
    )
    op.create_table(
        "maintenance_tickets",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("company_id", sa.BigInteger(), nullable=True),
        sa.Column("site_id", sa.BigInteger(), nullable=True),
        sa.Column("asset_key", sa.Text(), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("created_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", cloud.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("maintenance_tickets", schema=None) as batch_op:
        batch_op.create_index(
            "maintenance_tickets_open_asset",
            ["company_id", "asset_key"],
            unique=True,
            sqlite_where=sa.text("state = 'open'"),
            postgresql_where=sa.text("state = 'open'"),
        )

    op.create_table(
        "escalation_policies",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("company_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("track", sa.Text(), nullable=False),
        sa.Column("skill", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "steps",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("ack_timeout_s", sa.Integer(), nullable=False),
        sa.Column("repeat_s", sa.Integer(), nullable=False),
        sa.Column("created_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("escalation_policies", schema=None) as batch_op:
        batch_op.create_index("escalation_policies_find", ["company_id", "track", "site_id"], unique=False)

    op.create_table(
        "webhooks",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("company_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column(
            "tracks",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "alerts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("company_id", sa.BigInteger(), nullable=True),
        sa.Column("site_id", sa.BigInteger(), nullable=True),
        sa.Column("gateway_id", sa.Text(), nullable=False),
        sa.Column("track", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("fault", sa.Text(), nullable=False),
        sa.Column("skill", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("flapping", sa.Boolean(), nullable=False),
        sa.Column("flap_count", sa.Integer(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("raised_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("first_event_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_event_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", cloud.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", cloud.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("started_at", cloud.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", cloud.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=True),
        sa.Column("escalation_step", sa.Integer(), nullable=False),
        sa.Column("escalation_from", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("next_action_at", cloud.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("inhibited_by", sa.BigInteger(), nullable=True),
        sa.Column("silence_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["acknowledged_by"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(
            "alerts_due",
            ["next_action_at"],
            unique=False,
            sqlite_where=sa.text("next_action_at IS NOT NULL"),
            postgresql_where=sa.text("next_action_at IS NOT NULL"),
        )
        batch_op.create_index("alerts_key_recent", ["key", "resolved_at"], unique=False)
        batch_op.create_index("alerts_site_state", ["site_id", "state", "id"], unique=False)
        batch_op.create_index(
            "alerts_unresolved_key",
            ["company_id", "key"],
            unique=True,
            sqlite_where=sa.text("state != 'resolved'"),
            postgresql_where=sa.text("state != 'resolved'"),
        )

    op.create_table(
        "notify_preferences",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "channels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("quiet_start", sa.Text(), nullable=True),
        sa.Column("quiet_end", sa.Text(), nullable=True),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_table(
        "oncall_rotas",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("company_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("skill", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "members",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("lead_user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("handover_time", sa.Text(), nullable=False),
        sa.Column("period_days", sa.Integer(), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("created_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
        ),
        sa.ForeignKeyConstraint(
            ["lead_user_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id", "skill", name="oncall_rotas_site_skill"),
    )
    op.create_table(
        "silences",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("company_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("gateway_id", sa.Text(), nullable=False),
        sa.Column("source_pattern", sa.Text(), nullable=False),
        sa.Column("fault", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("starts_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", cloud.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["ended_by"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("silences", schema=None) as batch_op:
        batch_op.create_index("silences_company_end", ["company_id", "ends_at"], unique=False)

    op.create_table(
        "alert_photos",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("uploaded_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("uploaded_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["uploaded_by"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "alert_timeline",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alert_timeline", schema=None) as batch_op:
        batch_op.create_index("alert_timeline_alert", ["alert_id", "id"], unique=False)

    op.create_table(
        "notifications",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("company_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("webhook_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("not_before", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("held_reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_until", cloud.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", cloud.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(["webhook_id"], ["webhooks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("notifications_alert", ["alert_id"], unique=False)
        batch_op.create_index(
            "notifications_group_sent",
            ["group_key", "sent_at"],
            unique=False,
            sqlite_where=sa.text("group_key != ''"),
            postgresql_where=sa.text("group_key != ''"),
        )
        batch_op.create_index(
            "notifications_due",
            ["not_before"],
            unique=False,
            sqlite_where=sa.text("status IN ('pending', 'sending')"),
            postgresql_where=sa.text("status IN ('pending', 'sending')"),
        )

    op.create_table(
        "oncall_overrides",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("rota_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("starts_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", cloud.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(["rota_id"], ["oncall_rotas.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("oncall_overrides", schema=None) as batch_op:
        batch_op.create_index("oncall_overrides_rota", ["rota_id", "starts_at"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("oncall_overrides", schema=None) as batch_op:
        batch_op.drop_index("oncall_overrides_rota")

    op.drop_table("oncall_overrides")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(
            "notifications_due",
            sqlite_where=sa.text("status IN ('pending', 'sending')"),
            postgresql_where=sa.text("status IN ('pending', 'sending')"),
        )
        batch_op.drop_index("notifications_group_sent")
        batch_op.drop_index("notifications_alert")

    op.drop_table("notifications")
    with op.batch_alter_table("alert_timeline", schema=None) as batch_op:
        batch_op.drop_index("alert_timeline_alert")

    op.drop_table("alert_timeline")
    op.drop_table("alert_photos")
    with op.batch_alter_table("silences", schema=None) as batch_op:
        batch_op.drop_index("silences_company_end")

    op.drop_table("silences")
    op.drop_table("oncall_rotas")
    op.drop_table("notify_preferences")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(
            "alerts_unresolved_key",
            sqlite_where=sa.text("state != 'resolved'"),
            postgresql_where=sa.text("state != 'resolved'"),
        )
        batch_op.drop_index("alerts_site_state")
        batch_op.drop_index("alerts_key_recent")
        batch_op.drop_index(
            "alerts_due",
            sqlite_where=sa.text("next_action_at IS NOT NULL"),
            postgresql_where=sa.text("next_action_at IS NOT NULL"),
        )

    op.drop_table("alerts")
    op.drop_table("webhooks")
    with op.batch_alter_table("escalation_policies", schema=None) as batch_op:
        batch_op.drop_index("escalation_policies_find")

    op.drop_table("escalation_policies")
    with op.batch_alter_table("maintenance_tickets", schema=None) as batch_op:
        batch_op.drop_index(
            "maintenance_tickets_open_asset",
            sqlite_where=sa.text("state = 'open'"),
            postgresql_where=sa.text("state = 'open'"),
        )

    op.drop_table("maintenance_tickets")
    op.drop_table("alert_event_keys")
    op.drop_table("alert_engine_state")
