"""The gateway process: outbox, uplink and event sources, owned by one supervisor.

Every task belongs to the TaskGroup that started it; on SIGTERM/SIGINT the sources stop first,
then the outbox commits what producers already handed over, then the uplink says goodbye.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from drivers.sensors import SensorSink
from drivers.sim.synthetic import from_config
from edge import systemd
from edge.clock import Clock
from edge.config import GatewayConfig
from edge.fieldbus import DEVICES_FILE, build_drivers, publish_device_status, write_device_status
from edge.outbox import Outbox
from edge.uplink import Uplink
from protocols.events import NewEvent
from protocols.sink import EventSink

log = logging.getLogger(__name__)


def gateway_version() -> str:
    try:
        return version("gatehouse")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0+src"


class Gateway:
    def __init__(self, cfg: GatewayConfig, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or Clock(cfg.clock.synced)
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        self.outbox = outbox = await Outbox.open(
            cfg.outbox_path,
            self.clock,
            max_bytes=cfg.outbox.max_bytes,
            commit_interval_ms=cfg.outbox.commit_interval_ms,
            commit_max_events=cfg.outbox.commit_max_events,
        )
        self.uplink = uplink = Uplink(cfg, outbox, version=gateway_version())
        log.info(
            "gateway %s: store %s, next seq %d, backlog %d bytes, broker %s",
            cfg.gateway_id,
            outbox.store_id,
            (await outbox.stats()).next_seq,
            outbox.backlog_bytes,
            cfg.mqtt.url,
        )
        try:
            await outbox.accept(
                [
                    NewEvent(
                        "gateway.started",
                        "gateway",
                        {
                            "version": gateway_version(),
                            "store_id": outbox.store_id,
                            "clock_synced": self.clock.synced(),
                        },
                    )
                ]
            )
            # Drivers emit through the sensors' meanings into the outbox: a smoke detector's
            # reading becomes a smoke alarm on its way in.
            sink: EventSink = outbox
            if cfg.sensors:
                sink = SensorSink(outbox, cfg.sensors, state_dir=Path(cfg.data_dir))
            drivers = build_drivers(cfg, sink)
            devices_file = Path(cfg.data_dir) / DEVICES_FILE
            async with asyncio.TaskGroup() as tg:
                sources = [
                    tg.create_task(from_config(sink, s).run(), name=f"source-{i}")
                    for i, s in enumerate(cfg.sources)
                ]
                sources += [tg.create_task(d.run(), name=f"driver-{f}") for f, d in drivers.items()]
                if drivers:
                    sources.append(tg.create_task(publish_device_status(devices_file, drivers)))
                link = tg.create_task(uplink.run(), name="uplink")
                watchdog = tg.create_task(self._watchdog(), name="watchdog")
                systemd.notify("READY=1")
                await stop.wait()
                systemd.notify("STOPPING=1")
                # Order matters: producers stop first; the uplink says goodbye and stops reading
                # the outbox; only then does the outbox commit what it was handed and close.
                for t in sources:
                    t.cancel()
                await asyncio.gather(*sources, return_exceptions=True)
                if drivers:
                    write_device_status(devices_file, drivers, running=False)
                await uplink.close()
                link.cancel()
                watchdog.cancel()
        finally:
            await outbox.close()
        log.info("gateway %s stopped", cfg.gateway_id)

    async def _watchdog(self) -> None:
        interval = systemd.watchdog_interval_s()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            systemd.notify("WATCHDOG=1")


def run_forever(cfg: GatewayConfig) -> int:
    # The loop and aiosqlite's thread share the GIL; short slices keep an alarm's commit from
    # waiting out 5 ms slices behind the uplink's batch encoding.
    sys.setswitchinterval(0.0005)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Gateway(cfg).run(stop)

    asyncio.run(main())
    return 0
