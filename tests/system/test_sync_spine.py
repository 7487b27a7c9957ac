"""The sync spine end to end: a real gateway process, a real broker, the real cloud.

Fault timing is random from a seed that each test prints (rerun one with GATEHOUSE_FAULT_SEED=N).
Sleeps here only space out faults; every wait for an outcome is a bounded condition wait.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocols import encode_batch, encode_event
from tests.support.postgres import create_database, drop_database
from tests.support.tcpproxy import TcpProxy
from tests.system.harness import (
    Broker,
    Cloud,
    Gateway,
    assert_exactly_once,
    evicted_in,
    wait_until,
)

pytestmark = pytest.mark.system

SOURCE = """
[[sources]]
kind = "synthetic"
rate_per_s = {rate}
batch = 50
alarm_every_s = {alarm}
access_every_s = 0.25
seed = {seed}
"""


def fault_seed(request: pytest.FixtureRequest) -> int:
    seed = int(os.environ.get("GATEHOUSE_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\n{request.node.name}: fault seed {seed} (rerun with GATEHOUSE_FAULT_SEED={seed})")
    return seed


class SqliteOutage:
    """Makes the cloud's SQLite database unwritable: another connection holds an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con: sqlite3.Connection | None = None

    def cut(self) -> None:
        self.con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.con.execute("BEGIN EXCLUSIVE")

    def restore(self) -> None:
        if self.con:
            self.con.execute("ROLLBACK")
            self.con.close()
            self.con = None


@pytest.mark.parametrize("db_kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("broker_kind", ["mosquitto", "embedded"])
def test_exactly_once_under_faults(tmp_path, request, broker_kind, db_kind):
    rng = random.Random(fault_seed(request))
    with _maybe_broker(tmp_path, broker_kind) as broker, _maybe_pg(db_kind) as pg:
        proxy = TcpProxy(5432).start() if pg else None
        db_url = pg.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}") if pg and proxy else ""
        cloud = Cloud(tmp_path, db_url=db_url, broker=broker)
        cloud.start()
        try:
            gw = Gateway(
                tmp_path,
                cloud.add_gateway("eo-gw1"),
                cloud.broker_url,
                sources=SOURCE.format(rate=2000, alarm=0.3, seed=rng.randrange(1000)),
                outbox="max_bytes = 2097152",
            )
            gw.start()
            outage = proxy or SqliteOutage(cloud.data / "gatehouse.db")

            def broker_restart() -> None:
                if broker:
                    broker.mosquitto.restart()
                else:
                    cloud.restart()  # the embedded broker lives in the cloud process

            def cloud_crash() -> None:
                cloud.kill()
                time.sleep(rng.uniform(0.1, 1.0))
                cloud.start()

            def gateway_crash() -> None:
                gw.kill()
                gw.start()

            def database_outage() -> None:
                outage.cut()
                time.sleep(rng.uniform(1.0, 3.0))
                outage.restore()

            faults = [
                gateway_crash,
                gateway_crash,
                gateway_crash,
                broker_restart,
                cloud_crash,
                database_outage,
            ]
            rng.shuffle(faults)
            wait_until(lambda: gw.status()["counters"]["acked_total"] > 0, 60, "first ack")
            for fault in faults:
                time.sleep(rng.uniform(0.2, 1.5))
                print(f"fault: {fault.__name__}")
                fault()
            # Stop producing, then let the gateway drain everything it accepted.
            gw.stop()
            gw.write_config()
            gw.start()
            wait_until(gw.drained, 120, "the gateway's backlog to drain")
            st = gw.status()
            events = cloud.events(gw.id)
            assert_exactly_once(events, {st["store_id"]: st["next_seq"]})
            assert st["counters"]["acked_total"] > 1000
            assert sum(1 for e in events if e["kind"] == "smoke.alarm") > 3
            print(
                f"cloud holds {len(events)} events; evicted {len(evicted_in(events))}; "
                f"gateway counters {st['counters']}"
            )
            gw.stop()
        finally:
            cloud.stop()
            if proxy:
                proxy.close()


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _maybe_broker(tmp: Path, kind: str):  # type: ignore[no-untyped-def]
    return Broker(tmp) if kind == "mosquitto" else _null()


class _maybe_pg:
    def __init__(self, kind: str) -> None:
        self.kind, self.url = kind, ""

    def __enter__(self) -> str:
        if self.kind == "postgres":
            self.url = asyncio.run(create_database("gh_sys"))
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self.url:
            asyncio.run(drop_database(self.url))


