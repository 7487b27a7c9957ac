"""What every field driver shares: the shape of a reading, the events it becomes, and device liveness.

A driver owns its devices' I/O and emits normalized events into an ``EventSink`` (the gateway's
event bus or, in tests, a recording sink). The event shapes below are the contract the cloud and
the gateway's local rules read:

- ``telemetry.point``: source ``<device>/<point>``; data ``{"value", "quality"}`` and ``"unit"``
  when the point has one; the event's ``time_ms`` is the moment the value was read, never the
  moment it was sent. Nothing the source and the time already say is repeated in the data: at
  tens of thousands of readings a second, every byte is encoded, stored, sent and stored again.
  ``quality`` is ``good``, ``stale`` (from a device that went offline) or ``fault`` (the device
  says its own reading is unreliable, e.g. BACnet status-flags fault); anything but ``good`` is
  unreadable to the sensors that read it.
- ``device.online`` / ``device.offline``: source ``<device>``; data ``{"family", "reason", ...}``.
  These are the per-device birth and death (as Sparkplug has them): the cloud tells "gateway
  offline" (the gateway's own death on ``state``) from "device offline" (this event), and treats
  the points of an offline device as stale until it is back (``device.offline`` lists them in
  ``stale``, where the driver knows its points).
- ``device.fault``: source ``<device>`` or ``<device>/<point>``; data ``{"family", "fault",
  "detail"}``: something the device did wrong that a technician should hear about (a bad frame,
  an exception reply, a refused subscription, tamper).

Drivers refuse to write a point marked ``fire_system``: links to fire systems are read-only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from protocols.events import Lane, NewEvent
from protocols.sink import EventSink

Value = bool | int | float | str | None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FireSystemWriteRefused(PermissionError):
    """A write was asked of a point that belongs to a fire system; the gateway never writes there."""

    def __init__(self, device: str, point: str) -> None:
        super().__init__(f"{device}/{point}: part of a fire system; the gateway never writes to it")
        self.device = device
        self.point = point


@dataclass(frozen=True, slots=True)
class Reading:
    device: str
    point: str
    value: Value
    read_ms: int
    unit: str = ""
    quality: str = "good"

    def event(self) -> NewEvent:
        return point_event(f"{self.device}/{self.point}", self.value, self.read_ms, self.unit, self.quality)


def point_event(source: str, value: Value, read_ms: int, unit: str = "", quality: str = "good") -> NewEvent:
    """A ``telemetry.point`` event: what ``Reading.event`` makes, without the Reading, for a
    driver's hot path (tens of thousands a second)."""
    data: dict[str, Any] = {"value": value, "quality": quality}
    if unit:
        data["unit"] = unit
    return NewEvent("telemetry.point", source, data, read_ms, _TELEMETRY)


_TELEMETRY = Lane.TELEMETRY  # an enum member looked up once, not per reading


class Online(StrEnum):
    UNKNOWN = "unknown"  # not yet heard from since the gateway started
    ONLINE = "online"
    OFFLINE = "offline"


class DeviceLiveness:
    """One device's online state. Reports each change once, as an event; never reports a device
    as online that has not answered, and never stays silent about one that stopped answering."""

    def __init__(self, sink: EventSink, device: str, family: str) -> None:
        self.sink = sink
        self.device = device
        self.family = family
        self.state = Online.UNKNOWN
        self.since_ms = now_ms()
        self.last_reason = ""
        self.transitions = 0

    @property
    def online(self) -> bool:
        return self.state is Online.ONLINE

    async def answered(self, **data: Any) -> bool:
        """The device answered; True when that brought it online (an event was emitted)."""
        if self.state is Online.ONLINE:
            return False
        await self._change(Online.ONLINE, "answered", data)
        return True

    async def failed(self, reason: str, **data: Any) -> bool:
        """The device stopped answering (after the driver's retries); True when that took it
        offline. A device that never answered since start goes offline too: unknown is not fine."""
        self.last_reason = reason
        if self.state is Online.OFFLINE:
            return False
        await self._change(Online.OFFLINE, reason, data)
        return True

    async def _change(self, state: Online, reason: str, data: dict[str, Any]) -> None:
        t = now_ms()
        was = self.state
        self.state = state
        self.transitions += 1
        kind = "device.online" if state is Online.ONLINE else "device.offline"
        body = {"family": self.family, "reason": reason, "was": was.value, "was_since_ms": self.since_ms}
        body.update(data)
        self.since_ms = t
        await self.sink.emit([NewEvent(kind, self.device, body, time_ms=t)])


def fault_event(source: str, family: str, fault: str, detail: str = "") -> NewEvent:
    return NewEvent("device.fault", source, {"family": family, "fault": fault, "detail": detail})


async def emit_fault(sink: EventSink, source: str, family: str, fault: str, detail: str = "") -> None:
    await sink.emit([fault_event(source, family, fault, detail)])


@dataclass
class Backoff:
    """Delays for retrying a device that went away: ``min_s`` first, doubling up to ``max_s``;
    ``reset`` when it answers again."""

    min_s: float
    max_s: float
    current: float = 0.0

    def next(self) -> float:
        self.current = self.min_s if self.current == 0.0 else min(self.current * 2, self.max_s)
        return self.current

    def reset(self) -> None:
        self.current = 0.0


class Driver(Protocol):
    """A device family's driver: ``run`` polls or listens until cancelled, emitting into its sink,
    and never returns because one device failed."""

    async def run(self) -> None: ...


class RecordingSink:
    """An EventSink that keeps what it is given: for simulators' self-checks, tests and benches."""

    def __init__(self) -> None:
        self.events: list[NewEvent] = []

    async def emit(self, events: Any) -> None:
        self.events.extend(events)

    def of_kind(self, kind: str) -> list[NewEvent]:
        return [e for e in self.events if e.kind == kind]
