"""The alert engine: stored events become alerts, and the first notices of each are written in the
same transaction as the alert (the notifications outbox), so nothing is told that was not stored
and nothing stored goes untold.

Ingest hands it each committed batch (``take``, on ingest's loop: a set lookup per event; telemetry
never goes further). Life-safety events are taken first and alone, each in a transaction of its own
at once; the rest go in transactions of up to ``CHUNK`` events. Every event taken is recorded by
its unique key (``alert_event_keys``) in the transaction that acts on it, so an event taken twice
(a restart's catch-up, two ingest workers) changes nothing the second time. At start the engine
catches up: alert-making events received since its checkpoint (less a margin) that have no key yet
are taken from the events table, which covers a crash between ingest's commit and the engine's.

Gateway liveness comes from ingest's state channel (``gateway_changed``) and from a periodic
reconciliation with the gateways table (the escalator's ``reconcile_gateways``): a gateway that
is offline has one "gateway offline" alert, told to people only after
``gateway_offline_notify_after_s``; while it is open (and for events from shortly before it) its
devices' maintenance alerts are held (``inhibited``), and after the gateway is back those still
active are raised by the escalator.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.alerts import classify
from cloud.alerts.classify import GATEWAY_OFFLINE_KIND, GATEWAY_SOURCE, Effect, Meaning, gateway_offline_key
from cloud.alerts.lifecycle import add_timeline, anyone_told, notify_step, resolve_by_itself
from cloud.alerts.models import (
    ACKNOWLEDGED,
    INHIBITED,
    LIFE_SAFETY,
    MAINTENANCE,
    OPEN,
    RESOLVED,
    UNRESOLVED_STATES,
    Alert,
    AlertEngineState,
    AlertEventKey,
    MaintenanceTicket,
    Silence,
)
from cloud.alerts.settings import AlertSettings
from cloud.alerts.timeline import batched_timeline
from cloud.db import SessionFactory, is_transient, upsert_insert
from cloud.events.repository import IncomingBatch, reported_time
from cloud.models import Event, Gateway
from cloud.oncall.recipients import policy_for
from protocols.envelope import EventRecord

log = logging.getLogger(__name__)

CHUNK = 64
RECENT_KEYS = 20_000  # maintenance keys remembered as "seen lately" (a few MB at most)
CHECKPOINT = "engine"
CATCH_UP_MARGIN = timedelta(minutes=10)
_GATEWAY_TTL_S = 30.0

Hold = Callable[..., AbstractAsyncContextManager[None]]


@dataclass(frozen=True, slots=True)
class _Item:
    gateway_id: str
    store_id: str
    received_time: datetime
    event: EventRecord
    meaning: Meaning


@dataclass(frozen=True, slots=True)
class _GatewayInfo:
    company_id: int | None
    site_id: int | None
    name: str
    online: bool
    last_seen_at: datetime | None
    known: bool = True  # registered and not revoked: someone waits for it


def utcnow() -> datetime:
    return datetime.now(UTC)


class AlertEngine:
    def __init__(
        self,
        sessions: SessionFactory,
        settings: AlertSettings,
        *,
        hold: Hold | None = None,
        wake: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self.settings = settings
        self._hold = hold
        self._wake = wake or (lambda: None)
        self._clock = clock
        self._urgent: deque[_Item] = deque()
        self._normal: deque[_Item] = deque()
        # Maintenance events of keys seen lately (a flapping point's tenth event) wait behind those
        # of new keys: a new fault is not queued behind a flood. A key with events in this queue
        # keeps sending them here, so one key's events are always taken in order.
        self._known: deque[_Item] = deque()
        self._known_queued: Counter[str] = Counter()
        self._recent_keys: OrderedDict[str, None] = OrderedDict()
        self._gateways: set[str] = set()
        self._work = asyncio.Event()
        self._stopping = False
        self._info: dict[str, tuple[float, _GatewayInfo]] = {}
        self.taken = 0  # events acted on (a counter for tests and the status)

    # -- on ingest's loop -------------------------------------------------------------------
    def take(self, batches: Iterable[IncomingBatch]) -> None:
        kinds = classify.KINDS
        for batch in batches:
            for e in batch.events:
                if e.kind not in kinds:
                    continue
                m = classify.meaning(e.kind, e.data)
                if m is None:
                    continue
                item = _Item(batch.gateway_id, batch.store_id, batch.received_time, e, m)
                if m.track == LIFE_SAFETY:
                    self._urgent.append(item)
                else:
                    self._queue_maintenance(item)
                self._work.set()

    def _queue_maintenance(self, item: _Item) -> None:
        key = item.meaning.key(item.gateway_id, item.event.source, "")
        recent = self._recent_keys
        if self._known_queued[key] > 0 or key in recent:
            self._known.append(item)
            self._known_queued[key] += 1
            recent.move_to_end(key)
            return
        self._normal.append(item)
        recent[key] = None
        while len(recent) > RECENT_KEYS:
            recent.popitem(last=False)

    def gateway_changed(self, gateway_id: str) -> None:
        self._info.pop(gateway_id, None)
        self._gateways.add(gateway_id)
        self._work.set()

    @property
    def pending(self) -> int:
        return len(self._urgent) + len(self._normal) + len(self._known) + len(self._gateways)

    def stop(self) -> None:
        self._stopping = True
        self._work.set()

    async def run(self) -> None:
        await self._retrying("catch up", self.catch_up)
        while True:
            if not self.pending:
                if self._stopping:
                    return
                self._work.clear()
                await self._work.wait()
                continue
            await self.drain()

    async def drain(self) -> None:
        """Act on everything queued (life safety first), retrying through database outages."""
        while self.pending:
            if self._urgent:
                items = list(self._urgent)
                self._urgent.clear()
                await self._retrying("life-safety events", partial(self._apply_items, items))
            elif self._normal:
                items = [self._normal.popleft() for _ in range(min(CHUNK, len(self._normal)))]
                await self._retrying("events", partial(self._apply_items, items))
            elif self._known:
                items = [self._known.popleft() for _ in range(min(CHUNK, len(self._known)))]
                for item in items:
                    key = item.meaning.key(item.gateway_id, item.event.source, "")
                    self._known_queued[key] -= 1
                    if self._known_queued[key] <= 0:
                        del self._known_queued[key]
                await self._retrying("events", partial(self._apply_items, items))
            elif self._gateways:
                gateway_id = self._gateways.pop()
                await self._retrying(f"gateway {gateway_id}", partial(self.check_gateway, gateway_id))

    async def _retrying(self, what: str, work: Callable[[], Any]) -> None:
        attempt = 0
        while True:
            try:
                await work()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not is_transient(e) or attempt >= 1000:
                    log.exception("alerts: failed on %s (dropped)", what)
                    return
                if self._stopping and attempt >= 3:
                    log.warning("alerts: stopping with %s not done (the catch-up takes it at start)", what)
                    return
                attempt += 1
                await asyncio.sleep(min(5.0, 0.1 * 2**attempt))

    def _write(self, *, urgent: bool = False) -> AbstractAsyncContextManager[None]:
        # On SQLite, ingest's write gate: a life-safety alert's transaction goes next, like an alarm's.
        return self._hold(urgent=urgent) if self._hold is not None else nullcontext()

    async def _apply_items(self, items: list[_Item]) -> None:
        try:
            await self._transaction(items)
        except IntegrityError:
            # Another worker opened the same key at the same moment: one at a time sees it.
            if len(items) == 1:
                await self._transaction(items)
                return
            for item in items:
                await self._transaction([item])

    async def _transaction(self, items: list[_Item]) -> None:
        wrote = False
        urgent = any(i.meaning.track == LIFE_SAFETY for i in items)
        async with self._write(urgent=urgent), self._sessions() as session, session.begin():
            now = self._clock()
            async with batched_timeline(session):
                for item in items:
                    wrote = await self._apply(session, item, now) or wrote
            # Not past an older event still queued (the queues are taken out of arrival order).
            heads = [q[0].received_time for q in (self._normal, self._known) if q]
            await _checkpoint(session, min([i.received_time for i in items] + heads))
        self.taken += len(items)
        if wrote:
            self._wake()

    # -- one event ----------------------------------------------------------------------------
    async def _apply(self, session: AsyncSession, item: _Item, now: datetime) -> bool:
        """Act on one event; True if notices were written."""
        e = item.event
        key_row = (
            upsert_insert(session, AlertEventKey)
            .values(
                gateway_id=item.gateway_id, store_id=item.store_id, seq=e.seq, alert_id=None, taken_at=now
            )
            .on_conflict_do_nothing()
        )
        if (await session.execute(key_row)).rowcount == 0:  # type: ignore[attr-defined]
            return False  # taken before
        info = await self._gateway_info(session, item.gateway_id)
        m = item.meaning
        at = reported_time(e.time_ms)
        if m.track == LIFE_SAFETY:
            if m.effect is Effect.RAISE:
                return await self._raise_life_safety(session, item, info, at, now)
            await self._note_life_safety_clear(session, item, info, now)
            return False
        if m.effect is Effect.RAISE:
            return await self._raise_maintenance(session, item, info, at, now)
        return await self._clear_maintenance(session, item, info, now)

    async def _raise_life_safety(
        self, session: AsyncSession, item: _Item, info: _GatewayInfo, at: datetime, now: datetime
    ) -> bool:
        e, m = item.event, item.meaning
        if e.data.get("restored") is True:
            # A gateway restarting re-announces an alarm it still has: the open alert already says it.
            existing = await _unresolved(
                session,
                info.company_id,
                Alert.gateway_id == item.gateway_id,
                Alert.source == e.source,
                Alert.fault == m.fault,
                Alert.track == LIFE_SAFETY,
            )
            if existing:
                await add_timeline(session, existing[0].id, "event", now, {"kind": e.kind, "seq": e.seq})
                return False
        alert = _new_alert(item, info, at, now, key=m.key(item.gateway_id, e.source, _event_key(item)))
        await _store_raised(session, alert, item, info, now)
        return await self._first_notices(session, alert, now)

    async def _note_life_safety_clear(
        self, session: AsyncSession, item: _Item, info: _GatewayInfo, now: datetime
    ) -> None:
        e = item.event
        for alert in await _unresolved(
            session,
            info.company_id,
            Alert.gateway_id == item.gateway_id,
            Alert.source == e.source,
            Alert.track == LIFE_SAFETY,
        ):
            alert.active = False
            alert.cleared_at = now
            await add_timeline(session, alert.id, "cleared", now, {"kind": e.kind, "seq": e.seq})

    async def _raise_maintenance(
        self, session: AsyncSession, item: _Item, info: _GatewayInfo, at: datetime, now: datetime
    ) -> bool:
        e, m = item.event, item.meaning
        key = m.key(item.gateway_id, e.source, "")
        current, recent = await self._alerts_of_key(session, info.company_id, key, now)
        if current is not None:
            alert = current
            alert.event_count += 1
            alert.last_event_at = max(alert.last_event_at, at)
            alert.active = True
            if alert.event_count <= self.settings.timeline_events_max:
                await add_timeline(session, alert.id, "event", now, {"kind": e.kind, "seq": e.seq})
            return False
        if recent is not None:
            return await self._reopen(session, recent, item, at, now)
        alert = _new_alert(item, info, at, now, key=key)
        inhibitor = await self._inhibiting(session, item.gateway_id, at)
        silence = None if inhibitor is not None else await matching_silence(session, alert, now)
        if inhibitor is not None:
            alert.state = INHIBITED
            alert.inhibited_by = inhibitor.id
            alert.next_action_at = (
                inhibitor.resolved_at + timedelta(seconds=self.settings.release_after_s)
                if inhibitor.state == RESOLVED and inhibitor.resolved_at is not None
                else None
            )
        elif silence is not None:
            alert.silence_id = silence.id
            alert.next_action_at = silence.ends_at
        await _store_raised(session, alert, item, info, now)
        if inhibitor is not None:
            await add_timeline(session, alert.id, "inhibited", now, {"by": inhibitor.id})
            await add_timeline(
                session,
                inhibitor.id,
                "inhibited",
                now,
                {"alert_id": alert.id, "source": e.source, "fault": m.fault},
            )
            return False
        if silence is not None:
            await add_timeline(
                session,
                alert.id,
                "silenced",
                now,
                {"silence_id": silence.id, "until": silence.ends_at.isoformat()},
            )
            return False
        return await self._first_notices(session, alert, now)

    async def _reopen(
        self, session: AsyncSession, alert: Alert, item: _Item, at: datetime, now: datetime
    ) -> bool:
        alert.state = ACKNOWLEDGED if alert.acknowledged_at is not None else OPEN
        alert.active = True
        alert.resolved_at = None
        alert.resolution = ""
        alert.flap_count += 1
        alert.flapping = True
        alert.event_count += 1
        alert.last_event_at = max(alert.last_event_at, at)
        alert.next_action_at = now  # the escalator carries on where the round was
        if alert.escalation_step >= 0 and not await anyone_told(session, alert.id):
            # Its notices were dropped while it was cleared (or never due): nobody knows it is
            # back. A new round from the first step, with notices of its own.
            alert.escalation_from = now
            alert.escalation_step = -1
        await add_timeline(
            session, alert.id, "reopened", now, {"kind": item.event.kind, "seq": item.event.seq}
        )
        await add_timeline(session, alert.id, "flapping", now, {"count": alert.flap_count})
        if alert.flap_count >= self.settings.flap_ticket_after:
            await self._ticket(session, alert, now)
        return False

    async def _ticket(self, session: AsyncSession, alert: Alert, now: datetime) -> None:
        asset = f"{alert.gateway_id}|{alert.source}"
        open_ticket = (
            await session.execute(
                select(MaintenanceTicket.id).where(
                    MaintenanceTicket.company_id == alert.company_id,
                    MaintenanceTicket.asset_key == asset,
                    MaintenanceTicket.state == "open",
                )
            )
        ).scalar()
        if open_ticket is not None:
            return
        ticket = MaintenanceTicket(
            company_id=alert.company_id,
            site_id=alert.site_id,
            asset_key=asset,
            alert_id=alert.id,
            title=f"{alert.source}: {alert.fault} keeps coming back",
            reason=f"flapped {alert.flap_count} times within {int(self.settings.flap_window_s)} s",
            created_at=now,
        )
        session.add(ticket)
        await session.flush()
        await add_timeline(session, alert.id, "ticket", now, {"ticket_id": ticket.id})

    async def _clear_maintenance(
        self, session: AsyncSession, item: _Item, info: _GatewayInfo, now: datetime
    ) -> bool:
        e, m = item.event, item.meaning
        key = m.key(item.gateway_id, e.source, "")
        wrote = False
        for alert in await _unresolved(session, info.company_id, Alert.key == key):
            alert.cleared_at = now
            await add_timeline(session, alert.id, "cleared", now, {"kind": e.kind, "seq": e.seq})
            wrote = (await resolve_by_itself(session, alert, now, "cleared")) > 0 or wrote
        return wrote

    async def _alerts_of_key(
        self, session: AsyncSession, company_id: int | None, key: str, now: datetime
    ) -> tuple[Alert | None, Alert | None]:
        """The key's unresolved alert, else one that cleared by itself within the flap window (which
        a return reopens): one query for both, as a flood asks it for every event."""
        since = now - timedelta(seconds=self.settings.flap_window_s)
        query = (
            select(Alert)
            .where(
                _company(company_id),
                Alert.key == key,
                or_(
                    Alert.state.in_(UNRESOLVED_STATES),
                    and_(
                        Alert.state == RESOLVED,
                        Alert.resolved_by.is_(None),
                        Alert.resolution == "cleared",
                        Alert.resolved_at >= since,
                    ),
                ),
            )
            .order_by(Alert.id.desc())
            .limit(2)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        rows = list((await session.execute(query)).scalars())
        current = next((a for a in rows if a.state != RESOLVED), None)
        recent = next((a for a in rows if a.state == RESOLVED), None)
        return current, recent

    async def _inhibiting(self, session: AsyncSession, gateway_id: str, at: datetime) -> Alert | None:
        """The gateway's offline alert that covers an event at ``at``: open now, or over an outage
        that ``at`` falls in (events buffered during the outage arrive after the gateway is back)."""
        key = gateway_offline_key(gateway_id)
        rows = (
            await session.execute(
                select(Alert)
                .where(Alert.key == key, Alert.gateway_id == gateway_id)
                .order_by(Alert.id.desc())
                .limit(3)
            )
        ).scalars()
        before = timedelta(seconds=self.settings.inhibit_before_s)
        for alert in rows:
            if at < alert.first_event_at - before:
                continue
            if alert.state != RESOLVED or (alert.resolved_at is not None and at <= alert.resolved_at):
                return alert
        return None

    async def _first_notices(self, session: AsyncSession, alert: Alert, now: datetime) -> bool:
        policy = await policy_for(session, alert)
        alert.policy_id = policy.policy_id
        alert.next_action_at = now  # the escalator works out the next step or repeat
        if not policy.steps or float(policy.steps[0].get("after_s", 0)) > 0 or alert.escalation_from > now:
            return False
        return (await notify_step(session, alert, policy, 0, now, reason="raised")) > 0

    # -- gateways -----------------------------------------------------------------------------
    async def check_gateway(self, gateway_id: str) -> None:
        """Bring the gateway's offline alert in line with its state (in a transaction of its own)."""
        wrote = False
        async with self._write(), self._sessions() as session, session.begin():
            wrote = await check_gateway_alert(session, gateway_id, self._clock(), self.settings)
        if wrote:
            self._wake()

    async def _gateway_info(self, session: AsyncSession, gateway_id: str) -> _GatewayInfo:
        cached = self._info.get(gateway_id)
        if cached is not None and time.monotonic() - cached[0] < _GATEWAY_TTL_S:
            return cached[1]
        info = await gateway_info(session, gateway_id)
        self._info[gateway_id] = (time.monotonic(), info)
        return info

    # -- crash recovery -------------------------------------------------------------------------
    async def catch_up(self) -> int:
        """Take what was stored but never taken (the engine stopped between ingest's commit and its
        own). Returns the number of events found."""
        async with self._sessions() as session:
            checkpoint = await session.get(AlertEngineState, CHECKPOINT)
            if checkpoint is None:
                return 0  # a fresh engine starts from now: old history raises nothing
            since = checkpoint.checkpoint - CATCH_UP_MARGIN
            found = 0
            last_id = 0
            while True:
                rows = (
                    await session.execute(
                        select(
                            Event.id,
                            Event.gateway_id,
                            Event.store_id,
                            Event.received_time,
                            Event.seq,
                            Event.kind,
                            Event.lane,
                            Event.reported_time,
                            Event.boot_id,
                            Event.mono_ns,
                            Event.clock_synced,
                            Event.source,
                            Event.data,
                        )
                        .outerjoin(
                            AlertEventKey,
                            and_(
                                AlertEventKey.gateway_id == Event.gateway_id,
                                AlertEventKey.store_id == Event.store_id,
                                AlertEventKey.seq == Event.seq,
                            ),
                        )
                        .where(
                            Event.received_time >= since,
                            Event.kind.in_(sorted(classify.KINDS)),
                            AlertEventKey.seq.is_(None),
                            Event.id > last_id,
                        )
                        .order_by(Event.id)
                        .limit(500)
                    )
                ).all()
                if not rows:
                    break
                last_id = rows[-1].id
                for r in rows:
                    record = EventRecord(
                        seq=r.seq,
                        kind=r.kind,
                        lane=r.lane,
                        time_ms=int(r.reported_time.timestamp() * 1000),
                        boot_id=r.boot_id,
                        mono_ns=r.mono_ns,
                        clock_synced=r.clock_synced,
                        source=r.source,
                        data=r.data or {},
                    )
                    self.take([IncomingBatch(r.gateway_id, r.store_id, r.received_time, [record])])
                    found += 1
        if found:
            log.warning("alerts: catching up on %d events stored while the engine was not running", found)
        await self.drain()
        return found


