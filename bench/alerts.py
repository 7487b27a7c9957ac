#!/usr/bin/env python3
"""Benchmark of alerting: how fast the first notice of an alert reaches its channel, and what a
flood of flapping faults sends. Prints one JSON line of figures.

    .venv/bin/python bench/alerts.py            # 100 life-safety, 100 maintenance, the flood
    .venv/bin/python bench/alerts.py --quick    # 30 and 30, the same flood: within a minute

The real cloud (`gatehouse cloud serve`: embedded broker, ingest, the alert engine, the dispatcher,
SQLite) seeded with the demo company (its rotas and escalation policies, a webhook), notifying the
inbox (cloud/notify/inbox.py: a real SMTP server and an HTTP SMS provider and webhook receiver,
checking signatures) on loopback. A stand-in gateway, registered like any other, publishes over
MQTT as a gateway does.

- lifesafety_notify_ms_p50/p99: a smoke alarm published alone on the alarms channel → the first
  of its notices (SMS, email or webhook) received by the inbox. This includes the broker, ingest's
  storing and commit and the receiver's side, so it is an upper bound of "committed by ingest →
  handed to its channel". Target p99 ≤ 200 ms.
- maintenance_notify_ms_p50/p99: the same for an equipment fault published in a batch on the
  events channel. Target p99 ≤ 1 s.
- flood: 500 points each flapping 20 times (fault, clear, ...: 10,000 events) within a minute
  (--quick: 100 points, 2,000 events).
  flood_taken_s (from the flood's first event to the engine having taken its last fault),
  flood_alerts (one per point), flood_notices (notices written for people),
  flood_messages (messages the inbox got for people: notices to one person on one channel for one
  site within group_interval_s, here 10 s, go as one),
  flood_max_per_key_recipient (the most notices one alert key gave one person on one channel:
  target ≤ 1).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from cloud.alerts.models import Alert, Notification  # noqa: E402
from cloud.alerts.seed import demo_webhook_secret  # noqa: E402
from cloud.db import create_engine, session_factory  # noqa: E402
from cloud.notify.inbox import Inbox, InboxServer  # noqa: E402
from protocols.envelope import EventBatch, EventRecord, GatewayState, encode  # noqa: E402
from protocols.events import lane_of  # noqa: E402
from protocols.topics import Channel, topic  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.system.harness import GATEHOUSE, Cloud, Proc  # noqa: E402

atexit.register(Proc.kill_all)

GATEWAY = "bench-alerts-gw"
SITE = "harbour-view"
SMS_SECRET = "bench-sms-secret"
GROUP_INTERVAL_S = 10  # shorter than the default minute, so the grouped messages arrive within the run
TARGETS = {"lifesafety_notify_ms_p99": 200.0, "maintenance_notify_ms_p99": 1000.0}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return round(s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))], 1)


class StandIn:
    """A gateway on the broker, with the credentials the cloud gave it."""

    def __init__(self, url: str, username: str, password: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(username, password)
        self.connected = threading.Event()
        self.client.on_connect = lambda *_: self.connected.set()
        # Birth and will, as a gateway has them: without a birth the cloud holds it offline, and
        # its devices' alerts behind its offline alert.
        self.client.will_set(
            topic(GATEWAY, Channel.STATE),
            encode(GatewayState(gateway_id=GATEWAY, online=False)),
            qos=1,
            retain=True,
        )
        self.client.connect(host, int(port), keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(15):
            raise SystemExit("bench: the stand-in gateway could not connect")
        birth = GatewayState(gateway_id=GATEWAY, online=True, boot_id="bench", store_id="b" * 32)
        self.client.publish(topic(GATEWAY, Channel.STATE), encode(birth), qos=1, retain=True)
        self.store = "b" * 32
        self.seq = 0

    def send(self, channel: Channel, events: list[tuple[str, str, dict[str, Any]]]) -> None:
        records = []
        now_ms = time.time_ns() // 1_000_000
        for kind, source, data in events:
            self.seq += 1
            records.append(
                EventRecord(
                    seq=self.seq,
                    kind=kind,
                    lane=int(lane_of(kind)),
                    time_ms=now_ms,
                    boot_id="bench",
                    mono_ns=self.seq,
                    clock_synced=True,
                    source=source,
                    data=data,
                )
            )
        payload = encode(EventBatch(gateway_id=GATEWAY, store_id=self.store, events=records))
        self.client.publish(topic(GATEWAY, channel), payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def first_notice_ms(inbox: Inbox, sources: dict[str, float], timeout: float) -> dict[str, float]:
    """For each source, ms from its publish to the first message naming it."""
    got: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    wall_to_mono = time.monotonic() - time.time()
    while len(got) < len(sources) and time.monotonic() < deadline:
        for m in inbox.unique():
            text = json.dumps(m, ensure_ascii=False)
            for source, sent in sources.items():
                if source not in got and source in text:
                    got[source] = (m["received_at"] + wall_to_mono - sent) * 1000
        time.sleep(0.05)
    return got


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="gh-bench-alerts-"))
    inbox = Inbox(
        sms_secret=SMS_SECRET, webhook_secret=demo_webhook_secret("harbour"), log_path=tmp / "inbox.jsonl"
    )
    print(f"bench: the inbox's messages are in {tmp / 'inbox.jsonl'}", file=sys.stderr)
    server = InboxServer(inbox, free_port(), free_port())
    server.start()
    cloud = Cloud(
        tmp,
        extra_toml="\n".join(
            [
                "[notify]",
                'base_url = "http://127.0.0.1:8080"',
                f"group_interval_s = {GROUP_INTERVAL_S}",
                "[notify.smtp]",
                'host = "127.0.0.1"',
                f"port = {server.smtp_port}",
                'from_address = "alerts@harbour.example"',
                "[notify.sms]",
                f'url = "{server.sms_url}"',
                'key_id = "bench"',
                f'secret = "{SMS_SECRET}"',
                "",
            ]
        ),
    )
    t0 = time.monotonic()

    def phase(name: str) -> None:
        print(f"bench: {name} at {time.monotonic() - t0:.1f} s", file=sys.stderr)

    cloud.start()
    phase("cloud up")
    import subprocess

    seeded = subprocess.run(
        [
            *GATEHOUSE,
            "cloud",
            "seed-demo",
            "--config",
            str(cloud.config),
            "--json",
            "--gateway",
            GATEWAY,
            "--webhook-url",
            server.webhook_url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if seeded.returncode != 0:
        raise SystemExit(f"bench: seed-demo failed: {seeded.stderr}")
    creds = cloud.add_gateway(GATEWAY, site=SITE)
    mqtt_cfg = creds.get("mqtt", creds)
    # The gateway signs in with its id as the user name (cloud/broker): the config holds the password.
    gw = StandIn(cloud.broker_url, creds.get("gateway_id", GATEWAY), mqtt_cfg["password"])
    try:
        phase("seeded, gateway connected")
        n = 30 if args.quick else 100
        # Warm-up: the first alert pays for imports and caches.
        gw.send(Channel.ALARMS, [("smoke.alarm", "smoke-warmup", {})])
        first_notice_ms(inbox, {"smoke-warmup": time.monotonic()}, 30)

        sent: dict[str, float] = {}
        for i in range(n):
            source = f"smoke-bench-{i:03d}"
            sent[source] = time.monotonic()
            gw.send(Channel.ALARMS, [("smoke.alarm", source, {})])
            time.sleep(0.15)
        ls = first_notice_ms(inbox, sent, 60)
        phase("life safety done")

        sent = {}
        for i in range(n):
            source = f"ahu-bench-{i:03d}"
            sent[source] = time.monotonic()
            gw.send(
                Channel.EVENTS, [("equipment.fault", source, {"fault": "filter_dirty", "skill": "general"})]
            )
            time.sleep(0.15)
        mt = first_notice_ms(inbox, sent, 60)
        phase("maintenance done")

        # The flood: 500 points flapping, 10,000 events within a minute, in batches of 100.
        flood_start = time.monotonic()
        events: list[tuple[str, str, dict[str, Any]]] = []
        points = 100 if args.quick else 500
        for round_no in range(20):
            kind = "equipment.fault" if round_no % 2 == 0 else "equipment.fault_cleared"
            for p in range(points):
                events.append((kind, f"fcu-flood-{p:03d}", {"fault": "fan_fault", "skill": "general"}))
        for start in range(0, len(events), 100):
            gw.send(Channel.EVENTS, events[start : start + 100])
            time.sleep(0.25)
        flood_s = time.monotonic() - flood_start
        phase("flood sent")
        figures = asyncio.run(_flood_figures(cloud, points * 10))
        # How long the engine took to take every fault of the flood (the rest waits behind it).
        figures["flood_taken_s"] = round(figures.pop("taken_at") - flood_start, 1)
        phase("flood counted")
    finally:
        gw.close()
        cloud.stop()
        server.stop()
    return {
        "bench": "alerts",
        "quick": args.quick,
        "lifesafety_alerts": n,
        "lifesafety_notified": len(ls),
        "lifesafety_notify_ms_p50": pct(list(ls.values()), 50),
        "lifesafety_notify_ms_p99": pct(list(ls.values()), 99),
        "maintenance_alerts": n,
        "maintenance_notified": len(mt),
        "maintenance_notify_ms_p50": pct(list(mt.values()), 50),
        "maintenance_notify_ms_p99": pct(list(mt.values()), 99),
        "flood_events": len(events),
        "flood_send_s": round(flood_s, 1),
        **figures,
        "targets": {**TARGETS, "flood_max_per_key_recipient": 1},
    }


async def _flood_figures(cloud: Cloud, faults: int) -> dict[str, Any]:
    engine = create_engine(f"sqlite+aiosqlite:///{cloud.data / 'gatehouse.db'}")
    sessions = session_factory(engine)
    try:
        deadline = time.monotonic() + 60
        while True:
            async with sessions() as session:
                events = (
                    await session.execute(
                        select(func.sum(Alert.event_count)).where(Alert.source.like("fcu-flood-%"))
                    )
                ).scalar() or 0
            # Each alert counts its fault events; the clears resolve and reopen it.
            if events >= faults or time.monotonic() > deadline:
                taken_at = time.monotonic()
                break
            await asyncio.sleep(0.5)
        # Grouped notices go out as one message per person, channel and site at the end of the
        # interval: wait until none of the flood's is still to be sent (a new session each time:
        # one SQLite read transaction would keep seeing the same snapshot).
        deadline = time.monotonic() + 4 * GROUP_INTERVAL_S
        while time.monotonic() < deadline:
            async with sessions() as session:
                waiting = (
                    await session.execute(
                        select(func.count())
                        .select_from(Notification)
                        .join(Alert, Alert.id == Notification.alert_id)
                        .where(
                            Alert.source.like("fcu-flood-%"), Notification.status.in_(("pending", "sending"))
                        )
                    )
                ).scalar()
            if not waiting:
                break
            await asyncio.sleep(0.5)
        async with sessions() as session:
            alerts = (
                await session.execute(select(func.count()).where(Alert.source.like("fcu-flood-%")))
            ).scalar()
            per = (
                await session.execute(
                    select(Alert.key, Notification.user_id, Notification.channel, func.count())
                    .join(Notification, Notification.alert_id == Alert.id)
                    .where(Alert.source.like("fcu-flood-%"), Notification.user_id.is_not(None))
                    .group_by(Alert.key, Notification.user_id, Notification.channel)
                )
            ).all()
            messages = (
                await session.execute(
                    select(func.count(func.distinct(Notification.message_id)))
                    .join(Alert, Alert.id == Notification.alert_id)
                    .where(
                        Alert.source.like("fcu-flood-%"),
                        Notification.user_id.is_not(None),
                        Notification.status == "sent",
                    )
                )
            ).scalar()
            flapping = (
                await session.execute(
                    select(func.count()).where(Alert.source.like("fcu-flood-%"), Alert.flapping.is_(True))
                )
            ).scalar()
    finally:
        await engine.dispose()
    return {
        "taken_at": taken_at,
        "flood_alerts": alerts,
        "flood_flapping": flapping,
        "flood_notices": sum(r[3] for r in per),
        "flood_max_per_key_recipient": max((r[3] for r in per), default=0),
        "flood_messages": messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer alerts: within a minute")
    print(json.dumps(run(parser.parse_args()), ensure_ascii=False))


if __name__ == "__main__":
    main()
