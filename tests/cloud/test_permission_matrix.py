"""The permission matrix: every route of the app (API and console pages) is either public or names the
permission it needs, and every route × every role (plus a resident, the platform and nobody) gets
exactly what that permission says: 403 exactly when the role lacks it, never 401 or 403 when it
has it, 401 (API) or a redirect to the sign-in page (pages) without a principal. A role limited to
site A gets 403 or 404 for site B's objects, and sees site A's.

The routes are read from the app itself (``create_app``), so a route added later is in the matrix
without a line here; the app runs under uvicorn on a loopback port (a streamed page answers its
status at once and is then closed). ``Estate`` and ``LiveServer`` are shared with the
tenant-isolation test.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cloud.access.service import put_schedule
from cloud.accounts.authn import SESSION_COOKIE, token_hash
from cloud.accounts.models import ResidentAccount, RoleGrant, SignInSession, User
from cloud.accounts.permissions import (
    PUBLIC_PATHS,
    ROLE_PERMISSIONS,
    Authorize,
    AuthorizeAny,
    Permission,
    Principal,
    Role,
)
from cloud.api import create_app
from cloud.audit.chain import record
from cloud.config import CloudConfig
from cloud.db import SessionFactory, create_engine, session_factory
from cloud.models import (
    Event,
    EventCountHourly,
    Gateway,
    GatewayCommand,
    GatewayDevice,
    GatewayPoint,
    LatestValue,
)
from cloud.property.models import (
    Building,
    CommonArea,
    Company,
    Department,
    Floor,
    Meter,
    Occupancy,
    ParkingSpace,
    Person,
    Site,
    Unit,
)
from protocols.access import Interval, Schedule
from tests.cloud.browser import PLATFORM_TOKEN, LiveServer
from tests.cloud.tenancy import bearer, make_token, make_user

PLACEHOLDER_INT = 987_654_321

# ---------------------------------------------------------------------------------------------
# The routes, as the app has them


@dataclass(frozen=True)
class RouteInfo:
    method: str
    path: str
    authorizers: tuple[Authorize, ...]
    path_params: dict[str, type]
    query_params: dict[str, type]
    is_page: bool

    @property
    def public(self) -> bool:
        return is_public(self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path == "/static" or path.startswith("/static/")


def _authorizers(dependant: Any) -> list[Authorize]:
    """Every Authorize among the route's dependencies, however deep (router-wide ones included)."""
    found: list[Authorize] = []
    for dep in getattr(dependant, "dependencies", ()):
        if isinstance(dep.call, Authorize):
            found.append(dep.call)
        found.extend(_authorizers(dep))
    return found


def _route_contexts(app: FastAPI) -> Iterable[Any]:
    # FastAPI >= 0.16x includes routers lazily: iter_route_contexts flattens them with their
    # router-wide dependencies. Older versions list every route in app.routes.
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def app_routes(app: FastAPI) -> list[RouteInfo]:
    routes = []
    for r in _route_contexts(app):
        path = getattr(r, "path", None) or ""
        methods = sorted((getattr(r, "methods", None) or {"GET"}) - {"HEAD"})
        dependant = getattr(r, "dependant", None)
        path_params = {f.name: f.field_info.annotation for f in getattr(dependant, "path_params", [])}
        query_params = {f.name: f.field_info.annotation for f in getattr(dependant, "query_params", [])}
        for method in methods:
            routes.append(
                RouteInfo(
                    method,
                    path,
                    tuple(_authorizers(dependant)) if dependant is not None else (),
                    path_params,
                    query_params,
                    not path.startswith(
                        ("/api/", "/healthz", "/metrics", "/openapi.json", "/docs", "/redoc")
                    ),
                )
            )
    return routes


