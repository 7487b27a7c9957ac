"""Doors: what unlocks them, when an opening is an alarm, and the lock relay that obeys.

A door's lock is driven by one reconciler task. Every reason the door may be unlocked is a flag
on the door (fire release, a grant's strike time, a remote unlock, a scheduled unlock window, a
first-person-in unlock); the door is locked exactly when no reason holds, and the task writes the
lock point until the relay says what the flags say. Nothing else writes the lock, so a grant's
strike time ending can never lock a door that a fire released: the fire flag still holds, and only
a reset clears it (edge/fire.py). A relay that reads back the wrong state (a module that restarted
with its default output) is written again.

Supervision, from the door contact (a ``door_contact`` sensor) and the exit request button:

- ``door.forced``: the contact opens while the door is locked and no grant, exit request or remote
  unlock allowed it: an immediate alarm.
- ``door.held_open``: open longer than ``held_open_s``; ``state`` ``prealarm`` ``prealarm_s``
  before (the reader beeps), then ``alarm``.
- ``door.secured``: closed again after either alarm.

A door released for a fire, or unlocked by its schedule, is free: opening it is not an alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.schedules import is_open
from protocols.access import Interval
from protocols.events import NewEvent

log = logging.getLogger(__name__)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


Emit = Callable[[Sequence[NewEvent]], Awaitable[None]]
# Writes "device/point" through the field drivers; raises when the write is not confirmed.
PointWrite = Callable[[str, bool | int | float], Awaitable[None]]

_POINT = r"^[^/\s]+/[^/\s]+$"
_NAME = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class DoorConfig(BaseModel):
    """One ``[[doors]]`` table of the gateway config."""

    model_config = ConfigDict(extra="forbid")

    name: _NAME
    lock: Annotated[str, Field(pattern=_POINT)]  # the writable point that drives the lock
    locked_value: bool | int = True  # the value that locks (a fail-safe maglock: energised)
    contact: str = ""  # the door_contact sensor
    exit_request: str = ""  # the exit_request sensor
    exit_readers: list[str] = Field(default_factory=list)  # readers on the secure side (leaving)
    strike_s: Annotated[float, Field(gt=0, le=300)] = 5.0  # unlocked this long on a grant
    # A grant or exit request lets the door open without alarm until the strike time ends, plus
    # this long for the contact's reading to arrive.
    open_grace_s: Annotated[float, Field(ge=0, le=60)] = 1.5
    exit_grace_s: Annotated[float, Field(gt=0, le=120)] = 10.0  # after an exit request
    held_open_s: Annotated[float, Field(ge=0, le=3600)] = 30.0  # 0: never a held-open alarm
    prealarm_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    egress: bool = False  # released on a fire alarm (edge/fire.py)
    fire_zones: list[str] = Field(default_factory=list)  # [] = any fire alarm in the building
    remote_unlock: bool = True  # may the cloud unlock it (command door.unlock)
    unlock_schedule: list[Interval] = Field(default_factory=list)  # scheduled unlock windows
    # With a schedule: the window opens the door only once a credential marked first_person_in
    # has been granted in it (the first member of staff in), and then until the window ends.
    first_person_in: bool = False
    antipassback: Literal["off", "soft", "hard"] = "off"
    area: str = ""  # the anti-passback area this door leads into
    keypad: bool = False  # its readers have keypads: credentials with a PIN need it
    pin_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0  # to enter the PIN after the card
    camera: str = ""  # the camera that watches it (asked for a snapshot on an alarm)

    @model_validator(mode="after")
    def _fits(self) -> DoorConfig:
        if self.held_open_s and self.prealarm_s >= self.held_open_s:
            raise ValueError("prealarm_s must be shorter than held_open_s")
        if self.first_person_in and not self.unlock_schedule:
            raise ValueError("first_person_in needs an unlock_schedule (the window it opens)")
        if self.antipassback != "off" and not self.area:
            raise ValueError("anti-passback needs the area the door leads into (area = ...)")
        return self

    @property
    def unlocked_value(self) -> bool | int:
        v = self.locked_value
        return (not v) if isinstance(v, bool) else (0 if v else 1)


class Door:
    """One door's state. Handlers change flags and call ``changed()``; the reconciler writes."""

    def __init__(self, cfg: DoorConfig, write: PointWrite, emit: Emit, monotonic: Callable[[], float]):
        self.cfg = cfg
        self.name = cfg.name
        self._write = write
        self._emit = emit
        self._mono = monotonic
        # Reasons to be unlocked.
        self.fire_released = False
        self.pulse_until = 0.0  # a grant's strike time (ends early when the door closes)
        self.remote_until = 0.0  # a remote unlock (runs its full time)
        self.schedule_open = False
        self.fpi_open = False
        # What the door is doing.
        self.open: bool | None = None
        self.opened_at = 0.0
        self.alarm: str | None = None  # "forced" or "held_open" until closed
        self.prealarm_sent = False
        self.written: bool | None = None  # the locked state last confirmed written
        self.write_started_ms = 0  # wall clock, as the readings' times
        self.written_at = 0.0  # monotonic, when the last write was confirmed
        self.readback: bool | None = None  # the lock relay's last reading (locked?)
        self.mismatch = False  # the relay keeps reading other than written: reported
        # Wall clock, like the readings' times: a contact read open before this is no forced door.
        self.authorised_until_ms = 0
        self.was_free = False
        self.write_error = ""
        self.writes = 0
        self.wake = asyncio.Event()
        self._confirmed = asyncio.Event()

    # ------------------------------------------------------------ the lock

    def want_locked(self, now: float | None = None) -> bool:
        now = self._mono() if now is None else now
        return not (
            self.fire_released
            or now < self.pulse_until
            or now < self.remote_until
            or self.schedule_open
            or self.fpi_open
        )

    @property
    def free(self) -> bool:
        """Opening it now is no alarm: released for a fire or unlocked by its window."""
        return self.fire_released or self.schedule_open or self.fpi_open

    def changed(self) -> None:
        self._confirmed.clear()
        self.wake.set()

    def pulse(self, seconds: float, *, remote: bool = False) -> None:
        """Unlock for ``seconds``: a grant's strike (ends when the door closes) or a remote unlock."""
        now = self._mono()
        if remote:
            self.remote_until = max(self.remote_until, now + seconds)
        else:
            self.pulse_until = max(self.pulse_until, now + seconds)
        self._authorise(seconds + self.cfg.open_grace_s)
        self.changed()

    async def confirmed(self, within_s: float) -> bool:
        """Wait until the lock relay holds what the flags say (or ``within_s`` passed)."""
        if self.written == self.want_locked() and not self.wake.is_set():
            return True
        try:
            async with asyncio.timeout(within_s):
                await self._confirmed.wait()
        except TimeoutError:
            return False
        return True

    def lock_read(self, locked: bool, read_ms: int | None) -> None:
        """The lock relay's reading: if it disagrees with what we wrote, write again. A reading
        whose request went out before our last write began may show the old state: not news."""
        if read_ms is not None and read_ms <= self.write_started_ms:
            return
        self.readback = locked
        if self.written is not None and locked != self.written:
            log.warning("door %s: lock reads %s, expected %s: writing again", self.name, locked, self.written)
            self.written = None
            self.changed()

    async def reconcile(self) -> None:
        """Keep the lock relay at ``want_locked()``, for ever. Failed writes are retried with a
        short backoff and reported once per outage."""
        delay = 0.05
        while True:
            now = self._mono()
            want = self.want_locked(now)
            if want != self.written:
                self.wake.clear()
                value = self.cfg.locked_value if want else self.cfg.unlocked_value
                self.write_started_ms = time.time_ns() // 1_000_000
                try:
                    await self._write(self.cfg.lock, value)
                except Exception as e:  # any failure: keep trying, tell someone once
                    if not self.write_error:
                        self.write_error = str(e) or type(e).__name__
                        await self._report_write_failure(want)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self.wake.wait()
                    delay = min(delay * 2, 2.0)
                    continue
                self.writes += 1
                self.written = want
                self.written_at = self._mono()
                delay = 0.05
                if self.write_error:
                    self.write_error = ""
                    await self._emit(
                        [
                            NewEvent(
                                "device.fault_cleared", self.name, {"door": self.name, "fault": "lock_write"}
                            )
                        ]
                    )
                continue
            if not self.wake.is_set():
                self._confirmed.set()
            # Wake when the next unlock (a strike or a remote unlock) runs out.
            ends = [t for t in (self.pulse_until, self.remote_until) if t > now]
            timeout = min(ends) - now if ends else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            self.wake.clear()

    async def _report_write_failure(self, want_locked: bool) -> None:
        data = {
            "door": self.name,
            "fault": "lock_write",
            "point": self.cfg.lock,
            "wanted": "locked" if want_locked else "released",
            "detail": self.write_error[:200],
        }
        # A door that a fire alarm could not release is a life-safety fault.
        kind = "fire.release_fault" if self.fire_released else "device.fault"
        await self._emit([NewEvent(kind, self.name, data)])

    # ------------------------------------------------------------ supervision

    def contact(self, opened: bool, t_ms: int | None) -> list[NewEvent]:
        now = self._mono()
        out: list[NewEvent] = []
        was = self.open
        self.open = opened
        if opened and was is not True:
            self.opened_at = now
            self.prealarm_sent = False
            # Judged at the moment the contact was read where that is known: a reading that took
            # its time to arrive must not turn a grant's opening into a forced door.
            read_ms = t_ms if t_ms is not None else _wall_ms()
            authorised = self.free or read_ms <= self.authorised_until_ms or not self.want_locked(now)
            if not authorised and was is False:
                # was None: the first reading after start; a door found open is not forced.
                self.alarm = "forced"
                out.append(self._event("door.forced", {"camera": self.cfg.camera or None}, t_ms))
        elif not opened and was is True:
            if self.alarm:
                out.append(
                    self._event(
                        "door.secured", {"after": self.alarm, "open_s": round(now - self.opened_at, 1)}, t_ms
                    )
                )
            self.alarm = None
            # A grant lets one person through: closing the door ends the strike time early.
            if self.pulse_until > now:
                self.pulse_until = now
                self.authorised_until_ms = _wall_ms() + int(self.cfg.open_grace_s * 1000)
                self.changed()
        return out

    def exit_request(self) -> None:
        self._authorise(self.cfg.exit_grace_s)

    def _authorise(self, seconds: float) -> None:
        """An opening within ``seconds`` from now is allowed."""
        self.authorised_until_ms = max(self.authorised_until_ms, _wall_ms() + int(seconds * 1000))

    MISMATCH_S = 3.0  # a relay reading other than written for this long after the write: a fault

    def supervise_relay(self, now: float) -> list[NewEvent]:
        """A relay that keeps reading other than what was written (welded, overridden, wired
        wrong) is a fault, and a life-safety one while the door should be released for a fire."""
        wrong = (
            self.readback is not None
            and self.written is not None
            and self.readback != self.written
            and now - self.written_at >= self.MISMATCH_S
        )
        if wrong and not self.mismatch:
            self.mismatch = True
            want = "released" if not self.written else "locked"
            kind = "fire.release_fault" if self.fire_released else "device.fault"
            reads = "locked" if self.readback else "released"
            detail = f"{self.cfg.lock} written {want} but the lock reads {reads}"
            return [self._event(kind, {"fault": "lock_mismatch", "point": self.cfg.lock, "detail": detail})]
        if self.mismatch and self.readback == self.written:
            self.mismatch = False
            return [self._event("device.fault_cleared", {"fault": "lock_mismatch", "point": self.cfg.lock})]
        return []

    def tick(self, now: float) -> list[NewEvent]:
        """Held-open timing and relay supervision; called a few times a second."""
        cfg = self.cfg
        out = self.supervise_relay(now)
        free = self.free
        if self.was_free and not free and self.open:
            # Released for a fire, or open by its window, and now not: the held-open time starts now.
            self.opened_at = now
            self.prealarm_sent = False
        self.was_free = free
        if not self.open or not cfg.held_open_s or free or self.alarm == "forced":
            return out
        return out + self._held(now)

    def _held(self, now: float) -> list[NewEvent]:
        cfg = self.cfg
        open_s = now - self.opened_at
        if not self.prealarm_sent and cfg.prealarm_s and open_s >= cfg.held_open_s - cfg.prealarm_s:
            self.prealarm_sent = True
            return [self._event("door.held_open", {"state": "prealarm", "open_s": round(open_s, 1)})]
        if self.alarm is None and open_s >= cfg.held_open_s:
            self.alarm = "held_open"
            return [self._event("door.held_open", {"state": "alarm", "open_s": round(open_s, 1)})]
        return []

    def _event(self, kind: str, data: dict[str, Any], t_ms: int | None = None) -> NewEvent:
        return NewEvent(kind, self.name, {"door": self.name, **data}, time_ms=t_ms)

    def status(self) -> dict[str, Any]:
        now = self._mono()
        return {
            "locked": self.written,
            "wanted": "locked" if self.want_locked(now) else "released",
            "open": self.open,
            "fire_released": self.fire_released,
            "schedule_open": self.schedule_open or self.fpi_open,
            "alarm": self.alarm,
            "write_error": self.write_error or None,
            "lock_mismatch": self.mismatch,
        }


