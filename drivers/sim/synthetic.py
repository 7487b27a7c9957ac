"""A synthetic building: believable events at a configured rate, straight into an event sink.

It stands in for the field drivers until they land (their simulators will speak the real
protocols); the demo and the sync benchmark run on it. Deterministic for a given seed.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from protocols.events import NewEvent
from protocols.sink import EventSink

METERS = [("meter-b1-main", "kWh", 1.8), ("meter-b1-hvac", "kWh", 0.9), ("water-b1-main", "m3", 0.02)]
POINTS = [
    ("ahu-1", "supply_air_temp", "degC", 16.0, 1.5),
    ("ahu-1", "return_air_temp", "degC", 23.5, 1.0),
    ("chiller-1", "chw_supply_temp", "degC", 7.0, 0.6),
    ("chiller-1", "chw_return_temp", "degC", 12.0, 0.8),
    ("pump-2", "differential_pressure", "kPa", 85.0, 6.0),
]
DOORS = ["door-lobby-east", "door-carpark-1", "door-plantroom", "door-roof"]
CARDS = [("0012345", "Zhang Wei"), ("0019876", "Li Na"), ("0020001", "Wang Fang"), ("0031337", "unknown")]
DETECTORS = ["smoke-b1-corridor", "smoke-3f-stair-a", "smoke-plantroom"]


@dataclass
class SyntheticBuilding:
    sink: EventSink
    rate_per_s: float = 5.0
    batch: int = 10
    alarm_every_s: float = 0.0
    access_every_s: float = 7.0
    seed: int = 1
    produced: int = 0
    _rng: random.Random = field(init=False)
    _meters: dict[str, float] = field(init=False)
    _n: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._meters = {m: 10_000.0 + self._rng.random() * 5000 for m, _, _ in METERS}

    def telemetry(self, count: int) -> list[NewEvent]:
        out = []
        for _ in range(count):
            self._n += 1
            if self._n % 4 == 0:
                name, unit, step = METERS[self._n % len(METERS)]
                self._meters[name] += step * self._rng.random()
                out.append(
                    NewEvent(
                        "meter.reading",
                        name,
                        {
                            "register": "total",
                            "value": round(self._meters[name], 3),
                            "unit": unit,
                            "n": self._n,
                        },
                    )
                )
            else:
                dev, point, unit, base, spread = POINTS[self._n % len(POINTS)]
                out.append(
                    NewEvent(
                        "telemetry.point",
                        dev,
                        {
                            "point": point,
                            "value": round(base + self._rng.gauss(0, spread), 2),
                            "unit": unit,
                            "quality": "good",
                            "n": self._n,
                        },
                    )
                )
        return out

    def access(self) -> list[NewEvent]:
        door = self._rng.choice(DOORS)
        card, holder = self._rng.choice(CARDS)
        if holder == "unknown":
            return [NewEvent("access.denied", door, {"card": card, "reason": "unknown card"})]
        return [
            NewEvent("access.granted", door, {"card": card, "holder": holder}),
            NewEvent("door.opened", door, {}),
            NewEvent("door.closed", door, {}),
        ]

    def alarm(self) -> list[NewEvent]:
        det = self._rng.choice(DETECTORS)
        return [NewEvent("smoke.alarm", det, {"zone": det.split("-", 1)[1], "state": "alarm"})]

    async def run(self) -> None:
        """Produce until cancelled. Each emit waits for the outbox's commit, as a driver would."""
        interval = self.batch / self.rate_per_s if self.rate_per_s > 0 else None
        next_access = time.monotonic() + self.access_every_s if self.access_every_s else None
        next_alarm = time.monotonic() + self.alarm_every_s if self.alarm_every_s else None
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            events: list[NewEvent] = []
            if next_alarm is not None and now >= next_alarm:
                events += self.alarm()
                next_alarm += self.alarm_every_s
            if next_access is not None and now >= next_access:
                events += self.access()
                next_access += self.access_every_s
            if interval is not None and now >= next_tick:
                events += self.telemetry(self.batch)
                next_tick += interval
                if next_tick < now - 1:  # fell behind (slow disk): do not try to catch up in a burst
                    next_tick = now
            if events:
                await self.sink.emit(events)
                self.produced += len(events)
            waits: list[float] = [t for t in (next_access, next_alarm) if t is not None]
            if interval is not None:
                waits.append(next_tick)
            delay = (min(waits) - time.monotonic()) if waits else 3600.0
            if delay > 0:
                await asyncio.sleep(delay)


def from_config(sink: EventSink, cfg: Any) -> SyntheticBuilding:
    return SyntheticBuilding(
        sink,
        rate_per_s=cfg.rate_per_s,
        batch=cfg.batch,
        alarm_every_s=cfg.alarm_every_s,
        access_every_s=cfg.access_every_s,
        seed=cfg.seed,
    )
