"""Local action: what the gateway decides and does by itself, with the cloud, the broker and the
network gone. The hub between the sensors' meanings and the outbox.

``LocalAction`` is an ``EventSink``: the drivers' events (after drivers/sensors.py gave them their
meanings) pass through it on their way into the outbox. Each event is first shown to the local
modules, synchronously and in this order: fire release (edge/fire.py), doors (edge/doors.py),
intrusion zones (edge/intrusion.py), equipment rules (edge/rules.py). A module changes its state
and returns the events that change produces; anything that needs I/O (a lock relay's write) is
done by the module's own tasks, woken at once, so a smoke alarm's release starts before the alarm
is even committed. Then the events and what they caused are stored together.

Cards come in through ``on_card`` (the readers' hook): a decision from the credential store
(edge/access.py), the strike, the reader's LED, and the decision as an event.

Commands from the cloud (edge/commands.py) reach the modules through ``handlers()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

from drivers.sensors import Meaning
from edge.access import AccessDecision, AccessRequest, ApplyOutcome, CredentialStore
from edge.clock import Clock
from edge.commands import Done, Handler, Refused
from edge.doors import Doors
from edge.fire import FireRelease
from edge.intrusion import ArmRefused, Intrusion
from edge.rules import EquipmentRules
from protocols.access import AccessDelta, Decision
from protocols.commands import DoorUnlock, FireReset, ResultCode, ZoneArgs, ZoneBypass
from protocols.envelope import Command
from protocols.events import NewEvent
from protocols.sink import EventSink

if TYPE_CHECKING:
    from drivers.readers.card import CardRead
    from edge.config import GatewayConfig
    from edge.fieldbus import FieldDriver

log = logging.getLogger(__name__)


class PointWriter:
    """Writes ``device/point`` through whichever field driver owns the device."""

    def __init__(self) -> None:
        self.drivers: dict[str, FieldDriver] = {}

    def bind(self, drivers: dict[str, FieldDriver]) -> None:
        self.drivers = drivers

    async def write(self, point: str, value: bool | int | float) -> None:
        device, _, name = point.partition("/")
        modbus: Any = self.drivers.get("modbus")
        if modbus is not None and device in modbus.devices:
            await modbus.write(point, value)
            return
        bacnet: Any = self.drivers.get("bacnet")
        if bacnet is not None and device in bacnet.sessions:
            await bacnet.write(device, name, value)
            return
        raise KeyError(f"no field device {device!r} to write {point} on")


SYNC_CODES = {
    "applied": ResultCode.DONE,
    "current": ResultCode.DONE,
    "pending": ResultCode.PENDING,
    "version_mismatch": ResultCode.VERSION_MISMATCH,
}


def sync_done(outcome: ApplyOutcome) -> Done:
    """The answer to an ``access.sync``: the store's version, and what became of the delta."""
    return Done(outcome.detail or outcome.code, {"version": outcome.version}, SYNC_CODES[outcome.code])


@dataclasses.dataclass(eq=False)
class _PinWait:
    read: CardRead
    req: AccessRequest
    door: str
    digits: str = ""


