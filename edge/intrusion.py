"""Intrusion zones: PIR sensors grouped in zones that are armed and disarmed by command or by an
arming schedule, with entry and exit delays, cross-zoning, reported bypasses and supervision.

A zone is in one of five states::

    disarmed --arm(by)--> exit_delay --exit_delay_s--> armed
    armed --entry sensor--> entry_delay --entry_delay_s--> alarm
    armed --other sensor--> alarm            (with cross_zone: only a second, different sensor
    entry_delay --other sensor--> alarm       within cross_window_s; one alone is unconfirmed)
    any --disarm(by)--> disarmed             (this is also how an alarm ends)

Detections during the exit delay are the people leaving and are ignored; during the entry delay the
entry sensors are the entry route (the way to the keypad) and are ignored too. The entry delay
ending without a disarm is an alarm even with cross-zoning: nobody disarming is the confirmation.

An arming schedule arms its zone when a window opens and disarms it when the window closes (both
``by="schedule"``). It acts on those boundaries only, so a command overrides it until the next
boundary: disarmed by a person at 23:00 inside a 22:00-06:00 window, the zone stays disarmed until
the window opens again. A schedule arming that is refused (an unreadable sensor) is reported once
and retried while the window lasts, until a command takes over.

Supervision: a zone sensor that becomes unreadable (``device.fault`` with fault ``unreadable``, from
drivers/sensors.py) while the zone is armed or arming raises ``intrusion.supervision_fault`` at
once, bypassed or not (a bypassed one is flagged so); its next good reading raises
``intrusion.supervision_restored``. Arming with an unreadable sensor that is not bypassed is refused
(``ArmRefused``) unless the zone's ``arm_refuses_faulted`` is off.

The arm state, the bypasses and the last seen schedule state are kept in ``intrusion.json`` in the
state folder, written atomically on every change, so an armed building stays armed through a
gateway restart (delays that were running start again in full). A torn file starts every zone
disarmed, and says so in an ``intrusion.disarmed`` event per zone.

Every event's source is the zone name and its data has ``zone``, ``state`` (the state after the
event), ``bypassed`` and ``faulted`` (the zone's bypassed and unreadable sensors, sorted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.sensors import Meaning, SensorConfig
from edge.schedules import is_open
from edge.ticking import tick_forever
from protocols.access import Interval
from protocols.events import NewEvent

log = logging.getLogger(__name__)

Emit = Callable[[Sequence[NewEvent]], Awaitable[None]]

STATE_FILE = "intrusion.json"
# A zone's name is its events' source and what commands name; people name zones ("plant room"),
# so inner spaces are allowed, unlike sensor and door names.
_ZONE_NAME = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]([A-Za-z0-9_.: -]*[A-Za-z0-9_.:-])?$")
]


class ZoneState(StrEnum):
    DISARMED = "disarmed"
    EXIT_DELAY = "exit_delay"  # arming: the people inside are leaving
    ARMED = "armed"
    ENTRY_DELAY = "entry_delay"  # someone came in by the entry route and has this long to disarm
    ALARM = "alarm"


# The states in which the zone watches its sensors (and supervises them).
WATCHING = frozenset({ZoneState.EXIT_DELAY, ZoneState.ARMED, ZoneState.ENTRY_DELAY, ZoneState.ALARM})


class IntrusionZoneConfig(BaseModel):
    """One ``[[intrusion_zones]]`` of the gateway config."""

    model_config = ConfigDict(extra="forbid")

    name: _ZONE_NAME
    sensors: Annotated[list[str], Field(min_length=1)]  # names of ``[[sensors]]`` with meaning pir
    # The sensors on the entry route (e.g. the PIR inside the entrance): while armed they start
    # the entry delay instead of an alarm, and during it they are ignored.
    entry_sensors: list[str] = Field(default_factory=list)
    entry_delay_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    exit_delay_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    # An alarm needs two different sensors of the zone within cross_window_s; one sensor alone
    # gives intrusion.unconfirmed. For zones whose PIRs see drafts, heaters or animals.
    cross_zone: bool = False
    cross_window_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # When the zone is armed; empty (with no holiday_intervals) = no schedule, commands only. On
    # the site's holidays holiday_intervals apply instead (none: not armed by schedule that day,
    # so a building empty on holidays wants holiday_intervals = [{start = "00:00", end = "24:00"}]).
    armed_schedule: list[Interval] = Field(default_factory=list)
    holiday_intervals: list[Interval] = Field(default_factory=list)
    arm_refuses_faulted: bool = True

    @model_validator(mode="after")
    def _fits(self) -> IntrusionZoneConfig:
        _check_zone(self)
        return self

    @property
    def scheduled(self) -> bool:
        return bool(self.armed_schedule or self.holiday_intervals)


def _check_zone(z: IntrusionZoneConfig) -> None:
    seen: set[str] = set()
    for s in z.sensors:
        if s in seen:
            raise ValueError(f"intrusion zone {z.name!r}: sensor {s!r} is listed twice")
        seen.add(s)
    for s in z.entry_sensors:
        if s not in seen:
            raise ValueError(f"intrusion zone {z.name!r}: entry sensor {s!r} is not one of its sensors")


def check_intrusion_zones(
    zones: Sequence[IntrusionZoneConfig], sensors: Sequence[SensorConfig] | None = None
) -> None:
    """Raise ValueError naming the zone and sensor when the zones do not fit together or (given
    ``sensors``, the gateway's ``[[sensors]]``) name a sensor that is not a configured PIR."""
    by_name = {s.name: s for s in sensors} if sensors is not None else None
    owner: dict[str, str] = {}
    names: set[str] = set()
    for z in zones:
        if z.name in names:
            raise ValueError(f"intrusion zone {z.name!r} is configured twice")
        names.add(z.name)
        _check_zone(z)
        for s in z.sensors:
            if s in owner:
                raise ValueError(
                    f"intrusion zone {z.name!r}: sensor {s!r} is already in zone {owner[s]!r}"
                    " (a sensor belongs to one zone)"
                )
            owner[s] = z.name
            if by_name is not None:
                cfg = by_name.get(s)
                if cfg is None:
                    raise ValueError(f"intrusion zone {z.name!r}: no sensor {s!r} in [[sensors]]")
                if cfg.meaning is not Meaning.PIR:
                    raise ValueError(
                        f"intrusion zone {z.name!r}: sensor {s!r} is a {cfg.meaning.value}, not a pir"
                    )


class UnknownZone(KeyError):
    def __init__(self, zone: str) -> None:
        super().__init__(zone)
        self.zone = zone

    def __str__(self) -> str:
        return f"no intrusion zone {self.zone!r}"


class UnknownSensor(KeyError):
    def __init__(self, zone: str, sensor: str) -> None:
        super().__init__(sensor)
        self.zone = zone
        self.sensor = sensor

    def __str__(self) -> str:
        return f"sensor {self.sensor!r} is not in intrusion zone {self.zone!r}"


class ArmRefused(Exception):
    """Arming was refused; ``event`` is the ``intrusion.arm_refused`` report to send."""

    def __init__(self, zone: str, sensors: Sequence[str], event: NewEvent) -> None:
        self.zone = zone
        self.sensors = list(sensors)
        self.event = event
        self.reason = (
            f"intrusion zone {zone!r} not armed: sensor(s) {', '.join(self.sensors)} unreadable"
            " (bypass them or repair them first)"
        )
        super().__init__(self.reason)


class _Zone:
    def __init__(self, cfg: IntrusionZoneConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.entry = frozenset(cfg.entry_sensors)
        self.state = ZoneState.DISARMED
        self.since_ms = 0
        self.by = ""
        self.deadline: float | None = None  # monotonic end of the running delay
        self.entry_sensor: str | None = None  # the sensor that started the entry delay
        self.bypassed: dict[str, str] = {}  # sensor -> who bypassed it
        self.faulted: set[str] = set()  # unreadable now (not kept across restarts)
        self.reported: set[str] = set()  # supervision faults raised and not yet restored
        self.recent: dict[str, float] = {}  # cross-zoning: sensor -> monotonic time of last detection
        self.schedule_open: bool | None = None  # None: not looked at yet
        self.schedule_retry = False  # the schedule's arming was refused: retry while the window lasts


class Intrusion:
    """Every intrusion zone of the gateway (a local module of the gateway's hub).

    ``handle`` takes every event (it reads ``intrusion.detected``, ``device.fault`` and
    ``device.fault_cleared`` of its sensors); ``arm``, ``disarm`` and ``bypass`` are the commands;
    ``tick`` does what is due (delays ending, schedule boundaries) and ``run`` calls it until
    cancelled, emitting what it returns. All of them return or emit the events they produce.
    """

    def __init__(
        self,
        zones: Sequence[IntrusionZoneConfig],
        emit: Emit,
        state_dir: Path | None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now().astimezone(),
        holidays: Callable[[], Collection[date]] = frozenset,
        poll_s: float = 1.0,
    ) -> None:
        check_intrusion_zones(zones)
        self.emit = emit
        self.path = state_dir / STATE_FILE if state_dir is not None else None
        self._mono = monotonic
        self._wall = wall
        self._holidays = holidays
        self.poll_s = poll_s
        self.zones = {c.name: _Zone(c) for c in zones}
        self._by_sensor = {s: z for z in self.zones.values() for s in z.cfg.sensors}
        self._dirty = False
        self._wake: asyncio.Event | None = None
        self._startup: list[NewEvent] = self._restore()

    # ------------------------------------------------------------ commands

    def arm(self, zone: str, by: str) -> list[NewEvent]:
        """Start the exit delay (no events when the zone is already arming, armed or in alarm).
        Raises ``UnknownZone``, or ``ArmRefused`` when a sensor that is not bypassed is unreadable
        (its ``event`` is the report to send)."""
        z = self._zone(zone)
        z.schedule_retry = False  # a person decided: the schedule waits for its next boundary
        try:
            return self._due(z, self._mono()) + self._arm(z, by)
        finally:
            self._save_if_dirty()

    def disarm(self, zone: str, by: str) -> list[NewEvent]:
        """Disarm from any state, ending an alarm; no events when already disarmed."""
        z = self._zone(zone)
        z.schedule_retry = False
        # An entry delay that ran out before the disarm came is an alarm, even if the tick that
        # would have raised it is a moment late.
        out = self._due(z, self._mono()) + self._disarm(z, by)
        self._save_if_dirty()
        return out

    def bypass(self, zone: str, sensor: str, on: bool, by: str) -> list[NewEvent]:
        """Bypass a sensor of the zone (its detections are ignored until the bypass ends), or end
        its bypass; no events when it already was so. Bypasses are kept across restarts."""
        z = self._zone(zone)
        if sensor not in z.cfg.sensors:
            raise UnknownSensor(zone, sensor)
        if on == (sensor in z.bypassed):
            return []
        if on:
            z.bypassed[sensor] = by
            z.recent.pop(sensor, None)
        else:
            del z.bypassed[sensor]
        self._dirty = True
        self._save_if_dirty()
        kind = "intrusion.bypassed" if on else "intrusion.bypass_ended"
        return [self._event(z, kind, sensor=sensor, by=by, sensor_faulted=sensor in z.faulted)]

    # ------------------------------------------------------------ the hub's side

    def startup_events(self) -> list[NewEvent]:
        """What the restore found: zones restored in a state other than disarmed (``restored``
        true), or every zone disarmed after a torn state file. Returned once, here or by the
        first ``tick``."""
        out, self._startup = self._startup, []
        return out

    def handle(self, e: NewEvent) -> list[NewEvent]:
        k = e.kind
        if k == "intrusion.detected":
            sensor = str(e.data.get("sensor") or e.source)
            z = self._by_sensor.get(sensor)
            if z is None:
                return []
            out = self._due(z, self._mono()) + self._detected(z, sensor, e.time_ms)
        elif k == "device.fault" or k == "device.fault_cleared":
            # Only the sensor-level fault of drivers/sensors.py says a PIR cannot be read; a
            # device's own faults (a bad frame) have no "sensor".
            named = e.data.get("sensor")
            if not isinstance(named, str) or e.data.get("fault") != "unreadable":
                return []
            z = self._by_sensor.get(named)
            if z is None:
                return []
            out = self._due(z, self._mono())
            if k == "device.fault":
                out += self._fault(z, named, e)
            else:
                out += self._fault_cleared(z, named, e.time_ms)
        else:
            return []
        self._save_if_dirty()
        return out

    def tick(self) -> list[NewEvent]:
        """The transitions due now: delays that ended, schedule boundaries crossed."""
        out = self.startup_events()
        now = self._mono()
        local: datetime | None = None
        for z in self.zones.values():
            if z.cfg.scheduled:
                if local is None:
                    local = self._wall()
                out.extend(self._schedule(z, local))
            out.extend(self._due(z, now))
        self._save_if_dirty()
        return out

    def next_deadline(self) -> float | None:
        """The monotonic time of the next delay to end, if one is running."""
        ds = [z.deadline for z in self.zones.values() if z.deadline is not None]
        return min(ds) if ds else None

    async def run(self) -> None:
        """Tick at each delay's end and at least every ``poll_s`` (schedules), until cancelled."""
        self._wake = asyncio.Event()
        await tick_forever(self.tick, self.next_deadline, self.emit, self._mono, self.poll_s, self._wake)

    def status(self) -> dict[str, dict[str, Any]]:
        now = self._mono()
        return {
            z.name: {
                "state": z.state.value,
                "since_ms": z.since_ms,
                "by": z.by,
                "bypassed": sorted(z.bypassed),
                "faulted": sorted(z.faulted),
                "delay_left_s": None if z.deadline is None else round(max(0.0, z.deadline - now), 3),
                "schedule_open": z.schedule_open,
            }
            for z in self.zones.values()
        }

    # ------------------------------------------------------------ transitions

    def _zone(self, zone: str) -> _Zone:
        z = self.zones.get(zone)
        if z is None:
            raise UnknownZone(zone)
        return z

    def _set(self, z: _Zone, state: ZoneState, by: str | None = None) -> None:
        z.state = state
        z.since_ms = int(self._wall().timestamp() * 1000)
        if by is not None:
            z.by = by
        self._dirty = True

    def _start_delay(self, z: _Zone, seconds: float, now: float) -> None:
        z.deadline = now + seconds
        if self._wake is not None:
            self._wake.set()

    def _arm(self, z: _Zone, by: str) -> list[NewEvent]:
        if z.state is not ZoneState.DISARMED:
            return []
        blocking = sorted(z.faulted - z.bypassed.keys())
        if blocking and z.cfg.arm_refuses_faulted:
            ev = self._event(z, "intrusion.arm_refused", by=by, sensors=blocking, reason="unreadable")
            raise ArmRefused(z.name, blocking, ev)
        now = self._mono()
        z.recent.clear()
        z.entry_sensor = None
        self._set(z, ZoneState.EXIT_DELAY, by)
        self._start_delay(z, z.cfg.exit_delay_s, now)
        out = [self._event(z, "intrusion.arming", by=by, exit_delay_s=z.cfg.exit_delay_s)]
        # Sensors already unreadable (bypassed, or arming allowed regardless) are supervised from
        # now on: the fault is raised as if it had happened now.
        for s in sorted(z.faulted - z.reported):
            z.reported.add(s)
            out.append(self._supervision(z, "intrusion.supervision_fault", s, None))
        out.extend(self._due(z, now))
        return out

    def _disarm(self, z: _Zone, by: str, **extra: Any) -> list[NewEvent]:
        if z.state is ZoneState.DISARMED:
            return []
        was = z.state
        self._set(z, ZoneState.DISARMED, by)
        z.deadline = None
        z.entry_sensor = None
        z.recent.clear()
        return [self._event(z, "intrusion.disarmed", by=by, was=was.value, **extra)]

    def _due(self, z: _Zone, now: float) -> list[NewEvent]:
        if z.deadline is None or now < z.deadline:
            return []
        z.deadline = None
        if z.state is ZoneState.EXIT_DELAY:
            self._set(z, ZoneState.ARMED)
            return [self._event(z, "intrusion.armed", by=z.by)]
        if z.state is ZoneState.ENTRY_DELAY:
            sensors = [z.entry_sensor] if z.entry_sensor else []
            return self._alarm(z, sensors, "entry_delay_expired", None)
        return []

    def _detected(self, z: _Zone, sensor: str, t_ms: int | None) -> list[NewEvent]:
        if sensor in z.bypassed:
            return []
        now = self._mono()
        if z.state is ZoneState.ARMED:
            if sensor in z.entry:
                z.recent[sensor] = now
                z.entry_sensor = sensor
                self._set(z, ZoneState.ENTRY_DELAY)
                self._start_delay(z, z.cfg.entry_delay_s, now)
                out = [
                    self._event(
                        z, "intrusion.entry_delay", t_ms, sensor=sensor, entry_delay_s=z.cfg.entry_delay_s
                    )
                ]
                return out + self._due(z, now)
            return self._intruder(z, sensor, now, t_ms)
        if z.state is ZoneState.ENTRY_DELAY and sensor not in z.entry:
            return self._intruder(z, sensor, now, t_ms)
        # Disarmed; the exit delay (people leaving); the entry route during the entry delay; an
        # alarm already raised (the sensors' own intrusion.detected still reach the cloud).
        return []

    def _intruder(self, z: _Zone, sensor: str, now: float, t_ms: int | None) -> list[NewEvent]:
        if not z.cfg.cross_zone:
            sensors = [z.entry_sensor, sensor] if z.entry_sensor else [sensor]
            return self._alarm(z, sensors, "detection", t_ms)
        window = z.cfg.cross_window_s
        recent = {s: t for s, t in z.recent.items() if now - t <= window and s not in z.bypassed}
        others = sorted((t, s) for s, t in recent.items() if s != sensor)
        recent[sensor] = now
        z.recent = recent
        if others:
            return self._alarm(z, [s for _, s in others] + [sensor], "cross_zone", t_ms)
        return [self._event(z, "intrusion.unconfirmed", t_ms, sensor=sensor, window_s=window)]

    def _alarm(self, z: _Zone, sensors: list[str], cause: str, t_ms: int | None) -> list[NewEvent]:
        entry = z.entry_sensor
        self._set(z, ZoneState.ALARM)
        z.deadline = None
        extra: dict[str, Any] = {"entry_sensor": entry} if entry else {}
        return [self._event(z, "intrusion.alarm", t_ms, sensors=sensors, cause=cause, **extra)]

    def _fault(self, z: _Zone, sensor: str, e: NewEvent) -> list[NewEvent]:
        z.faulted.add(sensor)
        if z.state not in WATCHING or sensor in z.reported:
            return []
        z.reported.add(sensor)
        return [self._supervision(z, "intrusion.supervision_fault", sensor, e.time_ms, e.data.get("detail"))]

    def _fault_cleared(self, z: _Zone, sensor: str, t_ms: int | None) -> list[NewEvent]:
        z.faulted.discard(sensor)
        if sensor not in z.reported:
            return []
        # Restored whatever the zone's state now: the fault that was raised is closed.
        z.reported.discard(sensor)
        return [self._supervision(z, "intrusion.supervision_restored", sensor, t_ms)]

    def _supervision(
        self, z: _Zone, kind: str, sensor: str, t_ms: int | None, detail: Any = None
    ) -> NewEvent:
        data: dict[str, Any] = {"sensor": sensor, "sensor_bypassed": sensor in z.bypassed}
        if detail:
            data["detail"] = detail
        return self._event(z, kind, t_ms, **data)

    def _schedule(self, z: _Zone, local: datetime) -> list[NewEvent]:
        cfg = z.cfg
        now_open = is_open(cfg.armed_schedule, cfg.holiday_intervals, self._holidays(), local)
        if now_open == z.schedule_open:
            if now_open and z.schedule_retry and z.state is ZoneState.DISARMED:
                try:
                    out = self._arm(z, "schedule")
                except ArmRefused:
                    return []  # reported when the window opened
                z.schedule_retry = False
                return out
            return []
        # A boundary (or the first look since start, or one crossed while the gateway was down).
        z.schedule_open = now_open
        z.schedule_retry = False
        self._dirty = True
        if not now_open:
            return self._disarm(z, "schedule")
        try:
            return self._arm(z, "schedule")
        except ArmRefused as refused:
            z.schedule_retry = True
            return [refused.event]

    def _event(self, z: _Zone, kind: str, t_ms: int | None = None, **data: Any) -> NewEvent:
        body = {
            "zone": z.name,
            "state": z.state.value,
            **data,
            "bypassed": sorted(z.bypassed),
            "faulted": sorted(z.faulted),
        }
        return NewEvent(kind, z.name, body, time_ms=t_ms)

    # ------------------------------------------------------------ persistence

    def _restore(self) -> list[NewEvent]:
        if self.path is None or not self.path.exists():
            return []
        try:
            saved = json.loads(self.path.read_text())
            zones = saved["zones"]
            if not isinstance(zones, dict):
                raise TypeError("zones is not a table")
            restored = {name: _saved_zone(v) for name, v in zones.items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            # A torn or foreign file: trusting any of it could leave a zone disarmed that the
            # cloud shows armed, or the reverse. Start disarmed and say so; a schedule re-arms.
            log.error("intrusion state %s unreadable (%s): every zone starts disarmed", self.path, e)
            reason = f"{STATE_FILE} unreadable at start: {type(e).__name__}"
            out = []
            for z in self.zones.values():
                z.since_ms = int(self._wall().timestamp() * 1000)
                z.by = "restart"
                out.append(self._event(z, "intrusion.disarmed", by="restart", was=None, reason=reason))
            return out
        out = []
        now = self._mono()
        for name, (state, by, since_ms, bypassed, schedule_open, entry_sensor) in restored.items():
            if name not in self.zones:
                continue  # a zone removed from the config
            z = self.zones[name]
            z.state, z.by, z.since_ms, z.schedule_open = state, by, since_ms, schedule_open
            z.bypassed = {s: b for s, b in bypassed.items() if s in z.cfg.sensors}
            # A delay that was running starts again in full: the time it had left went by unseen.
            if state is ZoneState.EXIT_DELAY:
                z.deadline = now + z.cfg.exit_delay_s
            elif state is ZoneState.ENTRY_DELAY:
                z.entry_sensor = entry_sensor if entry_sensor in z.entry else None
                z.deadline = now + z.cfg.entry_delay_s
            elif state is ZoneState.ALARM:
                z.entry_sensor = entry_sensor
            if state is not ZoneState.DISARMED:
                kind = {
                    ZoneState.EXIT_DELAY: "intrusion.arming",
                    ZoneState.ARMED: "intrusion.armed",
                    ZoneState.ENTRY_DELAY: "intrusion.entry_delay",
                    ZoneState.ALARM: "intrusion.alarm",
                }[state]
                out.append(self._event(z, kind, by=by, restored=True, since_ms=since_ms))
        return out

    def _save_if_dirty(self) -> None:
        if not self._dirty or self.path is None:
            self._dirty = False
            return
        data = {
            "version": 1,
            "zones": {
                z.name: {
                    "state": z.state.value,
                    "by": z.by,
                    "since_ms": z.since_ms,
                    "bypassed": z.bypassed,
                    "schedule_open": z.schedule_open,
                    "entry_sensor": z.entry_sensor,
                }
                for z in self.zones.values()
            },
        }
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())  # a power cut right after arming must not forget it
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as e:
            # The zones keep working from memory; the next change tries again.
            log.error("intrusion state %s not saved: %s", self.path, e)


def _saved_zone(v: Any) -> tuple[ZoneState, str, int, dict[str, str], bool | None, str | None]:
    """One zone of the state file, checked (raises ValueError/KeyError/TypeError when torn)."""
    state = ZoneState(v["state"])
    by, since_ms, bypassed = v["by"], v["since_ms"], v["bypassed"]
    schedule_open, entry_sensor = v.get("schedule_open"), v.get("entry_sensor")
    if not isinstance(by, str) or not isinstance(since_ms, int) or not isinstance(bypassed, dict):
        raise TypeError("zone entry has the wrong types")
    if not all(isinstance(s, str) and isinstance(b, str) for s, b in bypassed.items()):
        raise TypeError("bypassed is not sensor -> who")
    if schedule_open is not None and not isinstance(schedule_open, bool):
        raise TypeError("schedule_open is not a boolean")
    if entry_sensor is not None and not isinstance(entry_sensor, str):
        raise TypeError("entry_sensor is not a name")
    return state, by, since_ms, bypassed, schedule_open, entry_sensor
