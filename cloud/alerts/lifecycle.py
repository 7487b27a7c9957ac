"""What the engine and the escalator both do to an alert, in the caller's transaction: write its
timeline, notify the people of one escalation step (through the notifications outbox), resolve it
by itself, and work out when the escalator must look at it next."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.alerts.models import (
    LIFE_SAFETY,
    PENDING,
    RESOLVED,
    SENDING,
    SENT,
    Alert,
    Notification,
)
from cloud.alerts.timeline import add_timeline
from cloud.notify.outbox import enqueue
from cloud.oncall.recipients import PolicyView, recipients_for_step


async def anyone_told(session: AsyncSession, alert_id: int) -> bool:
    """Has a person been told of the alert, or is a notice to one on its way?"""
    return (
        await session.execute(
            select(Notification.id)
            .where(
                Notification.alert_id == alert_id,
                Notification.user_id.is_not(None),
                Notification.status.in_((PENDING, SENDING, SENT)),
            )
            .limit(1)
        )
    ).scalar() is not None


def round_id(alert: Alert) -> int:
    """Tells one round of notices from another (a re-raise starts a new round): part of each
    notice's dedupe key, so that the same step of the same round is written once, however often
    the escalator or a restarted engine looks at the alert."""
    return int(alert.escalation_from.timestamp())


def step_due(alert: Alert, policy: PolicyView, index: int) -> datetime:
    return alert.escalation_from + timedelta(seconds=float(policy.steps[index].get("after_s", 0)))


async def notify_step(
    session: AsyncSession, alert: Alert, policy: PolicyView, index: int, now: datetime, *, reason: str
) -> int:
    """Tell the people of step ``index`` (and the webhooks); returns the notices written."""
    step = policy.steps[index]
    recipients = await recipients_for_step(session, alert, step, now)
    written = await enqueue(
        session, alert, recipients, reason=reason, step=index, now=now, repeat=round_id(alert)
    )
    alert.escalation_step = index
    if index > 0:
        await add_timeline(
            session,
            alert.id,
            "escalated",
            now,
            {"step": index, "targets": step.get("targets", []), "people": [r.name for r in recipients]},
        )
    return written


async def notify_repeat(
    session: AsyncSession, alert: Alert, policy: PolicyView, n: int, now: datetime
) -> int:
    """Life safety: tell everyone of the steps reached so far again (repeat ``n`` of this round)."""
    written = 0
    seen: set[int] = set()
    for index in range(alert.escalation_step + 1):
        recipients = [
            r
            for r in await recipients_for_step(session, alert, policy.steps[index], now)
            if r.user_id not in seen
        ]
        seen.update(r.user_id for r in recipients)
        written += await enqueue(
            session,
            alert,
            recipients,
            reason="repeated",
            step=index,
            now=now,
            repeat=round_id(alert) * 1000 + n,
        )
    if written:
        await add_timeline(session, alert.id, "repeated", now, {"n": n})
    return written


async def resolve_by_itself(session: AsyncSession, alert: Alert, now: datetime, resolution: str) -> int:
    """The fault is gone (or the gateway is back): resolved with nobody's name on it; the webhooks
    hear that it is resolved. Returns the notices written.

    Its pending notices are left to the dispatcher, which drops a maintenance notice whose alert
    is resolved when it comes to send it: a flapping fault back before then is still told (once),
    and one that stayed away is told to nobody."""
    alert.state = RESOLVED
    alert.active = False
    alert.resolved_at = now
    alert.resolved_by = None
    alert.resolution = resolution
    alert.next_action_at = None
    await add_timeline(session, alert.id, "resolved", now, {"resolution": resolution, "auto": True})
    return await tell_webhooks(session, alert, "resolved", now)


async def tell_webhooks(session: AsyncSession, alert: Alert, reason: str, now: datetime) -> int:
    """The alert's webhooks hear it was acknowledged or resolved (the people told do not: whoever
    did it is one of them). Not for an alert nobody was told of; returns the notices written."""
    if alert.escalation_step < 0:
        return 0
    return await enqueue(session, alert, [], reason=reason, step=0, now=now, repeat=round_id(alert))


def next_open_action(alert: Alert, policy: PolicyView, now: datetime) -> datetime | None:
    """When an open alert next needs the escalator: its next step, or (life safety) its next repeat."""
    due: list[datetime] = []
    if alert.escalation_step + 1 < len(policy.steps):
        due.append(step_due(alert, policy, alert.escalation_step + 1))
    if alert.track == LIFE_SAFETY and alert.escalation_step >= 0 and policy.repeat_s > 0:
        elapsed = (now - alert.escalation_from).total_seconds()
        n = int(elapsed // policy.repeat_s) + 1
        due.append(alert.escalation_from + timedelta(seconds=n * policy.repeat_s))
    return min(due) if due else None
