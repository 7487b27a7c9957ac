"""Ingest end to end: a real Mosquitto (a private one per module, on its own port, so that no
other test's gateways get our rejects), real MQTT clients, real databases."""

import asyncio
import contextlib
import secrets
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from cloud.config import CloudConfig
from cloud.db import SessionFactory, create_engine, session_factory
from cloud.ingest import Ingest
from cloud.models import Event, Gateway, IngestReject
from cloud.registry import add_gateway
from protocols.envelope import Ack, EventBatch, GatewayState, Reject, encode
from protocols.topics import Channel
from tests.cloud.conftest import Database
from tests.cloud.helpers import (
    GatewayClient,
    acked_ranges,
    make_events,
    metric,
    new_gateway_id,
    new_store_id,
    wait_for,
)
from tests.support.mosquitto import MosquittoProcess, make_broker_dir
from tests.support.tcpproxy import TcpProxy


def ingest_config(broker: MosquittoProcess, tmp_path: Path, **ingest: Any) -> CloudConfig:
    return CloudConfig.model_validate(
        {
            "data_dir": str(tmp_path),
            "mqtt": {
                "url": broker.url,
                "password": "not-checked-by-this-broker",
                "client_id": f"ingest-{secrets.token_hex(4)}",
            },
            "ingest": ingest,
        }
    )


@contextlib.asynccontextmanager
async def running(config: CloudConfig, sessions: SessionFactory, **options: Any) -> AsyncIterator[Ingest]:
    ingest = Ingest(config, sessions, **options)
    task = asyncio.create_task(ingest.run())
    try:
        await asyncio.wait_for(ingest.wait_ready(), 15)
        yield ingest
    finally:
        ingest.stop()
        await asyncio.wait_for(task, 15)


async def register(sessions: SessionFactory, *gateway_ids: str) -> None:
    async with sessions() as session, session.begin():
        for gw in gateway_ids:
            await add_gateway(session, gw)


async def stored(sessions: SessionFactory, gateway_id: str) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).where(Event.gateway_id == gateway_id)) or 0)


async def rejects_of(sessions: SessionFactory, topic_gateway: str) -> list[IngestReject]:
    async with sessions() as session:
        rows = await session.scalars(
            select(IngestReject)
            .where(IngestReject.topic.like(f"gh/v1/{topic_gateway}/%"))
            .order_by(IngestReject.id)
        )
        return list(rows.all())


@contextlib.asynccontextmanager
async def gateway(broker: MosquittoProcess, gateway_id: str) -> AsyncIterator[GatewayClient]:
    client = await GatewayClient(broker.port, gateway_id).connect()
    try:
        yield client
    finally:
        client.close()


