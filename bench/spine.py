#!/usr/bin/env python3
"""Benchmark of the sync spine; prints one JSON line of figures.

    .venv/bin/python bench/spine.py            # the figures in the README (a few minutes)
    .venv/bin/python bench/spine.py --quick    # smaller backlog and outage, within a minute

Real processes throughout: its own Mosquitto on a free port, `gatehouse cloud serve` with one
ingest worker (on SQLite, then on a throwaway PostgreSQL database), `gatehouse gateway run`.

- outbox_append_eps: 50 concurrent producers hand over batches of 100 events (~150 bytes of data
  each) and wait for their group commit (in-process Outbox, synchronous=FULL).
- drain_eps_sqlite / drain_eps_postgres: a backlog pre-filled in the gateway's outbox, from the
  gateway's connecting (its uplink_since_ms) to the ack that empties it (its last_ack_ms).
- alarm_latency_ms_p50 / _p99: smoke alarms raised every 50 ms during those drains; from the
  alarm's acceptance on the gateway (its time_ms) to the cloud's ack for it arriving at an
  observer subscribed to the ack topic (an ack is published only after the cloud's commit).
- recovery_s: after a broker outage (30 s; 5 s with --quick) with events buffered, from the
  broker's return to the first buffered event acked.
- alarm_latency_ms_idle_p50 / _p99: the same, with no backlog draining (the floor).
- gateway_rss_mb: the gateway process's peak RSS (VmHWM) over the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge.clock import Clock  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from protocols import Ack, decode  # noqa: E402
from protocols.events import NewEvent  # noqa: E402
from tests.support.postgres import create_database, drop_database  # noqa: E402
from tests.system.harness import (  # noqa: E402
    CLOUD_PASSWORD,
    CLOUD_USER,
    Broker,
    Cloud,
    Gateway,
    Proc,
    wait_until,
)

atexit.register(Proc.kill_all)  # a failed run leaves no gateway or cloud behind

DATA = {
    "point": "ahu-1.supply_air_temp",
    "value": 16.42,
    "unit": "degC",
    "quality": "good",
    "site": "hv-tower",
    "floor": "B1",
    "tag": "x" * 40,
}  # ~150 bytes as JSON


# A smoke alarm every 50 ms and nothing else: the drains' backlog is pre-filled instead.
ALARM_SOURCE = '[[sources]]\nkind = "synthetic"\nrate_per_s = 0\nalarm_every_s = 0.05\naccess_every_s = 0\n'


def telemetry(n: int) -> list[NewEvent]:
    return [NewEvent("telemetry.point", "ahu-1", DATA) for _ in range(n)]


async def outbox_append(tmp: Path, batches_per_producer: int) -> float:
    ob = await Outbox.open(tmp / "append.sqlite3", Clock("yes"))
    await ob.accept(telemetry(100))  # warm-up

    async def producer() -> None:
        for _ in range(batches_per_producer):
            await ob.accept(telemetry(100))

    t = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(50)))
    dt = time.perf_counter() - t
    await ob.close()
    return 50 * batches_per_producer * 100 / dt


async def prefill(path: Path, n: int) -> None:
    ob = await Outbox.open(path, Clock("yes"), commit_max_events=5000)
    for _ in range(n // 5000):
        await ob.accept(telemetry(5000))
    await ob.close()


class AckObserver:
    """Subscribes to a gateway's ack topic as the cloud user and notes when each seq was acked."""

    def __init__(self, port: int, gateway_id: str) -> None:
        self.acked_at: dict[int, float] = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-observer-{os.getpid()}")
        self.c.username_pw_set(CLOUD_USER, CLOUD_PASSWORD)
        self.c.on_message = self._msg
        self.c.on_connect = lambda c, *_: c.subscribe(f"gh/v1/{gateway_id}/ack", qos=0)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _msg(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        now = time.time()
        msg = decode(m.payload)
        if isinstance(msg, Ack):
            with self.lock:
                for a, b in msg.ranges:
                    if b - a < 50:  # alarms are acked alone; skip walking the big telemetry ranges
                        for s in range(a, b + 1):
                            self.acked_at.setdefault(s, now)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def drain(tmp: Path, db_url: str, backlog: int) -> tuple[float, list[float], float, float]:
    with Broker(tmp) as broker:
        cloud = Cloud(tmp, db_url=db_url, broker=broker)
        cloud.start()
        try:
            gw = Gateway(
                tmp,
                cloud.add_gateway("bench-gw1"),
                broker.url,
                sources=ALARM_SOURCE,
                outbox="max_bytes = 1073741824",
            )
            asyncio.run(prefill(gw.data / "outbox.sqlite3", backlog))
            observer = AckObserver(broker.mosquitto.port, gw.id)
            gw.start()
            st = wait_until(
                lambda: (s := gw.status())["counters"]["acked_total"] >= backlog and s,
                600,
                "the backlog acked",
                0.02,
            )
            assert gw.proc.p is not None
            rss = peak_rss_mb(gw.proc.p.pid)
            gw.stop()
            seconds = (st["last_ack_ms"] - st["uplink_since_ms"]) / 1000
            latencies = alarm_latencies(cloud.events(gw.id), observer.acked_at)
            observer.close()
            in_cloud_ms = cloud_alarm_mean_ms(cloud)
            return backlog / seconds, latencies, rss, in_cloud_ms
        finally:
            cloud.stop()


def cloud_alarm_mean_ms(cloud: Cloud) -> float:
    """The cloud's own share of an alarm's latency (mean, broker arrival → ack published), from its
    /metrics histogram: tells the cloud's part of a slow alarm from the gateway's and the broker's."""
    req = urllib.request.Request(f"{cloud.api}/metrics", headers={"Authorization": f"Bearer {cloud.token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("gatehouse_ingest_alarm_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("gatehouse_ingest_alarm_seconds_count"):
            count = float(line.split()[-1])
    return round(1000 * total / count, 1) if count else 0.0


def alarm_latencies(events: list[dict], acked_at: dict[int, float]) -> list[float]:
    """Milliseconds from each alarm's acceptance on the gateway to its ack reaching the observer."""
    out = []
    for e in events:
        if e["kind"] == "smoke.alarm" and e["seq"] in acked_at:
            reported = e["reported"]
            t = reported.timestamp() if hasattr(reported, "timestamp") else _parse_time(reported)
            out.append((acked_at[e["seq"]] - t) * 1000)
    return out


def idle_alarms(tmp: Path, count: int) -> list[float]:
    """Alarm latency with nothing else to do: the floor under the figures measured during a drain."""
    with Broker(tmp) as broker:
        cloud = Cloud(tmp, broker=broker)
        cloud.start()
        try:
            gw = Gateway(tmp, cloud.add_gateway("bench-idle1"), broker.url, sources=ALARM_SOURCE)
            observer = AckObserver(broker.mosquitto.port, gw.id)
            gw.start()
            wait_until(lambda: len(observer.acked_at) > count, 120, f"{count} alarms acked", 0.05)
            gw.stop()
            latencies = alarm_latencies(cloud.events(gw.id), observer.acked_at)
            observer.close()
            return latencies
        finally:
            cloud.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)


def _parse_time(value: str) -> float:
    from datetime import UTC, datetime

    dt = datetime.fromisoformat(str(value))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def recovery(tmp: Path, outage_s: float) -> float:
    source = '[[sources]]\nkind = "synthetic"\nrate_per_s = 200\nbatch = 10\naccess_every_s = 0\n'
    with Broker(tmp) as broker:
        cloud = Cloud(tmp, broker=broker)
        cloud.start()
        try:
            gw = Gateway(tmp, cloud.add_gateway("bench-rec1"), broker.url, sources=source)
            gw.start()
            wait_until(lambda: gw.status()["counters"]["acked_total"] > 100, 60, "first acks")
            broker.mosquitto.stop()
            time.sleep(outage_s)  # the outage itself
            before = gw.status()["counters"]["acked_total"]
            broker.mosquitto.start()
            back = time.time()
            wait_until(
                lambda: gw.status()["counters"]["acked_total"] > before, 120, "the first ack after", 0.01
            )
            first_ack = gw.status()["last_ack_ms"] / 1000
            gw.stop()
            return max(0.0, first_ack - back)
        finally:
            cloud.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller backlog and a 5 s outage: within a minute")
    args = ap.parse_args()
    backlog = 30_000 if args.quick else 200_000
    outage = 5.0 if args.quick else 30.0
    figures: dict[str, object] = {"quick": args.quick, "backlog_events": backlog, "outage_s": outage}
    with tempfile.TemporaryDirectory(prefix="gh-bench-") as d:
        tmp = Path(d)
        figures["outbox_append_eps"] = round(asyncio.run(outbox_append(tmp, 20 if args.quick else 100)))
        alarm_ms: list[float] = []
        rss = 0.0
        for name, url in (("sqlite", ""), ("postgres", None)):
            sub = tmp / name
            sub.mkdir()
            if url is None:
                url = asyncio.run(create_database("gh_bench"))
                try:
                    eps, lat, r, in_cloud = drain(sub, url, backlog)
                finally:
                    asyncio.run(drop_database(url))
            else:
                eps, lat, r, in_cloud = drain(sub, url, backlog)
            figures[f"drain_eps_{name}"] = round(eps)
            alarm_ms += lat
            if lat:  # per database, to tell which side a slow alarm came from
                figures[f"alarm_latency_ms_p50_{name}"] = percentile(lat, 0.5)
                figures[f"alarm_latency_ms_p99_{name}"] = percentile(lat, 0.99)
                figures[f"alarm_in_cloud_ms_mean_{name}"] = in_cloud
            rss = max(rss, r)
        if alarm_ms:
            figures["alarm_latency_ms_p50"] = percentile(alarm_ms, 0.5)
            figures["alarm_latency_ms_p99"] = percentile(alarm_ms, 0.99)
            figures["alarms_measured"] = len(alarm_ms)
        (tmp / "idle").mkdir()
        idle = idle_alarms(tmp / "idle", 40 if args.quick else 200)
        figures["alarm_latency_ms_idle_p50"] = percentile(idle, 0.5)
        figures["alarm_latency_ms_idle_p99"] = percentile(idle, 0.99)
        (tmp / "rec").mkdir()
        figures["recovery_s"] = round(recovery(tmp / "rec", outage), 2)
        figures["gateway_rss_mb"] = round(rss, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
