"""The periodic "you are current" (cloud/access/confirm.py): every period the online gateways at
their site's access version get the empty access.sync, those behind get what they lack, and
nobody else gets anything; one ingest worker at a time sends; a failed round is not the last."""

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import func, select, update

from cloud.access import import_credentials, import_levels
from cloud.access.confirm import LOCK_KEY, AccessConfirmer
from cloud.config import CloudConfig
from cloud.db import SessionFactory, create_engine, session_factory
from cloud.ingest import Ingest
from cloud.models import Gateway, GatewayCommand
from cloud.mqtt_link import MqttLink
from cloud.registry import add_gateway
from cloud.server import command_link
from protocols.access import AccessDelta
from protocols.envelope import GatewayState, encode
from protocols.topics import Channel
from tests.cloud.conftest import Database
from tests.cloud.helpers import CommandGateway, StoreDouble, new_gateway_id, wait_for
from tests.support.mosquitto import MosquittoProcess

LEVELS_CSV = b"id,name,doors,schedule\nstaff,Staff,front;back,\n"


def new_site() -> str:
    return f"site-{secrets.token_hex(4)}"


def credentials_csv(first: int, n: int) -> bytes:
    rows = [f"c{i:06d},{100_000 + i},Holder {i},staff" for i in range(first, first + n)]
    return ("id,card,holder,levels\n" + "\n".join(rows) + "\n").encode()


def cloud_config(broker: MosquittoProcess, tmp_path: Path) -> CloudConfig:
    return CloudConfig.model_validate(
        {
            "data_dir": str(tmp_path),
            "mqtt": {"url": broker.url, "password": "x", "client_id": f"ingest-{secrets.token_hex(4)}"},
        }
    )


@contextlib.asynccontextmanager
async def publisher(broker: MosquittoProcess, tmp_path: Path) -> AsyncIterator[MqttLink]:
    """A command link on the test's broker: what the confirmer sends on, as ingest's link is."""
    link = command_link(cloud_config(broker, tmp_path), name="confirm")
    link.start()
    try:
        await asyncio.wait_for(link.subscribed.wait(), 15)
        yield link
    finally:
        await link.stop()


@contextlib.asynccontextmanager
async def gateways(broker: MosquittoProcess, *ids: str) -> AsyncIterator[list[CommandGateway]]:
    """Stand-ins subscribed to their ``cmd`` topics (answering nothing unless told to)."""
    clients = [await CommandGateway(broker.port, gw).connect() for gw in ids]
    try:
        yield clients
    finally:
        for c in clients:
            c.close()


async def set_online(sessions: SessionFactory, gw: str, access_version: int) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(Gateway).where(Gateway.id == gw).values(online=True, access_version=access_version)
        )


async def site_with_data(sessions: SessionFactory, *gateway_ids: str) -> str:
    """A site at access version 2 (levels, then credentials) with these gateways registered. The
    gateways of earlier tests (PostgreSQL's database is the module's) are taken offline: a round
    sees the test's gateways alone."""
    site = new_site()
    async with sessions() as session, session.begin():
        await session.execute(update(Gateway).values(online=False))
        for gw in gateway_ids:
            await add_gateway(session, gw, site)
    await import_levels(sessions, site, LEVELS_CSV)  # 1
    await import_credentials(sessions, site, credentials_csv(1, 3))  # 2
    return site


async def commands_of(sessions: SessionFactory, gw: str) -> list[GatewayCommand]:
    async with sessions() as session:
        rows = await session.scalars(
            select(GatewayCommand).where(GatewayCommand.gateway_id == gw).order_by(GatewayCommand.seq)
        )
        return list(rows.all())


def syncs(gateway: CommandGateway) -> list[AccessDelta]:
    return [AccessDelta.model_validate(c.args) for c in gateway.snapshot() if c.name == "access.sync"]


def birth(gw: str, access_version: int) -> bytes:
    return encode(
        GatewayState(
            gateway_id=gw,
            online=True,
            boot_id="boot-1",
            time_ms=int(time.time() * 1000),
            access_version=access_version,
        )
    )


# -- one round, step by step


