"""Whose events a principal reads (cloud/events/scope.py and GET /api/v1/events), and the events
list's filters: gateway sets, sources, kind prefixes, and the two ways the newest page of a time
window is found (which must give the same answer), on SQLite and PostgreSQL."""

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from cloud.accounts.permissions import PLATFORM, Permission, Principal, Role, grants_for_roles
from cloud.api import create_app
from cloud.config import CloudConfig
from cloud.db import create_engine, session_factory
from cloud.events import list_events, store_batch
from cloud.events.repository import EventQuery, _sqlite_way, select_events, select_events_after
from cloud.events.scope import visible_gateway_ids
from cloud.kit.errors import InvalidInput, NotFound
from cloud.models import Gateway
from protocols.envelope import EventRecord
from tests.cloud.conftest import Database
from tests.cloud.helpers import make_events, new_gateway_id, new_store_id
from tests.cloud.tenancy import Tenant, bearer, make_company, make_token, role_token

TOKEN = "test-token-0123456789"
NOW = datetime.now(UTC)
T0 = datetime(2026, 10, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


@dataclass
class World:
    x: Tenant  # two sites
    y: Tenant  # one site
    x1: str  # gateway at x's first site
    x2: str  # at x's second site
    x_unplaced: str  # x's, at no site yet
    y1: str  # at y's site
    orphan: str  # no company at all


async def _gateway(db: Database, company_id: int | None, site_id: int | None) -> str:
    gateway_id = new_gateway_id()
    async with db.sessions() as session, session.begin():
        session.add(
            Gateway(id=gateway_id, password_hash="", created_at=NOW, company_id=company_id, site_id=site_id)
        )
        await store_batch(session, gateway_id, new_store_id(), NOW, make_events(1, 3, kind="door.opened"))
    return gateway_id


@pytest.fixture
async def world(db: Database) -> World:
    x = await make_company(db.sessions, sites=2)
    y = await make_company(db.sessions)
    return World(
        x=x,
        y=y,
        x1=await _gateway(db, x.company_id, x.site_ids[0]),
        x2=await _gateway(db, x.company_id, x.site_ids[1]),
        x_unplaced=await _gateway(db, x.company_id, None),
        y1=await _gateway(db, y.company_id, y.site_ids[0]),
        orphan=await _gateway(db, None, None),
    )


def _user(company_id: int, *roles: tuple[Role, int | None]) -> Principal:
    return Principal(kind="user", id=1, name="u", company_id=company_id, grants=grants_for_roles(roles))


async def _visible(db: Database, principal: Principal, site_id: int | None = None) -> list[str] | None:
    async with db.sessions() as session:
        return await visible_gateway_ids(session, principal, Permission.EVENTS_READ, site_id)


async def test_a_company_sees_its_own_gateways_only(db: Database, world: World) -> None:
    admin = _user(world.x.company_id, (Role.COMPANY_ADMIN, None))
    assert await _visible(db, admin) == sorted([world.x1, world.x2, world.x_unplaced])
    assert await _visible(db, admin, world.x.site_ids[1]) == [world.x2]
    # Another company's site is answered as if it did not exist.
    with pytest.raises(NotFound):
        await _visible(db, admin, world.y.site_ids[0])
    with pytest.raises(NotFound):
        await _visible(db, admin, 10**9)


async def test_a_site_limited_principal_sees_its_sites_gateways_only(db: Database, world: World) -> None:
    guard = _user(world.x.company_id, (Role.SECURITY_GUARD, world.x.site_ids[0]))
    # Not the unplaced gateway either: that is seen only with the permission at every site.
    assert await _visible(db, guard) == [world.x1]
    assert await _visible(db, guard, world.x.site_ids[0]) == [world.x1]
    with pytest.raises(NotFound):
        await _visible(db, guard, world.x.site_ids[1])
    finance = _user(world.x.company_id, (Role.FINANCE, None))  # no events.read anywhere
    assert await _visible(db, finance) == []


async def test_the_platform_is_unrestricted(db: Database, world: World) -> None:
    assert await _visible(db, PLATFORM) is None
    assert await _visible(db, PLATFORM, world.y.site_ids[0]) == [world.y1]


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as c:
        yield c


async def _gateways_seen(client: httpx.AsyncClient, token: str, **params: str | int) -> set[str]:
    r = await client.get("/api/v1/events", params={"limit": 1000, **params}, headers=bearer(token))
    assert r.status_code == 200, r.text
    return {e["gateway_id"] for e in r.json()["items"]}


async def test_api_lists_only_the_principals_events(
    db: Database, world: World, client: httpx.AsyncClient
) -> None:
    x_token = await role_token(db.sessions, world.x.company_id, Role.PROPERTY_MANAGER)
    assert await _gateways_seen(client, x_token) == {world.x1, world.x2, world.x_unplaced}
    assert await _gateways_seen(client, x_token, site_id=world.x.site_ids[0]) == {world.x1}
    guard = await role_token(db.sessions, world.x.company_id, Role.SECURITY_GUARD, [world.x.site_ids[1]])
    assert await _gateways_seen(client, guard) == {world.x2}
    y_token = await make_token(db.sessions, world.y.company_id, [Permission.EVENTS_READ])
    assert await _gateways_seen(client, y_token) == {world.y1}
    # The platform sees everyone's, also the gateways of no company.
    everyone = await _gateways_seen(client, TOKEN)
    assert {world.x1, world.x2, world.x_unplaced, world.y1, world.orphan} <= everyone


async def test_api_answers_404_for_what_the_principal_cannot_see(
    db: Database, world: World, client: httpx.AsyncClient
) -> None:
    guard = await role_token(db.sessions, world.x.company_id, Role.SECURITY_GUARD, [world.x.site_ids[1]])
    for params in (
        {"gateway_id": world.y1},  # another company's
        {"gateway_id": world.x1},  # its company's, at a site it does not guard
        {"site_id": world.y.site_ids[0]},
        {"site_id": world.x.site_ids[0]},
    ):
        r = await client.get("/api/v1/events", params=params, headers=bearer(guard))
        assert r.status_code == 404, params
        assert r.json()["code"] == "not_found"
    r = await client.get("/api/v1/events", params={"gateway_id": world.x2}, headers=bearer(guard))
    assert r.status_code == 200
    assert len(r.json()["items"]) == 3
    # Without events.read at all: refused before any query.
    finance = await role_token(db.sessions, world.x.company_id, Role.FINANCE)
    assert (await client.get("/api/v1/events", headers=bearer(finance))).status_code == 403


async def test_api_filters_by_source_and_kind_prefix(
    db: Database, world: World, client: httpx.AsyncClient
) -> None:
    gw, store = world.x1, new_store_id()
    async with db.sessions() as session, session.begin():
        await store_batch(session, gw, store, NOW, make_events(10, 2, kind="door.forced"))
        await store_batch(session, gw, store, NOW, make_events(20, 2, kind="access.granted"))
    r = await client.get(
        "/api/v1/events", params={"gateway_id": gw, "kind_prefix": "door."}, headers=bearer(TOKEN)
    )
    assert [e["kind"] for e in r.json()["items"]] == ["door.forced"] * 2 + ["door.opened"] * 3
    r = await client.get(
        "/api/v1/events", params={"gateway_id": gw, "source": "modbus:1/40001"}, headers=bearer(TOKEN)
    )
    assert len(r.json()["items"]) == 7
    r = await client.get(
        "/api/v1/events", params={"gateway_id": gw, "source": "nowhere"}, headers=bearer(TOKEN)
    )
    assert r.json() == {"items": [], "next_cursor": None}
    r = await client.get("/api/v1/events", params={"kind_prefix": "Door%"}, headers=bearer(TOKEN))
    assert r.status_code == 422


# ---------------------------------------------------------------------------------- the filters


def _events(
    first_seq: int, kinds: list[str], sources: list[str], start_ms: int, step_ms: int = 1000
) -> list[EventRecord]:
    out = []
    for i, (kind, source) in enumerate(zip(kinds, sources, strict=True)):
        (event,) = make_events(first_seq + i, 1, kind=kind, time_ms=start_ms + i * step_ms)
        out.append(event.model_copy(update={"source": source}))
    return out


async def _ids(db: Database, query: EventQuery, limit: int = 100, now: datetime | None = None) -> list[int]:
    async with db.sessions() as session:
        return [e.id for e in await select_events(session, query, limit, now=now)]


async def test_gateway_sets_and_sources(db: Database) -> None:
    a, b, c, store = new_gateway_id(), new_gateway_id(), new_gateway_id(), new_store_id()
    async with db.sessions() as session, session.begin():
        for gw in (a, b, c):
            await store_batch(
                session, gw, store, NOW, _events(1, ["telemetry.point"] * 3, ["p/1", "p/2", "p/3"], T0_MS)
            )
    async with db.sessions() as session:
        page = await list_events(session, gateway_ids=[a, b])
        assert {e.gateway_id for e in page.items} == {a, b}
        assert len(page.items) == 6
        assert (await list_events(session, gateway_ids=[])).items == []
        # gateway_id narrows the set; outside it, nothing.
        assert {
            e.gateway_id for e in (await list_events(session, gateway_ids=[a, b], gateway_id=b)).items
        } == {b}
        assert (await list_events(session, gateway_ids=[a, b], gateway_id=c)).items == []
        page = await list_events(session, gateway_ids=[a, b, c], source="p/2")
        assert [(e.gateway_id, e.source) for e in page.items] == [(c, "p/2"), (b, "p/2"), (a, "p/2")]
        page = await list_events(session, gateway_ids=[a], sources=["p/1", "p/3"])
        assert [e.source for e in page.items] == ["p/3", "p/1"]
        assert (await list_events(session, gateway_ids=[a], sources=[])).items == []
        assert (await list_events(session, gateway_ids=[a], source="p/1", sources=["p/3"])).items == []


async def test_kind_prefix_is_a_prefix_not_a_pattern(db: Database) -> None:
    gw, store = new_gateway_id(), new_store_id()
    kinds = ["door.held_open", "door.heldxopen", "door.opened", "doorbell.rang", "access.granted", "door_x.y"]
    async with db.sessions() as session, session.begin():
        await store_batch(session, gw, store, NOW, _events(1, kinds, ["s"] * len(kinds), T0_MS))

    async def kinds_of(prefix: str) -> list[str]:
        async with db.sessions() as session:
            return sorted(
                e.kind for e in (await list_events(session, gateway_id=gw, kind_prefix=prefix)).items
            )

    # "_" is a wildcard to LIKE, not here.
    assert await kinds_of("door.held_") == ["door.held_open"]
    assert await kinds_of("door.") == ["door.held_open", "door.heldxopen", "door.opened"]
    assert await kinds_of("door") == [
        "door.held_open",
        "door.heldxopen",
        "door.opened",
        "door_x.y",
        "doorbell.rang",
    ]
    assert await kinds_of("door.opened") == ["door.opened"]
    assert await kinds_of("z") == []
    for bad in ("", "Door.", "door%", ".door", "door\\"):
        async with db.sessions() as session:
            with pytest.raises(InvalidInput):
                await list_events(session, kind_prefix=bad)


async def test_a_common_prefix_pages_the_same_as_a_rare_one(db: Database) -> None:
    """Past the probe's bound SQLite walks the ids instead of sorting the matches: same answer."""
    gw, store = new_gateway_id(), new_store_id()
    count = 1800  # 1,200 door events: over the smallest bound (1,000)
    kinds = ["door.opened" if i % 3 else "telemetry.point" for i in range(count)]
    async with db.sessions() as session, session.begin():
        await store_batch(session, gw, store, NOW, _events(1, kinds, ["d"] * count, T0_MS, step_ms=10))
    expected = sorted((await _ids(db, EventQuery(gateway_id=gw), limit=count)), reverse=True)
    expected_doors = [i for i, kind in zip(sorted(expected), kinds, strict=True) if kind == "door.opened"][
        ::-1
    ]
    seen: list[int] = []
    cursor = None
    while True:
        async with db.sessions() as session:
            page = await list_events(session, gateway_id=gw, kind_prefix="door.", cursor=cursor, limit=300)
        seen += [e.id for e in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected_doors
    if db.backend == "sqlite":
        async with db.sessions() as session:
            way = await _sqlite_way(session, EventQuery(kind_prefix="door."), None, None, 300, False)
            assert way == (frozenset(), False)  # the walk, not the index
            way = await _sqlite_way(session, EventQuery(kind_prefix="door.f"), None, None, 300, False)
            assert way == ({"kind"}, True)


async def test_an_old_window_gives_what_the_walk_gives(db: Database) -> None:
    """A time window far behind ``now`` is read through the time index, then sorted: the same
    events and pages as walking the ids, including events that arrived late (a high id, an old
    time) and filters combined."""
    gw, other, store = new_gateway_id(), new_gateway_id(), new_store_id()
    kinds = ["telemetry.point", "door.opened", "access.granted", "door.closed"] * 25
    sources = [f"s{i % 7}" for i in range(100)]
    async with db.sessions() as session, session.begin():
        await store_batch(session, gw, store, NOW, _events(1, kinds, sources, T0_MS))
        await store_batch(session, other, store, NOW, _events(1, kinds, sources, T0_MS))
        # Late: sent days after, so with higher ids, but reported inside the window.
        await store_batch(
            session, gw, store, NOW, _events(500, ["door.forced"] * 3, ["s1"] * 3, T0_MS + 30_500)
        )
    since, until = T0 + timedelta(seconds=20), T0 + timedelta(seconds=80)
    recent = until + timedelta(seconds=1)  # "now" just after the window: the walk
    later = until + timedelta(days=30)  # a month after: the time index
    queries = [
        EventQuery(gateway_ids=(gw, other), since=since, until=until),
        EventQuery(gateway_id=gw, since=since, until=until),
        EventQuery(gateway_id=gw, since=since, until=until, kind="door.opened"),
        EventQuery(gateway_ids=(gw, other), since=since, until=until, kind_prefix="door."),
        EventQuery(gateway_ids=(gw,), since=since, until=until, source="s1"),
        EventQuery(gateway_ids=(gw, other), since=since, until=until, before_id=10**12),
    ]
    for query in queries:
        walked = await _ids(db, query, limit=1000, now=recent)
        assert walked, query
        assert walked == sorted(walked, reverse=True)
        assert await _ids(db, query, limit=1000, now=later) == walked, query
        # Page by page too: each page continues below the last id of the one before.
        paged: list[int] = []
        before = query.before_id
        while True:
            page = await _ids(db, dataclasses.replace(query, before_id=before), limit=7, now=later)
            paged += page
            if len(page) < 7:
                break
            before = page[-1]
        assert paged == walked, query


async def test_new_events_after_an_id_oldest_first(db: Database) -> None:
    a, b, store = new_gateway_id(), new_gateway_id(), new_store_id()
    async with db.sessions() as session, session.begin():
        await store_batch(session, a, store, NOW, make_events(1, 5))
        await store_batch(session, b, store, NOW, make_events(1, 5))
    async with db.sessions() as session:
        everything = await select_events_after(session, [a, b], 0, 1000)
        mine = [e.id for e in everything if e.gateway_id in (a, b)]
        assert mine == sorted(mine) and len(mine) == 10
        after = await select_events_after(session, [a], mine[1], 3)
        assert [e.gateway_id for e in after] == [a, a, a]
        assert [e.id for e in after] == sorted(e.id for e in after)
        assert [e.id for e in after] == mine[2:5]
        assert await select_events_after(session, [], 0, 10) == []


async def test_new_events_leave_out_a_kind(db: Database) -> None:
    gw, store = new_gateway_id(), new_store_id()
    async with db.sessions() as session, session.begin():
        await store_batch(session, gw, store, NOW, make_events(1, 3))
        await store_batch(session, gw, store, NOW, make_events(4, 2, kind="door.opened"))
    async with db.sessions() as session:
        events = await select_events_after(session, [gw], 0, 100, exclude_kind="telemetry.point")
    assert [e.seq for e in events] == [4, 5]


async def test_sqlite_plans_need_no_statistics(sqlite_url: str) -> None:
    """A SQLite database has no planner statistics unless someone runs ANALYZE; left to itself
    the planner would then sort all of a company's events to show the newest hundred. Each way
    select_events chooses is the only one the planner can take: the walk down the ids, a kind's
    index, or the newest ids out of an index (sorting ids only, never whole rows)."""
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    gw, store = new_gateway_id(), new_store_id()
    async with sessions() as session, session.begin():
        await store_batch(session, gw, store, NOW, make_events(1, 50, time_ms=T0_MS))
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append((statement, parameters))

    plans = {}
    later = T0 + timedelta(days=30)
    queries = {
        "newest": (EventQuery(gateway_ids=(gw, "other")), None),
        "next_page": (EventQuery(gateway_ids=(gw,), before_id=10**9), None),
        "since": (EventQuery(gateway_ids=(gw,), since=T0), T0 + timedelta(minutes=1)),
        "kind": (EventQuery(gateway_ids=(gw,), kind="telemetry.point"), None),
        "rare_prefix": (EventQuery(gateway_ids=(gw,), kind_prefix="door."), None),
        "source": (EventQuery(gateway_ids=(gw,), source="modbus:1/40001"), None),
        "old_window": (EventQuery(gateway_ids=(gw,), since=T0, until=T0 + timedelta(hours=1)), later),
    }
    try:
        for name, (query, now) in queries.items():
            async with sessions() as session:
                event.listen(engine.sync_engine, "before_cursor_execute", capture)
                try:
                    await select_events(session, query, 100, now=now)
                finally:
                    event.remove(engine.sync_engine, "before_cursor_execute", capture)
                statement, parameters = statements[-1]
                rows = await (await session.connection()).exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + statement, parameters
                )
                plans[name] = " / ".join(str(row._mapping["detail"]) for row in rows)
        async with sessions() as session:
            event.listen(engine.sync_engine, "before_cursor_execute", capture)
            try:
                await select_events_after(session, [gw], 10, 100)
            finally:
                event.remove(engine.sync_engine, "before_cursor_execute", capture)
            statement, parameters = statements[-1]
            rows = await (await session.connection()).exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, parameters
            )
            plans["after"] = " / ".join(str(row._mapping["detail"]) for row in rows)
    finally:
        await engine.dispose()
    for name in ("newest", "since"):
        assert plans[name] == "SCAN events", plans
    assert plans["next_page"] == "SEARCH events USING INTEGER PRIMARY KEY (rowid<?)", plans
    assert plans["after"] == "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)", plans
    assert plans["kind"] == "SEARCH events USING INDEX events_kind (kind=?)", plans
    # Sorting ids from an index that holds them, then reading only the page's rows by rowid.
    for name, index in (
        ("rare_prefix", "events_kind"),
        ("source", "events_source_time"),
        ("old_window", "events_gateway_time"),
    ):
        assert plans[name].startswith("SEARCH events USING INTEGER PRIMARY KEY (rowid=?)"), plans
        assert index in plans[name], plans


async def test_a_time_beyond_the_calendar_in_utc_is_refused(db: Database) -> None:
    east = timezone(timedelta(hours=8))
    async with db.sessions() as session:
        with pytest.raises(InvalidInput, match="since"):
            await list_events(session, since=datetime(1, 1, 1, tzinfo=east))
        with pytest.raises(InvalidInput, match="until"):
            await list_events(session, until=datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=8))))
        # The ends of the calendar themselves are fine.
        assert (
            await list_events(session, since=datetime(1, 1, 1), until=datetime(9999, 12, 31))
        ).items is not None
