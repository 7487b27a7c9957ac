"""The alerting tables (migration 0004).

- ``alerts``: one row per alert. A maintenance alert is keyed by what is wrong (``key``: gateway,
  source and fault code) and there is at most one unresolved alert per key (a partial unique
  index, so two ingest workers racing on the same fault cannot open two); a life-safety alert is
  keyed by the event that raised it and never grouped.
- ``alert_timeline``: everything that happened to an alert, in order (raised, event, notified,
  held, acknowledged, started, note, photo, escalated, reraised, repeated, cleared, reopened,
  flapping, inhibited, released, silenced, resolved). Its ids are also the cursor of the console's
  and the technician page's live streams.
- ``alert_event_keys``: every event the engine has taken, by its unique key, so that an event seen
  twice (ingest's catch-up after a crash, a resend) changes nothing the second time.
- ``notifications``: the outbox. Written in the alert's own transaction; a dispatcher claims, sends,
  retries with back-off and marks each row; ``dedupe_key`` makes "notify X of step N" a row that
  can exist once.
- ``webhooks``, ``oncall_rotas``, ``oncall_overrides``, ``escalation_policies``,
  ``notify_preferences`` (per person: quiet hours, channels), ``silences``, ``maintenance_tickets``
  (a device that flaps often; the equipment module turns these into work orders), ``alert_photos``
  and ``alert_engine_state`` (the catch-up checkpoint).
"""

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, BigId, JsonDoc

# Tracks
LIFE_SAFETY = "life_safety"
MAINTENANCE = "maintenance"

# Alert states
OPEN = "open"
ACKNOWLEDGED = "acknowledged"
IN_PROGRESS = "in_progress"  # a technician has started work on it (still acknowledged)
RESOLVED = "resolved"
INHIBITED = "inhibited"  # held behind its gateway's offline alert: nobody is told (yet)
UNRESOLVED_STATES = (OPEN, ACKNOWLEDGED, IN_PROGRESS, INHIBITED)


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int | None] = mapped_column(BigInteger)  # None: a gateway of no company
    site_id: Mapped[int | None] = mapped_column(BigInteger)
    gateway_id: Mapped[str] = mapped_column(default="")
    track: Mapped[str]  # LIFE_SAFETY or MAINTENANCE
    key: Mapped[str]  # maintenance: "<gateway>|<source>|<fault>"; life safety: the event's key
    kind: Mapped[str]  # the kind of the event that raised it (or "gateway.offline")
    source: Mapped[str] = mapped_column(default="")
    fault: Mapped[str] = mapped_column(default="")  # the fault code ("unreadable", "high_temp", ...)
    skill: Mapped[str] = mapped_column(default="")  # electrical, hvac, plumbing, lifts, security
    severity: Mapped[str] = mapped_column(default="major")  # critical, major, minor
    details: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)  # the raising event's data
    state: Mapped[str] = mapped_column(default=OPEN)
    active: Mapped[bool] = mapped_column(default=True)  # the fault is still present
    flapping: Mapped[bool] = mapped_column(default=False)
    flap_count: Mapped[int] = mapped_column(default=0)  # clears followed by a return within the window
    event_count: Mapped[int] = mapped_column(default=1)
    raised_at: Mapped[datetime]
    first_event_at: Mapped[datetime]  # the raising event's reported time
    last_event_at: Mapped[datetime]
    cleared_at: Mapped[datetime | None]  # the fault's last clear (maintenance)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # None: cleared by itself
    resolution: Mapped[str] = mapped_column(default="")
    policy_id: Mapped[int | None] = mapped_column(BigInteger)
    # The policy step last notified (-1: none yet, e.g. a gateway-offline alert within its grace).
    escalation_step: Mapped[int] = mapped_column(default=0)
    escalation_from: Mapped[datetime]  # the steps' "after_s" count from here: the raise or a re-raise
    # When the escalator must look at it again (next step, life-safety repeat, ack timeout, the
    # end of an inhibition); None: nothing is due.
    next_action_at: Mapped[datetime | None]
    inhibited_by: Mapped[int | None] = mapped_column(BigInteger)  # the gateway-offline alert's id
    silence_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index(
            "alerts_unresolved_key",
            "company_id",
            "key",
            unique=True,
            sqlite_where=text("state != 'resolved'"),
            postgresql_where=text("state != 'resolved'"),
        ),
        Index("alerts_site_state", "site_id", "state", "id"),
        Index("alerts_key_recent", "key", "resolved_at"),
        Index(
            "alerts_due",
            "next_action_at",
            sqlite_where=text("next_action_at IS NOT NULL"),
            postgresql_where=text("next_action_at IS NOT NULL"),
        ),
    )


