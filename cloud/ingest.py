"""The MQTT ingest worker: batches from the gateways into the events table, acked after commit.

Two persistent MQTT sessions: one for ``events``, ``state`` and ``cmd/result``, and one for
``alarms`` with its own queue, task and transactions, so a fire alarm never waits behind a backlog
of meter readings. Messages arriving while a transaction runs queue up and go into the next one
together (up to ``ingest.max_batch_events``): group commit without added latency.

The rules of the sync contract, as this module keeps them:
- An ``Ack`` (store id + seq ranges of the whole message, duplicates included) is published only
  after the transaction holding those events committed. The broker's PUBACK means nothing here:
  paho acknowledges to the broker on receipt, and a message lost before commit is resent by its
  gateway, which deletes events only on our ack.
- A message that cannot be taken (does not decode, unknown gateway, topic and envelope disagree,
  content the database refuses) gets a ``Reject`` naming its ranges and why, is counted, logged
  with its topic and recorded in ``ingest_rejects``. Ingest never stops on a bad message.
- An outage of the database is not the message's fault: nothing is acked, the same work is retried
  with capped exponential backoff until it commits, and ingest carries on from there.
- A full queue drops the message (counted): the gateway resends what was not acked.

State and command results come on the slow (control) path, never in the way of events: a birth
sends the gateway the access data it lacks (or "you are current"), a command result is recorded on
its command, and an ``access.sync`` refused for its base is answered with a delta from the version
the gateway says it has. Those pushes run as tasks of their own (cloud/access/push.py), so a large
delta never holds up the next state message. Every ``access.confirm_every_s`` a task of its own tells
the connected gateways that their access data is current, or sends what they lack
(cloud/access/confirm.py; one ingest worker at a time on PostgreSQL).

After each commit (and its acks) the stored batches go to the digest (cloud/events/digest.py),
which keeps the latest values, the hourly event counts and the gateways' inventories (devices and
points) in short transactions of its own, at most once a second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from cloud import metrics
from cloud.access.confirm import AccessConfirmer
from cloud.access.push import note_sync_result, push_after_mismatch, push_if_behind, push_on_birth
from cloud.alerts.engine import AlertEngine
from cloud.commands.service import record_result
from cloud.config import CloudConfig, broker_address, database_url, mqtt_password
from cloud.db import SessionFactory, create_engine, is_sqlite, is_transient, session_factory
from cloud.events.digest import Digest
from cloud.events.rejects import record_reject
from cloud.events.repository import IncomingBatch, StoreResult, store_batches
from cloud.kit.writegate import WriteGate
from cloud.metrics import RejectReason
from cloud.mqtt_link import Inbound, LinkSettings, MqttLink
from cloud.registry import Seen, apply_state, count_online, mark_seen, registered
from protocols.envelope import (
    Ack,
    CommandResult,
    EventBatch,
    GatewayState,
    MessageTooLarge,
    Reject,
    decode,
    encode,
    salvage_ranges,
)
from protocols.errors import ProtocolError
from protocols.ranges import Ranges, to_ranges
from protocols.topics import Channel, parse_topic, subscription, topic

log = logging.getLogger(__name__)

DEFAULT_QUEUE_MESSAGES = 256  # at most 128 KiB each on the wire: a bounded amount of memory
MAX_REASON_LENGTH = 1000  # Reject.reason's limit
# Ranges per ack or reject message: a pathological batch (every other seq) still fits 128 KiB.
RANGES_PER_MESSAGE = 2000


@dataclass(slots=True)
class _Message:
    """An incoming events or alarms message, decoded as far as it goes."""

    inbound: Inbound
    gateway_id: str | None = None  # from the topic; None if the topic is not ours
    batch: EventBatch | None = None
    problem: RejectReason | None = None
    detail: str = ""
    # What a reject can name: from the batch, or salvaged from a payload that did not decode.
    store_id: str | None = None
    seqs: list[int] = field(default_factory=list)

    @property
    def event_count(self) -> int:
        return len(self.batch.events) if self.batch is not None else 0

    def refuse(self, reason: RejectReason, detail: str) -> None:
        self.problem, self.detail = reason, detail


# Where alarms are consumed: on the main loop, on a thread of their own, or (the thread's worker)
# nothing but alarms.
AlarmPlacement = Literal["loop", "thread", "only"]

# How long ingest trusts that a gateway is registered before asking the database again.
KNOWN_GATEWAY_TTL_S = 30.0
# Access pushes (births, resets) running at once; more wait their turn.
MAX_CONCURRENT_PUSHES = 4
PUSH_ATTEMPTS = 5


@dataclass(slots=True)
class _Outcome:
    acked: list[_Message]
    refused: list[_Message]
    stored: StoreResult
    batches: list[IncomingBatch]  # what was stored (for the digest)
    seen: dict[str, Seen] = field(default_factory=dict)  # not yet recorded when deferred


class Ingest:
    """The ingest worker. ``await run()`` until ``stop()``; usable on its own (``gatehouse cloud
    ingest``) or inside ``serve``, on the same event loop as the API.
    ``password`` overrides the configured broker password (default: ``mqtt_password(config)``),
    ``confirm_every_s`` the period of the access confirmations (``access.confirm_every_s``)."""

    def __init__(
        self,
        config: CloudConfig,
        sessions: SessionFactory,
        *,
        password: str | None = None,
        queue_messages: int = DEFAULT_QUEUE_MESSAGES,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        alarms: AlarmPlacement | None = None,
        confirm_every_s: float | None = None,
        notify_wake: Callable[[], None] | None = None,
        _ack_link: MqttLink | None = None,
    ) -> None:
        self._sessions = sessions
        # The database these sessions are bound to (normally the config's; a test's may differ):
        # it decides the backend's tactics, and the alarms thread opens its own engine on it.
        bind = sessions.kw.get("bind")
        self._database_url = (
            bind.url.render_as_string(hide_password=False) if bind is not None else database_url(config)
        )
        sqlite = is_sqlite(self._database_url)
        # PostgreSQL: alarms on their own thread, loop and connection (see _AlarmThread). SQLite
        # has one writer whatever the threads do; there the loop's urgent-first write gate is
        # what lets an alarm in between two batches.
        self._alarms_at: AlarmPlacement = alarms or ("loop" if sqlite else "thread")
        self._max_batch_events = config.ingest.max_batch_events or (2000 if sqlite else 5000)
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._events: asyncio.Queue[Inbound | None] = asyncio.Queue(queue_messages)
        self._alarms: asyncio.Queue[Inbound | None] = asyncio.Queue(queue_messages)
        self._control: asyncio.Queue[Inbound | None] = asyncio.Queue(queue_messages)
        # Events decoded ahead, while the consumer waits on the database: decoding (CPU, on the
        # loop) and storing (the database's work) overlap instead of taking turns.
        self._decoded: asyncio.Queue[Inbound | _Message | None] = asyncio.Queue(8)
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()  # bookkeeping after acks
        self._unrecorded: dict[str, Seen] = {}  # alarms' last-seen bookkeeping, not yet written
        self._gate = WriteGate(enabled=sqlite)
        # Latest values, hourly counts, inventories: flushed by a task of its own, through the gate.
        self._digest = Digest(sessions, hold=self._gate.hold)
        # Alerts from what was stored (cloud/alerts/engine.py); ``notify_wake`` tells the
        # notifications dispatcher there is something to send (it must be safe to call from any
        # thread: the PostgreSQL alarms worker runs its own engine on its own loop).
        self._notify_wake = notify_wake
        self._alert_engine = (
            AlertEngine(sessions, config.alerts, hold=self._gate.hold, wake=notify_wake)
            if config.alerts.enabled
            else None
        )
        # PostgreSQL stores one transaction while ingest prepares the next: two consumers keep
        # both busy (measured: alone, each waited on the other and the drain ran at one core's
        # pace). SQLite has one writer: one consumer.
        self._consumers = 1 if sqlite else 2
        self._known_until: dict[str, float] = {}  # gateway id -> monotonic time to ask again
        self._pushes: set[asyncio.Task[None]] = set()
        self._push_slots = asyncio.Semaphore(MAX_CONCURRENT_PUSHES)
        self._outage_since: float | None = None
        self._last_drop_log = 0.0

        mqtt = config.mqtt
        settings = LinkSettings(
            address=broker_address(config),
            client_id=mqtt.client_id,
            username=mqtt.username,
            password=password if password is not None else mqtt_password(config),
            ca_file=mqtt.ca_file,
        )
        if _ack_link is not None:
            # The alarms-only worker of _AlarmThread: it publishes its acks through the main
            # session (paho's publish is thread-safe), as the gateways expect them there.
            self._main = _ack_link
        else:
            self._main = MqttLink(
                "ingest",
                settings,
                [
                    *self._filters(Channel.EVENTS, mqtt.share_group),
                    *self._filters(Channel.STATE),
                    *self._filters(Channel.CMD_RESULT),
                ],
                self._route_main,
            )
        # The periodic "you are current" to the connected gateways (cloud/access/confirm.py),
        # sent on the main link, as the pushes are.
        self._confirmer = AccessConfirmer(
            sessions,
            self._main,
            every_s=confirm_every_s or config.access.confirm_every_s,
            hold=self._gate.hold,
        )
        self._config = config
        self._password = settings.password
        self._alarm_thread: _AlarmThread | None = None
        alarm_settings = LinkSettings(
            settings.address,
            f"{mqtt.client_id}-alarms",
            settings.username,
            settings.password,
            settings.ca_file,
        )
        self._alarm_link = MqttLink(
            "ingest-alarms",
            alarm_settings,
            self._filters(Channel.ALARMS, mqtt.share_group),
            self._route_alarm,
        )

    @staticmethod
    def _filters(channel: Channel, share_group: str = "") -> list[str]:
        # Events and alarms are shared among the workers of a group; state and command results
        # are not: every worker keeps the gateway rows (the same update twice does no harm), and
        # retained state messages are not delivered to shared subscriptions.
        return [subscription(channel, share_group or None)]

    async def wait_ready(self) -> None:
        """Until both sessions are connected and subscribed."""
        if self._alarms_at != "only":
            await self._main.subscribed.wait()
        if self._alarm_thread is not None:
            await asyncio.to_thread(self._alarm_thread.ready.wait)
        else:
            await self._alarm_link.subscribed.wait()

    def stop(self) -> None:
        """Ask ``run`` to finish: the transaction in progress completes (and is acked), the rest
        stays unacked for the gateways to resend. Call from the event loop's thread."""
        self._stopping.set()
        self._digest.stop()
        if self._alert_engine is not None:
            self._alert_engine.stop()
        if self._alarm_thread is not None:
            self._alarm_thread.stop()
        for queue, waiting in (
            (self._events, 1),
            (self._alarms, 1),
            (self._control, 1),
            (self._decoded, self._consumers),
        ):
            for _ in range(waiting):
                try:
                    queue.put_nowait(None)  # wake a consumer waiting on an empty queue
                except asyncio.QueueFull:
                    break  # a full queue's consumers are not waiting, and see the flag next round

    async def run(self) -> None:
        if self._alarms_at == "only":
            await self._run_alarms_only()
            return
        self._main.start()
        if self._alarms_at == "thread":
            self._alarm_thread = _AlarmThread(
                self._config, self._database_url, self._password, self._main, self._notify_wake
            )
            self._alarm_thread.start()
        else:
            self._alarm_link.start()
        alerts = self._start_alerts()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._decode_events(), name="ingest-decode")
                for n in range(self._consumers):
                    tasks.create_task(
                        self._consume_batches(self._decoded, group=True), name=f"ingest-events-{n}"
                    )
                if self._alarm_thread is not None:
                    tasks.create_task(self._watch_alarm_thread(self._alarm_thread), name="ingest-alarms")
                else:
                    tasks.create_task(
                        self._consume_batches(self._alarms, group=True, urgent=True), name="ingest-alarms"
                    )
                tasks.create_task(self._consume_control(), name="ingest-control")
                tasks.create_task(self._digest.run(), name="ingest-digest")
                tasks.create_task(self._confirmer.run(self._stopping), name="ingest-access-confirm")
        finally:
            self._digest.stop()
            await self._digest.close()  # after the consumers' last commits
            await self._stop_alerts(alerts)
            for push in list(self._pushes):
                push.cancel()  # the gateway gets what it lacks at its next birth
            await asyncio.gather(*self._pushes, return_exceptions=True)
            if self._alarm_thread is not None:
                self._alarm_thread.stop()
                await asyncio.to_thread(self._alarm_thread.join)
            await asyncio.gather(
                self._main.stop(), *(() if self._alarm_thread is not None else (self._alarm_link.stop(),))
            )

    async def _run_alarms_only(self) -> None:
        self._alarm_link.start()
        digest = asyncio.create_task(self._digest.run(), name="ingest-alarms-digest")
        alerts = self._start_alerts()
        try:
            # Alarms that arrived while the last one was being stored go in together: one
            # transaction for a burst, rather than a queue of them each waiting for the last.
            await self._consume_batches(self._alarms, group=True, urgent=True)
        finally:
            self._digest.stop()
            await asyncio.gather(digest, return_exceptions=True)
            await self._digest.close()
            await self._stop_alerts(alerts)
            await self._alarm_link.stop()

    def _start_alerts(self) -> asyncio.Task[None] | None:
        if self._alert_engine is None:
            return None
        return asyncio.create_task(self._alert_engine.run(), name="ingest-alerts")

    async def _stop_alerts(self, task: asyncio.Task[None] | None) -> None:
        """After the consumers' last commits: the engine takes what they stored, then ends."""
        if task is None or self._alert_engine is None:
            return
        self._alert_engine.stop()
        try:
            await task
        except Exception:
            log.exception("ingest: the alert engine failed")

    async def _watch_alarm_thread(self, thread: _AlarmThread) -> None:
        await asyncio.to_thread(thread.join)
        if not self._stopping.is_set():
            # Alarms must never go unread while events flow: end ingest, and with it the
            # process, so that its supervisor restarts the whole of it.
            raise RuntimeError(f"the alarms worker ended: {thread.failure!r}")

    # -- on the loop, fed by paho's threads

    def _route_main(self, inbound: Inbound) -> None:
        queue = self._events if inbound.topic.endswith("/" + Channel.EVENTS.value) else self._control
        self._offer(queue, inbound)

    def _route_alarm(self, inbound: Inbound) -> None:
        self._offer(self._alarms, inbound)

    def _offer(self, queue: asyncio.Queue[Inbound | None], inbound: Inbound) -> None:
        try:
            queue.put_nowait(inbound)
        except asyncio.QueueFull:
            metrics.DROPPED.inc()
            now = time.monotonic()
            if now - self._last_drop_log > 10:
                self._last_drop_log = now
                log.warning(
                    "ingest queue full: dropping %s (unacked events are resent by their gateway; "
                    "see gatehouse_ingest_dropped)",
                    inbound.topic,
                )

    # -- events and alarms

    async def _decode_events(self) -> None:
        while not self._stopping.is_set():
            inbound = await self._events.get()
            if inbound is None:
                break
            await self._decoded.put(self._parse(inbound))
            await asyncio.sleep(0)  # one decode at a time: the alarm task gets in between

    async def _consume_batches(
        self,
        queue: asyncio.Queue[Inbound | None] | asyncio.Queue[Inbound | _Message | None],
        *,
        group: bool,
        urgent: bool = False,
    ) -> None:
        carry: _Message | None = None
        while not self._stopping.is_set():
            if carry is not None:
                first, carry = carry, None
            else:
                item = await queue.get()
                if item is None or self._stopping.is_set():
                    return
                first = item if isinstance(item, _Message) else self._parse(item)
            messages = [first]
            size = first.event_count
            while group and not queue.empty():
                # Decoding a batch takes milliseconds of CPU: let the alarm task in between.
                await asyncio.sleep(0)
                if queue.empty():
                    break
                item = queue.get_nowait()
                if item is None:
                    break
                message = item if isinstance(item, _Message) else self._parse(item)
                if size + message.event_count > self._max_batch_events:
                    carry = message
                    break
                messages.append(message)
                size += message.event_count
            try:
                await self._settle(messages, urgent=urgent)
            except Exception:
                # A bug must not end ingest: log it; the messages stay unacked and are resent.
                log.exception("ingest: failed on %s", ", ".join(m.inbound.topic for m in messages))

    def _parse(self, inbound: Inbound) -> _Message:
        channel = "alarms" if inbound.topic.endswith("/alarms") else "events"
        metrics.MESSAGES.labels(channel).inc()
        message = _Message(inbound)
        try:
            message.gateway_id, _ = parse_topic(inbound.topic)
        except ProtocolError as e:
            message.refuse(RejectReason.BAD_TOPIC, str(e))
            return message
        try:
            batch = decode(inbound.payload, EventBatch)
        except ProtocolError as e:
            message.refuse(RejectReason.MALFORMED, str(e))
            salvaged = salvage_ranges(inbound.payload)
            if salvaged is not None:
                message.store_id, message.seqs = salvaged
            return message
        message.batch = batch
        message.store_id = batch.store_id
        message.seqs = [e.seq for e in batch.events]
        if batch.gateway_id != message.gateway_id:
            message.refuse(
                RejectReason.GATEWAY_MISMATCH,
                f"the envelope names gateway {batch.gateway_id!r}, the topic {message.gateway_id!r}",
            )
        return message

    async def _settle(self, messages: list[_Message], *, urgent: bool = False) -> None:
        """Store ``messages`` in one transaction and answer each; retries through database outages."""
        attempt = 0
        while True:
            try:
                outcome = await self._store(messages, defer_seen=urgent)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if is_transient(e):
                    if not await self._wait_out_outage(e, attempt):
                        return  # stopping: nothing acked, the gateways resend
                    attempt += 1
                    continue
                if len(messages) > 1:
                    # One of them carries what the database refuses: find it by storing each alone.
                    for message in messages:
                        await self._settle([message], urgent=urgent)
                    return
                message = messages[0]
                if message.problem is not None:
                    # Even the reject record failed: log and move on rather than loop.
                    log.exception("ingest: cannot record the reject of %s", message.inbound.topic)
                    return
                message.refuse(RejectReason.UNSTORABLE, f"the database refused it: {_one_line(e)}")
                continue
            self._database_back()
            self._answer(outcome)
            if urgent:
                now = datetime.now(UTC)
                for m in messages:
                    metrics.ALARM_SECONDS.observe((now - m.inbound.received_time).total_seconds())
            try:
                self._digest.take(outcome.batches, outcome.stored.new_by_gateway)
            except Exception:
                # Derived figures: a bug there must never cost an ack or stop ingest.
                log.exception("ingest: the digest failed on a batch")
            if self._alert_engine is not None:
                try:
                    self._alert_engine.take(outcome.batches)
                except Exception:
                    log.exception("ingest: the alert engine failed on a batch (its catch-up takes it)")
            if outcome.seen:
                # After the ack: an alarm's commit must not wait on the gateway row that the
                # events worker's transaction holds; the bookkeeping can. It is merged, so a run
                # of alarms costs one update while the previous one is still in progress, not one
                # transaction each.
                for gateway_id, seen in outcome.seen.items():
                    had = self._unrecorded.get(gateway_id)
                    self._unrecorded[gateway_id] = (
                        seen if had is None else Seen(max(had.at, seen.at), had.new_events + seen.new_events)
                    )
                if not self._background:
                    task = asyncio.create_task(self._record_unrecorded(), name="ingest-seen")
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
            return

    async def _record_unrecorded(self) -> None:
        while self._unrecorded:
            seen, self._unrecorded = self._unrecorded, {}
            await self._record_seen(seen)

    async def _registered(self, session: AsyncSession, gateway_ids: set[str]) -> set[str]:
        """Registered gateways among ``gateway_ids``. A "yes" is remembered for a while, so the hot
        path (and an alarm's) skips a query; a "no" is asked again every time, so a gateway
        registered a moment ago is taken at once."""
        now = time.monotonic()
        known = {g for g in gateway_ids if self._known_until.get(g, 0.0) > now}
        ask = gateway_ids - known
        if ask:
            found = await registered(session, ask)
            for g in found:
                self._known_until[g] = now + KNOWN_GATEWAY_TTL_S
            known |= found
        return known

    async def _record_seen(self, seen: dict[str, Seen]) -> None:
        for attempt in range(5):
            try:
                async with self._gate.hold(), self._sessions() as session, session.begin():
                    await mark_seen(session, seen)
                return
            except Exception as e:
                if not is_transient(e):
                    log.exception("ingest: cannot record last-seen for %s", ", ".join(seen))
                    return
                await asyncio.sleep(0.2 * 2**attempt)
        log.warning("ingest: gave up recording last-seen for %s (database unavailable)", ", ".join(seen))

    async def _store(self, messages: list[_Message], *, defer_seen: bool = False) -> _Outcome:
        started = time.perf_counter()
        async with self._gate.hold(urgent=defer_seen), self._sessions() as session, session.begin():
            candidates = [m for m in messages if m.problem is None]
            known = await self._registered(session, {m.gateway_id for m in candidates if m.gateway_id})
            acked: list[_Message] = []
            refused = [m for m in messages if m.problem is not None]
            for m in candidates:
                if m.gateway_id in known:
                    acked.append(m)
                else:
                    # Decided afresh on each attempt: the gateway may be registered meanwhile.
                    unknown = _Message(m.inbound, m.gateway_id, m.batch, store_id=m.store_id, seqs=m.seqs)
                    unknown.refuse(
                        RejectReason.UNKNOWN_GATEWAY, f"gateway {m.gateway_id!r} is not registered"
                    )
                    refused.append(unknown)
            batches = [
                IncomingBatch(m.gateway_id, m.batch.store_id, m.inbound.received_time, m.batch.events)
                for m in acked
                if m.batch is not None and m.gateway_id is not None
            ]
            stored = await store_batches(session, batches)
            seen: dict[str, Seen] = {}
            for b in batches:
                last = seen.get(b.gateway_id)
                at = b.received_time if last is None else max(last.at, b.received_time)
                seen[b.gateway_id] = Seen(at, stored.new_by_gateway.get(b.gateway_id, 0))
            if not defer_seen:
                await mark_seen(session, seen)
            for m in refused:
                record_reject(
                    session,
                    at=m.inbound.received_time,
                    topic=m.inbound.topic,
                    reason=f"{m.problem}: {m.detail}"[:MAX_REASON_LENGTH],
                    gateway_id=m.gateway_id,
                    store_id=m.store_id,
                    ranges=to_ranges(m.seqs) if m.seqs else None,
                )
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        return _Outcome(acked, refused, stored, batches, seen if defer_seen else {})

    def _answer(self, outcome: _Outcome) -> None:
        metrics.EVENTS.inc(outcome.stored.new)
        metrics.DUPLICATES.inc(outcome.stored.duplicates)
        for m in outcome.acked:
            assert m.batch is not None and m.gateway_id is not None
            for ranges in _chunks(to_ranges(m.seqs)):
                self._reply(m, Ack(store_id=m.batch.store_id, ranges=ranges))
        for m in outcome.refused:
            assert m.problem is not None
            metrics.REJECTS.labels(m.problem.value).inc()
            log.warning("ingest: refused %s: %s: %s", m.inbound.topic, m.problem.value, m.detail)
            if m.gateway_id is None or m.store_id is None or not m.seqs:
                metrics.UNANSWERED_REJECTS.inc()
                log.warning("ingest: no reject sent for %s: it names no store id or seq", m.inbound.topic)
                continue
            reason = f"{m.problem.value}: {m.detail}"[:MAX_REASON_LENGTH]
            for ranges in _chunks(to_ranges(m.seqs)):
                try:
                    reject = Reject(store_id=m.store_id, ranges=ranges, reason=reason)
                except ValueError:
                    metrics.UNANSWERED_REJECTS.inc()
                    log.warning("ingest: no reject sent for %s: its store id is not valid", m.inbound.topic)
                    break
                self._reply(m, reject)

    def _reply(self, m: _Message, message: Ack | Reject) -> None:
        assert m.gateway_id is not None
        try:
            payload = encode(message)
        except MessageTooLarge:  # pragma: no cover - RANGES_PER_MESSAGE keeps it far below the limit
            log.error("ingest: %s for %s does not fit one message", message.type, m.inbound.topic)
            return
        self._main.publish(topic(m.gateway_id, Channel.ACK), payload)
        metrics.ACKS.labels(message.type).inc()

    # -- state and command results

    async def _consume_control(self) -> None:
        while not self._stopping.is_set():
            inbound = await self._control.get()
            if inbound is None or self._stopping.is_set():
                return
            try:
                gateway_id, channel = parse_topic(inbound.topic)
            except ProtocolError as e:
                metrics.REJECTS.labels(RejectReason.BAD_TOPIC.value).inc()
                log.warning("ingest: ignored %s: %s", inbound.topic, e)
                continue
            metrics.MESSAGES.labels(channel.value).inc()
            if not inbound.payload:
                continue  # someone cleared a retained message: nothing to record
            try:
                if channel is Channel.STATE:
                    await self._take_state(gateway_id, inbound)
                elif channel is Channel.CMD_RESULT:
                    await self._take_command_result(gateway_id, inbound)
            except Exception:
                log.exception("ingest: failed on %s", inbound.topic)

    async def _take_state(self, gateway_id: str, inbound: Inbound) -> None:
        try:
            state = decode(inbound.payload, GatewayState)
        except ProtocolError as e:
            metrics.REJECTS.labels(RejectReason.MALFORMED.value).inc()
            log.warning("ingest: ignored state on %s: %s", inbound.topic, e)
            return
        if state.gateway_id != gateway_id:
            metrics.REJECTS.labels(RejectReason.GATEWAY_MISMATCH.value).inc()
            log.warning("ingest: ignored state on %s: it names gateway %r", inbound.topic, state.gateway_id)
            return
        attempt = 0
        while True:
            try:
                async with self._gate.hold(), self._sessions() as session, session.begin():
                    applied = await apply_state(session, gateway_id, state)
                    online = await count_online(session)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if is_transient(e):
                    if not await self._wait_out_outage(e, attempt):
                        return
                    attempt += 1
                    continue
                log.exception("ingest: cannot record the state of %s", gateway_id)
                return
            break
        self._database_back()
        metrics.GATEWAYS_ONLINE.set(online)
        if not applied.known:
            metrics.REJECTS.labels(RejectReason.UNKNOWN_GATEWAY.value).inc()
            log.warning("ingest: ignored state of unregistered gateway %r", gateway_id)
            return
        log.info("gateway %s is %s", gateway_id, "online" if state.online else "offline")
        if self._alert_engine is not None:
            self._alert_engine.gateway_changed(gateway_id)
        if not state.online:
            return
        version = state.access_version
        if applied.birth:
            self._push(
                f"the access data of {gateway_id} (at version {version})",
                lambda: push_on_birth(self._sessions, self._main, gateway_id, version, hold=self._gate.hold),
            )
        else:
            self._push(
                f"the access data {gateway_id} lacks (at version {version})",
                lambda: push_if_behind(self._sessions, self._main, gateway_id, version, hold=self._gate.hold),
            )

    async def _take_command_result(self, gateway_id: str, inbound: Inbound) -> None:
        try:
            result = decode(inbound.payload, CommandResult)
        except ProtocolError as e:
            metrics.REJECTS.labels(RejectReason.MALFORMED.value).inc()
            log.warning("ingest: ignored command result on %s: %s", inbound.topic, e)
            return
        attempt = 0
        while True:
            try:
                async with self._gate.hold(), self._sessions() as session, session.begin():
                    command = await record_result(session, gateway_id, result, inbound.received_time)
                    have = None if command is None else await note_sync_result(session, command, result)
                    name = command.name if command is not None else ""
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if is_transient(e):
                    if not await self._wait_out_outage(e, attempt):
                        return
                    attempt += 1
                    continue
                log.exception("ingest: cannot record the result of command %s of %s", result.id, gateway_id)
                return
            break
        self._database_back()
        if command is None:
            log.warning(
                "ingest: ignored a result from %s for command %r, which it was not sent",
                gateway_id,
                result.id,
            )
            return
        log.info("gateway %s: command %s %s: %s %s", gateway_id, result.id, name, result.code, result.detail)
        if have is not None:
            self._push(
                f"the access data of {gateway_id} after a version mismatch (it has {have})",
                lambda: push_after_mismatch(
                    self._sessions, self._main, gateway_id, have, hold=self._gate.hold
                ),
            )

    def _push(self, what: str, push: Callable[[], Awaitable[object]]) -> None:
        """Run an access push beside the control path: retried through database outages a few
        times, then left to the gateway's next birth."""

        async def run() -> None:
            async with self._push_slots:
                for attempt in range(PUSH_ATTEMPTS):
                    try:
                        await push()
                        return
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        if not is_transient(e):
                            log.exception("ingest: cannot send %s", what)
                            return
                        await asyncio.sleep(min(self._retry_initial_s * 2**attempt, self._retry_max_s))
                log.warning("ingest: gave up sending %s (database unavailable)", what)

        task = asyncio.create_task(run(), name="ingest-push")
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    # -- database outages

    async def _wait_out_outage(self, error: BaseException, attempt: int) -> bool:
        """Count and (once per outage) log ``error``, then wait before the next attempt.
        False if ingest is stopping meanwhile."""
        metrics.DB_ERRORS.inc()
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.error(
                "ingest: database unavailable (%s); nothing is acked until it is back, retrying",
                _one_line(error),
            )
        delay = min(self._retry_initial_s * 2**attempt, self._retry_max_s)
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return True
        return False

    def _database_back(self) -> None:
        if self._outage_since is not None:
            log.info("ingest: database back after %.1f s; carrying on", time.monotonic() - self._outage_since)
            self._outage_since = None