def allowed(kind: str, grants: frozenset[Permission], route: RouteInfo) -> bool:
    """May a principal of ``kind`` holding ``grants`` (for every site) pass the route's checks?
    Worked out from the roles' table, not from Authorize's own code. The residents' portal is for
    residents only, the platform operator included."""
    for auth in route.authorizers:
        if kind == "platform":
            if auth.residents and auth.permission is None:
                return False
            continue
        if isinstance(auth, AuthorizeAny):
            if kind == "resident" or not any(p in grants for p in auth.any_of):
                return False
        elif kind == "resident":
            if not auth.residents or auth.permission is not None:
                return False
        elif auth.residents and auth.permission is None:
            return False  # the residents' portal
        elif auth.permission is not None and auth.permission not in grants:
            return False
    return True


def placeholder(name: str, annotation: Any) -> str:
    if annotation is int:
        return str(PLACEHOLDER_INT)
    return f"no-such-{name.replace('_', '-')}"


def fill(route: RouteInfo, values: dict[str, Any] | None = None) -> str:
    path = route.path
    for name, annotation in route.path_params.items():
        value = (values or {}).get(name, placeholder(name, annotation))
        path = path.replace("{" + name + "}", str(value)).replace("{" + name + ":path}", str(value))
    return path


# ---------------------------------------------------------------------------------------------
# The app on a real port