class LocalAction:
    def __init__(
        self,
        cfg: GatewayConfig,
        inner: EventSink,
        clock: Clock,
        store: CredentialStore,
        *,
        state_dir: Path | None,
        monotonic: Any = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.inner = inner
        self.clock = clock
        self.store = store
        self.tz = ZoneInfo(cfg.access.timezone)
        self.writer = PointWriter()
        self.doors = Doors(
            cfg.doors,
            self.writer.write,
            self._emit,
            local_time=self.local_time,
            holidays=store.holidays,
            monotonic=monotonic,
            trusted=clock.synced,
        )
        detectors = {c.name: c.zone for c in cfg.sensors if c.meaning in (Meaning.SMOKE, Meaning.FIRE_PANEL)}
        self.fire = FireRelease(self.doors, self._emit, cfg.fire, state_dir, detectors)
        self.intrusion = Intrusion(
            cfg.intrusion_zones,
            self._emit,
            state_dir=state_dir,
            monotonic=monotonic,
            wall=self.local_time,
            holidays=store.holidays,
        )
        self.rules = EquipmentRules(cfg.rules, self._emit, monotonic=monotonic)
        self._background: set[asyncio.Task[Any]] = set()
        self._reported: set[tuple[str, str, str]] = set()
        self._pins: dict[str, _PinWait] = {}  # reader -> the card waiting for its PIN
        self.decisions = 0

    def local_time(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now_ms() / 1000, self.tz)

    async def _emit(self, events: Sequence[NewEvent]) -> None:
        for e in events:
            if e.kind == "door.held_open":
                # The pre-alarm (and the alarm) sound at the door's readers: whoever holds it open
                # hears it before anyone is called.
                self._beep(str(e.data.get("door", "")))
        await self.inner.emit(events)

    def _beep(self, door: str) -> None:
        readers: Any = self.writer.drivers.get("readers")
        if readers is None:
            return
        for r in self.cfg.readers:
            if r.door == door:
                try:
                    indicate = readers.indicator(r.name)
                except KeyError:
                    continue
                self._spawn(indicate(False))

    # ------------------------------------------------------------ the event path

    async def emit(self, events: Sequence[NewEvent]) -> None:
        # Readings are nearly all of the traffic and matter only to the rules that watch their
        # point; the meanings (a handful a batch) go to every module.
        meanings = [e for e in events if e.kind != "telemetry.point"]
        derived: list[NewEvent] = []
        if meanings:
            derived = await self._meanings(meanings)
        if self.rules.points:
            for e in events:
                if e.kind == "telemetry.point" and e.source in self.rules.points:
                    derived.extend(self._guarded("rules", self.rules.handle, e))
        await self.inner.emit([*events, *derived] if derived else events)

    async def _meanings(self, meanings: list[NewEvent]) -> list[NewEvent]:
        derived: list[NewEvent] = []
        # Fire first, over the whole batch: nothing another module does (or fails to do) can
        # keep an alarm from releasing the doors.
        released = False
        for e in meanings:
            before = len(self.fire.released)
            derived.extend(self._guarded("fire release", self.fire.handle, e))
            released = released or len(self.fire.released) != before
        if released:
            # Let the lock tasks start their writes before anything else is done with the batch.
            await asyncio.sleep(0)
        # Exit requests before door contacts: a button pressed and the door opened within one
        # poll are no forced door, whatever order the points were listed in.
        meanings.sort(key=lambda e: e.kind != "door.exit_request")
        for e in meanings:
            derived.extend(self._guarded("doors", self.doors.handle, e))
            derived.extend(self._guarded("intrusion", self.intrusion.handle, e))
            derived.extend(self._guarded("rules", self.rules.handle, e))
        return derived

    def _guarded(
        self, part: str, handle: Callable[[NewEvent], list[NewEvent]], e: NewEvent
    ) -> list[NewEvent]:
        """A module's bug is reported (once per part and error), never passed on to the others."""
        try:
            return handle(e)
        except Exception as exc:
            key = (part, type(exc).__name__, str(exc)[:100])
            log.exception("local action: %s failed on %s from %s", part, e.kind, e.source)
            if key in self._reported:
                return []
            self._reported.add(key)
            data = {"fault": "local_action_error", "part": part, "detail": f"{e.kind}: {exc!r}"[:200]}
            return [NewEvent("device.fault", "gateway", data)]

    def startup_events(self) -> list[NewEvent]:
        return [*self.fire.startup_events(), *self.intrusion.startup_events()]

    async def run(self) -> None:
        # Each part on its own, restarted if it fails: a bug in an equipment rule must never stop
        # a door's lock from being driven. The locks first: doors released for a fire before a
        # restart are written released before anything else, the report of it after.
        parts: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            (f"door {d.name}", d.reconcile) for d in self.doors.doors.values()
        ]
        parts += [
            ("door timers", self.doors.timers),
            ("intrusion", self.intrusion.run),
            ("rules", self.rules.run),
            ("startup report", self._report_startup),
        ]
        async with asyncio.TaskGroup() as tg:
            for name, run in parts:
                tg.create_task(self._supervised(name, run), name=name)

    async def _report_startup(self) -> None:
        if events := self.startup_events():
            await self._emit(events)

    async def _supervised(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        delay = 0.1
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await run()
                return
            except Exception as e:
                if loop.time() - started > 60:
                    delay = 0.1  # it ran well for a while: this is a new failure, not the same one
                log.exception("local action: %s failed; restarting in %.1f s", name, delay)
                key = (name, type(e).__name__, str(e)[:100])
                if key not in self._reported:
                    self._reported.add(key)
                    data = {"fault": "local_action_error", "part": name, "detail": repr(e)[:200]}
                    with contextlib.suppress(Exception):
                        await self._emit([NewEvent("device.fault", "gateway", data)])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # ------------------------------------------------------------ cards

    async def on_card(self, read: CardRead) -> None:
        door = self.doors.doors.get(read.door)
        if door is None:
            return  # an enrolment desk reader, or a reader whose door is not ours to open
        c = door.cfg
        req = AccessRequest(
            card=read.card,
            facility=read.facility,
            door=door.name,
            reader=read.reader,
            direction="out" if read.reader in c.exit_readers else "in",
            area=c.area,
            antipassback=c.antipassback,
            keypad=c.keypad,
        )
        decision = self._decide(req)
        if decision.reason is Decision.PIN_REQUIRED:
            # The card is good and wants its PIN: wait for the keys (ended by "#") at this reader.
            wait = _PinWait(read, req, door.name)
            self._pins[read.reader] = wait
            self._spawn(self._pin_timeout(wait, c.pin_timeout_s))
            return
        await self._act(read, req, decision)

    def _decide(self, req: AccessRequest) -> AccessDecision:
        self.decisions += 1
        return self.store.decide(
            req,
            now_ms=self.clock.now_ms(),
            clock_synced=self.clock.synced(),
            stale_after_s=self.cfg.access.stale_after_s,
            tz=self.tz,
        )

    async def _act(self, read: CardRead, req: AccessRequest, decision: AccessDecision) -> None:
        door = self.doors.doors[req.door]
        events = [decision.event(req, time_ms=read.read_ms)]
        if decision.granted:
            door.pulse(door.cfg.strike_s)  # the reconciler writes the relay now
            if decision.first_person_in:
                events.extend(self.doors.first_person_in(door, decision.holder))
        self._spawn(read.indicate(decision.granted))
        await self.inner.emit(events)

    async def on_keys(self, reader: str, keys: str) -> None:
        """Keypad keys: digits collect, ``*`` starts again, ``#`` enters the PIN for the card
        presented last at that reader. Keys with no card waiting are ignored (and not kept)."""
        wait = self._pins.get(reader)
        if wait is None:
            return
        for k in keys:
            if k == "*":
                wait.digits = ""
            elif k == "#":
                del self._pins[reader]
                req = dataclasses.replace(wait.req, pin=wait.digits)
                await self._act(wait.read, req, self._decide(req))
                return
            elif k.isdigit() and len(wait.digits) < 12:
                wait.digits += k

    async def _pin_timeout(self, wait: _PinWait, after_s: float) -> None:
        await asyncio.sleep(after_s)
        if self._pins.get(wait.read.reader) is wait:
            del self._pins[wait.read.reader]
            await self._act(wait.read, wait.req, self._decide(wait.req))  # no PIN: pin_required

    def _spawn(self, aw: Any) -> None:
        task = asyncio.ensure_future(aw)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ commands

    # command -> the method that answers it
    COMMANDS: ClassVar[dict[str, str]] = {
        "ping": "_ping",
        "door.unlock": "_door_unlock",
        "intrusion.arm": "_arm",
        "intrusion.disarm": "_disarm",
        "intrusion.bypass": "_bypass",
        "fire.reset": "_fire_reset",
        "access.sync": "_access_sync",
    }

    def handlers(self) -> dict[str, Handler]:
        return {name: getattr(self, method) for name, method in self.COMMANDS.items()}

    async def _ping(self, args: Any, cmd: Command) -> Done:
        return Done("pong")

    async def _door_unlock(self, args: DoorUnlock, cmd: Command) -> Done:
        door = self.doors.doors.get(args.door)
        if door is None:
            raise Refused(ResultCode.BAD_ARGS, f"no door {args.door!r} on this gateway")
        if not door.cfg.remote_unlock:
            raise Refused(ResultCode.UNAUTHORISED, f"door {args.door} does not allow remote unlock")
        seconds = args.seconds or door.cfg.strike_s
        door.pulse(seconds, remote=True)
        await self._emit(
            [
                NewEvent(
                    "door.remote_unlock",
                    door.name,
                    {"door": door.name, "by": cmd.by, "command": cmd.id, "seconds": seconds},
                )
            ]
        )
        if not await door.confirmed(min(seconds, 3.0)):
            raise Refused(
                ResultCode.FAILED, f"door {door.name}: the lock did not confirm: {door.write_error}"
            )
        return Done(f"door {door.name} unlocked for {seconds:g} s", {"door": door.name, "seconds": seconds})

    async def _arm(self, args: ZoneArgs, cmd: Command) -> Done:
        try:
            events = self.intrusion.arm(args.zone, cmd.by)
        except ArmRefused as e:
            await self._emit([e.event])
            raise Refused(ResultCode.REFUSED, str(e)) from None
        except KeyError as e:
            raise Refused(ResultCode.BAD_ARGS, str(e)) from None
        await self._emit(events)
        return Done(f"zone {args.zone} arming", {"zone": args.zone})

    async def _disarm(self, args: ZoneArgs, cmd: Command) -> Done:
        try:
            events = self.intrusion.disarm(args.zone, cmd.by)
        except KeyError as e:
            raise Refused(ResultCode.BAD_ARGS, str(e)) from None
        await self._emit(events)
        return Done(f"zone {args.zone} disarmed", {"zone": args.zone})

    async def _bypass(self, args: ZoneBypass, cmd: Command) -> Done:
        try:
            events = self.intrusion.bypass(args.zone, args.sensor, args.bypass, cmd.by)
        except KeyError as e:
            raise Refused(ResultCode.BAD_ARGS, str(e)) from None
        await self._emit(events)
        word = "bypassed" if args.bypass else "back in service"
        return Done(f"{args.sensor} in zone {args.zone} {word}", {"zone": args.zone, "sensor": args.sensor})

    async def _fire_reset(self, args: FireReset, cmd: Command) -> Done:
        ok, detail = self.fire.reset(args.zone, cmd.by)
        if not ok:
            await self._emit(
                [NewEvent("fire.reset_refused", "fire-release", {"by": cmd.by, "detail": detail})]
            )
            raise Refused(ResultCode.REFUSED, detail)
        return Done(detail)

    async def _access_sync(self, args: AccessDelta, cmd: Command) -> Done:
        outcome = await self.store.apply(args, now_ms=self.clock.now_ms())
        if outcome.code == "applied":
            await self._emit(
                [
                    NewEvent(
                        "access.store_updated",
                        "access",
                        {"version": outcome.version, "base": args.base, "reset": args.reset, "by": cmd.by},
                    )
                ]
            )
        return sync_done(outcome)

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        now_ms = self.clock.now_ms()
        return {
            "doors": self.doors.status(),
            "fire": self.fire.status(),
            "intrusion": self.intrusion.status(),
            "rules": self.rules.status(),
            "access": {**self.store.stats(), "age_s": self.store.age_s(now_ms), "decisions": self.decisions},
        }
