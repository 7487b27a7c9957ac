#!/usr/bin/env python3
"""Benchmark of the field drivers; prints ONE JSON line of figures.

    .venv/bin/python bench/fieldbus.py            # longer windows
    .venv/bin/python bench/fieldbus.py --quick    # well within a minute

Modbus, real processes and real sockets throughout: a simulator process (pinned to the second
core) serves 50 devices, each its own pymodbus TCP server on a loopback port, each with the same
per-point map of 100 points (``drivers.sim.modbus_server.bench_points``: every type, four tables,
unmapped gaps, listed point by point with no hand-made ranges). A gateway process (pinned to one
core with ``os.sched_setaffinity``) runs ``ModbusDriver`` emitting into a real ``edge.outbox.Outbox``
(SQLite, synchronous=FULL, group commit), i.e. the gateway's own event path. A fresh gateway
process and outbox per phase.

The simulated values change on every read: each read request advances the device's generation
``g`` and every register point of the table read then holds ``g`` (bit points flip on every read
of their table). So every value read is new and must be reported, and each reported value names
the read it came from; the simulator records when it served each generation.

- ``modbus_points_per_s``: telemetry.point events committed into the outbox per second of a
  measurement window, all 100 points of all 50 devices polled every 100 ms: a demand of 50,000
  new values/s, the target. What one core cannot keep up with shows as polls skipped and counted
  (``modbus_overruns``), never queued, and as a figure below 50,000.
- ``modbus_stale_values`` / ``modbus_duplicate_values``: checked over every telemetry event stored
  in the outbox during that phase. Duplicate: a point whose value generation (or, for bit points,
  whose value) repeats the previous one reported, or a (point, read time) stored twice. Stale: a
  value older than the last one reported for its point, or whose event time differs from the
  moment the simulator served it by more than one poll period (i.e. a time that is not its read
  time). Both must be 0.
- ``modbus_request_ratio``: read requests the simulator answered ÷ (polls × 100), i.e. requests
  with block planning ÷ requests if each point were read alone, measured in the throughput phase.
  ``modbus_request_ratio_planned`` is the same from the plan alone.
- ``modbus_healthy_cycle_ratio``: poll cycle time of 40 healthy devices with the other 10 dead
  (they accept the TCP connection and never answer) ÷ the same 40 devices' cycle time with none
  dead. Poll period 1 s; a device's poll time is from the poll's deadline to its last response
  being handled; a cycle's time is the slowest of the 40 devices in that cycle; the figure uses
  the median cycle of each run.
- ``modbus_cpu_pct_at_5000``: the gateway process's CPU time (all threads: event loop and the
  outbox's SQLite thread) ÷ wall time, in % of one core, while 50 devices × 100 points are polled
  every second and every value changes: 5,000 points/s delivered
  (``modbus_points_per_s_at_5000`` says what was delivered).
- ``gateway_idle_cpu_pct``: the same, 50 devices configured, all dead (never answering), from 8 s
  after the gateway started, when all have gone offline: probes with backoff only.

Figures of the other field drivers come from sibling modules ``bench/fieldbus_bacnet.py`` and
``bench/fieldbus_readers.py`` (each ``figures(quick) -> dict``), merged in when present.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing as mp
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

DEVICES = 50
POINTS = 100
DEAD = 10
FAST_POLL_MS = 100


def _pin(core: int) -> None:
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[core % len(cores)]})


# ---------------------------------------------------------------------------- simulator process


def sim_process(conn: Connection, devices: int, points: int) -> None:
    _pin(1)
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # dead devices are the point here
    from drivers.sim.modbus_server import SimModbusDevice, bench_points

    async def main() -> None:
        loop = asyncio.get_running_loop()
        devs = [
            SimModbusDevice(f"dev-{i:02d}", bench_points(points), churn=True, record_serves=True)
            for i in range(devices)
        ]
        for d in devs:
            await d.start()
        conn.send({d.name: d.port for d in devs})
        while True:
            cmd, arg = await loop.run_in_executor(None, conn.recv)
            if cmd == "fail":
                for d in devs:
                    d.recover()
                    if d.name in arg:
                        d.fail()
                conn.send(None)
            elif cmd == "reset":
                for d in devs:
                    d.reset_counters()
                    d.serves.clear()
                conn.send(None)
            elif cmd == "requests":
                conn.send(sum(d.requests() for d in devs))
            elif cmd == "serves":
                conn.send({d.name: d.serves for d in devs})
            elif cmd == "stop":
                for d in devs:
                    await d.stop()
                conn.send(None)
                return

    asyncio.run(main())


class Sim:
    def __init__(self, devices: int, points: int) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=sim_process, args=(child, devices, points), daemon=True)
        self.proc.start()
        child.close()  # so a simulator that dies is an EOFError here, not a hang
        self.ports: dict[str, int] = self.conn.recv()

    def ask(self, cmd: str, arg: Any = None) -> Any:
        self.conn.send((cmd, arg))
        return self.conn.recv()

    def stop(self) -> None:
        try:
            self.ask("stop")
        finally:
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()


# ---------------------------------------------------------------------------- gateway process


def device_configs(ports: dict[str, int], poll_ms: int) -> list[dict[str, Any]]:
    from drivers.sim.modbus_server import bench_points

    pts = [p.config(poll_ms=poll_ms, heartbeat_s=0) for p in bench_points(POINTS)]
    return [
        {
            "name": name,
            "host": "127.0.0.1",
            "port": port,
            "timeout_s": 1.0,
            "retries": 1,
            "backoff_min_s": 1.0,
            "backoff_max_s": 30.0,
            "points": pts,
        }
        for name, port in ports.items()
    ]


def gateway_process(conn: Connection, phase: dict[str, Any]) -> None:
    _pin(0)
    from drivers.modbus import ModbusDriver, PollRecord
    from edge.clock import Clock
    from edge.outbox import Outbox

    async def main() -> dict[str, Any]:
        outbox = await Outbox.open(phase["outbox"], Clock("yes"))
        records: list[PollRecord] = []
        watch = set(phase.get("watch", ()))
        drv = ModbusDriver.from_config(
            device_configs(phase["ports"], phase["poll_ms"]),
            outbox,
            observer=(lambda r: records.append(r) if r.device in watch else None),
        )
        task = asyncio.create_task(drv.run())
        loop = asyncio.get_running_loop()
        import logging

        logging.getLogger("edge.outbox").setLevel(logging.ERROR)  # evictions past the cap: expected
        # Warm-up: connections made, first values (all "changed") reported, dead devices offline.
        await asyncio.sleep(phase["warmup_s"])
        c0, u0, t0 = drv.counters, resource.getrusage(resource.RUSAGE_SELF), loop.time()
        accepted0 = outbox.counters["accepted_total"]
        records.clear()
        conn.send("measuring")
        await asyncio.sleep(phase["window_s"])
        c1, u1, t1 = drv.counters, resource.getrusage(resource.RUSAGE_SELF), loop.time()
        accepted1 = outbox.counters["accepted_total"]
        conn.send("measured")
        window_records = list(records)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await outbox.close()
        wall = t1 - t0
        cpu = (u1.ru_utime + u1.ru_stime) - (u0.ru_utime + u0.ru_stime)
        return {
            "wall_s": wall,
            "cpu_pct": 100.0 * cpu / wall,
            "accepted_per_s": (accepted1 - accepted0) / wall,
            "values_per_s": (c1.values_emitted - c0.values_emitted) / wall,
            "polls": c1.polls - c0.polls,
            "requests": c1.requests - c0.requests,
            "overruns": c1.overruns - c0.overruns,
            "timeouts": c1.timeouts - c0.timeouts,
            "planned_requests_per_poll": next(iter(drv.devices.values())).requests_per_poll,
            "online": sum(d.liveness.online for d in drv.devices.values()),
            "records": [(r.device, r.due, r.finished) for r in window_records],
        }

    conn.send(asyncio.run(main()))


def run_phase(sim: Sim, tmp: Path, name: str, **phase: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    phase = {"ports": sim.ports, "outbox": str(tmp / f"{name}.sqlite3"), **phase}
    proc = ctx.Process(target=gateway_process, args=(child, phase), daemon=True)
    proc.start()
    child.close()  # so a gateway that dies is an EOFError here, not a hang
    try:
        assert conn.recv() == "measuring"
        req0 = sim.ask("requests")
        assert conn.recv() == "measured"
        req1 = sim.ask("requests")
        result: dict[str, Any] = conn.recv()
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    result["sim_requests"] = req1 - req0
    return result


# ---------------------------------------------------------------------------- checks


def check_stored(
    outbox: Path, serves: dict[str, list[tuple[int, int]]], poll_ms: int
) -> tuple[int, int, int]:
    """(events checked, stale, duplicates) over every telemetry event the outbox stored."""
    served = {dev: dict(s) for dev, s in serves.items()}
    db = sqlite3.connect(outbox)
    try:
        rows = db.execute("SELECT body FROM events WHERE kind = 'telemetry.point' ORDER BY seq").fetchall()
    finally:
        db.close()
    last: dict[str, tuple[Any, int]] = {}
    seen: set[tuple[str, int]] = set()
    stale = dup = 0
    for (body,) in rows:
        ev = orjson.loads(body)
        src, t, data = ev["source"], ev["time_ms"], ev["data"]
        v = data["value"]
        if (src, t) in seen:
            dup += 1
            continue
        seen.add((src, t))
        prev = last.get(src)
        last[src] = (v, t)
        if isinstance(v, bool):
            if prev is not None and (prev[0] == v or t <= prev[1]):
                dup += 1
            continue
        if prev is not None:
            if v == prev[0]:
                dup += 1
                continue
            if v < prev[0] or t <= prev[1]:
                stale += 1
                continue
        at = served.get(src.split("/", 1)[0], {}).get(int(v))
        if at is None or abs(t - at) > poll_ms:
            stale += 1
    return len(rows), stale, dup


def cycle_time_ms(records: list[tuple[str, float, float]], poll_ms: int) -> float:
    """Median over cycles of the slowest watched device's poll time (deadline -> done)."""
    if not records:
        return float("nan")
    period = poll_ms / 1000
    base = min(due for _, due, _ in records)
    cycles: dict[int, float] = {}
    for _, due, finished in records:
        k = round((due - base) / period)
        cycles[k] = max(cycles.get(k, 0.0), finished - due)
    return 1000 * statistics.median(cycles.values())


