import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from cloud.events import IncomingBatch, list_events, store_batch, store_batches
from cloud.events.repository import reported_time
from cloud.kit.errors import InvalidInput
from cloud.kit.pagination import InvalidCursor
from cloud.models import Event
from tests.cloud.conftest import Database
from tests.cloud.helpers import make_events, new_gateway_id, new_store_id

NOW = datetime.now(UTC)


async def _count(db: Database, gateway_id: str) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).where(Event.gateway_id == gateway_id)) or 0)


async def test_same_batch_twice_is_stored_once(db: Database) -> None:
    gw, store = new_gateway_id(), new_store_id()
    events = make_events(1, 50)
    async with db.sessions() as session, session.begin():
        assert await store_batch(session, gw, store, NOW, events) == (50, 0)
    async with db.sessions() as session, session.begin():
        assert await store_batch(session, gw, store, NOW, events) == (0, 50)
    # Overlapping resend: the old half is skipped, the new half stored.
    async with db.sessions() as session, session.begin():
        assert await store_batch(session, gw, store, NOW, make_events(26, 50)) == (25, 25)
    assert await _count(db, gw) == 75


async def test_same_seq_under_a_new_store_id_is_a_new_event(db: Database) -> None:
    # A gateway whose disk was wiped starts a new store at seq 1 again: not duplicates.
    gw = new_gateway_id()
    events = make_events(1, 10)
    async with db.sessions() as session, session.begin():
        assert await store_batch(session, gw, new_store_id(), NOW, events) == (10, 0)
    async with db.sessions() as session, session.begin():
        assert await store_batch(session, gw, new_store_id(), NOW, events) == (10, 0)
    assert await _count(db, gw) == 20


async def test_grouped_batches_count_per_gateway_and_duplicates_across_messages(db: Database) -> None:
    a, b, store = new_gateway_id(), new_gateway_id(), new_store_id()
    batches = [
        IncomingBatch(a, store, NOW, make_events(1, 5)),
        IncomingBatch(b, store, NOW, make_events(1, 3)),
        IncomingBatch(a, store, NOW, make_events(1, 5)),  # a resend queued behind the first
    ]
    async with db.sessions() as session, session.begin():
        result = await store_batches(session, batches)
        # Twice in one transaction: the staging table must be empty again after the first call.
        again = await store_batches(session, [IncomingBatch(b, store, NOW, make_events(4, 2))])
    assert (result.new, result.duplicates) == (8, 5)
    assert result.new_by_gateway == {a: 5, b: 3}
    assert (again.new, again.duplicates) == (2, 0)
    assert await _count(db, a) == 5


async def test_stored_event_reads_back_exactly(db: Database) -> None:
    gw, store = new_gateway_id(), new_store_id()
    when = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    received = datetime(2025, 3, 4, 5, 6, 9, 123456, tzinfo=UTC)
    data = {"reader": "r1", "card": "04a1", "nested": {"list": [1, 2.5, None, True]}, "big": 2**70}
    events = make_events(7, 1, kind="access.granted", time_ms=int(when.timestamp() * 1000), data=data)
    async with db.sessions() as session, session.begin():
        await store_batch(session, gw, store, received, events)
    page = await _page(db, gateway_id=gw)
    (e,) = page.items
    assert (e.gateway_id, e.store_id, e.seq, e.kind, e.lane) == (gw, store, 7, "access.granted", 2)
    assert e.reported_time == when
    assert e.received_time == received
    assert e.reported_time.tzinfo is not None
    assert e.data == data
    assert (e.boot_id, e.mono_ns, e.clock_synced, e.source) == (
        events[0].boot_id,
        events[0].mono_ns,
        True,
        "modbus:1/40001",
    )


