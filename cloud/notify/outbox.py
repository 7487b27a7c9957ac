"""The notifications outbox: notices written in the alert's own transaction, sent later by the
dispatcher (``cloud.notify.dispatcher``), so a crash between the two never loses one.

Each notice is one row per recipient, channel and occasion; its ``dedupe_key`` makes writing the
same notice twice (an escalator that ran the same step again after a crash) a no-op.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import ColumnElement

from cloud.alerts.models import (
    CANCELLED,
    LIFE_SAFETY,
    PENDING,
    Alert,
    Notification,
    Webhook,
)
from cloud.alerts.timeline import add_timeline
from cloud.db import upsert_insert
from cloud.notify.quiet import quiet_end
from cloud.oncall.recipients import Recipient

EMAIL = "email"
SMS = "sms"
WEBHOOK = "webhook"
PERSON_CHANNELS = (EMAIL, SMS)
# What a webhook hears about: the alert's changes of state. Life-safety repeats go to people only.
WEBHOOK_REASONS = frozenset({"raised", "escalated", "reraised", "acknowledged", "resolved"})
# Notices about the alert's own end stay due when it is acknowledged or resolved.
CLOSING_REASONS = frozenset({"acknowledged", "resolved"})
QUIET_HOURS = "quiet_hours"
GROUPED = "grouped"


def dedupe_key(alert_id: int, recipient: str, channel: str, reason: str, step: int, repeat: int = 0) -> str:
    """``<alert>|<recipient>|<channel>|<reason>|<step>[|<repeat n>]``; recipient ``user:<id>`` or
    ``webhook:<id>``."""
    key = f"{alert_id}|{recipient}|{channel}|{reason}|{step}"
    return f"{key}|{repeat}" if repeat else key


def group_key(user_id: int, channel: str, site_id: int | None) -> str:
    """Maintenance notices sharing this go out together: one person, one channel, one site."""
    return f"{user_id}|{channel}|{'' if site_id is None else site_id}"


def address_of(recipient: Recipient, channel: str) -> str:
    if channel == EMAIL:
        return recipient.email.strip()
    if channel == SMS:
        return recipient.phone.strip()
    return ""  # a channel we cannot send on for a person (a preference from a newer version)


async def enqueue(
    session: AsyncSession,
    alert: Alert,
    recipients: Sequence[Recipient],
    *,
    reason: str,
    step: int,
    now: datetime,
    repeat: int = 0,
) -> int:
    """Write the notices of ``reason`` at ``step`` for ``alert``: one per recipient and channel
    with an address (life safety: every channel, at once; maintenance: the person's channels, held
    to the end of their quiet hours), and one per active webhook of the alert's company for its
    site (or all sites) subscribed to its track, if ``reason`` is one webhooks hear about. A notice
    already written (same dedupe key) is left as it is. Writes a ``held`` timeline row for each
    new notice held for quiet hours. Returns the number of rows written; does not commit."""
    if alert.id is None:
        await session.flush()  # a new alert: its id is what every notice points at
    life_safety = alert.track == LIFE_SAFETY
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for person in recipients:
        channels = PERSON_CHANNELS if life_safety else tuple(dict.fromkeys(person.channels))
        due = now
        if not life_safety and person.quiet is not None:
            due = quiet_end(person.quiet, now) or now
        for channel in channels:
            address = address_of(person, channel)
            key = dedupe_key(alert.id, f"user:{person.user_id}", channel, reason, step, repeat)
            if not address or key in seen:
                continue
            seen.add(key)
            rows.append(
                _row(
                    alert,
                    key,
                    now,
                    user_id=person.user_id,
                    channel=channel,
                    address=address,
                    language=person.language,
                    reason=reason,
                    step=step,
                    group="" if life_safety else group_key(person.user_id, channel, alert.site_id),
                    not_before=due,
                    held_reason=QUIET_HOURS if due > now else "",
                )
            )
    if reason in WEBHOOK_REASONS:
        for hook in await _webhooks_for(session, alert):
            key = dedupe_key(alert.id, f"webhook:{hook.id}", WEBHOOK, reason, step, repeat)
            rows.append(
                _row(
                    alert,
                    key,
                    now,
                    webhook_id=hook.id,
                    channel=WEBHOOK,
                    address=hook.url,
                    language="en",
                    reason=reason,
                    step=step,
                    group="",
                    not_before=now,
                    held_reason="",
                )
            )
    if not rows:
        return 0
    written = set(await _insert_new(session, rows))
    held = [r for r in rows if r["dedupe_key"] in written and r["held_reason"]]
    for r in held:
        await add_timeline(
            session,
            alert.id,
            "held",
            now,
            {
                "user_id": r["user_id"],
                "channel": r["channel"],
                "until": r["not_before"].isoformat(),
                "why": r["held_reason"],
            },
        )
    await session.flush()
    return len(written)


async def cancel_pending(session: AsyncSession, alert_id: int, now: datetime) -> int:
    """The alert's notices to people not yet taken by a dispatcher (held, or waiting to be retried)
    become CANCELLED: someone has it in hand. Webhooks keep theirs (a receiver keeps the alert's
    whole story), and so do notices that it was acknowledged or resolved. Returns how many; does
    not commit."""
    result = await session.execute(
        update(Notification)
        .where(
            Notification.alert_id == alert_id,
            Notification.status == PENDING,
            Notification.user_id.is_not(None),
            Notification.reason.not_in(CLOSING_REASONS),
        )
        .values(status=CANCELLED, last_error=f"cancelled at {now.isoformat()}: the alert is in hand")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _row(
    alert: Alert,
    key: str,
    now: datetime,
    *,
    channel: str,
    address: str,
    language: str,
    reason: str,
    step: int,
    group: str,
    not_before: datetime,
    held_reason: str,
    user_id: int | None = None,
    webhook_id: int | None = None,
) -> dict[str, Any]:
    return {
        "alert_id": alert.id,
        "company_id": alert.company_id,
        "user_id": user_id,
        "webhook_id": webhook_id,
        "channel": channel,
        "address": address,
        "language": language if language in ("zh", "en") else "zh",
        "reason": reason,
        "step": step,
        "dedupe_key": key,
        "group_key": group,
        "status": PENDING,
        "created_at": now,
        "not_before": not_before,
        "held_reason": held_reason,
        "attempts": 0,
        "claimed_until": None,
        "sent_at": None,
        "message_id": "",
        "last_error": "",
    }


async def _webhooks_for(session: AsyncSession, alert: Alert) -> list[Webhook]:
    if alert.company_id is None:
        return []
    site: ColumnElement[bool] = Webhook.site_id.is_(None)
    if alert.site_id is not None:
        site = or_(site, Webhook.site_id == alert.site_id)
    hooks = (
        await session.scalars(
            select(Webhook)
            .where(and_(Webhook.company_id == alert.company_id, Webhook.active.is_(True), site))
            .order_by(Webhook.id)
        )
    ).all()
    # ``tracks`` is a JSON list: filtered here, the same on both databases (a company has few).
    return [h for h in hooks if alert.track in (h.tracks or [])]


async def _insert_new(session: AsyncSession, rows: list[dict[str, Any]]) -> list[str]:
    """INSERT .. ON CONFLICT (dedupe_key) DO NOTHING; the dedupe keys of the rows written."""
    stmt = upsert_insert(session, Notification)
    stmt = (
        stmt.values(rows)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Notification.dedupe_key)
    )
    return list((await session.execute(stmt)).scalars())