def test_offline_backlog_drains_with_alarms_ahead_of_it(tmp_path):
    with Broker(tmp_path) as broker:
        cloud = Cloud(tmp_path, broker=broker)
        cloud.start()
        try:
            reg = cloud.add_gateway("drain-gw1")
            broker.mosquitto.stop()  # the gateway starts with no broker: everything is backlog
            gw = Gateway(
                tmp_path,
                reg,
                cloud.broker_url,
                sources=SOURCE.format(rate=20000, alarm=0.05, seed=3),
                uplink="batch_max_events = 1000\nwindow = 4",
            )
            gw.start()
            wait_until(lambda: gw.status()["backlog_total"] > 60000, 60, "a backlog of 60,000 events")
            backlog_end = gw.status()["next_seq"]
            broker.mosquitto.start()
            wait_until(
                lambda: gw.status()["counters"]["acked_total"] >= backlog_end - 1, 120, "the backlog acked"
            )
            gw.stop()
            gw.write_config()  # no source: what was accepted since drains too
            gw.start()
            wait_until(gw.drained, 60, "the rest drained")
            gw.stop()
            events = cloud.events(gw.id)
            backlog_done = max(e["received"] for e in events if e["seq"] < backlog_end)
            drain_alarms = [
                e
                for e in events
                if e["kind"] == "smoke.alarm" and e["seq"] >= backlog_end and e["received"] < backlog_done
            ]
            # Alarms raised during the drain reached the cloud before the backlog had finished.
            assert len(drain_alarms) >= 3, "no alarm overtook the backlog"
            late = [
                e
                for e in events
                if e["kind"] == "smoke.alarm"
                and e["seq"] >= backlog_end
                and e["reported"] < backlog_done
                and e["received"] > backlog_done
            ]
            assert len(late) <= 1, f"{len(late)} alarms raised during the drain waited for it"
            st = gw.status()
            assert_exactly_once(events, {st["store_id"]: st["next_seq"]})
        finally:
            cloud.stop()


def test_full_store_reports_evicted_ranges_to_the_cloud(tmp_path):
    with Broker(tmp_path) as broker:
        cloud = Cloud(tmp_path, broker=broker)
        cloud.start()
        try:
            reg = cloud.add_gateway("full-gw1")
            broker.mosquitto.stop()
            gw = Gateway(
                tmp_path,
                reg,
                cloud.broker_url,
                sources=SOURCE.format(rate=5000, alarm=0.5, seed=4),
                outbox="max_bytes = 524288",
            )
            gw.start()
            wait_until(lambda: gw.status()["counters"]["evicted_events"] > 5000, 60, "evictions")
            gw.stop()
            gw.write_config(outbox="max_bytes = 524288")
            gw.start()
            broker.mosquitto.start()
            wait_until(gw.drained, 60, "drain")
            st = gw.status()
            events = cloud.events(gw.id)
            evicted = evicted_in(events)
            assert len(evicted) == st["counters"]["evicted_events"]
            kinds = {e["kind"] for e in events if (e["store_id"], e["seq"]) in evicted}
            assert not kinds, "an evicted event reached the cloud anyway"
            # Only telemetry was evicted: every alarm and access event the gateway accepted is there.
            assert_exactly_once(events, {st["store_id"]: st["next_seq"]})
            lost_lanes = {2}
            assert all(e["lane"] in lost_lanes or (e["store_id"], e["seq"]) not in evicted for e in events)
            gw.stop()
        finally:
            cloud.stop()


def test_wiped_gateway_store_gets_its_new_events_stored(tmp_path):
    cloud = Cloud(tmp_path)
    cloud.start()
    try:
        reg = cloud.add_gateway("wipe-gw1")
        gw = Gateway(tmp_path, reg, cloud.broker_url, sources=SOURCE.format(rate=500, alarm=0, seed=5))
        gw.start()
        wait_until(lambda: gw.status()["counters"]["acked_total"] > 500, 60, "first events acked")
        gw.stop()
        gw.write_config()
        gw.start()
        wait_until(gw.drained, 60, "drain")
        gw.stop()
        first = gw.status()
        shutil.rmtree(gw.data)  # a new SD card
        gw.write_config(sources=SOURCE.format(rate=500, alarm=0, seed=6))
        gw.start()
        wait_until(
            lambda: gw.drained() and gw.status()["counters"]["acked_total"] > 300, 60, "new store acked"
        )
        gw.stop()
        gw.write_config()
        gw.start()
        wait_until(gw.drained, 60, "drain")
        gw.stop()
        second = gw.status()
        assert second["store_id"] != first["store_id"]
        events = cloud.events(gw.id)
        assert_exactly_once(
            events, {first["store_id"]: first["next_seq"], second["store_id"]: second["next_seq"]}
        )
    finally:
        cloud.stop()


