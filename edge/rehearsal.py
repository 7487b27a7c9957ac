"""A gateway's local action on a building, without broker, outbox or cloud: every driver, the
sensors' meanings, the doors, fire release, intrusion zones and equipment rules, wired exactly as
``gatehouse gateway run`` wires them, with the events kept in memory instead of the outbox.

What the local-action tests and ``bench/local.py`` run, and what an installer can rehearse a
site's access rules on against the simulated building before the hardware comes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from drivers.base import RecordingSink
from drivers.sensors import BINARY, SensorSink
from drivers.sim.building import Building
from edge.access import CredentialStore
from edge.clock import Clock
from edge.config import GatewayConfig
from edge.fieldbus import FieldDriver, build_drivers
from edge.local import LocalAction
from protocols.configuration import parse_config
from protocols.sink import EventSink


def building_config(b: Building, data_dir: Path, clock_synced: str = "yes") -> GatewayConfig:
    """A gateway config that reads ``b`` (its MQTT section points nowhere: nothing is sent)."""
    text = (
        f'gateway_id = "rehearsal"\ndata_dir = "{data_dir}"\n[mqtt]\nurl = "mqtt://127.0.0.1:9"\n'
        f'[clock]\nsynced = "{clock_synced}"\n' + b.gateway_config()
    )
    return parse_config(text, GatewayConfig, "rehearsal")


@dataclass
class LocalSite:
    building: Building
    cfg: GatewayConfig
    local: LocalAction
    sensors: SensorSink
    drivers: dict[str, FieldDriver]
    events: RecordingSink

    async def settled(self, within_s: float = 10.0) -> None:
        """Every door's lock relay written as its state says."""
        for d in self.local.doors.doors.values():
            if not await d.confirmed(within_s):
                raise TimeoutError(f"door {d.name}: lock not confirmed ({d.write_error or 'no answer'})")


@contextlib.asynccontextmanager
async def local_site(
    building: Building,
    store: CredentialStore,
    data_dir: Path,
    *,
    configure: Callable[[GatewayConfig], GatewayConfig] | None = None,
    clock: Clock | None = None,
    outbox: EventSink | None = None,
    start_within_s: float = 30.0,
) -> AsyncIterator[LocalSite]:
    """Run the local action on ``building`` (already started) until the block ends. Events go to
    ``outbox`` when given, and are also kept in ``LocalSite.events``."""
    cfg = building_config(building, data_dir)
    if configure is not None:
        cfg = configure(cfg)
    rec = RecordingSink()
    sink: EventSink = rec if outbox is None else _Tee(rec, outbox)
    local = LocalAction(cfg, sink, clock or Clock(cfg.clock.synced), store, state_dir=data_dir)
    sensors = SensorSink(local, cfg.sensors, state_dir=data_dir)
    drivers = build_drivers(cfg, sensors, on_card=local.on_card, on_keys=local.on_keys)
    local.writer.bind(drivers)
    tasks = [asyncio.create_task(local.run(), name="local-action")]
    tasks += [asyncio.create_task(d.run(), name=f"driver-{f}") for f, d in drivers.items()]
    site = LocalSite(building, cfg, local, sensors, drivers, rec)
    try:
        # Up when every binary sensor has been read once and every lock written once.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + start_within_s
        binary = [s for ss in sensors.by_point.values() for s in ss if s.cfg.meaning in BINARY]
        while any(s.active is None for s in binary):
            if loop.time() > deadline:
                missing = ", ".join(s.cfg.name for s in binary if s.active is None)
                raise TimeoutError(f"sensors not read within {start_within_s:g} s: {missing}")
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception():
                    raise RuntimeError(f"{t.get_name()} failed at start") from t.exception()
            await asyncio.sleep(0.02)
        await site.settled(start_within_s)
        yield site
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Tee:
    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    async def emit(self, events: object) -> None:
        for s in self.sinks:
            await s.emit(events)  # type: ignore[arg-type]
