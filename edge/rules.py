"""Equipment rules: thresholds with hysteresis and a minimum duration on equipment points, so that a
flapping value yields one fault and one clear, not hundreds.

A rule watches one point (``above`` / ``below`` a threshold) or a command point against its
feedback (``mismatch``: a pump commanded on that does not report running). Each rule is a small
state machine::

    normal --condition--> pending_fault --held min_duration_s--> fault      (equipment.fault)
    fault --normal again--> pending_clear --held clear_after_s--> normal    (equipment.fault_cleared)

A pending state whose condition stops holding goes back silently: a value that dips below the
threshold during ``pending_fault`` cancels it, one that rises again during ``pending_clear`` keeps
the fault. For ``above`` the fault condition is ``value > threshold`` and the normal condition is
``value <= threshold - hysteresis`` (``below``: ``value < threshold`` and ``value >= threshold +
hysteresis``); between the two (the dead band) a fault neither clears nor starts clearing.

Durations run on the monotonic clock from the arrival of the reading that began them, and complete
without a new reading (``tick``): a value that stays high and stops changing still faults. A reading
that is not ``good`` (stale, fault, missing, or not a number) neither starts nor clears anything:
a pending state goes back, the rule notes the point as unreadable in ``status``, and the device
fault itself is reported by drivers/sensors.py. ``device.offline`` does the same for the points of
that device.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.ticking import tick_forever
from protocols.events import NewEvent

Emit = Callable[[Sequence[NewEvent]], Awaitable[None]]

_NAME = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
_POINT = Annotated[str, Field(pattern=r"^[^/\s]+/[^/\s]+$", description="device/point")]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class EquipmentRuleConfig(BaseModel):
    """One ``[[rules]]`` of the gateway config."""

    model_config = ConfigDict(extra="forbid")

    name: _NAME
    asset: str = ""  # the asset id the cloud knows; the events' source (the rule name if empty)
    fault: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")]
    kind: Literal["above", "below", "mismatch"]
    point: _POINT | None = None  # above / below: the telemetry.point source watched
    threshold: float | None = None  # above / below
    hysteresis: Annotated[float, Field(ge=0)] = 0.0  # above / below: the dead band before a clear
    command_point: _POINT | None = None  # mismatch: what the equipment is told (on/off)
    feedback_point: _POINT | None = None  # mismatch: what it reports (running or not)
    min_duration_s: Annotated[float, Field(ge=0, le=7 * 86400)] = 60.0
    clear_after_s: Annotated[float, Field(ge=0, le=7 * 86400)] | None = None  # None: min_duration_s
    severity: Literal["minor", "major", "critical"] = "major"
    # Who fixes it: the cloud sends the fault to the on-call rota of this skill.
    skill: Literal["electrical", "hvac", "plumbing", "lifts", "security", "general"] | None = None

    @model_validator(mode="after")
    def _fits(self) -> EquipmentRuleConfig:
        where = f"rule {self.name!r}"
        if self.kind == "mismatch":
            if self.command_point is None or self.feedback_point is None:
                raise ValueError(f"{where}: a mismatch rule needs both command_point and feedback_point")
            if self.command_point == self.feedback_point:
                raise ValueError(f"{where}: command_point and feedback_point are the same point")
            if self.point is not None or self.threshold is not None or self.hysteresis:
                raise ValueError(
                    f"{where}: a mismatch rule compares command_point with feedback_point;"
                    " point, threshold and hysteresis do not apply"
                )
        else:
            if self.point is None:
                raise ValueError(f"{where}: an {self.kind} rule needs the point it watches (point = ...)")
            if self.threshold is None:
                raise ValueError(f"{where}: an {self.kind} rule needs a threshold")
            if self.command_point is not None or self.feedback_point is not None:
                raise ValueError(f"{where}: command_point and feedback_point are for mismatch rules only")
        return self

    @property
    def points(self) -> list[str]:
        if self.kind == "mismatch":
            assert self.command_point is not None and self.feedback_point is not None
            return [self.command_point, self.feedback_point]
        assert self.point is not None
        return [self.point]

    @property
    def clear_after(self) -> float:
        return self.min_duration_s if self.clear_after_s is None else self.clear_after_s

    @property
    def source(self) -> str:
        return self.asset or self.name


def check_rules(rules: Sequence[EquipmentRuleConfig], points: Collection[str] | None = None) -> None:
    """Raise ValueError naming the rule when two rules share a name or (given ``points``, every
    ``device/point`` the drivers read) a rule watches a point no device has."""
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise ValueError(f"rule {r.name!r} is configured twice")
        seen.add(r.name)
        if points is not None:
            for p in r.points:
                if p not in points:
                    raise ValueError(f"rule {r.name!r}: no configured device has the point {p!r}")


class RuleState(StrEnum):
    NORMAL = "normal"
    PENDING_FAULT = "pending_fault"
    FAULT = "fault"
    PENDING_CLEAR = "pending_clear"


class _Cond(StrEnum):
    FAULT = "fault"
    NORMAL = "normal"
    BETWEEN = "between"  # the hysteresis dead band
    UNKNOWN = "unknown"  # a point not read yet, or unreadable


def _as_bool(v: Any) -> bool | None:
    if isinstance(v, bool | int | float):
        return bool(v)
    return None


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool | int | float):
        return float(v)
    return None


class _Rule:
    def __init__(self, cfg: EquipmentRuleConfig) -> None:
        self.cfg = cfg
        self.state = RuleState.NORMAL
        self.started: float = 0.0  # monotonic: when the pending state began
        self.since_ms: int | None = None  # wall: when the current state's condition began
        self.fault_since_ms: int | None = None
        self.values: dict[str, float | bool] = {}  # point -> last good value
        self.unreadable: set[str] = set()

    def condition(self) -> _Cond:
        cfg = self.cfg
        if self.unreadable:
            return _Cond.UNKNOWN
        if cfg.kind == "mismatch":
            assert cfg.command_point is not None and cfg.feedback_point is not None
            cmd, fb = self.values.get(cfg.command_point), self.values.get(cfg.feedback_point)
            if cmd is None or fb is None:
                return _Cond.UNKNOWN
            return _Cond.FAULT if bool(cmd) != bool(fb) else _Cond.NORMAL
        assert cfg.point is not None and cfg.threshold is not None
        v = self.values.get(cfg.point)
        if v is None:
            return _Cond.UNKNOWN
        t, h = cfg.threshold, cfg.hysteresis
        if cfg.kind == "above":
            return _Cond.FAULT if v > t else _Cond.NORMAL if v <= t - h else _Cond.BETWEEN
        return _Cond.FAULT if v < t else _Cond.NORMAL if v >= t + h else _Cond.BETWEEN

    def deadline(self) -> float | None:
        if self.state is RuleState.PENDING_FAULT:
            return self.started + self.cfg.min_duration_s
        if self.state is RuleState.PENDING_CLEAR:
            return self.started + self.cfg.clear_after
        return None


class EquipmentRules:
    """Every equipment rule of the gateway (a local module of the gateway's hub).

    ``handle`` takes every event (it reads ``telemetry.point`` of the rules' points and
    ``device.offline``); ``tick`` completes the durations due now and ``run`` calls it until
    cancelled, emitting what it returns."""

    def __init__(
        self,
        rules: Sequence[EquipmentRuleConfig],
        emit: Emit,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        now_ms: Callable[[], int] = _now_ms,
        poll_s: float = 1.0,
    ) -> None:
        check_rules(rules)
        self.emit = emit
        self._mono = monotonic
        self._now_ms = now_ms
        self.poll_s = poll_s
        self.rules = {c.name: _Rule(c) for c in rules}
        self._by_point: dict[str, list[_Rule]] = {}
        self._by_device: dict[str, list[tuple[str, _Rule]]] = {}
        for r in self.rules.values():
            for p in r.cfg.points:
                self._by_point.setdefault(p, []).append(r)
                self._by_device.setdefault(p.split("/", 1)[0], []).append((p, r))
        # The points any rule reads: the hub passes only their readings in.
        self.points = frozenset(self._by_point)
        self._wake: asyncio.Event | None = None

    def handle(self, e: NewEvent) -> list[NewEvent]:
        if e.kind == "telemetry.point":
            rules = self._by_point.get(e.source)
            if not rules:
                return []
            out: list[NewEvent] = []
            for r in rules:
                out.extend(self._reading(r, e.source, e))
            return out
        if e.kind == "device.offline":
            out = []
            for point, r in self._by_device.get(e.source, ()):
                out.extend(self._unreadable(r, point))
            return out
        return []

    def tick(self) -> list[NewEvent]:
        """The faults and clears whose duration has completed by now."""
        now = self._mono()
        out: list[NewEvent] = []
        for r in self.rules.values():
            out.extend(self._due(r, now, None))
        return out

    def next_deadline(self) -> float | None:
        ds = [d for r in self.rules.values() if (d := r.deadline()) is not None]
        return min(ds) if ds else None

    async def run(self) -> None:
        """Tick when the next pending duration completes (and at least every ``poll_s``)."""
        self._wake = asyncio.Event()
        await tick_forever(self.tick, self.next_deadline, self.emit, self._mono, self.poll_s, self._wake)

    def status(self) -> dict[str, dict[str, Any]]:
        now = self._mono()
        out: dict[str, dict[str, Any]] = {}
        for r in self.rules.values():
            d = r.deadline()
            out[r.cfg.name] = {
                "state": r.state.value,
                "fault": r.cfg.fault,
                "asset": r.cfg.asset,
                "since_ms": r.since_ms,
                "values": dict(r.values),
                "unreadable": sorted(r.unreadable),
                "pending_left_s": None if d is None else round(max(0.0, d - now), 3),
            }
        return out

    # ------------------------------------------------------------ transitions

    def _reading(self, r: _Rule, point: str, e: NewEvent) -> list[NewEvent]:
        raw = e.data.get("value")
        value = _as_bool(raw) if r.cfg.kind == "mismatch" else _as_number(raw)
        if e.data.get("quality", "good") != "good" or value is None:
            return self._unreadable(r, point)
        now = self._mono()
        # What came due before this reading arrived happened first (the last value held until now).
        out = self._due(r, now, None)
        r.unreadable.discard(point)
        r.values[point] = value
        t_ms = e.time_ms or self._now_ms()
        cond = r.condition()
        st = r.state
        if st is RuleState.NORMAL and cond is _Cond.FAULT:
            self._pending(r, RuleState.PENDING_FAULT, now, t_ms)
        elif st is RuleState.PENDING_FAULT and cond is not _Cond.FAULT:
            r.state = RuleState.NORMAL  # did not hold long enough: nothing happened
            r.since_ms = None
        elif st is RuleState.FAULT and cond is _Cond.NORMAL:
            self._pending(r, RuleState.PENDING_CLEAR, now, t_ms)
        elif st is RuleState.PENDING_CLEAR and cond is not _Cond.NORMAL:
            r.state = RuleState.FAULT  # not normal long enough: still the same fault
            r.since_ms = r.fault_since_ms
        return out + self._due(r, now, e.time_ms)

    def _pending(self, r: _Rule, state: RuleState, now: float, t_ms: int) -> None:
        r.state = state
        r.started = now
        r.since_ms = t_ms
        if self._wake is not None:
            self._wake.set()

    def _unreadable(self, r: _Rule, point: str) -> list[NewEvent]:
        out = self._due(r, self._mono(), None)  # what completed before the value was lost
        r.unreadable.add(point)
        # Not knowing the value neither starts nor clears a fault: what was pending goes back.
        if r.state is RuleState.PENDING_FAULT:
            r.state = RuleState.NORMAL
            r.since_ms = None
        elif r.state is RuleState.PENDING_CLEAR:
            r.state = RuleState.FAULT
            r.since_ms = r.fault_since_ms
        return out

    def _due(self, r: _Rule, now: float, t_ms: int | None) -> list[NewEvent]:
        d = r.deadline()
        if d is None or now < d:
            return []
        if r.state is RuleState.PENDING_FAULT:
            r.state = RuleState.FAULT
            r.fault_since_ms = r.since_ms
            return [self._event(r, "equipment.fault", t_ms)]
        fault_since = r.fault_since_ms
        r.state = RuleState.NORMAL
        r.fault_since_ms = None
        return [self._event(r, "equipment.fault_cleared", t_ms, fault_since_ms=fault_since)]

    def _event(self, r: _Rule, kind: str, t_ms: int | None, **extra: Any) -> NewEvent:
        cfg = r.cfg
        data: dict[str, Any] = {
            "rule": cfg.name,
            "asset": cfg.asset,
            "fault": cfg.fault,
            "severity": cfg.severity,
        }
        if cfg.skill is not None:
            data["skill"] = cfg.skill
        if cfg.kind == "mismatch":
            assert cfg.command_point is not None and cfg.feedback_point is not None
            data["command"] = r.values.get(cfg.command_point)
            data["feedback"] = r.values.get(cfg.feedback_point)
            data["command_point"] = cfg.command_point
            data["feedback_point"] = cfg.feedback_point
        else:
            assert cfg.point is not None
            data["value"] = r.values.get(cfg.point)
            data["threshold"] = cfg.threshold
            data["point"] = cfg.point
        data["since_ms"] = r.since_ms  # when the condition that led here began
        data.update(extra)
        return NewEvent(kind, cfg.source, data, time_ms=t_ms or self._now_ms())