async def gateway_info(session: AsyncSession, gateway_id: str) -> _GatewayInfo:
    row = (
        await session.execute(
            select(
                Gateway.company_id,
                Gateway.site_id,
                Gateway.name,
                Gateway.online,
                Gateway.last_seen_at,
                Gateway.revoked_at,
            ).where(Gateway.id == gateway_id)
        )
    ).first()
    if row is None:
        return _GatewayInfo(None, None, "", False, None, known=False)
    return _GatewayInfo(
        row.company_id,
        row.site_id,
        row.name,
        bool(row.online),
        row.last_seen_at,
        known=row.revoked_at is None,
    )


async def check_gateway_alert(
    session: AsyncSession, gateway_id: str, now: datetime, settings: AlertSettings
) -> bool:
    """Open the gateway's offline alert if it is offline and has none; resolve it if it is online
    (and start the clock on the device alerts it held). True if notices were written."""
    info = await gateway_info(session, gateway_id)
    key = gateway_offline_key(gateway_id)
    existing = await _unresolved(session, info.company_id, Alert.key == key)
    if not info.online:
        if existing:
            return False
        if not info.known:
            return False  # unknown or revoked: nobody waits for it
        grace = timedelta(seconds=settings.gateway_offline_notify_after_s)
        alert = Alert(
            company_id=info.company_id,
            site_id=info.site_id,
            gateway_id=gateway_id,
            track=MAINTENANCE,
            key=key,
            kind=GATEWAY_OFFLINE_KIND,
            source=GATEWAY_SOURCE,
            fault="offline",
            skill="electrical",
            severity="major",
            details={
                "gateway": info.name or gateway_id,
                "last_seen_at": info.last_seen_at.isoformat() if info.last_seen_at else None,
            },
            state=OPEN,
            active=True,
            raised_at=now,
            first_event_at=now,
            last_event_at=now,
            escalation_step=-1,
            escalation_from=now + grace,
            next_action_at=now + grace,
        )
        silence = await matching_silence(session, alert, now)
        if silence is not None:
            alert.silence_id = silence.id
            alert.next_action_at = max(silence.ends_at, now + grace)
        session.add(alert)
        await session.flush()
        await add_timeline(
            session,
            alert.id,
            "raised",
            now,
            {
                "kind": GATEWAY_OFFLINE_KIND,
                "source": GATEWAY_SOURCE,
                "fault": "offline",
                "severity": "major",
                "gateway": info.name or gateway_id,
                "last_seen_at": alert.details["last_seen_at"],
            },
        )
        if silence is not None:
            await add_timeline(session, alert.id, "silenced", now, {"silence_id": silence.id})
        policy = await policy_for(session, alert)
        alert.policy_id = policy.policy_id
        return False
    wrote = False
    release_at = now + timedelta(seconds=settings.release_after_s)
    for alert in existing:
        await add_timeline(session, alert.id, "cleared", now, {"kind": "gateway.online"})
        wrote = (await resolve_by_itself(session, alert, now, "back online")) > 0 or wrote
        await session.execute(
            update(Alert)
            .where(Alert.inhibited_by == alert.id, Alert.state == INHIBITED)
            .values(next_action_at=release_at)
        )
    return wrote