class Doors:
    """Every door of the gateway: routes sensor events to them, runs their reconcilers, keeps
    their schedules and held-open timers."""

    def __init__(
        self,
        configs: Sequence[DoorConfig],
        write: PointWrite,
        emit: Emit,
        *,
        local_time: Callable[[], datetime],
        holidays: Callable[[], Collection[date]] = frozenset,
        monotonic: Callable[[], float] = time.monotonic,
        trusted: Callable[[], bool] = lambda: True,
    ) -> None:
        self.emit = emit
        self._trusted = trusted
        self._mono = monotonic
        self._local_time = local_time
        self._holidays = holidays
        self.doors = {c.name: Door(c, write, emit, monotonic) for c in configs}
        self._by_contact = {c.contact: self.doors[c.name] for c in configs if c.contact}
        self._by_rex = {c.exit_request: self.doors[c.name] for c in configs if c.exit_request}

    def __getitem__(self, name: str) -> Door:
        return self.doors[name]

    def handle(self, e: NewEvent) -> list[NewEvent]:
        k = e.kind
        if k == "door.opened" or k == "door.closed":
            d = self._by_contact.get(e.source)
            if d is not None:
                return d.contact(k == "door.opened", e.time_ms)
        elif k == "door.exit_request":
            d = self._by_rex.get(e.source)
            if d is not None and e.data.get("active"):
                d.exit_request()
        elif k == "door.lock_state":
            d = self.doors.get(str(e.data.get("door", "")))
            if d is not None and isinstance(e.data.get("locked"), bool):
                d.lock_read(bool(e.data["locked"]), e.time_ms)
        return []

    def schedules(self) -> list[NewEvent]:
        """Open and close scheduled unlock windows (first-person-in doors wait for their first).
        Only on a synchronised clock: a gateway that booted without a time source could believe
        it is Monday morning at 3 a.m. Until it knows, windows stay as they are."""
        out: list[NewEvent] = []
        if not self._trusted():
            return out
        local = self._local_time()
        holidays = self._holidays()
        for d in self.doors.values():
            if not d.cfg.unlock_schedule:
                continue
            inside = is_open(d.cfg.unlock_schedule, [], holidays, local)
            if d.cfg.first_person_in:
                if not inside and d.fpi_open:
                    d.fpi_open = False
                    d.changed()
                    out.append(d._event("door.mode", {"mode": "normal", "cause": "window ended"}))
                d.schedule_open = False
                continue
            if inside != d.schedule_open:
                d.schedule_open = inside
                d.changed()
                mode = "scheduled_unlock" if inside else "normal"
                out.append(d._event("door.mode", {"mode": mode, "cause": "schedule"}))
        return out

    def first_person_in(self, door: Door, holder: str) -> list[NewEvent]:
        """A first_person_in credential was granted at ``door``: open it for the rest of its window."""
        if not door.cfg.first_person_in or door.fpi_open:
            return []
        if not is_open(door.cfg.unlock_schedule, [], self._holidays(), self._local_time()):
            return []
        door.fpi_open = True
        door.changed()
        return [door._event("door.mode", {"mode": "first_person_in", "cause": holder})]

    async def run(self) -> None:
        """The reconcilers and the timers (edge/local.py runs them one by one, supervised)."""
        async with asyncio.TaskGroup() as tg:
            for d in self.doors.values():
                tg.create_task(d.reconcile(), name=f"door-{d.name}")
            tg.create_task(self.timers(), name="door-timers")

    async def timers(self) -> None:
        last_schedule = 0.0
        while True:
            now = self._mono()
            out: list[NewEvent] = []
            for d in self.doors.values():
                out.extend(d.tick(now))
            if now - last_schedule >= 1.0:
                last_schedule = now
                out.extend(self.schedules())
            if out:
                await self.emit(out)
            await asyncio.sleep(0.1)

    def status(self) -> dict[str, Any]:
        return {name: d.status() for name, d in self.doors.items()}