async def test_a_clock_beyond_any_calendar_is_pinned_not_refused(db: Database) -> None:
    gw, store = new_gateway_id(), new_store_id()
    events = make_events(1, 1, time_ms=2**62) + make_events(2, 1, time_ms=-(2**62))
    async with db.sessions() as session, session.begin():
        assert await store_batch(session, gw, store, NOW, events) == (2, 0)
    async with db.sessions() as session, session.begin():
        assert await store_batch(session, gw, store, NOW, events) == (0, 2)
    assert reported_time(2**62).year == 9999
    assert reported_time(-(2**62)).year == 1


async def _page(db: Database, **filters: object):  # type: ignore[no-untyped-def]
    async with db.sessions() as session:
        return await list_events(session, **filters)  # type: ignore[arg-type]


async def test_list_events_filters_newest_first(db: Database) -> None:
    gw, other, store = new_gateway_id(), new_gateway_id(), new_store_id()
    t0 = datetime(2025, 6, 1, tzinfo=UTC)
    ms = int(t0.timestamp() * 1000)
    async with db.sessions() as session, session.begin():
        await store_batch(session, gw, store, NOW, make_events(1, 3, kind="door.opened", time_ms=ms))
        await store_batch(session, gw, store, NOW, make_events(4, 2, kind="door.closed", time_ms=ms + 10_000))
        await store_batch(session, other, store, NOW, make_events(1, 2, kind="door.opened", time_ms=ms))

    page = await _page(db, gateway_id=gw)
    assert [e.seq for e in page.items] == [5, 4, 3, 2, 1]
    assert page.next_cursor is None

    page = await _page(db, gateway_id=gw, kind="door.opened")
    assert [e.seq for e in page.items] == [3, 2, 1]

    # since inclusive, until exclusive, on the reported time; a zone-less time is UTC.
    page = await _page(db, gateway_id=gw, since=t0 + timedelta(seconds=10))
    assert [e.seq for e in page.items] == [5, 4]
    page = await _page(db, gateway_id=gw, since=t0, until=datetime(2025, 6, 1, 0, 0, 10))
    assert [e.seq for e in page.items] == [3, 2, 1]

    page = await _page(db, kind="door.opened", since=t0, until=t0 + timedelta(seconds=1))
    assert {e.gateway_id for e in page.items} >= {gw, other}


async def test_cursor_pages_through_everything_once(db: Database) -> None:
    gw, store = new_gateway_id(), new_store_id()
    async with db.sessions() as session, session.begin():
        await store_batch(session, gw, store, NOW, make_events(1, 23))
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = await _page(db, gateway_id=gw, cursor=cursor, limit=10)
        seen += [e.seq for e in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(range(23, 0, -1))
    assert pages == 3


async def test_exact_page_size_has_no_empty_next_page(db: Database) -> None:
    gw, store = new_gateway_id(), new_store_id()
    async with db.sessions() as session, session.begin():
        await store_batch(session, gw, store, NOW, make_events(1, 10))
    page = await _page(db, gateway_id=gw, limit=10)
    assert len(page.items) == 10
    assert page.next_cursor is None


@pytest.mark.parametrize(
    ("filters", "error"),
    [
        ({"limit": 0}, InvalidInput),
        ({"limit": 1001}, InvalidInput),
        ({"cursor": "not-a-cursor"}, InvalidCursor),
        ({"since": NOW, "until": NOW}, InvalidInput),
    ],
)
async def test_bad_queries_are_refused(db: Database, filters: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        await _page(db, **filters)


async def test_bulk_insert_throughput(db: Database) -> None:
    """Sanity of the hot path at volume; the rate is printed (-s), never asserted."""
    gw, store = new_gateway_id(), new_store_id()
    batches = [make_events(1 + i * 5000, 5000) for i in range(10)]
    started = time.perf_counter()
    for events in batches:
        async with db.sessions() as session, session.begin():
            new, duplicates = await store_batch(session, gw, store, NOW, events)
            assert (new, duplicates) == (5000, 0)
    elapsed = time.perf_counter() - started
    print(f"\n{db.backend}: {50_000 / elapsed:,.0f} events/s (5,000 per transaction)")
    assert await _count(db, gw) == 50_000
