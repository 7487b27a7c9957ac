"""The dispatcher: takes due notices from the outbox, sends them, and records what happened.

Each round claims due notices in a short transaction of its own (status SENDING, a lease in
``claimed_until``, the attempt counted; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so dispatchers
in several processes never take the same row; on SQLite a conditional UPDATE is enough), sends
them outside any transaction, then marks each SENT with a ``notified`` timeline row in one
transaction. A notice whose dispatcher died mid-send is taken again when its lease runs out and
sent with the same Message-ID / Idempotency-Key / delivery id, so the receiver can drop the copy:
a crash never loses a notice, and what was marked sent is never sent again.

Life-safety notices are claimed first and never wait for a free slot; each channel has its own
slots for maintenance notices, so a slow SMTP server delays neither SMS nor webhooks. Maintenance
notices to one person on one channel for one site go out together: one due while another of its
group went out less than ``group_interval_s`` ago waits for the interval's end, and the notices of
a group due together are one message.
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import User
from cloud.alerts.models import (
    ACKNOWLEDGED,
    CANCELLED,
    FAILED,
    IN_PROGRESS,
    LIFE_SAFETY,
    MAINTENANCE,
    PENDING,
    RESOLVED,
    SENDING,
    SENT,
    Alert,
    AlertTimeline,
    Notification,
    Webhook,
)
from cloud.config import CloudConfig
from cloud.db import SessionFactory, is_transient
from cloud.kit.writegate import WriteGate
from cloud.notify.email import SmtpSender, delivery_key, message_id
from cloud.notify.errors import SendFailed
from cloud.notify.messages import AlertView, person_message, webhook_payload
from cloud.notify.outbox import CLOSING_REASONS, EMAIL, GROUPED, SMS, WEBHOOK
from cloud.notify.sms import HttpSmsProvider, SmsProvider
from cloud.notify.webhook import WebhookSender
from cloud.property.models import Site

log = logging.getLogger(__name__)

# Maintenance sends in flight per channel (life safety is never held back by these).
CHANNEL_SLOTS = {EMAIL: 4, SMS: 8, WEBHOOK: 8}
CLAIM_BATCH = 100
STOP_GRACE_S = 5.0  # sends in flight at stop() get this long; the rest come back with their lease


@dataclass(frozen=True)
class Claimed:
    """A notice claimed for sending, with what sending it needs."""

    id: int
    alert_id: int
    user_id: int | None
    webhook_id: int | None
    channel: str
    address: str
    language: str
    reason: str
    step: int
    attempts: int  # including this one
    group_key: str
    name: str  # the person's or the webhook's name, for the timeline
    secret: str = ""  # the webhook's


@dataclass
class Batch:
    """What goes out as one message: one notice, or a group of maintenance notices."""

    channel: str
    life_safety: bool
    rows: list[Claimed]
    alerts: dict[int, AlertView] = field(default_factory=dict)

    @property
    def ids(self) -> list[int]:
        return [r.id for r in self.rows]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    def __init__(
        self,
        config: CloudConfig,
        sessions: SessionFactory,
        *,
        gate: WriteGate | None = None,
        sms: SmsProvider | None = None,
    ) -> None:
        """``gate``: ingest's write gate, when running beside it on SQLite (one writer).
        ``sms``: another provider than the HTTP one of ``[notify.sms]``."""
        self.config = config
        self.settings = config.notify
        self._sessions = sessions
        self._gate = gate
        self._email = SmtpSender(self.settings.smtp)
        self._sms: SmsProvider = sms or HttpSmsProvider(self.settings.sms)
        self._webhooks = WebhookSender(self.settings.webhook_timeout_s)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._busy = dict.fromkeys(CHANNEL_SLOTS, 0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random()

    # -- control ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Something was enqueued (or is due): claim now instead of at the next poll. Safe to
        call from another thread."""
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self._wake.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    async def run(self) -> None:
        """Claim and send until stop(); polls every ``notify.poll_s`` as well as when woken."""
        self._loop = asyncio.get_running_loop()
        log.info(
            "notification dispatcher started (email %s, SMS %s)",
            f"via {self.settings.smtp.host}:{self.settings.smtp.port}" if self._email.enabled else "off",
            "on" if self._sms.enabled else "off",
        )
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    batches = await self.claim_due()
                except Exception as e:
                    if is_transient(e):
                        log.warning("notifications: database unavailable, retrying: %s", e)
                    else:
                        log.exception("notifications: claiming failed")
                    await self._sleep(self.settings.poll_s)
                    continue
                for batch in batches:
                    self._start(batch)
                if batches:
                    continue  # there may be more due
                await self._sleep(await self._idle_wait())
        finally:
            await self._drain()
            await self.aclose()
            log.info("notification dispatcher stopped")

    async def aclose(self) -> None:
        """Close the channels' connections (run() does this when it ends)."""
        self._email.close()
        await self._sms.aclose()
        await self._webhooks.aclose()

    # -- claiming -----------------------------------------------------------------------------

    async def claim_due(self, now: datetime | None = None) -> list[Batch]:
        """Claim what is due now (life safety first, maintenance as far as its channel has free
        slots), hold maintenance notices whose group went out within the interval, cancel notices
        to people about an alert already in hand. Commits; returns the batches to send."""
        now = now or utcnow()
        s = self.settings
        free = [channel for channel, slots in CHANNEL_SLOTS.items() if self._busy[channel] < slots]
        async with self._hold(urgent=True), self._sessions() as session, session.begin():
            postgres = (await session.connection()).dialect.name == "postgresql"
            q = (
                select(
                    Notification.id,
                    Notification.alert_id,
                    Notification.user_id,
                    Notification.channel,
                    Notification.reason,
                    Notification.group_key,
                    Alert.track,
                    Alert.state,
                    Alert.acknowledged_at,
                )
                .join(Alert, Alert.id == Notification.alert_id)
                .where(_due(now), or_(Alert.track == LIFE_SAFETY, Notification.channel.in_(free)))
                .order_by(
                    case((Alert.track == LIFE_SAFETY, 0), else_=1), Notification.not_before, Notification.id
                )
                .limit(CLAIM_BATCH)
            )
            if postgres:
                q = q.with_for_update(of=Notification, skip_locked=True)
            candidates = (await session.execute(q)).all()
            if not candidates:
                return []

            stale = [c for c in candidates if _in_hand(c)]
            live = [c for c in candidates if not _in_hand(c)]
            groups = {c.group_key for c in live if c.track == MAINTENANCE and c.group_key}
            held_until = await _group_holds(session, groups, now, s.group_interval_s) if groups else {}
            held = [c for c in live if c.group_key in held_until]
            plan = self._plan([c for c in live if c.group_key not in held_until])

            claimed: set[int] = set()
            wanted = [i for ids in plan for i in ids]
            if wanted:
                result = await session.execute(
                    update(Notification)
                    .where(Notification.id.in_(wanted), _due(now))
                    .values(
                        status=SENDING,
                        claimed_until=now + timedelta(seconds=s.lease_s),
                        attempts=Notification.attempts + 1,
                    )
                    .returning(Notification.id)
                    .execution_options(synchronize_session=False)
                )
                claimed = set(result.scalars())
            if stale:
                await self._cancel(session, [c.id for c in stale], now)
            if held:
                await self._hold_for_group(session, held, held_until, now)
            batches = await self._load(session, plan, claimed) if claimed else []
        for batch in batches:
            if not batch.life_safety:
                self._busy[batch.channel] += 1
        return batches

    def _plan(self, candidates: Sequence[Any]) -> list[list[int]]:
        """The candidates as batches of ids: each life-safety notice and webhook alone, a
        maintenance group together; maintenance only while its channel has free slots."""
        free = {channel: slots - self._busy[channel] for channel, slots in CHANNEL_SLOTS.items()}
        plan: list[list[int]] = []
        grouped: dict[str, list[int]] = {}
        for c in candidates:
            if c.track == LIFE_SAFETY:
                plan.append([c.id])
            elif c.group_key and c.user_id is not None:
                if c.group_key not in grouped:
                    if free.get(c.channel, 0) <= 0:
                        continue
                    free[c.channel] -= 1
                    grouped[c.group_key] = []
                    plan.append(grouped[c.group_key])
                grouped[c.group_key].append(c.id)
            elif free.get(c.channel, 0) > 0:
                free[c.channel] -= 1
                plan.append([c.id])
        return plan

    async def _load(self, session: AsyncSession, plan: list[list[int]], claimed: set[int]) -> list[Batch]:
        rows = (
            await session.execute(
                select(Notification, User.display_name, Webhook.name, Webhook.secret)
                .outerjoin(User, User.id == Notification.user_id)
                .outerjoin(Webhook, Webhook.id == Notification.webhook_id)
                .where(Notification.id.in_(claimed))
            )
        ).all()
        by_id = {
            n.id: Claimed(
                id=n.id,
                alert_id=n.alert_id,
                user_id=n.user_id,
                webhook_id=n.webhook_id,
                channel=n.channel,
                address=n.address,
                language=n.language,
                reason=n.reason,
                step=n.step,
                attempts=n.attempts,
                group_key=n.group_key,
                name=(user_name if n.user_id is not None else hook_name) or "",
                secret=secret or "",
            )
            for n, user_name, hook_name, secret in rows
        }
        alerts = await _alert_views(session, {r.alert_id for r in by_id.values()})
        batches = []
        for ids in plan:
            taken = [by_id[i] for i in ids if i in by_id]
            if not taken:
                continue  # another dispatcher took them between our read and our update
            views = {r.alert_id: alerts[r.alert_id] for r in taken}
            life_safety = any(v.track == LIFE_SAFETY for v in views.values())
            batches.append(Batch(taken[0].channel, life_safety, taken, views))
        return batches

    async def _cancel(self, session: AsyncSession, ids: list[int], now: datetime) -> None:
        await session.execute(
            update(Notification)
            .where(Notification.id.in_(ids), _due(now))
            .values(
                status=CANCELLED,
                claimed_until=None,
                last_error=f"cancelled at {now.isoformat()}: the alert was in hand before it was sent",
            )
            .execution_options(synchronize_session=False)
        )

    async def _hold_for_group(
        self, session: AsyncSession, held: list[Any], until: dict[str, datetime], now: datetime
    ) -> None:
        timeline = []
        for c in held:
            result = await session.execute(
                update(Notification)
                .where(Notification.id == c.id, _due(now))
                .values(
                    status=PENDING, not_before=until[c.group_key], held_reason=GROUPED, claimed_until=None
                )
                .execution_options(synchronize_session=False)
            )
            if _rowcount(result):
                timeline.append(
                    _timeline(
                        c.alert_id,
                        now,
                        "held",
                        {
                            "user_id": c.user_id,
                            "channel": c.channel,
                            "until": until[c.group_key].isoformat(),
                            "why": GROUPED,
                        },
                    )
                )
        if timeline:
            await session.execute(insert(AlertTimeline), timeline)

    # -- sending ------------------------------------------------------------------------------

    def _start(self, batch: Batch) -> None:
        task = asyncio.create_task(self.deliver(batch), name=f"notify-{batch.channel}-{batch.ids[0]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, batch: Batch) -> None:
        """Send one claimed batch and record the outcome (run() does this on a task per batch)."""
        try:
            exhausted = [r for r in batch.rows if r.attempts > self.settings.max_attempts]
            if exhausted:
                # Taken again after a lease ran out more often than it may be tried: a notice
                # that kills its dispatcher must not kill every dispatcher for ever.
                error = SendFailed(
                    f"{batch.channel}: gave up after {self.settings.max_attempts} attempts "
                    "(the last ended without an answer: the dispatcher stopped while sending)",
                    permanent=True,
                )
                await self._record_failure(Batch(batch.channel, batch.life_safety, exhausted), error)
                batch.rows = [r for r in batch.rows if r not in exhausted]
                if not batch.rows:
                    return
            try:
                sent_as = await asyncio.wait_for(self._send(batch), timeout=self.settings.lease_s)
            except TimeoutError:
                raise SendFailed(
                    f"{batch.channel}: no answer within {self.settings.lease_s:g} s (notify.lease_s)"
                ) from None
        except SendFailed as e:
            log.warning("notification %s: %s", ",".join(map(str, batch.ids)), e)
            await self._record_failure(batch, e)
        except Exception as e:  # a bug in a channel or a template must not stop the dispatcher
            log.exception("notification %s: sending failed", ",".join(map(str, batch.ids)))
            await self._record_failure(batch, SendFailed(f"{batch.channel}: {type(e).__name__}: {e}"))
        else:
            await self._record_sent(batch, sent_as)
        finally:
            if not batch.life_safety:
                self._busy[batch.channel] -= 1
                self.wake()  # a slot is free

    async def _send(self, batch: Batch) -> str:
        base_url = self.settings.base_url
        first = batch.rows[0]
        if batch.channel == WEBHOOK:
            alert = batch.alerts[first.alert_id]
            payload = webhook_payload(alert, first.reason, first.step, base_url, str(first.id))
            return await self._webhooks.send(first.address, first.secret, payload, str(first.id))
        items = [(batch.alerts[r.alert_id], r.reason) for r in batch.rows]
        message = person_message(items, first.language, base_url)
        if batch.channel == EMAIL:
            msg_id = message_id(batch.ids, self.settings.smtp.from_address)
            return await self._email.send(first.address, message.subject, message.text, msg_id)
        if batch.channel == SMS:
            return await self._sms.send(first.address, message.sms, delivery_key(batch.ids))
        raise SendFailed(f"{batch.channel}: no such channel", permanent=True)

    async def _record_sent(self, batch: Batch, sent_as: str) -> None:
        async def mark(session: AsyncSession, now: datetime) -> None:
            result = await session.execute(
                update(Notification)
                .where(Notification.id.in_(batch.ids), Notification.status != SENT)
                .values(status=SENT, sent_at=now, message_id=sent_as, claimed_until=None, last_error="")
                .returning(Notification.id)
                .execution_options(synchronize_session=False)
            )
            marked = set(result.scalars())
            rows = [
                _timeline(r.alert_id, now, "notified", {**_who(r), "message_id": sent_as})
                for r in batch.rows
                if r.id in marked
            ]
            if rows:
                await session.execute(insert(AlertTimeline), rows)

        await self._write(mark, f"marking {batch.ids} sent")

    async def _record_failure(self, batch: Batch, error: SendFailed) -> None:
        s = self.settings

        async def mark(session: AsyncSession, now: datetime) -> None:
            failed = []
            for r in batch.rows:
                ours = and_(
                    Notification.id == r.id,
                    Notification.status == SENDING,
                    Notification.attempts == r.attempts,
                )
                final = error.permanent or r.attempts >= s.max_attempts
                values: dict[str, Any] = {"claimed_until": None, "last_error": str(error)[:1000]}
                if final:
                    values["status"] = FAILED
                else:
                    values["status"] = PENDING
                    values["not_before"] = now + timedelta(seconds=self._backoff(r.attempts))
                result = await session.execute(
                    update(Notification)
                    .where(ours)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if final and _rowcount(result):
                    failed.append(
                        _timeline(r.alert_id, now, "notify_failed", {**_who(r), "error": str(error)})
                    )
            if failed:
                await session.execute(insert(AlertTimeline), failed)

        await self._write(mark, f"recording the failure of {batch.ids}")

    def _backoff(self, attempts: int) -> float:
        """Exponential back-off with full jitter between retry_min_s and retry_max_s."""
        s = self.settings
        ceiling = min(s.retry_max_s, s.retry_min_s * 2.0 ** max(attempts - 1, 0))
        return self._rng.uniform(s.retry_min_s, max(s.retry_min_s, ceiling))

    async def _write(self, work: Any, what: str) -> None:
        """Run ``work(session, now)`` in a transaction, retrying a database outage for a while: a
        result not recorded leaves the notice claimed, and its lease then sends it again."""
        delay = 0.2
        deadline = asyncio.get_running_loop().time() + self.settings.lease_s / 2
        while True:
            try:
                async with self._hold(), self._sessions() as session, session.begin():
                    await work(session, utcnow())
                return
            except Exception as e:
                if not is_transient(e) or asyncio.get_running_loop().time() + delay > deadline:
                    log.error("notifications: %s failed: %s", what, e)
                    return
                log.warning("notifications: %s: database unavailable, retrying: %s", what, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- waiting ------------------------------------------------------------------------------

    async def _idle_wait(self) -> float:
        """Until the next notice falls due (a held one, a retry, a lapsed lease), at most poll_s."""
        poll = self.settings.poll_s
        try:
            async with self._sessions() as session:
                pending = await session.scalar(
                    select(func.min(Notification.not_before)).where(Notification.status == PENDING)
                )
                leased = await session.scalar(
                    select(func.min(Notification.claimed_until)).where(Notification.status == SENDING)
                )
        except Exception:
            return poll
        now = utcnow()
        waits = [(t - now).total_seconds() for t in (pending, leased) if t is not None]
        # Due already but not taken: its channel has no free slot; a finishing send wakes us.
        future = [w for w in waits if w > 0]
        return min([poll, *[w + 0.001 for w in future]])

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(seconds, 0.0))

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    @contextlib.asynccontextmanager
    async def _hold(self, urgent: bool = False) -> AsyncIterator[None]:
        if self._gate is None:
            yield
        else:
            async with self._gate.hold(urgent=urgent):
                yield


def _due(now: datetime) -> Any:
    """Pending and due, or claimed by a dispatcher whose lease ran out (it died mid-send)."""
    return or_(
        and_(Notification.status == PENDING, Notification.not_before <= now),
        and_(Notification.status == SENDING, Notification.claimed_until < now),
    )


def _in_hand(c: Any) -> bool:
    """A notice to a person about an alert someone already has in hand: no longer worth sending.
    Life safety counts as in hand only once acknowledged (it is sent even if it cleared by
    itself); webhooks and the notices of the acknowledgement or resolution itself always go."""
    if c.user_id is None or c.reason in CLOSING_REASONS:
        return False
    if c.track == LIFE_SAFETY:
        return c.acknowledged_at is not None or c.state in (ACKNOWLEDGED, IN_PROGRESS)
    return c.state in (ACKNOWLEDGED, IN_PROGRESS, RESOLVED)


async def _group_holds(
    session: AsyncSession, groups: set[str], now: datetime, interval_s: float
) -> dict[str, datetime]:
    """Each group with a notice sent within the interval: until when its next ones wait."""
    if interval_s <= 0:
        return {}
    interval = timedelta(seconds=interval_s)
    rows = await session.execute(
        select(Notification.group_key, func.max(Notification.sent_at))
        .where(
            Notification.group_key.in_(groups),
            Notification.status == SENT,
            Notification.sent_at > now - interval,
        )
        .group_by(Notification.group_key)
    )
    # max() of a UTCDateTime column comes back through the column's type: aware, on both databases.
    return {key: last + interval for key, last in rows.all() if last is not None}


async def _alert_views(session: AsyncSession, alert_ids: set[int]) -> dict[int, AlertView]:
    rows = await session.execute(
        select(Alert, Site.name, Site.timezone)
        .outerjoin(Site, Site.id == Alert.site_id)
        .where(Alert.id.in_(alert_ids))
    )
    return {
        a.id: AlertView(
            id=a.id,
            track=a.track,
            state=a.state,
            kind=a.kind,
            source=a.source,
            fault=a.fault,
            severity=a.severity,
            site_id=a.site_id,
            site_name=site_name or "",
            site_timezone=site_tz or "Asia/Shanghai",
            raised_at=a.raised_at,
            acknowledged_at=a.acknowledged_at,
            resolved_at=a.resolved_at,
            flapping=a.flapping,
            details=dict(a.details or {}),
        )
        for a, site_name, site_tz in rows.all()
    }


def _who(r: Claimed) -> dict[str, Any]:
    who: dict[str, Any] = {"user_id": r.user_id} if r.user_id is not None else {"webhook_id": r.webhook_id}
    return {
        **who,
        "name": r.name,
        "channel": r.channel,
        "address": r.address,
        "reason": r.reason,
        "step": r.step,
    }


def _timeline(alert_id: int, at: datetime, action: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {"alert_id": alert_id, "at": at, "action": action, "actor_id": None, "detail": detail}


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
