"""The escalator: what happens to alerts as time passes.

Every alert that needs a later look carries ``next_action_at``; the escalator takes those that are
due, each in a short transaction of its own that first claims it (a conditional update of
``next_action_at``, so two escalators, or an escalator and a person acting on the alert, never
both act on one look), and decides by its state:

- open: the policy's next steps whose time has come (``after_s`` from ``escalation_from``) are
  notified; a life-safety alert is also repeated to everyone told so far every ``repeat_s`` until
  someone acknowledges it;
- acknowledged or in progress: not resolved within the policy's ``ack_timeout_s`` it is raised
  again (a new round from the first step);
- silenced: looked at again when its silence ends (or was ended early), then raised as usual;
- inhibited: once its gateway has been back for ``release_after_s``, raised if the fault is
  still there, resolved quietly if not.

It also reconciles gateways' offline alerts with the gateways table every ``RECONCILE_EVERY_S``, so
a death message ingest missed (a restart) still gets its alert.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.alerts.engine import check_gateway_alert, matching_silence, utcnow
from cloud.alerts.lifecycle import (
    add_timeline,
    next_open_action,
    notify_repeat,
    notify_step,
    resolve_by_itself,
    step_due,
)
from cloud.alerts.models import (
    ACKNOWLEDGED,
    IN_PROGRESS,
    INHIBITED,
    LIFE_SAFETY,
    MAINTENANCE,
    OPEN,
    RESOLVED,
    UNRESOLVED_STATES,
    Alert,
    Silence,
)
from cloud.alerts.settings import AlertSettings
from cloud.db import SessionFactory, is_transient
from cloud.models import Gateway
from cloud.notify.outbox import cancel_pending
from cloud.oncall.recipients import PolicyView, policy_for

log = logging.getLogger(__name__)

BATCH = 100
RECONCILE_EVERY_S = 10.0


class Escalator:
    def __init__(
        self,
        sessions: SessionFactory,
        settings: AlertSettings,
        *,
        wake: Callable[[], None] | None = None,
        hold: Callable[..., AbstractAsyncContextManager[None]] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self.settings = settings
        self._wake = wake or (lambda: None)
        self._hold = hold
        self._clock = clock
        self._stop = asyncio.Event()
        self._poke = asyncio.Event()
        self._last_reconcile = 0.0

    def poke(self) -> None:
        self._poke.set()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()

    async def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if time.monotonic() - self._last_reconcile >= RECONCILE_EVERY_S:
                    await self.reconcile_gateways()
                    self._last_reconcile = time.monotonic()
                await self.tick()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                (log.warning if is_transient(e) else log.exception)("alerts: escalator failed: %s", e)
            self._poke.clear()
            try:
                await asyncio.wait_for(
                    self._poke.wait(),
                    timeout=self.settings.escalator_poll_s * (1 if failures == 0 else min(30, 2**failures)),
                )
            except TimeoutError:
                pass

    def _write(self) -> AbstractAsyncContextManager[None]:
        return self._hold() if self._hold is not None else nullcontext()

    async def tick(self) -> int:
        """Look at every alert that is due; returns how many were looked at."""
        now = self._clock()
        async with self._sessions() as session:
            due = (
                await session.execute(
                    select(Alert.id, Alert.next_action_at)
                    .where(Alert.next_action_at.is_not(None), Alert.next_action_at <= now)
                    .order_by(Alert.next_action_at)
                    .limit(BATCH)
                )
            ).all()
        for alert_id, at in due:
            if at is not None:
                await self.look_at(alert_id, at)
        return len(due)

    async def look_at(self, alert_id: int, expected: datetime) -> None:
        wrote = False
        async with self._write(), self._sessions() as session, session.begin():
            claimed = await session.execute(
                update(Alert)
                .where(Alert.id == alert_id, Alert.next_action_at == expected)
                .values(next_action_at=None)
            )
            if claimed.rowcount == 0:  # type: ignore[attr-defined]
                return  # someone else looked, or a person acted on it meanwhile
            alert = await session.get(Alert, alert_id, populate_existing=True)
            if alert is None:
                return
            wrote = await self._decide(session, alert, self._clock())
        if wrote:
            self._wake()

    async def _decide(self, session: AsyncSession, alert: Alert, now: datetime) -> bool:
        if alert.state == RESOLVED:
            return False
        if alert.state == INHIBITED:
            return await self._inhibited(session, alert, now)
        if alert.silence_id is None and alert.track == MAINTENANCE:
            # A silence made after the raise covers it from now on (never life safety).
            silence = await matching_silence(session, alert, now)
            if silence is not None:
                alert.silence_id = silence.id
                alert.next_action_at = silence.ends_at
                await cancel_pending(session, alert.id, now)
                await add_timeline(
                    session,
                    alert.id,
                    "silenced",
                    now,
                    {"silence_id": silence.id, "until": silence.ends_at.isoformat()},
                )
                return False
        if alert.silence_id is not None:
            silence = await session.get(Silence, alert.silence_id)
            if silence is not None and silence.ended_at is None and silence.ends_at > now:
                alert.next_action_at = silence.ends_at
                return False
            alert.silence_id = None
            await add_timeline(session, alert.id, "unsilenced", now, {})
            if alert.state == OPEN:
                # Still there after the silence: a new round from the first step (the steps that
                # fell in the silence are not sent all at once).
                alert.escalation_from = now
                alert.escalation_step = -1
        policy = await policy_for(session, alert)
        if alert.state in (ACKNOWLEDGED, IN_PROGRESS):
            base = alert.acknowledged_at or alert.started_at or now
            due = base + timedelta(seconds=policy.ack_timeout_s)
            if now < due:
                alert.next_action_at = due
                return False
            alert.state = OPEN
            alert.acknowledged_at = None
            alert.acknowledged_by = None
            alert.started_at = None
            alert.escalation_from = now
            alert.escalation_step = -1
            await add_timeline(session, alert.id, "reraised", now, {"after_s": policy.ack_timeout_s})
            return await self._open(session, alert, policy, now, first_reason="reraised")
        return await self._open(session, alert, policy, now, first_reason="raised")

    async def _open(
        self, session: AsyncSession, alert: Alert, policy: PolicyView, now: datetime, *, first_reason: str
    ) -> bool:
        written = 0
        while alert.escalation_step + 1 < len(policy.steps):
            index = alert.escalation_step + 1
            if step_due(alert, policy, index) > now:
                break
            reason = first_reason if index == 0 else "escalated"
            written += await notify_step(session, alert, policy, index, now, reason=reason)
        if alert.track == LIFE_SAFETY and alert.escalation_step >= 0 and policy.repeat_s > 0:
            n = int((now - alert.escalation_from).total_seconds() // policy.repeat_s)
            if n >= 1:
                written += await notify_repeat(session, alert, policy, n, now)
        alert.next_action_at = next_open_action(alert, policy, now)
        return written > 0

    async def _inhibited(self, session: AsyncSession, alert: Alert, now: datetime) -> bool:
        inhibitor = await session.get(Alert, alert.inhibited_by) if alert.inhibited_by is not None else None
        if inhibitor is not None and inhibitor.state != RESOLVED:
            return False  # the gateway's return sets the time
        back = inhibitor.resolved_at if inhibitor is not None and inhibitor.resolved_at else now
        release_at = back + timedelta(seconds=self.settings.release_after_s)
        if now < release_at:
            alert.next_action_at = release_at
            return False
        if not alert.active:
            return (await resolve_by_itself(session, alert, now, "cleared while its gateway was offline")) > 0
        alert.state = OPEN
        alert.escalation_from = now
        alert.escalation_step = -1
        await add_timeline(session, alert.id, "released", now, {"by": alert.inhibited_by})
        policy = await policy_for(session, alert)
        alert.policy_id = policy.policy_id
        return await self._open(session, alert, policy, now, first_reason="raised")

    async def reconcile_gateways(self) -> None:
        """Offline gateways without an offline alert get one; online ones with one have it resolved."""
        async with self._sessions() as session:
            offline = set(
                (
                    await session.execute(
                        select(Gateway.id).where(
                            Gateway.online.is_(False),
                            Gateway.revoked_at.is_(None),
                            Gateway.last_seen_at.is_not(None),
                        )
                    )
                ).scalars()
            )
            alerted = {
                gid: state
                for gid, state in (
                    await session.execute(
                        select(Alert.gateway_id, Alert.state).where(
                            Alert.kind == "gateway.offline", Alert.state.in_(UNRESOLVED_STATES)
                        )
                    )
                ).all()
            }
        todo = (offline - set(alerted)) | (set(alerted) - offline)
        for gateway_id in sorted(todo):
            wrote = False
            async with self._write(), self._sessions() as session, session.begin():
                wrote = await check_gateway_alert(session, gateway_id, self._clock(), self.settings)
            if wrote:
                self._wake()


__all__ = ["MAINTENANCE", "Escalator"]
