"""The uplink against a real broker (a private Mosquitto) with a scripted cloud peer on it:
acks delete, silence means resend, rejects dead-letter, alarms overtake a backlog."""

import asyncio
import secrets
import threading
import time
from contextlib import asynccontextmanager

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.clock import Clock
from edge.config import GatewayConfig
from edge.outbox import Outbox
from edge.uplink import Uplink
from protocols import Ack, EventBatch, GatewayState, Reject, decode, encode, to_ranges
from protocols.events import Lane, NewEvent
from protocols.topics import Channel, topic
from tests.support.mosquitto import MosquittoProcess

BROKER = ("127.0.0.1", 0)  # set by the private broker fixture below


@pytest.fixture(scope="module", autouse=True)
def private_broker():
    """A Mosquitto of this module's own: nothing here depends on a broker the machine runs."""
    global BROKER
    with MosquittoProcess() as m:
        BROKER = ("127.0.0.1", m.port)
        yield m


class CloudPeer:
    """Stands where the cloud's ingest stands: receives batches, acks (or not) on the ack topic."""

    def __init__(self, gateway_id: str, auto_ack: bool = True) -> None:
        self.gw = gateway_id
        self.auto_ack = auto_ack
        self.batches: list[tuple[str, EventBatch]] = []
        self.states: list[GatewayState] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"peer-{gateway_id}")
        self.c.on_message = self._msg
        self.c.on_connect = lambda c, *_: c.subscribe([(f"gh/v1/{gateway_id}/#", 1)])

    def _msg(self, c, u, m) -> None:
        channel = m.topic.split("/", 3)[3]
        if channel in ("events", "alarms"):
            b = decode(m.payload, EventBatch)
            with self.cond:
                self.batches.append((channel, b))
                self.cond.notify_all()
            if self.auto_ack:
                self.ack(b)
        elif channel == "state" and m.payload:
            with self.cond:
                self.states.append(decode(m.payload, GatewayState))
                self.cond.notify_all()

    def ack(self, b: EventBatch) -> None:
        self.c.publish(
            topic(self.gw, Channel.ACK),
            encode(Ack(store_id=b.store_id, ranges=to_ranges(e.seq for e in b.events))),
            qos=1,
        )

    def reject(self, b: EventBatch, reason: str) -> None:
        self.c.publish(
            topic(self.gw, Channel.ACK),
            encode(Reject(store_id=b.store_id, reason=reason, ranges=to_ranges(e.seq for e in b.events))),
            qos=1,
        )

    def seqs(self, channel: str | None = None) -> list[int]:
        with self.cond:
            return [e.seq for ch, b in self.batches if channel in (None, ch) for e in b.events]

    def __enter__(self) -> "CloudPeer":
        self.c.connect(*BROKER)
        self.c.loop_start()
        return self

    def __exit__(self, *exc) -> None:
        self.c.disconnect()
        self.c.loop_stop()


async def until(cond, within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def gateway(tmp_path, **uplink):
    gw = "test-" + secrets.token_hex(4)
    cfg = GatewayConfig.model_validate(
        {
            "gateway_id": gw,
            "data_dir": str(tmp_path),
            "mqtt": {"url": f"mqtt://{BROKER[0]}:{BROKER[1]}"},
            "uplink": {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5, **uplink},
        }
    )
    ob = await Outbox.open(cfg.outbox_path, Clock("yes", boot_id="b"))
    up = Uplink(cfg, ob, version="test")
    task = asyncio.create_task(up.run())
    try:
        yield gw, ob, up
    finally:
        await up.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ob.close()


def tele(n):
    return [NewEvent("telemetry.point", "ahu-1", {"v": i}) for i in range(n)]


async def test_acked_events_are_deleted_and_birth_is_published(tmp_path):
    async with gateway(tmp_path) as (gw, ob, up):
        with CloudPeer(gw) as peer:
            await until(lambda: up.link.connected.is_set(), what="connect")
            await ob.accept(tele(500))
            await until(lambda: ob.backlog_bytes == 0, what="backlog acked")
            assert sorted(set(peer.seqs())) == list(range(1, 501))
            await until(lambda: any(s.online for s in peer.states), what="birth")
            assert peer.states[-1].store_id == ob.store_id and peer.states[-1].clock_synced


async def test_unacked_batch_is_sent_again_after_the_timeout(tmp_path):
    async with gateway(tmp_path, ack_timeout_s=0.3) as (gw, ob, up):
        with CloudPeer(gw, auto_ack=False) as peer:
            await until(lambda: up.link.connected.is_set(), what="connect")
            await ob.accept(tele(3))
            await until(lambda: peer.seqs().count(1) >= 2, what="resend")
            assert up.counters.resends >= 1
            assert ob.backlog_bytes > 0, "nothing is deleted without the cloud's ack"
            peer.ack(peer.batches[-1][1])
            await until(lambda: ob.backlog_bytes == 0, what="ack after resend")


async def test_rejected_events_land_in_dead_letter_and_are_not_resent(tmp_path):
    async with gateway(tmp_path, ack_timeout_s=0.3) as (gw, ob, up):
        with CloudPeer(gw, auto_ack=False) as peer:
            await until(lambda: up.link.connected.is_set(), what="connect")
            await ob.accept(tele(2))
            await until(lambda: peer.batches, what="batch")
            peer.reject(peer.batches[0][1], "unknown gateway")
            await until(lambda: ob.counters["rejected_events"] == 2, what="dead letter")
            st = await ob.stats()
            assert st.dead_letters == 2 and st.backlog["telemetry"] == 0


async def test_alarm_overtakes_a_backlog_held_by_a_full_window(tmp_path):
    async with gateway(tmp_path, window=1, batch_max_events=100) as (gw, ob, up):
        with CloudPeer(gw, auto_ack=False) as peer:
            await ob.accept(tele(1000))
            await until(lambda: up.link.connected.is_set(), what="connect")
            await until(lambda: peer.batches, what="first batch")
            [alarm_seq] = await ob.accept([NewEvent("smoke.alarm", "smoke-b1", {"zone": "b1"})])
            await until(lambda: alarm_seq in peer.seqs("alarms"), what="alarm on the alarms channel")
            # The window is still full of the first telemetry batch: the alarm went around it.
            assert len(peer.seqs("events")) == 100
            assert all(
                e.lane == Lane.LIFE_SAFETY for ch, b in peer.batches if ch == "alarms" for e in b.events
            )


@pytest.mark.parametrize("attempts", [1, 5, 30])
def test_backoff_has_jitter_and_a_low_cap(attempts):
    import random

    from edge.mqtt import LinkSettings, MqttLink

    link = MqttLink(
        LinkSettings("127.0.0.1", 1, "c", "u", "p", reconnect_min_s=0.25, reconnect_max_s=4.0),
        on_message=lambda *_: None,
        rng=random.Random(attempts),
    )
    delays = [link.backoff(attempts) for _ in range(200)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert len({round(d, 3) for d in delays}) > 50, "reconnect delays are spread, not in lockstep"