@pytest.fixture
def live_server(sqlite_url: str, tmp_path: Path) -> Iterable[LiveServer]:
    server = LiveServer(sqlite_url, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def sessions(sqlite_url: str) -> AsyncIterator[SessionFactory]:
    engine = create_engine(sqlite_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Answer:
    status: int
    location: str
    body: str


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    *,
    json_body: Any = None,
    params: dict[str, Any] | None = None,
    read_body: bool = False,
) -> Answer:
    """One request; its status (and body, if asked). A live stream's body is never read: the
    answer is closed once its status is in."""
    kwargs: dict[str, Any] = {"headers": headers, "params": params}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {} if json_body is None else json_body
    async with client.stream(method, path, **kwargs) as r:
        body = ""
        # A live stream is left unread: it may say nothing for a long while.
        if read_body and not r.headers.get("content-type", "").startswith("text/event-stream"):
            body = (await r.aread()).decode("utf-8", "replace")
        return Answer(r.status_code, r.headers.get("location", ""), body)


# ---------------------------------------------------------------------------------------------
# A company's objects at one site, keyed by the path parameters that name them


@dataclass
class Estate:
    """One company's site with one of everything, keyed by the path parameter that names each
    (``ids``); ``marker`` is in every name, so a leak shows in any answer's text."""

    company_id: int
    company_code: str
    site_id: int
    site_code: str
    marker: str
    ids: dict[str, Any] = field(default_factory=dict)
    gateway_id: str = ""


async def make_company_row(sessions: SessionFactory, marker: str) -> tuple[int, str]:
    async with sessions() as session, session.begin():
        company = Company(code=f"{marker}-co", name=f"{marker} Company", created_at=datetime.now(UTC))
        session.add(company)
        await session.flush()
        return company.id, company.code


async def make_estate(sessions: SessionFactory, company_id: int, company_code: str, marker: str) -> Estate:
    """A site of the company with a building, floor, unit, person and occupancy, parking, a common
    area, a meter, a department, a user with a role, an API token, a resident's account, a gateway
    with a device, a point, a latest value, an event and its hourly count, a command, access data
    and an audit entry."""
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        # Codes and ids appear in URLs (and in the answers that name what was asked for): only the
        # names carry the marker.
        site = Site(
            company_id=company_id,
            code=f"site-{secrets.token_hex(4)}",
            name=f"{marker} Estate",
            created_at=now,
        )
        session.add(site)
        await session.flush()
        building = Building(company_id=company_id, site_id=site.id, code="T1", name=f"{marker} Tower 1")
        session.add(building)
        await session.flush()
        floor = Floor(company_id=company_id, building_id=building.id, level=12, name="12F")
        session.add(floor)
        await session.flush()
        unit = Unit(
            company_id=company_id,
            site_id=site.id,
            building_id=building.id,
            floor_id=floor.id,
            number=f"{marker}-1203",
            floor_area_m2=Decimal("88.50"),
            created_at=now,
        )
        person = Person(company_id=company_id, name=f"{marker} Owner", phone="13800000000", created_at=now)
        session.add_all([unit, person])
        await session.flush()
        occupancy = Occupancy(
            company_id=company_id,
            unit_id=unit.id,
            person_id=person.id,
            role="owner",
            start_date=date(2024, 1, 1),
            primary=True,
        )
        space = ParkingSpace(company_id=company_id, site_id=site.id, code=f"{marker}-B1-042", unit_id=unit.id)
        area = CommonArea(company_id=company_id, site_id=site.id, name=f"{marker} Lobby", kind="lobby")
        department = Department(company_id=company_id, name=f"{marker} Security")
        session.add_all([occupancy, space, area, department])
        await session.flush()
        gateway_id = f"gw-{secrets.token_hex(5)}"
        meter = Meter(
            company_id=company_id,
            site_id=site.id,
            code=f"{marker}-M1",
            kind="water",
            unit_id=unit.id,
            gateway_id=gateway_id,
            point="meter1/total",
        )
        user = User(
            company_id=company_id,
            username=f"{marker}-guard",
            display_name=f"{marker} Guard",
            department_id=department.id,
            created_at=now,
        )
        session.add_all([meter, user])
        await session.flush()
        grant = RoleGrant(
            company_id=company_id, user_id=user.id, role=Role.SECURITY_GUARD.value, site_id=site.id
        )
        resident = ResidentAccount(
            company_id=company_id, person_id=person.id, login=f"{marker}@example.com", created_at=now
        )
        session.add_all([grant, resident])
        session.add(
            Gateway(
                id=gateway_id,
                site=site.code,
                password_hash="$7$not-a-real-hash",
                created_at=now,
                company_id=company_id,
                site_id=site.id,
                name=f"{marker} plant room",
            )
        )
        event = Event(
            gateway_id=gateway_id,
            store_id="s" * 32,
            seq=1,
            kind="telemetry.point",
            lane=2,
            reported_time=now,
            received_time=now,
            boot_id="0b5e7d0c-7e57-4a11-9d5e-000000000001",
            mono_ns=1,
            clock_synced=True,
            source="meter1/total",
            data={"point": f"{marker} meter", "value": 12.5, "unit": "m3"},
        )
        session.add_all(
            [
                event,
                GatewayDevice(gateway_id=gateway_id, device="meter1", protocol="modbus", updated_at=now),
                GatewayPoint(
                    gateway_id=gateway_id, source="meter1/total", device="meter1", unit="m3", updated_at=now
                ),
                EventCountHourly(
                    gateway_id=gateway_id, hour=now.replace(minute=0, second=0, microsecond=0), count=1
                ),
            ]
        )
        await session.flush()
        command = GatewayCommand(
            id=secrets.token_hex(16),
            gateway_id=gateway_id,
            name="door.unlock",
            args={"door": f"{marker}-front"},
            requested_by=f"{marker} Guard",
            requested_at=now,
            expires_at=now + timedelta(minutes=1),
            sent_at=now,
            status="sent",
        )
        session.add(command)
        await session.flush()
        session.add(
            LatestValue(
                gateway_id=gateway_id,
                source="meter1/total",
                kind="telemetry.point",
                event_id=event.id,
                reported_time=now,
                data={"point": f"{marker} meter", "value": 12.5},
            )
        )
        await record(
            session,
            Principal(kind="user", id=user.id, name=f"{marker} Guard", company_id=company_id),
            "door.unlock",
            "door",
            f"{gateway_id}/{marker}-front",
            site_id=site.id,
            after={"note": marker},
        )
        estate = Estate(company_id, company_code, site.id, site.code, marker, gateway_id=gateway_id)
        estate.ids = {
            "company_id": company_id,
            "site_id": site.id,
            "site": site.code,
            "building_id": building.id,
            "floor_id": floor.id,
            "unit_id": unit.id,
            "person_id": person.id,
            "occupancy_id": occupancy.id,
            "space_id": space.id,
            "area_id": area.id,
            "meter_id": meter.id,
            "department_id": department.id,
            "user_id": user.id,
            "grant_id": grant.id,
            "resident_id": resident.id,
            "gateway_id": gateway_id,
            "command_id": command.id,
            "schedule_id": "office",
        }
    await put_schedule(
        sessions,
        site.code,
        Schedule(
            id="office", name=f"{marker} office hours", intervals=[Interval(start="08:00", end="18:00")]
        ),
    )
    estate.ids["token_id"] = await _token_id(
        sessions, await make_token(sessions, company_id, [], name=marker)
    )
    return estate


async def _token_id(sessions: SessionFactory, token: str) -> int:
    from sqlalchemy import select

    from cloud.accounts.models import ApiToken

    async with sessions() as session:
        return int(
            await session.scalar(select(ApiToken.id).where(ApiToken.token_hash == token_hash(token))) or 0
        )


async def user_cookie(sessions: SessionFactory, company_id: int, role: Role) -> dict[str, str]:
    """A signed-in member of staff with ``role`` at every site: the cookie and CSRF headers."""
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        user = await make_user(session, company_id, f"{role.value}-{secrets.token_hex(3)}", [(role, None)])
        session.add(
            SignInSession(
                token_hash=token_hash(cookie),
                company_id=company_id,
                user_id=user.id,
                csrf_token=csrf,
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
    return {"Cookie": f"{SESSION_COOKIE}={cookie}", "X-CSRF-Token": csrf}


async def resident_cookie(sessions: SessionFactory, estate: Estate) -> tuple[dict[str, str], str]:
    """A signed-in resident of the estate: the cookie header and the session's CSRF token."""
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        session.add(
            SignInSession(
                token_hash=token_hash(cookie),
                company_id=estate.company_id,
                resident_id=estate.ids["resident_id"],
                csrf_token=csrf,
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
    return {"Cookie": f"{SESSION_COOKIE}={cookie}", "X-CSRF-Token": csrf}, csrf


# ---------------------------------------------------------------------------------------------
# The tests


def test_every_route_is_public_or_names_its_permission(tmp_path: Path) -> None:
    app = create_app(
        CloudConfig(data_dir=str(tmp_path)), session_factory(create_engine("sqlite+aiosqlite://"))
    )
    routes = app_routes(app)
    assert any(r.path.startswith("/api/v1/") for r in routes)
    unguarded = [str(r) for r in routes if not r.public and not r.authorizers]
    assert unguarded == [], f"routes with neither a permission nor a place in PUBLIC_PATHS: {unguarded}"


async def test_every_route_answers_every_role_as_its_permission_says(
    live_server: LiveServer, sessions: SessionFactory, tmp_path: Path
) -> None:
    company_id, code = await make_company_row(sessions, f"m{secrets.token_hex(3)}")
    estate = await make_estate(sessions, company_id, code, f"m{secrets.token_hex(3)}")
    # Each role as a signed-in user holding it (a role is given to users; an API token is no
    # user, and one's own account's routes refuse it), the platform, a resident.
    principals: dict[str, tuple[str, frozenset[Permission], dict[str, str]]] = {
        role.value: ("user", ROLE_PERMISSIONS[role], await user_cookie(sessions, company_id, role))
        for role in Role
    }
    resident_headers, _ = await resident_cookie(sessions, estate)
    principals["resident"] = ("resident", frozenset(), resident_headers)
    principals["platform"] = ("platform", frozenset(Permission), bearer(PLATFORM_TOKEN))

    app = create_app(CloudConfig(data_dir=str(tmp_path)), sessions, token=PLATFORM_TOKEN)
    routes = [r for r in app_routes(app) if not r.public and r.authorizers]
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30, follow_redirects=False) as client:
        for route in routes:
            path = fill(route)
            nobody = await call(client, route.method, path, {})
            if route.is_page:
                if nobody.status != 303 or not nobody.location.startswith("/login"):
                    wrong.append(f"{route} without a principal: {nobody.status} {nobody.location}")
            elif nobody.status != 401:
                wrong.append(f"{route} without a principal: {nobody.status}, not 401")
            # The principals of one route at once: the server answers them side by side.
            answers = await asyncio.gather(
                *(call(client, route.method, path, headers) for _, _, headers in principals.values())
            )
            for (who, (kind, grants, _)), answer in zip(principals.items(), answers, strict=True):
                if kind == "platform" and route.path.startswith("/api/v1/me"):
                    continue  # one's own account: the platform operator has none
                may = allowed(kind, grants, route)
                if may and answer.status in (401, 403):
                    wrong.append(f"{route} as {who}: {answer.status}, but it may")
                elif not may and answer.status != 403:
                    wrong.append(f"{route} as {who}: {answer.status}, not 403")
    assert wrong == [], "\n".join(wrong)


# Path parameters that name an object of one site: a route named by them alone is site-bound.
SITE_BOUND = {
    "site",
    "site_id",
    "building_id",
    "floor_id",
    "unit_id",
    "occupancy_id",
    "space_id",
    "area_id",
    "meter_id",
    "gateway_id",
    "command_id",
    "schedule_id",
}
# Bodies that get a write past validation to its site check.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/gateways/{gateway_id}/commands"): {"name": "door.unlock", "args": {"door": "front"}},
    ("PUT", "/api/v1/sites/{site}/access/schedules/{schedule_id}"): {"name": "x", "intervals": []},
    ("PUT", "/api/v1/sites/{site}/access/holidays"): [],
}


async def test_a_site_limited_role_sees_its_site_only(
    live_server: LiveServer, sessions: SessionFactory, tmp_path: Path
) -> None:
    marker = f"s{secrets.token_hex(3)}"
    company_id, code = await make_company_row(sessions, marker)
    a = await make_estate(sessions, company_id, code, f"{marker}a")
    b = await make_estate(sessions, company_id, code, f"{marker}b")
    # Every permission, at site A only: any refusal below is the site's doing.
    limited = bearer(
        await make_token(sessions, company_id, list(Permission), [a.site_id], name="site-a-admin")
    )
    app = create_app(CloudConfig(data_dir=str(tmp_path)), sessions, token=PLATFORM_TOKEN)
    routes = [
        r
        for r in app_routes(app)
        if r.authorizers and r.path_params and set(r.path_params) <= SITE_BOUND and not r.public
    ]
    assert routes
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30, follow_redirects=False) as client:
        for route in routes:
            if route.method == "GET":
                own = await call(client, "GET", fill(route, a.ids), limited, read_body=True)
                if own.status >= 400:
                    wrong.append(f"{route} at its own site A: {own.status}")
                elif b.marker in own.body:
                    wrong.append(f"{route} at site A shows site B's data")
            body = BODIES.get((route.method, route.path))
            other = await call(
                client, route.method, fill(route, b.ids), limited, json_body=body, read_body=True
            )
            exact = route.method in ("GET", "DELETE", "PATCH") or body is not None
            if exact and other.status not in (403, 404):
                wrong.append(f"{route} at site B: {other.status}, not 403 or 404")
            elif 200 <= other.status < 300:
                wrong.append(f"{route} at site B: {other.status}")
            if b.marker in other.body:
                wrong.append(f"{route} at site B shows site B's data")
    assert wrong == [], "\n".join(wrong)