class _AlarmThread:
    """The alarms subscription on a thread of its own, with its own event loop and database
    connection: an alarm's decode, insert and commit never wait for the main loop, which spends
    milliseconds at a time decoding batches and copying them into PostgreSQL. The interpreter's
    short switch interval (server._short_gil_slices) lets this thread in within half a
    millisecond of an alarm's arrival."""

    def __init__(
        self,
        config: CloudConfig,
        database_url: str,
        password: str,
        ack_link: MqttLink,
        notify_wake: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._notify_wake = notify_wake
        self._database_url = database_url
        self._password = password
        self._ack_link = ack_link
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: Ingest | None = None
        self._stop_requested = threading.Event()
        self.ready = threading.Event()  # subscribed once
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ingest-alarms", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def stop(self) -> None:
        self._stop_requested.set()
        loop, worker = self._loop, self._worker
        if loop is not None and worker is not None:
            try:
                loop.call_soon_threadsafe(worker.stop)
            except RuntimeError:  # its loop already closed: the thread is ending anyway
                pass

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:
            self.failure = e
            log.exception("ingest: the alarms worker failed")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        engine = create_engine(self._database_url, command_timeout_s=self._config.database.command_timeout_s)
        try:
            worker = Ingest(
                self._config,
                session_factory(engine),
                password=self._password,
                alarms="only",
                notify_wake=self._notify_wake,
                _ack_link=self._ack_link,
            )
            self._worker = worker
            if self._stop_requested.is_set():
                worker.stop()
            ready = asyncio.create_task(self._signal_ready(worker))
            try:
                await worker.run()
            finally:
                ready.cancel()
        finally:
            await engine.dispose()

    async def _signal_ready(self, worker: Ingest) -> None:
        await worker._alarm_link.subscribed.wait()
        self.ready.set()


def _chunks(ranges: Ranges) -> list[Ranges]:
    return [ranges[i : i + RANGES_PER_MESSAGE] for i in range(0, len(ranges), RANGES_PER_MESSAGE)]


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