class AlertTimeline(Base):
    __tablename__ = "alert_timeline"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    action: Mapped[str]
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # None: the system
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)

    __table_args__ = (Index("alert_timeline_alert", "alert_id", "id"),)


class AlertEventKey(Base):
    __tablename__ = "alert_event_keys"

    gateway_id: Mapped[str] = mapped_column(primary_key=True)
    store_id: Mapped[str] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alert_id: Mapped[int | None] = mapped_column(BigInteger)  # None: taken, raised nothing
    taken_at: Mapped[datetime]


# Notification states
PENDING = "pending"  # due at not_before
SENDING = "sending"  # claimed by a dispatcher until claimed_until
SENT = "sent"
FAILED = "failed"  # gave up after the last retry (a fault someone sees on the alert's timeline)
CANCELLED = "cancelled"  # no longer needed (acknowledged or resolved before a held one was due)


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    company_id: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # None for a webhook
    webhook_id: Mapped[int | None] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    channel: Mapped[str]  # email, sms, webhook
    address: Mapped[str]  # the email address, phone number or URL at the time it was written
    language: Mapped[str] = mapped_column(default="zh")
    reason: Mapped[str]  # raised, escalated, repeated, reraised, resolved
    step: Mapped[int] = mapped_column(default=0)
    # "<alert>|<recipient>|<channel>|<reason>|<step>[|<repeat n>]": the same notice is written once
    dedupe_key: Mapped[str] = mapped_column(unique=True)
    # Maintenance notices to one recipient on one channel for one site within a short interval
    # go out as one message ("3 faults at ..."); "" for life safety, which is never grouped.
    group_key: Mapped[str] = mapped_column(default="")
    status: Mapped[str] = mapped_column(default=PENDING)
    created_at: Mapped[datetime]
    not_before: Mapped[datetime]  # due time (later than created_at when held for quiet hours)
    held_reason: Mapped[str] = mapped_column(default="")  # "quiet_hours", "grouped"
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    message_id: Mapped[str] = mapped_column(default="")  # what the channel said it took it as
    last_error: Mapped[str] = mapped_column(default="")

    __table_args__ = (
        Index(
            "notifications_due",
            "not_before",
            sqlite_where=text("status IN ('pending', 'sending')"),
            postgresql_where=text("status IN ('pending', 'sending')"),
        ),
        Index("notifications_alert", "alert_id"),
        # "Was a message of this group sent within the interval?": asked on each claim round.
        Index(
            "notifications_group_sent",
            "group_key",
            "sent_at",
            sqlite_where=text("group_key != ''"),
            postgresql_where=text("group_key != ''"),
        ),
    )


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))  # None: every site
    name: Mapped[str]
    url: Mapped[str]
    secret: Mapped[str]  # the HMAC-SHA256 key the receiver checks X-Gatehouse-Signature with
    tracks: Mapped[list[str]] = mapped_column(JsonDoc, default=list)  # LIFE_SAFETY / MAINTENANCE
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]


class OncallRota(Base):
    """Who is on call for one skill at one site: members take turns of ``period_days`` days,
    handing over at ``handover_time`` (the site's local time) from ``starts_on``."""

    __tablename__ = "oncall_rotas"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    skill: Mapped[str]
    name: Mapped[str]
    members: Mapped[list[int]] = mapped_column(JsonDoc, default=list)  # user ids, in turn order
    lead_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # the team lead
    handover_time: Mapped[str] = mapped_column(default="08:00")
    period_days: Mapped[int] = mapped_column(default=7)
    starts_on: Mapped[date]
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("site_id", "skill", name="oncall_rotas_site_skill"),)