async def test_a_round_confirms_the_current_catches_up_the_behind_and_leaves_the_rest(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    current, behind, offline, nodata = (new_gateway_id() for _ in range(4))
    await site_with_data(db.sessions, current, behind, offline)
    async with db.sessions() as session, session.begin():
        await add_gateway(session, nodata, new_site())  # a site that never had access data
    await set_online(db.sessions, current, 2)
    await set_online(db.sessions, behind, 1)
    await set_online(db.sessions, nodata, 0)
    async with db.sessions() as session, session.begin():
        await session.execute(update(Gateway).where(Gateway.id == offline).values(access_version=2))

    async with (
        publisher(broker, tmp_path) as link,
        gateways(broker, current, behind, offline, nodata) as (g_current, g_behind, g_offline, g_nodata),
    ):
        confirmer = AccessConfirmer(db.sessions, link, every_s=3600)
        first = await confirmer.run_round()
        assert (first.ran, first.confirmed, first.caught_up, first.failed) == (True, [current], [behind], [])
        await g_current.wait_commands(1)
        await g_behind.wait_commands(1)
        assert syncs(g_current) == [AccessDelta(base=2, version=2)]
        sent = g_current.snapshot()[0]
        assert sent.by == "cloud" and sent.expires_ms - sent.issued_ms == 600_000
        lacking = syncs(g_behind)[0]
        assert (lacking.base, lacking.version, len(lacking.credentials)) == (1, 2, 3)

        (row,) = await commands_of(db.sessions, current)
        assert (row.name, row.requested_by, row.status, row.args["base"], row.args["version"]) == (
            "access.sync",
            "cloud",
            "sent",
            2,
            2,
        )

        # At once again: the current one was confirmed less than a period ago, and what the
        # behind one lacks is on its way. Nobody gets anything.
        second = await confirmer.run_round()
        assert (second.ran, second.confirmed, second.caught_up, second.failed) == (True, [], [], [])
        await asyncio.sleep(0.3)  # nothing may come: give it the chance to be wrong
        assert len(g_current.snapshot()) == 1 and len(g_behind.snapshot()) == 1
        assert g_offline.snapshot() == [] and g_nodata.snapshot() == []
        assert await commands_of(db.sessions, offline) == []
        assert await commands_of(db.sessions, nodata) == []


async def test_a_refused_confirmation_does_not_count_as_one(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw = new_gateway_id()
    await site_with_data(db.sessions, gw)
    await set_online(db.sessions, gw, 2)
    async with publisher(broker, tmp_path) as link, gateways(broker, gw) as (g,):
        confirmer = AccessConfirmer(db.sessions, link, every_s=3600)
        assert (await confirmer.run_round()).confirmed == [gw]
        async with db.sessions() as session, session.begin():
            await session.execute(
                update(GatewayCommand).where(GatewayCommand.gateway_id == gw).values(status="refused")
            )
        assert (await confirmer.run_round()).confirmed == [gw]
        await g.wait_commands(2)


async def test_a_round_prunes_the_clouds_own_week_old_syncs_and_nothing_else(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw = new_gateway_id()
    await site_with_data(db.sessions, gw)
    await set_online(db.sessions, gw, 2)
    async with publisher(broker, tmp_path) as link, gateways(broker, gw) as (g,):
        confirmer = AccessConfirmer(db.sessions, link, every_s=3600)
        assert (await confirmer.run_round()).confirmed == [gw]
        await g.wait_commands(1)
        (row,) = await commands_of(db.sessions, gw)
        # The confirmation is made a week and a day old; a person's unlock of the same age stays.
        old = row.requested_at - timedelta(days=8)
        async with db.sessions() as session, session.begin():
            await session.execute(
                update(GatewayCommand).where(GatewayCommand.seq == row.seq).values(requested_at=old)
            )
            session.add(
                GatewayCommand(
                    id=uuid.uuid4().hex,
                    gateway_id=gw,
                    name="door.unlock",
                    args={"door": "d1"},
                    requested_by="manager Liu",
                    requested_at=old,
                    expires_at=old,
                    sent_at=old,
                    status="done",
                )
            )
        pruned = await confirmer.run_round()
        assert pruned.pruned == 1
        names = sorted(c.name for c in await commands_of(db.sessions, gw))
        assert names == ["access.sync", "door.unlock"]  # this round's confirmation, and the person's unlock


# -- the loop inside ingest, on the broker


async def test_ingest_confirms_each_period_and_catches_up_a_gateway_left_behind(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    period = 0.4
    gw, offline, nodata = new_gateway_id(), new_gateway_id(), new_gateway_id()
    site = await site_with_data(db.sessions, gw, offline)
    async with db.sessions() as session, session.begin():
        await add_gateway(session, nodata, new_site())
    store = StoreDouble(2)

    ingest = Ingest(cloud_config(broker, tmp_path), db.sessions, confirm_every_s=period)
    task = asyncio.create_task(ingest.run())
    try:
        await asyncio.wait_for(ingest.wait_ready(), 15)
        g = await CommandGateway(broker.port, gw, store).connect()
        g_offline = await CommandGateway(broker.port, offline, StoreDouble(2)).connect()
        g_nodata = await CommandGateway(broker.port, nodata, StoreDouble(0)).connect()
        try:
            g.publish(Channel.STATE, birth(gw, 2))
            g_nodata.publish(Channel.STATE, birth(nodata, 0))
            # The birth's "current", then one each period.
            await g.wait_commands(4, within=20)
            assert syncs(g)[:4] == [AccessDelta(base=2, version=2)] * 4
            assert {c.by for c in g.snapshot()} == {"cloud"}
            arrived = [c.issued_ms for c in g.snapshot()[1:4]]
            assert all(b - a >= period * 900 for a, b in itertools.pairwise(arrived))

            # A change that is not pushed (the import is not the API's): the next round sends the
            # gateway what it lacks, and the rounds after confirm the new version.
            await import_credentials(db.sessions, site, credentials_csv(4, 1))  # 3
            await wait_for(lambda: store.version == 3, what="the gateway caught up by a round")
            seen = len(g.snapshot())
            await g.wait_commands(seen + 1)
            assert syncs(g)[seen] == AccessDelta(base=3, version=3)
            lacking = [d for d in syncs(g) if d.version == 3 and not d.empty]
            assert [(d.base, [c.id for c in d.credentials]) for d in lacking] == [(2, ["c000004"])]

            async def answered() -> bool:
                rows = await commands_of(db.sessions, gw)
                return len(rows) >= 4 and all(r.status == "done" for r in rows[:4])

            await wait_for(answered, what="the confirmations recorded as done")
            assert g_offline.snapshot() == [] and g_nodata.snapshot() == []
        finally:
            for c in (g, g_offline, g_nodata):
                c.close()
    finally:
        ingest.stop()
        await asyncio.wait_for(task, 15)


# -- several ingest workers: one sends


async def test_a_worker_that_cannot_take_the_lock_skips_the_round(
    pg: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw = new_gateway_id()
    await site_with_data(pg.sessions, gw)
    await set_online(pg.sessions, gw, 2)
    async with publisher(broker, tmp_path) as link, gateways(broker, gw) as (g,):
        confirmer = AccessConfirmer(pg.sessions, link, every_s=3600)
        async with pg.sessions() as other, other.begin():  # another replica's round, in progress
            assert await other.scalar(select(func.pg_try_advisory_xact_lock(LOCK_KEY)))
            skipped = await confirmer.run_round()
            assert (skipped.ran, skipped.confirmed) == (False, [])
        assert await commands_of(pg.sessions, gw) == []
        done = await confirmer.run_round()  # the other round is over: the lock is free
        assert (done.ran, done.confirmed) == (True, [gw])
        await g.wait_commands(1)


@contextlib.asynccontextmanager
async def replica(url: str) -> AsyncIterator[SessionFactory]:
    """Another ingest worker's database pool (its own engine, its own connections)."""
    engine = create_engine(url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def test_two_workers_at_once_send_one_confirmation(
    pg: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw = new_gateway_id()
    await site_with_data(pg.sessions, gw)
    await set_online(pg.sessions, gw, 2)
    in_round, go_on = asyncio.Event(), asyncio.Event()

    @contextlib.asynccontextmanager
    async def slow_hold() -> AsyncIterator[None]:
        in_round.set()  # the first worker is inside its round, holding the lock
        await go_on.wait()
        yield

    async with (
        replica(pg.url) as sessions_a,
        replica(pg.url) as sessions_b,
        publisher(broker, tmp_path) as link_a,
        publisher(broker, tmp_path) as link_b,
        gateways(broker, gw) as (g,),
    ):
        a = AccessConfirmer(sessions_a, link_a, every_s=3600, hold=slow_hold)
        b = AccessConfirmer(sessions_b, link_b, every_s=3600)
        round_a = asyncio.create_task(a.run_round())
        await asyncio.wait_for(in_round.wait(), 10)
        round_b = await b.run_round()
        go_on.set()
        assert (round_b.ran, round_b.confirmed) == (False, [])
        assert (await round_a).confirmed == [gw]
        await g.wait_commands(1)
        assert len(await commands_of(pg.sessions, gw)) == 1

        # Running side by side for a while: never two confirmations closer than most of a
        # period, whoever sends them.
        period = 0.3
        a, b = (
            AccessConfirmer(s, p, every_s=period) for s, p in ((sessions_a, link_a), (sessions_b, link_b))
        )
        stopping = asyncio.Event()
        started = time.monotonic()
        loops = [asyncio.create_task(x.run(stopping)) for x in (a, b)]
        try:
            await g.wait_commands(5, within=20)
        finally:
            stopping.set()
            await asyncio.wait_for(asyncio.gather(*loops), 10)
        elapsed = time.monotonic() - started
        rows = await commands_of(pg.sessions, gw)
        times: list[datetime] = [r.requested_at for r in rows]
        gaps = [(y - x).total_seconds() for x, y in itertools.pairwise(times)]
        assert all(gap >= period * 0.9 for gap in gaps), gaps
        assert len(rows) - 1 <= elapsed / (period * 0.9) + 1
        await asyncio.sleep(0.2)
        assert len(g.snapshot()) == len(rows)


# -- failures


class FlakyPublisher:
    """A publisher that raises on its first ``failures`` publishes."""

    def __init__(self, link: MqttLink, failures: int = 1) -> None:
        self.link = link
        self.failures = failures
        self.raised = 0

    @property
    def connected(self) -> bool:
        return self.link.connected

    def publish(self, topic: str, payload: bytes) -> None:
        if self.raised < self.failures:
            self.raised += 1
            raise RuntimeError("publish failed (test)")
        self.link.publish(topic, payload)


class FlakySessions:
    """A session factory that fails its first ``failures`` calls, as a database away does."""

    def __init__(self, sessions: SessionFactory, failures: int) -> None:
        self.sessions = sessions
        self.failures = failures

    def __call__(self) -> Any:
        if self.failures:
            self.failures -= 1
            raise OSError("connection refused (test)")
        return self.sessions()


async def test_the_loop_survives_a_failing_publish(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw = new_gateway_id()
    await site_with_data(db.sessions, gw)
    await set_online(db.sessions, gw, 2)
    async with publisher(broker, tmp_path) as link, gateways(broker, gw) as (g,):
        flaky = FlakyPublisher(link)
        confirmer = AccessConfirmer(db.sessions, flaky, every_s=0.2)
        stopping = asyncio.Event()
        loop = asyncio.create_task(confirmer.run(stopping))
        try:
            await g.wait_commands(2)
        finally:
            stopping.set()
            await asyncio.wait_for(loop, 10)
        assert flaky.raised == 1
        assert syncs(g)[:2] == [AccessDelta(base=2, version=2)] * 2


async def test_the_loop_survives_a_database_outage_and_logs_it_once(
    db: Database, broker: MosquittoProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloud.access.confirm")
    gw = new_gateway_id()
    await site_with_data(db.sessions, gw)
    await set_online(db.sessions, gw, 2)
    async with publisher(broker, tmp_path) as link, gateways(broker, gw) as (g,):
        flaky = FlakySessions(db.sessions, failures=3)
        confirmer = AccessConfirmer(cast(SessionFactory, flaky), link, every_s=0.1)
        stopping = asyncio.Event()
        loop = asyncio.create_task(confirmer.run(stopping))
        try:
            await g.wait_commands(1)
        finally:
            stopping.set()
            await asyncio.wait_for(loop, 10)
        assert flaky.failures == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "confirmation round failed" in errors[0].getMessage()
    assert any("work again" in r.getMessage() for r in caplog.records)


async def test_no_round_without_the_broker(db: Database, broker: MosquittoProcess, tmp_path: Path) -> None:
    gw = new_gateway_id()
    await site_with_data(db.sessions, gw)
    await set_online(db.sessions, gw, 2)
    link = command_link(cloud_config(broker, tmp_path), name="confirm")  # never started
    confirmer = AccessConfirmer(db.sessions, link, every_s=3600)
    with pytest.raises(Exception, match="not connected"):
        await confirmer.run_round()
    assert await commands_of(db.sessions, gw) == []