def _paho(url_port: int, user: str, password: str, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    c.username_pw_set(user, password)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    return c


STORE = "ab" * 16


def _batch(gateway_id: str, seqs: range) -> bytes:
    return encode_batch(
        gateway_id,
        STORE,
        [
            encode_event(
                seq=s,
                kind="telemetry.point",
                lane=2,
                time_ms=1_700_000_000_000,
                boot_id="b",
                mono_ns=1,
                clock_synced=True,
                source="x",
                data={},
            )
            for s in seqs
        ],
    )


@pytest.mark.parametrize("broker_kind", ["mosquitto", "embedded"])
def test_gateway_cannot_publish_under_another_gateways_id(tmp_path, broker_kind):
    with _maybe_broker(tmp_path, broker_kind) as broker:
        cloud = Cloud(tmp_path, broker=broker)
        cloud.start()
        try:
            a = cloud.add_gateway("acl-gw-a")
            b = cloud.add_gateway("acl-gw-b")
            port = int(cloud.broker_url.rsplit(":", 1)[1])
            acks: list[str] = []
            got = threading.Event()
            cb = _paho(port, "acl-gw-b", b["mqtt"]["password"], "acl-gw-b")
            cb.on_message = lambda c, u, m: (acks.append(m.topic), got.set())
            cb.subscribe("gh/v1/acl-gw-b/ack", qos=1)
            ca = _paho(port, "acl-gw-a", a["mqtt"]["password"], "acl-gw-a")
            ca.publish("gh/v1/acl-gw-b/events", _batch("acl-gw-b", range(1, 4)), qos=1)  # forged
            ca.publish("gh/v1/acl-gw-a/events", _batch("acl-gw-a", range(1, 4)), qos=1)  # its own
            wait_until(lambda: len(cloud.events("acl-gw-a")) == 3, 30, "A's own batch stored")
            assert cloud.events("acl-gw-b") == [], "a forged batch reached the cloud"
            assert acks == []
            for c in (ca, cb):
                c.loop_stop()
                c.disconnect()
        finally:
            cloud.stop()


def test_cloud_rejects_what_a_permissive_broker_lets_through(tmp_path):
    """Behind a broker without ACLs (a misconfigured site) the cloud's own checks still hold, and a
    real gateway that the cloud does not know dead-letters its rejected events."""
    from tests.support.mosquitto import MosquittoProcess

    with MosquittoProcess() as open_broker:
        # The cloud signs in to an anonymous broker with any credentials.
        cloud = Cloud(tmp_path, external_url=open_broker.url)
        cloud.start()
        try:
            known = cloud.add_gateway("perm-gw-known")
            port = open_broker.port
            c = _paho(port, "x", "y", "intruder")
            c.publish("gh/v1/perm-gw-known/events", _batch("perm-gw-other", range(1, 3)), qos=1)  # mismatch
            c.publish("gh/v1/perm-gw-known/events", b"\x00not json", qos=1)  # malformed
            wait_until(lambda: _metric(cloud, "reject") >= 2, 30, "two rejects counted")
            assert cloud.events("perm-gw-known") == [] and cloud.events("perm-gw-other") == []
            # A real gateway process the cloud never registered: its events are rejected and dead-lettered.
            stranger = Gateway(
                tmp_path,
                {"gateway_id": "perm-gw-stranger", "mqtt": {"password": "x"}},
                open_broker.url,
                sources=SOURCE.format(rate=50, alarm=0, seed=7),
            )
            stranger.start()
            wait_until(lambda: stranger.status()["dead_letters"] > 10, 30, "dead letters on the stranger")
            st = stranger.status()
            assert any("unknown" in r or "not registered" in r for r in st["dead_letter_reasons"]), st
            stranger.stop()
            # Ingest kept running: the known gateway's real events still flow.
            gw = Gateway(tmp_path, known, open_broker.url, sources=SOURCE.format(rate=50, alarm=0, seed=8))
            gw.start()
            wait_until(lambda: len(cloud.events("perm-gw-known")) > 20, 30, "known gateway's events stored")
            gw.stop()
            c.loop_stop()
            c.disconnect()
        finally:
            cloud.stop()


def _metric(cloud: Cloud, needle: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{cloud.api}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gatehouse_") and needle in line.split("{")[0] and not line.startswith("#"):
            if line.split("{")[0].endswith("_created"):
                continue
            total += float(line.rsplit(" ", 1)[1])
    return total
