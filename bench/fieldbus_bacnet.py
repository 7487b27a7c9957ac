#!/usr/bin/env python3
"""BACnet COV latency: from a change of a present-value on the simulated device to its
``telemetry.point`` event, over real UDP on loopback; prints one JSON line.

    .venv/bin/python bench/fieldbus_bacnet.py            # 1,000 changes per figure
    .venv/bin/python bench/fieldbus_bacnet.py --quick    # 200 changes per figure, a few seconds

``bench/fieldbus.py`` imports this file by path and merges ``figures(quick)`` into its line.

- bacnet_cov_latency_ms_p50 / _p99: change on the device (drivers/sim/bacnet_device.py) to the
  event handed to the driver's sink (an in-memory sink), with confirmed COV notifications. One
  change at a time, so each figure is a round's latency, not a queue's.
- bacnet_cov_latency_outbox_ms_p50 / _p99: the same, to the event's acceptance by the gateway's
  real outbox (SQLite, synchronous=FULL, group commit), i.e. stored and ready to send.

Device and gateway share one process and one event loop (as in the tests), so the figures include
the simulated device's own work; on real networks add the wire time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.bacnet import BacnetDevice, BacnetDriver, BacnetLocal, BacnetObject  # noqa: E402
from drivers.sim.bacnet_device import BacnetDeviceSim, free_udp_port  # noqa: E402
from protocols.events import NewEvent  # noqa: E402
from protocols.sink import EventSink  # noqa: E402

POINT = "supply_air_temp"
SOURCE = f"bench-ahu/{POINT}"
WARMUP = 10


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)


class _ArrivalSink:
    """Notes when the awaited reading reaches it (after the inner sink accepted it, if any)."""

    def __init__(self, inner: EventSink | None = None) -> None:
        self.inner = inner
        self.expect: float | None = None
        self.arrived: asyncio.Future[float] | None = None

    async def emit(self, events: Sequence[NewEvent]) -> None:
        if self.inner is not None:
            await self.inner.emit(events)
        t = time.perf_counter()
        for e in events:
            if (
                e.source == SOURCE
                and self.arrived is not None
                and not self.arrived.done()
                and e.data["value"] == self.expect
            ):
                self.arrived.set_result(t)


async def _latencies(changes: int, inner: EventSink | None) -> list[float]:
    sim = BacnetDeviceSim("127.0.0.2", free_udp_port("127.0.0.2"), 1001, "bench-ahu")
    sink = _ArrivalSink(inner)
    device = BacnetDevice(
        name="bench-ahu",
        address=sim.address,
        device_instance=1001,
        objects=[BacnetObject(name=POINT, type="analog-input", instance=1)],
    )
    local = BacnetLocal(bind=f"127.0.0.1:{free_udp_port('127.0.0.1')}")
    driver = BacnetDriver([device], sink, local)
    loop = asyncio.get_running_loop()
    out: list[float] = []
    async with sim:
        task = asyncio.create_task(driver.run())
        try:
            deadline = loop.time() + 10
            while sim.active_subscriptions() < 1:
                if task.done():
                    task.result()  # raises what stopped the driver
                if loop.time() > deadline:
                    raise RuntimeError("the driver did not subscribe within 10 s")
                await asyncio.sleep(0.01)
            for i in range(changes + WARMUP):
                value = 20.0 + (i % 2)  # alternate: every change is beyond the COV increment
                sink.expect, sink.arrived = value, loop.create_future()
                t0 = time.perf_counter()
                sim.set_value(POINT, value)
                t1 = await asyncio.wait_for(sink.arrived, timeout=5)
                if i >= WARMUP:
                    out.append((t1 - t0) * 1000)
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    return out


async def _measure(quick: bool) -> dict[str, Any]:
    changes = 200 if quick else 1000
    direct = await _latencies(changes, None)
    from edge.clock import Clock
    from edge.outbox import Outbox

    with tempfile.TemporaryDirectory(prefix="gh-bench-bacnet-") as tmp:
        outbox = await Outbox.open(Path(tmp) / "outbox.sqlite3", Clock("yes"))
        try:
            stored = await _latencies(changes, outbox)
        finally:
            await outbox.close()
    return {
        "bacnet_cov_latency_ms_p50": _pct(direct, 0.50),
        "bacnet_cov_latency_ms_p99": _pct(direct, 0.99),
        "bacnet_cov_latency_outbox_ms_p50": _pct(stored, 0.50),
        "bacnet_cov_latency_outbox_ms_p99": _pct(stored, 0.99),
        "bacnet_cov_changes": changes,
    }


def figures(quick: bool = False) -> dict[str, Any]:
    """The BACnet figures; callable from synchronous code or from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_measure(quick))
    with ThreadPoolExecutor(1) as pool:  # a loop is running here: measure on a loop of our own
        return pool.submit(asyncio.run, _measure(quick)).result()


def main() -> None:
    ap = argparse.ArgumentParser(description="BACnet COV latency benchmark")
    ap.add_argument("--quick", action="store_true", help="fewer changes, a few seconds")
    args = ap.parse_args()
    print(json.dumps(figures(args.quick)), flush=True)


if __name__ == "__main__":
    main()
