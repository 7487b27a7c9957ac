#!/usr/bin/env python3
"""Card readers: Wiegand frames decoded per second through a pty, and OSDP card-read latency;
prints one JSON line.

    .venv/bin/python bench/fieldbus_readers.py            # 200,000 frames per framing, 100 OSDP reads
    .venv/bin/python bench/fieldbus_readers.py --quick    # 20,000 frames per framing, 20 reads; seconds

``bench/fieldbus.py`` imports this file by path and merges ``figures(quick)`` into its line.

- wiegand_frames_per_s: H10301 frames in the ``wiegand-ascii`` framing, written as fast as the pty
  takes them by the converter simulator (its own thread), read, parsed, parity-checked and emitted
  as ``reader.card`` events into a sink by the real driver (drivers/readers/converter.py); from
  the first byte written to the last event emitted. Card numbers differ frame to frame.
- wiegand_stx_frames_per_s: the same in the ``wiegand-stx`` framing.
- osdp_card_latency_ms_p50 / _max: a card presented at the simulated OSDP reader (libosdp's
  PeripheralDevice, secure channel up) to its ``reader.card`` event at the control panel driver,
  one card at a time. libosdp polls a reader every 50 ms and refreshes every 20 ms, so this is
  bounded below by the poll cycle, not by our code.

Simulators and driver share one process (and, for the Wiegand figures, two threads), as in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drivers.readers.card import CardRead  # noqa: E402
from drivers.readers.config import ReaderConfig, ReaderProtocol  # noqa: E402
from drivers.readers.converter import WiegandConverterReader  # noqa: E402
from drivers.readers.osdp import OsdpBus  # noqa: E402
from drivers.readers.wiegand import FORMATS  # noqa: E402
from drivers.sim.readers import OsdpReaderSim, WiegandConverterSim  # noqa: E402
from protocols.events import NewEvent  # noqa: E402


class CountingSink:
    """Counts reader.card events and says when ``target`` is reached; keeps nothing."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.cards = 0
        self.other: list[NewEvent] = []
        self.done = asyncio.Event()
        self.done_at = 0.0

    async def emit(self, events: Sequence[NewEvent]) -> None:
        for e in events:
            if e.kind == "reader.card":
                self.cards += 1
            else:
                self.other.append(e)
        if self.cards >= self.target and not self.done.is_set():
            self.done_at = time.perf_counter()
            self.done.set()


async def until(cond: Callable[[], bool], what: str, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {within_s} s")
        await asyncio.sleep(0.01)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 15)


async def wiegand_rate(framing: ReaderProtocol, frames: int) -> float:
    sim = WiegandConverterSim(framing)
    sink = CountingSink(frames)
    cfg = ReaderConfig(name="bench-rdr", port=sim.path, protocol=framing, baudrate=115200)
    reader = WiegandConverterReader(cfg, sink)
    task = asyncio.create_task(reader.run())
    try:
        await until(lambda: reader.liveness.online, "the converter's port open")
        fmt = FORMATS["H10301"]
        blob = b"".join(sim.framing.encode(fmt.encode(i % 65536, i % 256)) for i in range(frames))
        t0 = time.perf_counter()

        def write() -> None:
            for i in range(0, len(blob), 4096):
                sim.line.write(blob[i : i + 4096], timeout=30)

        writer = threading.Thread(target=write, name="wiegand-sim-writer")
        writer.start()
        await asyncio.wait_for(sink.done.wait(), 120)
        writer.join()
        if reader.stats.bad_parity or reader.stats.bad_frame or reader.garbage_bytes:
            raise RuntimeError(
                f"{framing}: frames lost on the way: {reader.stats}, garbage {reader.garbage_bytes}"
            )
        return frames / (sink.done_at - t0)
    finally:
        await _stop(task)
        sim.close()


async def osdp_latency(reads: int) -> list[float]:
    key = "8f4e2c1a9b7d6e5f0a1b2c3d4e5f6071"
    sim = OsdpReaderSim(address=1, scbk=key)
    sim.start()
    seen: list[float] = []
    arrived = asyncio.Event()

    async def on_card(read: CardRead) -> None:
        seen.append(time.perf_counter())
        arrived.set()

    cfg = ReaderConfig(
        name="bench-osdp", port=sim.path, protocol="osdp", address=1, scbk=key, baudrate=115200
    )
    sink = CountingSink(reads)
    bus = OsdpBus([cfg], sink, on_card)
    task = asyncio.create_task(bus.run())
    out: list[float] = []
    try:
        await until(lambda: bus.readers[0].liveness.online, "the OSDP reader online")
        for i in range(reads):
            arrived.clear()
            t0 = time.perf_counter()
            sim.present_card(1000 + i, 9)
            await asyncio.wait_for(arrived.wait(), 10)
            out.append((seen[-1] - t0) * 1000)
        return out
    finally:
        await _stop(task)
        sim.close()


async def _figures(quick: bool) -> dict[str, Any]:
    frames = 20_000 if quick else 200_000
    lat = await osdp_latency(20 if quick else 100)
    return {
        "wiegand_frames_per_s": round(await wiegand_rate("wiegand-ascii", frames)),
        "wiegand_stx_frames_per_s": round(await wiegand_rate("wiegand-stx", frames)),
        "osdp_card_latency_ms_p50": round(statistics.median(lat), 1),
        "osdp_card_latency_ms_max": round(max(lat), 1),
    }


def figures(quick: bool) -> dict[str, Any]:
    return asyncio.run(_figures(quick))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer frames and reads: a few seconds")
    args = ap.parse_args()
    t0 = time.monotonic()
    out: dict[str, Any] = {"quick": args.quick}
    out.update(figures(args.quick))
    out["bench_readers_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
