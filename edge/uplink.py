"""The uplink: sends the outbox to the cloud over MQTT and deletes only what the cloud acknowledged.

- Lanes in priority order. Life-safety events go out at once on the ``alarms`` channel, alone and
  outside the window, so an alarm never waits behind a backlog.
- Security and telemetry go in batches on ``events``: by size (``batch_max_events``, and never over
  one message's 128 KiB) and by age (with batches in flight, a small batch waits up to
  ``batch_max_age_ms`` to fill; with none in flight it goes at once).
- A window of batches in flight; a batch not acknowledged within ``ack_timeout_s`` is sent again.
  A broker's PUBACK is not an acknowledgement: only the cloud's ``ack`` after its commit is.
- After every (re)connect all unacknowledged events are sent again from the start of each lane:
  the cloud stores each ``(store_id, seq)`` once, so a resend costs bandwidth, never a duplicate.
- Retained birth on ``state``; the MQTT will is the death.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edge.config import GatewayConfig
from edge.mqtt import LinkSettings, MqttLink
from edge.outbox import Outbox, StoredEvent
from protocols.envelope import (
    Ack,
    Command,
    CommandResult,
    GatewayState,
    MessageTooLarge,
    Reject,
    decode,
    encode,
    encode_batch,
)
from protocols.errors import ProtocolError
from protocols.events import Lane
from protocols.ranges import Ranges
from protocols.topics import Channel, topic

log = logging.getLogger(__name__)


class CommandRunner(Protocol):
    async def execute(self, cmd: Command) -> CommandResult: ...


@dataclass
class InFlight:
    lane: int
    first: int
    last: int
    unacked: set[int]
    sent_at: float
    channel: Channel
    sends: int = 1


@dataclass
class UplinkCounters:
    batches_sent: int = 0
    events_sent: int = 0
    alarms_sent: int = 0
    resends: int = 0
    acks: int = 0
    rejects: int = 0
    bad_downlink: int = 0
    commands: int = 0


class Uplink:
    def __init__(
        self,
        cfg: GatewayConfig,
        outbox: Outbox,
        *,
        version: str,
        rng: random.Random | None = None,
        commands: CommandRunner | None = None,
        access_version: Callable[[], int] = lambda: 0,
    ) -> None:
        self.cfg = cfg
        self.commands = commands
        self.access_version = access_version
        self._command_tasks: set[asyncio.Task[None]] = set()
        self.outbox = outbox
        self.version = version
        self.gateway_id = cfg.gateway_id
        m = cfg.mqtt
        self.link = MqttLink(
            LinkSettings(
                host=m.host,
                port=m.port,
                client_id=cfg.mqtt_client_id,
                username=cfg.mqtt_username,
                password=m.password,
                tls=m.tls,
                ca_file=m.ca_file,
                keepalive_s=m.keepalive_s,
                reconnect_min_s=cfg.uplink.reconnect_min_s,
                reconnect_max_s=cfg.uplink.reconnect_max_s,
                max_inflight=cfg.uplink.window + 32,
            ),
            on_message=self._on_message,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            will=(topic(self.gateway_id, Channel.STATE), encode(self._state(online=False)), True),
            rng=rng,
        )
        self.counters = UplinkCounters()
        self._inflight: dict[int, InFlight] = {}
        self._next_batch_id = 0
        self._cursor: dict[int, int] = {int(lane): 0 for lane in Lane}
        self._wake = asyncio.Event()
        self._downlink: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._holding_since: float | None = None
        self._synced_in_birth: bool | None = None

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.link.run(), name="uplink-link")
            tg.create_task(self._send_loop(), name="uplink-send")
            tg.create_task(self._alarm_loop(), name="uplink-alarms")
            tg.create_task(self._downlink_loop(), name="uplink-downlink")
            tg.create_task(self._clock_watch(), name="uplink-clock")

    async def close(self) -> None:
        """Say goodbye properly: a retained offline state, then a clean disconnect."""
        await self.outbox.set_meta({"uplink_connected": "0", "uplink_error": "gateway stopped"})
        await self.link.close(
            final=(topic(self.gateway_id, Channel.STATE), encode(self._state(online=False)), True)
        )

    def _state(self, online: bool) -> GatewayState:
        synced = self.outbox.clock.synced()
        self._synced_in_birth = synced
        return GatewayState(
            gateway_id=self.gateway_id,
            online=online,
            version=self.version,
            config_version=self.cfg.config_version,
            boot_id=self.outbox.clock.boot_id,
            clock_synced=synced,
            store_id=self.outbox.store_id,
            time_ms=self.outbox.clock.now_ms(),
            access_version=self.access_version(),
        )

    def announce(self) -> None:
        """Publish the birth again (after a config change: it carries the config version)."""
        if self.link.connected.is_set():
            self.link.publish(
                topic(self.gateway_id, Channel.STATE), encode(self._state(online=True)), retain=True
            )

    async def _on_connect(self) -> None:
        gw = self.gateway_id
        self.link.subscribe([topic(gw, Channel.ACK), topic(gw, Channel.CMD), topic(gw, Channel.CONFIG)])
        self.link.publish(topic(gw, Channel.STATE), encode(self._state(online=True)), retain=True)
        # Everything not acknowledged goes again, from the start of each lane.
        self._inflight.clear()
        self._cursor = {int(lane): 0 for lane in Lane}
        self._holding_since = None
        self._wake.set()
        self.outbox.new_alarm.set()
        await self.outbox.set_meta(
            {"uplink_connected": "1", "uplink_since_ms": str(self.outbox.clock.now_ms()), "uplink_error": ""}
        )

    async def _on_disconnect(self) -> None:
        await self.outbox.set_meta({"uplink_connected": "0", "uplink_error": self.link.last_error})

    async def _clock_watch(self) -> None:
        # A Pi that boots without network learns the time later: tell the cloud when it does.
        while True:
            await asyncio.sleep(15)
            if self.link.connected.is_set() and self.outbox.clock.synced() != self._synced_in_birth:
                self.link.publish(
                    topic(self.gateway_id, Channel.STATE), encode(self._state(online=True)), retain=True
                )
            if not self.link.connected.is_set():
                await self.outbox.set_meta({"uplink_connected": "0", "uplink_error": self.link.last_error})

    # ------------------------------------------------------------ sending

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def _window_used(self) -> int:
        return sum(1 for f in self._inflight.values() if f.channel is Channel.EVENTS)

    async def _send_loop(self) -> None:
        while True:
            if not self.link.connected.is_set():
                await self.link.connected.wait()
                continue
            # Clear before looking, so anything that arrives while we look wakes the next wait.
            self._wake.clear()
            self.outbox.new_events.clear()
            timeout = await self._send_some()
            if timeout == 0:
                continue
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._wake, self.outbox.new_events)]
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()

    async def _alarm_loop(self) -> None:
        """Life safety: at once, alone, outside the window, on its own task so that an alarm
        never waits for a batch to be read, encoded or sent."""
        while True:
            if not self.link.connected.is_set():
                await self.link.connected.wait()
                continue
            self.outbox.new_alarm.clear()  # before looking: an alarm committed meanwhile wakes us
            lane = Lane.LIFE_SAFETY
            alarms = await self.outbox.fetch(lane, self._cursor[lane], self.cfg.uplink.batch_max_events)
            if not alarms:
                await self.outbox.new_alarm.wait()
            elif not self._publish(lane, alarms, Channel.ALARMS):
                await self.link.connected.wait()  # went away mid-send: everything goes again on connect

    async def _send_some(self) -> float:
        """Send what may be sent now. Returns 0 to go again at once, else how long to wait at most."""
        now = time.monotonic()
        u = self.cfg.uplink
        # 1. Batches (and alarms) whose ack is overdue go again.
        for bid, f in list(self._inflight.items()):
            if now - f.sent_at >= u.ack_timeout_s:
                await self._resend(bid, f, now)
        # 2. Fill the window, security lane before telemetry.
        while self._window_used() < u.window:
            batch: list[StoredEvent] = []
            lane = Lane.SECURITY
            for lane in (Lane.SECURITY, Lane.TELEMETRY):
                batch = await self.outbox.fetch(lane, self._cursor[lane], u.batch_max_events)
                if batch:
                    break
            if not batch:
                self._holding_since = None
                break
            if len(batch) < u.batch_max_events and self._inflight:
                # Small batch while others are in flight: give it a moment to fill up.
                self._holding_since = self._holding_since or now
                left = self._holding_since + u.batch_max_age_ms / 1000 - now
                if left > 0:
                    return min(left, self._next_deadline(now))
            self._holding_since = None
            if not self._publish(lane, batch, Channel.EVENTS):
                return 1.0
        return self._next_deadline(now)

    def _next_deadline(self, now: float) -> float:
        if not self._inflight:
            return 5.0
        oldest = min(f.sent_at for f in self._inflight.values())
        return max(0.01, oldest + self.cfg.uplink.ack_timeout_s - now)

    def _publish(self, lane: int, events: list[StoredEvent], channel: Channel) -> bool:
        """Publish events as one or more messages; False when the link went away."""
        while events:
            try:
                payload = encode_batch(self.gateway_id, self.outbox.store_id, [e.body for e in events])
            except MessageTooLarge:
                if len(events) == 1:
                    # Cannot happen with events from our own encoder (far below 128 KiB), but a
                    # message that can never be sent must not block the lane forever.
                    log.error("event %d does not fit one message; skipping it", events[0].seq)
                    self._cursor[lane] = events[0].seq
                    return True
                events = events[: len(events) // 2]
                continue
            info = self.link.publish(topic(self.gateway_id, channel), payload)
            if info.rc != 0:
                return False
            bid = self._next_batch_id
            self._next_batch_id += 1
            self._inflight[bid] = InFlight(
                lane, events[0].seq, events[-1].seq, {e.seq for e in events}, time.monotonic(), channel
            )
            self._cursor[lane] = events[-1].seq
            self.counters.batches_sent += 1
            self.counters.events_sent += len(events)
            if channel is Channel.ALARMS:
                self.counters.alarms_sent += len(events)
            return True
        return True

    async def _resend(self, bid: int, f: InFlight, now: float) -> None:
        still = await self.outbox.fetch(f.lane, f.first - 1, len(f.unacked) + 1, upto=f.last)
        still = [e for e in still if e.seq in f.unacked]
        if not still:
            self._inflight.pop(bid, None)
            return
        payload = encode_batch(self.gateway_id, self.outbox.store_id, [e.body for e in still])
        if self.link.publish(topic(self.gateway_id, f.channel), payload).rc == 0:
            f.sent_at, f.sends = now, f.sends + 1
            self.counters.resends += 1
            log.info(
                "resent %d events (%d-%d): no ack within %.0fs",
                len(still),
                f.first,
                f.last,
                self.cfg.uplink.ack_timeout_s,
            )

    # ------------------------------------------------------------ downlink: acks, rejects, commands

    def _on_message(self, name: str, payload: bytes) -> None:
        self._downlink.put_nowait((name, payload))

    async def _downlink_loop(self) -> None:
        while True:
            items = [await self._downlink.get()]
            while not self._downlink.empty():
                items.append(self._downlink.get_nowait())
            # Acks that arrived together are applied in one outbox transaction: one fsync, and
            # the outbox lock is free again sooner for an alarm's commit.
            acks: list[Ack] = []
            for name, payload in items:
                try:
                    if name.rsplit("/", 1)[-1] == Channel.ACK and isinstance(msg := decode(payload), Ack):
                        acks.append(msg)
                        continue
                    await self._apply_acks(acks)
                    acks = []
                    await self._handle(name, payload)
                except ProtocolError as e:
                    self.counters.bad_downlink += 1
                    log.warning("bad message on %s: %s", name, e)
            await self._apply_acks(acks)

    async def _apply_acks(self, acks: list[Ack]) -> None:
        by_store: dict[str, Ranges] = {}
        for a in acks:
            by_store.setdefault(a.store_id, []).extend(a.ranges)
        for store_id, ranges in by_store.items():
            await self.outbox.ack(store_id, ranges)
            self._settle(store_id, ranges)
        self.counters.acks += len(acks)

    async def _handle(self, name: str, payload: bytes) -> None:
        channel = name.rsplit("/", 1)[-1]
        if channel == Channel.ACK:
            msg = decode(payload)
            if isinstance(msg, Reject):
                self.counters.rejects += 1
                await self.outbox.reject(msg.store_id, msg.ranges, msg.reason)
                self._settle(msg.store_id, msg.ranges)
            elif not isinstance(msg, Ack):
                raise ProtocolError(f"expected an ack or reject, got {type(msg).__name__}")
        elif channel == Channel.CMD:
            cmd = decode(payload, Command)
            self.counters.commands += 1
            if self.commands is None:
                self.link.publish(topic(self.gateway_id, Channel.CMD_RESULT), encode(self._run_command(cmd)))
                return
            # A command may take a while (a lock write, a config restart): acks must keep flowing.
            task = asyncio.create_task(self._command(cmd), name=f"command-{cmd.id}")
            self._command_tasks.add(task)
            task.add_done_callback(self._command_tasks.discard)
        elif channel == Channel.CONFIG:
            # Remote configuration arrives with the commands issue; until then say so plainly.
            log.info(
                "config push received (%d bytes); remote configuration is not supported yet", len(payload)
            )

    async def _command(self, cmd: Command) -> None:
        assert self.commands is not None
        try:
            result = await self.commands.execute(cmd)
        except Exception as e:  # never leave the cloud without an answer
            log.exception("command %s failed", cmd.id)
            result = CommandResult(
                id=cmd.id, ok=False, code="failed", detail=f"{type(e).__name__}: {e}"[:1000]
            )
        self.link.publish(topic(self.gateway_id, Channel.CMD_RESULT), encode(result))

    def _run_command(self, cmd: Command) -> CommandResult:
        if cmd.name == "ping":
            return CommandResult(id=cmd.id, ok=True, detail="pong")
        return CommandResult(
            id=cmd.id, ok=False, detail=f"command {cmd.name!r} is not supported by this gateway"
        )

    def _settle(self, store_id: str, ranges: Ranges) -> None:
        if store_id != self.outbox.store_id:
            return
        for bid, f in list(self._inflight.items()):
            for a, b in ranges:
                if b < f.first or a > f.last:
                    continue
                if a <= f.first and f.last <= b:
                    f.unacked.clear()
                else:
                    f.unacked.difference_update(range(max(a, f.first), min(b, f.last) + 1))
            if not f.unacked:
                del self._inflight[bid]
        self._wake.set()