class OncallOverride(Base):
    """Someone else on call for a while (swap, sick leave): wins over the rota's turn."""

    __tablename__ = "oncall_overrides"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rota_id: Mapped[int] = mapped_column(ForeignKey("oncall_rotas.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]

    __table_args__ = (Index("oncall_overrides_rota", "rota_id", "starts_at"),)


class EscalationPolicy(Base):
    """Who is told, step by step, until someone acknowledges.

    ``steps``: ``[{"after_s": 0, "targets": [{"type": "oncall"}]}, {"after_s": 600, "targets":
    [{"type": "lead"}]}, {"after_s": 1200, "targets": [{"type": "role", "role":
    "property_manager"}]}]``; a target is ``oncall`` (the rota of the alert's skill, or ``skill``),
    ``lead`` (that rota's team lead), ``role`` (everyone with the role at the site) or ``user``
    (``user_id``). ``after_s`` counts from the raise."""

    __tablename__ = "escalation_policies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))  # None: the company's default
    track: Mapped[str]
    skill: Mapped[str] = mapped_column(default="")  # "": any skill
    name: Mapped[str]
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc, default=list)
    # Acknowledged but not resolved within this: raised again (from the first step).
    ack_timeout_s: Mapped[int] = mapped_column(default=4 * 3600)
    # Life safety: sent again to every recipient so far until acknowledged.
    repeat_s: Mapped[int] = mapped_column(default=120)
    created_at: Mapped[datetime]

    __table_args__ = (Index("escalation_policies_find", "company_id", "track", "site_id"),)


class NotifyPreference(Base):
    """A person's channels and quiet hours (for maintenance notices only; never for life safety)."""

    __tablename__ = "notify_preferences"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    channels: Mapped[list[str]] = mapped_column(JsonDoc, default=lambda: ["email", "sms"])
    quiet_start: Mapped[str | None]  # "22:00", local time in ``timezone``
    quiet_end: Mapped[str | None]  # "07:00"
    timezone: Mapped[str] = mapped_column(default="Asia/Shanghai")


class Silence(Base):
    """Maintenance alerts matching it raise no notices until ``ends_at`` (audited; never life safety).

    Matches by site (None: every site of the company), optional gateway, a source pattern (fnmatch,
    "" = any) and an optional fault code."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    gateway_id: Mapped[str] = mapped_column(default="")
    source_pattern: Mapped[str] = mapped_column(default="")
    fault: Mapped[str] = mapped_column(default="")
    reason: Mapped[str]
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]  # ended early by a person
    ended_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    __table_args__ = (Index("silences_company_end", "company_id", "ends_at"),)


class MaintenanceTicket(Base):
    """A device that flaps often needs a visit, not more alerts: one open ticket per asset."""

    __tablename__ = "maintenance_tickets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int | None] = mapped_column(BigInteger)
    site_id: Mapped[int | None] = mapped_column(BigInteger)
    asset_key: Mapped[str]  # "<gateway>|<source>"
    alert_id: Mapped[int | None] = mapped_column(BigInteger)
    title: Mapped[str]
    reason: Mapped[str]
    state: Mapped[str] = mapped_column(default="open")  # open, closed
    created_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "maintenance_tickets_open_asset",
            "company_id",
            "asset_key",
            unique=True,
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
    )


class AlertPhoto(Base):
    """A photo a technician attached; the bytes are in the blob store under their SHA-256."""

    __tablename__ = "alert_photos"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    sha256: Mapped[str]
    content_type: Mapped[str]
    size: Mapped[int] = mapped_column(BigInteger)
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[datetime]


class AlertEngineState(Base):
    """The engine's catch-up checkpoint: events received before it were all taken."""

    __tablename__ = "alert_engine_state"

    name: Mapped[str] = mapped_column(primary_key=True)
    checkpoint: Mapped[datetime]


__all__ = [
    "Alert",
    "AlertEngineState",
    "AlertEventKey",
    "AlertPhoto",
    "AlertTimeline",
    "EscalationPolicy",
    "MaintenanceTicket",
    "Notification",
    "NotifyPreference",
    "OncallOverride",
    "OncallRota",
    "Silence",
    "Webhook",
]
