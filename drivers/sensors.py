"""Sensors as meanings: the config says that point ``io-b1/di_3`` is the smoke detector in the
3rd-floor stairwell, and this module turns that point's readings into ``smoke.alarm`` and
``smoke.clear``, whatever protocol carried them.

``SensorSink`` sits between the drivers and the gateway's outbox (it is an ``EventSink`` wrapping
one): every event passes through unchanged, and readings of mapped points add the events of their
meaning. Supervision is part of the meaning: when a mapped point's device goes offline, or a
reading comes back stale, the sensor raises ``device.fault`` (fault ``unreadable``) at once and its
state becomes unknown; a detector that cannot be read is never taken as quiet. The fault is
cleared (``device.fault_cleared``) by the next good reading.

Meters are counters: a reading becomes ``meter.reading`` with the total and the use since the last
reading, a counter that wraps at its configured rollover is followed through the wrap, and one that
goes backwards otherwise is a fault (a replaced or broken meter), never negative use.

Run signals keep run-hours and starts, persisted in the gateway's data folder so a restart does
not reset what maintenance plans count on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols.events import NewEvent
from protocols.sink import EventSink


class Meaning(StrEnum):
    SMOKE = "smoke"  # life safety: smoke.alarm / smoke.clear
    PIR = "pir"  # intrusion zone: intrusion.detected / intrusion.clear
    DOOR_CONTACT = "door_contact"  # door.opened / door.closed
    LOCK_RELAY = "lock_relay"  # door.lock_state (locked or released)
    RUN_SIGNAL = "run_signal"  # equipment.status with running, run-hours and starts
    EQUIPMENT_STATUS = "equipment_status"  # equipment.status with the raw status value
    METER = "meter"  # meter.reading with total and use
    EXIT_REQUEST = "exit_request"  # a door's request-to-exit button or sensor: door.exit_request
    # The fire panel's alarm output (a volt-free contact or a BACnet point): fire.alarm and
    # fire.alarm_cleared. Read only, like every fire-system point.
    FIRE_PANEL = "fire_panel"
    # A key switch or button beside the panel that resets the gateway's fire release locally.
    FIRE_RESET = "fire_reset"


BINARY = {
    Meaning.SMOKE,
    Meaning.PIR,
    Meaning.DOOR_CONTACT,
    Meaning.LOCK_RELAY,
    Meaning.RUN_SIGNAL,
    Meaning.EXIT_REQUEST,
    Meaning.FIRE_PANEL,
    Meaning.FIRE_RESET,
}


class SensorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    meaning: Meaning
    point: Annotated[str, Field(pattern=r"^[^/\s]+/[^/\s]+$", description="device/point")]
    # The raw value(s) that mean active: smoke present, motion, door open, lock energised
    # (locked), machine running. Normally-closed wiring is inverted here, not in the driver; a
    # BACnet life-safety point is active in several states (e.g. ["alarm", "pre-alarm"]).
    active: bool | int | str | list[bool | int | str] = True
    zone: str = ""  # PIR: the intrusion zone; smoke: the fire zone
    door: str = ""  # door contacts and lock relays: the door they belong to
    asset: str = ""  # run signals, status and meters: the asset or meter id the cloud knows
    unit: str = ""
    rollover: Annotated[float, Field(gt=0)] | None = None  # meters: the value the counter wraps at
    fire_system: bool = False  # read from a fire system: the gateway never writes to it

    @model_validator(mode="after")
    def _fits(self) -> SensorConfig:
        if self.meaning in (Meaning.DOOR_CONTACT, Meaning.LOCK_RELAY, Meaning.EXIT_REQUEST) and not self.door:
            raise ValueError(f"a {self.meaning.value} needs the door it belongs to (door = ...)")
        if self.rollover is not None and self.meaning is not Meaning.METER:
            raise ValueError("rollover only applies to meters")
        return self

    @property
    def device(self) -> str:
        return self.point.split("/", 1)[0]


def _is_active(value: Any, active: bool | int | str | list[bool | int | str]) -> bool:
    wanted = active if isinstance(active, list) else [active]
    for w in wanted:
        # bool and int compare as numbers (a coil's True is a register's 1); strings exactly.
        if isinstance(w, str) or isinstance(value, str):
            if isinstance(w, str) and isinstance(value, str) and value == w:
                return True
        elif bool(value) == bool(w) if isinstance(w, bool) or isinstance(value, bool) else value == w:
            return True
    return False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RunCounters:
    """Run seconds and starts per run signal, in a small JSON file written atomically on change."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, dict[str, float]] = {}
        if path is not None and path.exists():
            try:
                self.data = json.loads(path.read_text())
            except (OSError, ValueError):
                # A torn or foreign file must not stop the gateway; the counters restart, and
                # the equipment.status events say so (restored=false).
                self.data = {}

    def get(self, name: str) -> dict[str, float]:
        return self.data.setdefault(name, {"run_s": 0.0, "starts": 0, "running_since_ms": 0})

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


class SensorState:
    __slots__ = ("active", "cfg", "faulted", "last_total")

    def __init__(self, cfg: SensorConfig) -> None:
        self.cfg = cfg
        self.active: bool | None = None  # None: not known (not read yet, or unreadable)
        self.faulted = False
        self.last_total: float | None = None