async def _unresolved(session: AsyncSession, company_id: int | None, *where: Any) -> list[Alert]:
    query = (
        select(Alert)
        .where(_company(company_id), Alert.state.in_(UNRESOLVED_STATES), *where)
        .order_by(Alert.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return list((await session.execute(query)).scalars())


def _company(company_id: int | None) -> Any:
    return Alert.company_id.is_(None) if company_id is None else Alert.company_id == company_id


async def matching_silence(session: AsyncSession, alert: Alert, now: datetime) -> Silence | None:
    if alert.track != MAINTENANCE or alert.company_id is None:
        return None
    candidates = (
        await session.execute(
            select(Silence).where(
                Silence.company_id == alert.company_id,
                Silence.starts_at <= now,
                Silence.ends_at > now,
                Silence.ended_at.is_(None),
                or_(Silence.site_id.is_(None), Silence.site_id == alert.site_id),
            )
        )
    ).scalars()
    for s in candidates:
        if s.gateway_id and s.gateway_id != alert.gateway_id:
            continue
        if s.fault and s.fault != alert.fault:
            continue
        if s.source_pattern and not fnmatch.fnmatchcase(alert.source, s.source_pattern):
            continue
        return s
    return None


def _event_key(item: _Item) -> str:
    return f"{item.gateway_id}|{item.store_id}|{item.event.seq}"


def _new_alert(item: _Item, info: _GatewayInfo, at: datetime, now: datetime, *, key: str) -> Alert:
    e, m = item.event, item.meaning
    return Alert(
        company_id=info.company_id,
        site_id=info.site_id,
        gateway_id=item.gateway_id,
        track=m.track,
        key=key,
        kind=e.kind,
        source=e.source,
        fault=m.fault,
        skill=m.skill,
        severity=m.severity,
        details={**e.data, "gateway": info.name or item.gateway_id},
        state=OPEN,
        active=True,
        raised_at=now,
        first_event_at=at,
        last_event_at=at,
        escalation_step=-1,
        escalation_from=now,
        next_action_at=None,
        event_count=1,
    )


async def _store_raised(
    session: AsyncSession, alert: Alert, item: _Item, info: _GatewayInfo, now: datetime
) -> None:
    """A new alert: stored, linked to the event that raised it, "raised" on its timeline."""
    session.add(alert)
    await session.flush()
    await _link_event(session, item, alert.id)
    e, m = item.event, item.meaning
    detail = {"kind": e.kind, "source": e.source, "fault": m.fault, "severity": m.severity}
    await add_timeline(session, alert.id, "raised", now, {**detail, "gateway": info.name or item.gateway_id})


async def _link_event(session: AsyncSession, item: _Item, alert_id: int) -> None:
    await session.execute(
        update(AlertEventKey)
        .where(
            AlertEventKey.gateway_id == item.gateway_id,
            AlertEventKey.store_id == item.store_id,
            AlertEventKey.seq == item.event.seq,
        )
        .values(alert_id=alert_id)
    )


async def _checkpoint(session: AsyncSession, received: datetime) -> None:
    """Move the catch-up checkpoint forward (never back: several workers write it)."""
    stmt = (
        upsert_insert(session, AlertEngineState)
        .values(name=CHECKPOINT, checkpoint=received)
        .on_conflict_do_nothing()
    )
    await session.execute(stmt)
    await session.execute(
        update(AlertEngineState)
        .where(AlertEngineState.name == CHECKPOINT, AlertEngineState.checkpoint < received)
        .values(checkpoint=received)
    )