# ---------------------------------------------------------------------------- figures


def modbus_figures(quick: bool) -> dict[str, Any]:
    window = 4.0 if quick else 20.0
    slow_window = window if quick else 2 * window  # the 1 s-period phases: cycles to take a median of
    out: dict[str, Any] = {}
    sim = Sim(DEVICES, POINTS)
    names = sorted(sim.ports)
    dead, healthy = names[:DEAD], names[DEAD:]
    try:
        with tempfile.TemporaryDirectory(prefix="gh-fieldbus-") as d:
            tmp = Path(d)
            # 1. capacity, and the stale/duplicate check over everything stored
            sim.ask("fail", [])
            sim.ask("reset")
            r = run_phase(sim, tmp, "throughput", poll_ms=FAST_POLL_MS, warmup_s=2.0, window_s=window)
            checked, stale, dup = check_stored(tmp / "throughput.sqlite3", sim.ask("serves"), FAST_POLL_MS)
            out["modbus_points_per_s"] = round(r["accepted_per_s"])
            out["modbus_stale_values"] = stale
            out["modbus_duplicate_values"] = dup
            out["modbus_values_checked"] = checked
            out["modbus_overruns"] = r["overruns"]
            out["modbus_request_ratio"] = round(r["sim_requests"] / max(1, r["polls"] * POINTS), 4)
            out["modbus_request_ratio_planned"] = r["planned_requests_per_poll"] / POINTS

            # 2. 5,000 points/s: CPU, and the healthy devices' cycle time with none dead
            sim.ask("reset")
            r = run_phase(sim, tmp, "at5000", poll_ms=1000, warmup_s=2.0, window_s=slow_window, watch=healthy)
            out["modbus_cpu_pct_at_5000"] = round(r["cpu_pct"], 2)
            out["modbus_points_per_s_at_5000"] = round(r["accepted_per_s"])
            base_cycle = cycle_time_ms(r["records"], 1000)

            # 3. the same with 10 of the 50 dead
            sim.ask("fail", dead)
            sim.ask("reset")
            r = run_phase(sim, tmp, "dead10", poll_ms=1000, warmup_s=3.0, window_s=slow_window, watch=healthy)
            dead_cycle = cycle_time_ms(r["records"], 1000)
            out["modbus_cycle_ms_none_dead"] = round(base_cycle, 2)
            out["modbus_cycle_ms_10_dead"] = round(dead_cycle, 2)
            out["modbus_healthy_cycle_ratio"] = round(dead_cycle / base_cycle, 3)
            out["modbus_online_with_10_dead"] = r["online"]

            # 4. idle: everything configured, nothing answering
            sim.ask("fail", names)
            # Measured from 8 s after start, once every device has been declared offline (1 s
            # timeout, one retry) and is being probed with backoff; the window still holds the
            # backoff's ramp (probes after 1, 2, 4, 8, 16 s), so this is an upper bound on the
            # overnight figure (one probe per device per 30 s).
            r = run_phase(sim, tmp, "idle", poll_ms=1000, warmup_s=8.0, window_s=max(slow_window, 8.0))
            out["gateway_idle_cpu_pct"] = round(r["cpu_pct"], 2)
            out["modbus_online_when_idle"] = r["online"]
    finally:
        sim.stop()
    return out


def sibling_figures(quick: bool) -> dict[str, Any]:
    """Figures from bench/fieldbus_bacnet.py and bench/fieldbus_readers.py, when they exist."""
    out: dict[str, Any] = {}
    for name in ("fieldbus_bacnet", "fieldbus_readers"):
        path = Path(__file__).with_name(f"{name}.py")
        if not path.exists():
            continue
        try:
            spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            out.update(mod.figures(quick))
        except Exception as e:  # one family's bench failing must not hide the others' figures
            out[f"{name}_error"] = f"{type(e).__name__}: {e}"[:300]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="short windows: finishes well within a minute")
    args = ap.parse_args()
    t0 = time.monotonic()
    figures: dict[str, Any] = {"quick": args.quick, "cores": len(os.sched_getaffinity(0))}
    figures.update(modbus_figures(args.quick))
    figures.update(sibling_figures(args.quick))
    figures["bench_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