class SensorSink:
    """An EventSink that adds the meaning of mapped points' readings to what passes through it."""

    def __init__(self, inner: EventSink, sensors: Sequence[SensorConfig], state_dir: Path | None = None):
        self.inner = inner
        self.by_point: dict[str, list[SensorState]] = {}
        self.by_device: dict[str, list[SensorState]] = {}
        for cfg in sensors:
            st = SensorState(cfg)
            self.by_point.setdefault(cfg.point, []).append(st)
            self.by_device.setdefault(cfg.device, []).append(st)
        self.counters = RunCounters(state_dir / "run_counters.json" if state_dir else None)

    async def emit(self, events: Sequence[NewEvent]) -> None:
        derived: list[NewEvent] = []
        for e in events:
            if e.kind == "telemetry.point":
                for st in self.by_point.get(e.source, ()):
                    derived.extend(self._reading(st, e))
            elif e.kind == "device.offline":
                for st in self.by_device.get(e.source, ()):
                    derived.extend(
                        self._unreadable(st, f"device {e.source} offline: {e.data.get('reason', '')}")
                    )
        # Meanings go first: a smoke alarm is committed and sent ahead of the reading it came from.
        await self.inner.emit([*derived, *events] if derived else events)

    def _reading(self, st: SensorState, e: NewEvent) -> list[NewEvent]:
        value = e.data.get("value")
        t = e.time_ms or _now_ms()
        if e.data.get("quality", "good") != "good" or value is None:
            return self._unreadable(st, f"reading of {e.source} is {e.data.get('quality', 'missing')}")
        out: list[NewEvent] = []
        if st.faulted:
            st.faulted = False
            out.append(self._event("device.fault_cleared", st, {"fault": "unreadable"}, t))
        cfg = st.cfg
        if cfg.meaning is Meaning.METER:
            out.extend(self._meter(st, value, t))
            return out
        if cfg.meaning is Meaning.EQUIPMENT_STATUS:
            out.append(self._event("equipment.status", st, {"status": value}, t))
            return out
        active = _is_active(value, cfg.active)
        if active == st.active:
            return out
        st.active = active
        out.append(self._binary(st, active, t))
        return out

    def _binary(self, st: SensorState, active: bool, t: int) -> NewEvent:
        cfg = st.cfg
        m = cfg.meaning
        if m is Meaning.SMOKE:
            return self._event("smoke.alarm" if active else "smoke.clear", st, {"zone": cfg.zone}, t)
        if m is Meaning.PIR:
            return self._event(
                "intrusion.detected" if active else "intrusion.clear", st, {"zone": cfg.zone}, t
            )
        if m is Meaning.DOOR_CONTACT:
            return self._event("door.opened" if active else "door.closed", st, {"door": cfg.door}, t)
        if m is Meaning.LOCK_RELAY:
            return self._event("door.lock_state", st, {"door": cfg.door, "locked": active}, t)
        if m is Meaning.EXIT_REQUEST:
            return self._event("door.exit_request", st, {"door": cfg.door, "active": active}, t)
        if m is Meaning.FIRE_PANEL:
            return self._event("fire.alarm" if active else "fire.alarm_cleared", st, {"zone": cfg.zone}, t)
        if m is Meaning.FIRE_RESET:
            return self._event("fire.reset_input", st, {"active": active}, t)
        return self._run(st, active, t)

    def _run(self, st: SensorState, running: bool, t: int) -> NewEvent:
        c = self.counters.get(st.cfg.name)
        if running:
            # Running already at the last save means the gateway restarted under a running
            # machine: not a new start. The unknown time in between is not counted.
            if not c["running_since_ms"]:
                c["starts"] += 1
            c["running_since_ms"] = t
        elif c["running_since_ms"]:
            c["run_s"] += max(0, t - c["running_since_ms"]) / 1000
            c["running_since_ms"] = 0
        self.counters.save()
        return self._event(
            "equipment.status",
            st,
            {"running": running, "run_hours": round(c["run_s"] / 3600, 4), "starts": int(c["starts"])},
            t,
        )

    def _meter(self, st: SensorState, value: Any, t: int) -> list[NewEvent]:
        cfg = st.cfg
        total = float(value)
        last = st.last_total
        data: dict[str, Any] = {"total": total, "unit": cfg.unit}
        if last is None:
            data["use"] = None  # the first reading since start: no use to report yet
        elif total >= last:
            data["use"] = round(total - last, 6)
        elif cfg.rollover is not None and last > cfg.rollover * 0.9 and total < cfg.rollover * 0.1:
            data["use"] = round(cfg.rollover - last + total, 6)
            data["rollover"] = True
        else:
            # Backwards without a wrap: a replaced or broken meter. Never negative use; the cloud's
            # billing holds the period for review. The new total is the base from here on.
            st.last_total = total
            return [
                self._event(
                    "device.fault",
                    st,
                    {"fault": "counter_backwards", "detail": f"{last} -> {total}", "total": total},
                    t,
                )
            ]
        st.last_total = total
        return [self._event("meter.reading", st, data, t)]

    def _unreadable(self, st: SensorState, detail: str) -> list[NewEvent]:
        st.active = None
        if st.cfg.meaning is Meaning.RUN_SIGNAL:
            c = self.counters.get(st.cfg.name)
            if c["running_since_ms"]:  # run time up to the last good reading is all we know
                c["run_s"] += max(0, _now_ms() - c["running_since_ms"]) / 1000
                c["running_since_ms"] = 0
                self.counters.save()
        if st.faulted:
            return []
        st.faulted = True
        return [self._event("device.fault", st, {"fault": "unreadable", "detail": detail}, _now_ms())]

    @staticmethod
    def _event(kind: str, st: SensorState, data: dict[str, Any], t: int) -> NewEvent:
        cfg = st.cfg
        body = {"sensor": cfg.name, "meaning": cfg.meaning.value, "point": cfg.point, **data}
        if cfg.asset:
            body["asset"] = cfg.asset
        if cfg.fire_system:
            body["fire_system"] = True
        return NewEvent(kind, cfg.name, body, time_ms=t)
