"""The ingest digest (cloud/events/digest.py): latest values, hourly counts and inventories, on
both databases, first driven directly (events really stored, then handed over as ingest does),
then through a real ingest on a private Mosquitto."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cloud.events.digest import Digest, wanted
from cloud.events.repository import IncomingBatch, store_batches
from cloud.models import Event, EventCountHourly, GatewayDevice, GatewayPoint, LatestValue
from protocols.envelope import EventRecord
from protocols.inventory import (
    INVENTORY_KIND,
    INVENTORY_SOURCE,
    InventoryDevice,
    InventoryPoint,
    split_inventory,
)
from tests.cloud.conftest import Database
from tests.cloud.helpers import BASE_MS, GatewayClient, make_events, new_gateway_id, new_store_id
from tests.cloud.test_cloud_ingest import ingest_config, register, running
from tests.support.mosquitto import MosquittoProcess
from tests.support.waits import until

HOUR = 3600


def event(seq: int, kind: str, source: str, time_ms: int, data: dict[str, Any] | None = None) -> EventRecord:
    return EventRecord(
        seq=seq,
        kind=kind,
        lane=1,
        time_ms=time_ms,
        boot_id="b",
        mono_ns=seq,
        clock_synced=True,
        source=source,
        data=data if data is not None else {"seq": seq},
    )


async def store(db: Database, gateway_id: str, store_id: str, events: list[EventRecord]) -> IncomingBatch:
    batch = IncomingBatch(gateway_id, store_id, datetime.now(UTC), events)
    async with db.sessions() as session, session.begin():
        await store_batches(session, [batch])
    return batch


async def latest(db: Database, gateway_id: str) -> dict[tuple[str, str], LatestValue]:
    async with db.sessions() as session:
        rows = await session.scalars(select(LatestValue).where(LatestValue.gateway_id == gateway_id))
        return {(r.source, r.kind): r for r in rows}


async def event_id(db: Database, gateway_id: str, store_id: str, seq: int) -> int:
    async with db.sessions() as session:
        found = await session.scalar(
            select(Event.id).where(
                Event.gateway_id == gateway_id, Event.store_id == store_id, Event.seq == seq
            )
        )
    assert found is not None
    return found


async def counts(db: Database, gateway_id: str) -> dict[datetime, int]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(EventCountHourly).where(EventCountHourly.gateway_id == gateway_id)
        )
        return {r.hour: r.count for r in rows}


def test_the_kinds_with_a_current_value() -> None:
    for kind in ("telemetry.point", "meter.reading", "equipment.status", "door.opened", "device.offline"):
        assert wanted(kind).name == "LATEST", kind
    for kind in ("intrusion.armed", "fire.alarm", "smoke.clear"):
        assert wanted(kind).name == "LATEST", kind
    for kind in ("access.granted", "gateway.started", "reader.card", "equipment.fault", "panic.alarm"):
        assert wanted(kind).name == "NOTHING", kind
    assert wanted(INVENTORY_KIND).name == "INVENTORY"


async def test_newest_per_source_and_kind_with_its_event_id(db: Database) -> None:
    gw, store_id = new_gateway_id(), new_store_id()
    t = BASE_MS
    events = [
        event(1, "telemetry.point", "ahu-1/supply", t + 10, {"value": 1}),
        event(2, "telemetry.point", "ahu-1/supply", t + 30, {"value": 3}),
        event(3, "telemetry.point", "ahu-1/supply", t + 20, {"value": 2}),  # arrived late, older
        event(4, "door.opened", "door-1", t + 5),
        event(5, "door.closed", "door-1", t + 6),
        event(6, "access.granted", "door-1", t + 7),  # no current value
    ]
    batch = await store(db, gw, store_id, events)
    clock = [1_700_000_000.0]
    digest = Digest(db.sessions, clock=lambda: clock[0])
    digest.take([batch], {gw: len(events)})
    await digest.flush()

    rows = await latest(db, gw)
    assert set(rows) == {
        ("ahu-1/supply", "telemetry.point"),
        ("door-1", "door.opened"),
        ("door-1", "door.closed"),
    }
    supply = rows[("ahu-1/supply", "telemetry.point")]
    assert supply.data == {"value": 3}
    assert supply.event_id == await event_id(db, gw, store_id, 2)
    assert supply.reported_time == datetime.fromtimestamp((t + 30) / 1000, UTC)
    hour = datetime.fromtimestamp(1_700_000_000 // HOUR * HOUR, UTC)
    assert await counts(db, gw) == {hour: 6}

    # A later flush with an older value does not take the newer one back; counts add up, per hour.
    older = await store(db, gw, store_id, [event(7, "telemetry.point", "ahu-1/supply", t + 15, {"value": 0})])
    digest.take([older], {gw: 1})
    clock[0] += HOUR
    newer = await store(db, gw, store_id, [event(8, "telemetry.point", "ahu-1/supply", t + 40, {"value": 4})])
    digest.take([newer], {gw: 1})
    await digest.flush()
    assert (await latest(db, gw))[("ahu-1/supply", "telemetry.point")].data == {"value": 4}
    assert await counts(db, gw) == {
        hour: 7,
        datetime.fromtimestamp(1_700_000_000 // HOUR * HOUR + HOUR, UTC): 1,
    }
    assert not digest.pending


async def test_two_workers_flushing_in_any_order_end_with_the_newest(db: Database) -> None:
    gw, store_id = new_gateway_id(), new_store_id()
    first = await store(db, gw, store_id, [event(1, "meter.reading", "meter-1", BASE_MS + 100, {"v": 1})])
    second = await store(db, gw, store_id, [event(2, "meter.reading", "meter-1", BASE_MS + 200, {"v": 2})])
    a, b = Digest(db.sessions), Digest(db.sessions)
    a.take([second], {gw: 1})
    b.take([first], {gw: 1})
    await a.flush()
    await b.flush()  # older, flushed last
    assert (await latest(db, gw))[("meter-1", "meter.reading")].data == {"v": 2}
    assert sum((await counts(db, gw)).values()) == 2


async def test_a_failed_flush_keeps_what_it_held_and_is_retried(db: Database) -> None:
    gw, store_id = new_gateway_id(), new_store_id()
    failures = [OSError("database gone"), OSError("still gone")]

    @contextlib.asynccontextmanager
    async def flaky_gate() -> AsyncIterator[None]:
        if failures:
            raise failures.pop(0)
        yield

    digest = Digest(db.sessions, hold=flaky_gate, every_s=0.01)
    task = asyncio.create_task(digest.run())
    try:
        batch = await store(db, gw, store_id, make_events(1, 5, kind="telemetry.point"))
        digest.take([batch], {gw: 5})
        more = await store(db, gw, store_id, make_events(6, 3, kind="telemetry.point"))
        digest.take([more], {gw: 3})

        async def flushed() -> bool:
            return sum((await counts(db, gw)).values()) == 8

        await until(flushed, "the counts after two failed flushes", within=20)
    finally:
        digest.stop()
        await asyncio.wait_for(task, 10)
    assert not failures
    (only,) = (await latest(db, gw)).values()
    assert only.event_id == await event_id(db, gw, store_id, 8)


def inventory_records(
    first_seq: int, time_ms: int, devices: list[InventoryDevice], points: list[InventoryPoint], max_bytes: int
) -> list[EventRecord]:
    parts = split_inventory(devices, points, max_bytes=max_bytes)
    return [
        event(first_seq + i, INVENTORY_KIND, INVENTORY_SOURCE, time_ms, part.model_dump())
        for i, part in enumerate(parts)
    ]


def plant(
    devices: int, points_each: int, unit: str = "degC"
) -> tuple[list[InventoryDevice], list[InventoryPoint]]:
    ds = [
        InventoryDevice(name=f"dev-{d}", protocol="modbus", description=f"device {d}") for d in range(devices)
    ]
    ps = [
        InventoryPoint(source=f"dev-{d}/p{p}", device=f"dev-{d}", unit=unit)
        for d in range(devices)
        for p in range(points_each)
    ]
    return ds, ps


async def inventory_of(db: Database, gateway_id: str) -> tuple[dict[str, str], dict[str, str]]:
    async with db.sessions() as session:
        devices = await session.scalars(select(GatewayDevice).where(GatewayDevice.gateway_id == gateway_id))
        points = await session.scalars(select(GatewayPoint).where(GatewayPoint.gateway_id == gateway_id))
        return {d.device: d.protocol for d in devices}, {p.source: p.unit for p in points}


async def test_an_inventory_replaces_the_last_once_every_part_is_stored(db: Database) -> None:
    gw, store_id = new_gateway_id(), new_store_id()
    devices, points = plant(6, 40)
    records = inventory_records(1, BASE_MS, devices, points, max_bytes=2048)
    assert len(records) > 3
    digest = Digest(db.sessions)

    # The first parts alone: nothing yet (their siblings are not stored).
    head = await store(db, gw, store_id, records[:2])
    digest.take([head], {gw: 2})
    await digest.flush()
    assert await inventory_of(db, gw) == ({}, {})

    # The rest, handed to another worker: it finds all parts in the events table.
    tail = await store(db, gw, store_id, records[2:])
    other = Digest(db.sessions)
    other.take([tail], {gw: len(records) - 2})
    await other.flush()
    got_devices, got_points = await inventory_of(db, gw)
    assert got_devices == {d.name: "modbus" for d in devices}
    assert got_points == {p.source: "degC" for p in points}

    # A smaller config later: the registry follows it.
    fewer_devices, fewer_points = plant(2, 3, unit="kPa")
    later = inventory_records(100, BASE_MS + 60_000, fewer_devices, fewer_points, max_bytes=2048)
    digest.take([await store(db, gw, store_id, later)], {gw: len(later)})
    await digest.flush()
    assert await inventory_of(db, gw) == (
        {"dev-0": "modbus", "dev-1": "modbus"},
        {p.source: "kPa" for p in fewer_points},
    )

    # The first inventory's batch committed again (a resend, say): it is older, nothing changes.
    digest.take([tail], {gw: 0})
    await digest.flush()
    assert set((await inventory_of(db, gw))[0]) == {"dev-0", "dev-1"}


async def test_digest_through_a_real_ingest(db: Database, broker: MosquittoProcess, tmp_path: Path) -> None:
    gw, store_id = new_gateway_id(), new_store_id()
    await register(db.sessions, gw)
    devices, points = plant(1, 2)
    t = BASE_MS
    events = [
        *make_events(1, 50, time_ms=t),  # telemetry.point from "modbus:1/40001", the last is newest
        event(51, "door.forced", "door-lobby", t + 100, {"door": "door-lobby"}),
        *inventory_records(52, t + 200, devices, points, max_bytes=16 * 1024),
    ]
    async with running(ingest_config(broker, tmp_path), db.sessions):
        client = await GatewayClient(broker.port, gw).connect()
        try:
            client.send(store_id, events)
            await client.next_reply(0)

            async def digested() -> bool:
                return sum((await counts(db, gw)).values()) == len(events) and len(await latest(db, gw)) == 2

            await until(digested, "the digest of the batch")
        finally:
            client.close()
    rows = await latest(db, gw)
    point = rows[("modbus:1/40001", "telemetry.point")]
    assert point.event_id == await event_id(db, gw, store_id, 50)
    assert rows[("door-lobby", "door.forced")].data == {"door": "door-lobby"}

    async def applied() -> bool:
        return bool((await inventory_of(db, gw))[0])

    await until(applied, "the inventory")
    assert await inventory_of(db, gw) == ({"dev-0": "modbus"}, {"dev-0/p0": "degC", "dev-0/p1": "degC"})


async def test_a_large_flush_goes_in_small_transactions(db: Database) -> None:
    gw, store_id = new_gateway_id(), new_store_id()
    events = [event(i, "telemetry.point", f"plc/p{i}", BASE_MS + i) for i in range(1, 8)]
    batch = await store(db, gw, store_id, events)
    transactions = 0

    @contextlib.asynccontextmanager
    async def counting_gate() -> AsyncIterator[None]:
        nonlocal transactions
        transactions += 1
        yield

    digest = Digest(db.sessions, hold=counting_gate, chunk_rows=3)
    digest.take([batch], {gw: 7})
    await digest.flush()
    assert transactions == 3  # 1 count and 7 latest values, 3 rows at a time
    assert len(await latest(db, gw)) == 7 and sum((await counts(db, gw)).values()) == 7