async def test_batch_is_acked_after_commit_and_stored_once(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw, store = new_gateway_id(), new_store_id()
    await register(db.sessions, gw)
    duplicates_before = metric("gatehouse_ingest_duplicates_total")
    async with running(ingest_config(broker, tmp_path), db.sessions), gateway(broker, gw) as client:
        events = make_events(1, 20)
        client.send(store, events)
        reply = await client.next_reply(0)
        assert reply == Ack(store_id=store, ranges=[(1, 20)])
        assert await stored(db.sessions, gw) == 20

        # The ack got lost, say: the gateway resends. Acked again, stored once.
        client.send(store, events)
        assert await client.next_reply(1) == Ack(store_id=store, ranges=[(1, 20)])
        assert await stored(db.sessions, gw) == 20
    assert metric("gatehouse_ingest_duplicates_total") - duplicates_before == 20
    async with db.sessions() as session:
        row = await session.get(Gateway, gw)
    assert row is not None and row.last_seen_at is not None
    assert row.event_count == 20


async def test_bad_messages_are_rejected_and_ingest_goes_on(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw, store = new_gateway_id(), new_store_id()
    await register(db.sessions, gw)
    unanswered_before = metric("gatehouse_ingest_unanswered_rejects_total")
    malformed_before = metric("gatehouse_ingest_rejects_total", reason="malformed")
    async with running(ingest_config(broker, tmp_path), db.sessions), gateway(broker, gw) as client:
        # Decodes as JSON, but event 2's kind is not a kind: the seqs can be named in the reject.
        doc = orjson.loads(encode(EventBatch(gateway_id=gw, store_id=store, events=make_events(1, 3))))
        doc["events"][1]["kind"] = "NOT A KIND"
        client.publish(Channel.EVENTS, orjson.dumps(doc))
        reply = await client.next_reply(0)
        assert isinstance(reply, Reject)
        assert (reply.store_id, reply.ranges) == (store, [(1, 3)])
        assert reply.reason.startswith("malformed: ") and ".1.kind" in reply.reason

        # Not even JSON: nothing to name in a reject, so no reply; counted and recorded.
        client.publish(Channel.EVENTS, b"\x00 not json")
        # Ingest is still running and takes the next good batch; replies come in order, so the
        # garbage has been dealt with by the time this ack arrives.
        client.send(store, make_events(4, 2))
        assert await client.next_reply(1) == Ack(store_id=store, ranges=[(4, 5)])
        assert len(client.snapshot()) == 2
    assert await stored(db.sessions, gw) == 2
    recorded = await rejects_of(db.sessions, gw)
    assert [(r.reason.split(":")[0], r.store_id, r.ranges) for r in recorded] == [
        ("malformed", store, [[1, 3]]),
        ("malformed", None, None),
    ]
    assert recorded[0].topic == f"gh/v1/{gw}/events"
    assert metric("gatehouse_ingest_unanswered_rejects_total") - unanswered_before == 1
    assert metric("gatehouse_ingest_rejects_total", reason="malformed") - malformed_before == 2


async def test_unknown_gateway_is_rejected(db: Database, broker: MosquittoProcess, tmp_path: Path) -> None:
    gw, store = new_gateway_id(), new_store_id()  # never registered
    async with running(ingest_config(broker, tmp_path), db.sessions), gateway(broker, gw) as client:
        client.send(store, make_events(10, 3))
        reply = await client.next_reply(0)
    assert isinstance(reply, Reject)
    assert reply.ranges == [(10, 12)]
    assert reply.reason.startswith("unknown_gateway")
    assert await stored(db.sessions, gw) == 0
    (recorded,) = await rejects_of(db.sessions, gw)
    assert recorded.gateway_id == gw and recorded.ranges == [[10, 12]]


async def test_topic_and_envelope_must_name_the_same_gateway(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    sender, other, store = new_gateway_id(), new_gateway_id(), new_store_id()
    await register(db.sessions, sender, other)
    async with running(ingest_config(broker, tmp_path), db.sessions), gateway(broker, sender) as client:
        # On the sender's topic, an envelope claiming to come from another gateway.
        client.publish(
            Channel.EVENTS, encode(EventBatch(gateway_id=other, store_id=store, events=make_events(1, 2)))
        )
        reply = await client.next_reply(0)
    assert isinstance(reply, Reject)
    assert reply.reason.startswith("gateway_mismatch")
    assert reply.ranges == [(1, 2)]
    assert await stored(db.sessions, sender) == 0
    assert await stored(db.sessions, other) == 0


async def test_unknown_kind_is_stored_and_acked(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw, store = new_gateway_id(), new_store_id()
    await register(db.sessions, gw)
    async with running(ingest_config(broker, tmp_path), db.sessions), gateway(broker, gw) as client:
        client.send(store, make_events(1, 1, kind="elevator.stuck_between_floors"))
        assert await client.next_reply(0) == Ack(store_id=store, ranges=[(1, 1)])
    async with db.sessions() as session:
        kinds = (await session.scalars(select(Event.kind).where(Event.gateway_id == gw))).all()
    assert kinds == ["elevator.stuck_between_floors"]


async def test_alarm_is_taken_on_its_own_session(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw, store = new_gateway_id(), new_store_id()
    await register(db.sessions, gw)
    async with running(ingest_config(broker, tmp_path), db.sessions), gateway(broker, gw) as client:
        client.send(store, make_events(99, 1, kind="fire.alarm"), channel=Channel.ALARMS)
        assert await client.next_reply(0) == Ack(store_id=store, ranges=[(99, 99)])
        # A burst: each acked; the gateway row's bookkeeping (merged after the acks) counts all.
        for seq in range(100, 105):
            client.send(store, make_events(seq, 1, kind="smoke.alarm"), channel=Channel.ALARMS)
        await wait_for(lambda: len(client.snapshot()) >= 6, what="the burst acked")

        async def counted() -> bool:
            async with db.sessions() as session:
                row = await session.get(Gateway, gw)
                return row is not None and row.event_count == 6 and row.last_seen_at is not None

        await wait_for(counted, what="the gateway row to count the six alarms")
    assert await stored(db.sessions, gw) == 6


async def test_state_updates_the_gateway_row(db: Database, broker: MosquittoProcess, tmp_path: Path) -> None:
    gw = new_gateway_id()
    await register(db.sessions, gw)

    async def row() -> Gateway:
        async with db.sessions() as session:
            found = await session.get(Gateway, gw)
            assert found is not None
            return found

    async def is_online(expected: bool) -> bool:
        return (await row()).online is expected

    birth = GatewayState(gateway_id=gw, online=True, version="2.0.1", boot_id="b-1", clock_synced=True)
    async with running(ingest_config(broker, tmp_path), db.sessions), gateway(broker, gw) as client:
        client.publish(Channel.STATE, encode(birth))
        await wait_for(lambda: is_online(True), what="the gateway marked online")
        client.publish(Channel.STATE, encode(GatewayState(gateway_id=gw, online=False)))
        await wait_for(lambda: is_online(False), what="the gateway marked offline")
    r = await row()
    assert (r.version, r.boot_id, r.clock_synced) == ("2.0.1", "b-1", False)


async def test_queued_messages_are_grouped_and_each_acked(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw, store = new_gateway_id(), new_store_id()
    await register(db.sessions, gw)
    config = ingest_config(broker, tmp_path, max_batch_events=7)
    async with running(config, db.sessions), gateway(broker, gw) as client:
        for i in range(10):
            client.send(store, make_events(1 + 3 * i, 3))
        await wait_for(lambda: len(client.snapshot()) >= 10, what="10 acks")
        replies = client.snapshot()
    assert all(isinstance(r, Ack) for r in replies)
    assert acked_ranges(replies, store) == [(1 + 3 * i, 3 + 3 * i) for i in range(10)]
    assert await stored(db.sessions, gw) == 30


async def test_content_the_database_refuses_is_rejected_alone(
    pg: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    # PostgreSQL keeps no NUL character in text or jsonb; SQLite would take it.
    gw, store = new_gateway_id(), new_store_id()
    await register(pg.sessions, gw)
    async with running(ingest_config(broker, tmp_path), pg.sessions), gateway(broker, gw) as client:
        client.send(store, make_events(1, 2, data={"note": "nul \u0000 inside"}))
        client.send(store, make_events(3, 2))
        await wait_for(lambda: len(client.snapshot()) >= 2, what="two replies")
        replies = client.snapshot()
    rejects = [r for r in replies if isinstance(r, Reject)]
    assert len(rejects) == 1 and rejects[0].ranges == [(1, 2)]
    assert rejects[0].reason.startswith("unstorable")
    assert acked_ranges(replies, store) == [(3, 4)]
    assert await stored(pg.sessions, gw) == 2


async def test_sqlite_locked_means_no_ack_until_it_is_free(
    sqlite_url: str, broker: MosquittoProcess, tmp_path: Path
) -> None:
    engine = create_engine(sqlite_url, sqlite_busy_timeout_ms=50)
    sessions = session_factory(engine)
    gw, store = new_gateway_id(), new_store_id()
    await register(sessions, gw)
    errors_before = metric("gatehouse_ingest_db_errors_total")
    blocker = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
    try:
        config = ingest_config(broker, tmp_path)
        async with running(config, sessions, retry_max_s=0.2), gateway(broker, gw) as client:
            blocker.execute("BEGIN EXCLUSIVE")
            client.send(store, make_events(1, 5))
            await wait_for(
                lambda: metric("gatehouse_ingest_db_errors_total") >= errors_before + 2,
                what="ingest to fail on the locked database (twice)",
            )
            assert client.snapshot() == []  # not committed: not acked
            blocker.execute("ROLLBACK")
            assert await client.next_reply(0) == Ack(store_id=store, ranges=[(1, 5)])
        assert await stored(sessions, gw) == 5
    finally:
        blocker.close()
        await engine.dispose()


@pytest.mark.parametrize("fault", ["cut", "blackhole"])
async def test_postgres_gone_means_no_ack_until_it_is_back(
    pg: Database, broker: MosquittoProcess, tmp_path: Path, fault: str
) -> None:
    """cut: the server resets every connection. blackhole: a route gone dark, no reset and no
    answer (a half-open connection), which must time out rather than stall ingest for ever."""
    gw, store = new_gateway_id(), new_store_id()
    await register(pg.sessions, gw)
    errors_before = metric("gatehouse_ingest_db_errors_total")
    with TcpProxy(5432) as proxy:
        database = pg.url.rsplit("/", 1)[1]
        engine = create_engine(
            f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/{database}", command_timeout_s=1.0
        )
        try:
            config = ingest_config(broker, tmp_path)
            # The alarms thread's own engine times out as fast as the test's.
            config = config.model_copy(
                update={"database": config.database.model_copy(update={"command_timeout_s": 1.0})}
            )
            async with (
                running(config, session_factory(engine), retry_max_s=0.2),
                gateway(broker, gw) as client,
            ):
                client.send(store, make_events(1, 3))
                assert await client.next_reply(0) == Ack(store_id=store, ranges=[(1, 3)])
                getattr(proxy, fault)()
                client.send(store, make_events(4, 3))
                # An alarm in the outage: its own thread and connection wait it out too.
                client.send(store, make_events(7, 1, kind="fire.alarm"), channel=Channel.ALARMS)
                await wait_for(
                    lambda: metric("gatehouse_ingest_db_errors_total") >= errors_before + 2,
                    what="ingest and the alarms thread to fail on the unreachable database",
                )
                assert len(client.snapshot()) == 1  # neither the batch nor the alarm is acked
                proxy.restore()
                replies = [await client.next_reply(1), await client.next_reply(2)]
                assert sorted(replies, key=lambda r: r.ranges[0]) == [
                    Ack(store_id=store, ranges=[(4, 6)]),
                    Ack(store_id=store, ranges=[(7, 7)]),
                ]
        finally:
            await engine.dispose()
    assert await stored(pg.sessions, gw) == 7


async def test_ingest_survives_broker_restart_and_keeps_its_session(sqlite_url: str, tmp_path: Path) -> None:
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    gw, store = new_gateway_id(), new_store_id()
    await register(sessions, gw)
    persistence = make_broker_dir()
    broker = MosquittoProcess(persistence_dir=persistence)
    await asyncio.to_thread(broker.start)
    try:
        config = ingest_config(broker, tmp_path)
        async with gateway(broker, gw) as client:
            async with running(config, sessions) as ingest:
                client.send(store, make_events(1, 2))
                assert await client.next_reply(0) == Ack(store_id=store, ranges=[(1, 2)])

                await asyncio.to_thread(broker.restart)
                await asyncio.wait_for(ingest.wait_ready(), 30)
                await client.wait_subscribed()
                client.send(store, make_events(3, 2))
                assert await client.next_reply(1) == Ack(store_id=store, ranges=[(3, 4)])

            # Ingest away: the broker queues for its persistent session, and a new ingest with the
            # same client id gets what was sent meanwhile.
            client.send(store, make_events(5, 2))
            async with running(config, sessions):
                assert await client.next_reply(2) == Ack(store_id=store, ranges=[(5, 6)])
        assert await stored(sessions, gw) == 6
    finally:
        await asyncio.to_thread(broker.stop)
        shutil.rmtree(persistence, ignore_errors=True)
        shutil.rmtree(broker.workdir, ignore_errors=True)
        await engine.dispose()
