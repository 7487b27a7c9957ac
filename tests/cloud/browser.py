"""What the console's tests share: a site worth looking at (``seed_site``), a signed-in member of
staff (``staff_session``), events stored the way ingest stores them (``store_events``), the real
app served by uvicorn on a free loopback port (``LiveServer``), and Debian's Chromium driven
headless through Playwright (``chromium`` fixture).

Import the fixtures a test module uses::

    from tests.cloud.browser import chromium, live_server  # noqa: F401  (pytest fixtures)
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import update

from cloud.accounts.authn import SESSION_COOKIE, token_hash
from cloud.accounts.models import SignInSession
from cloud.accounts.permissions import Role
from cloud.api import create_app
from cloud.config import CloudConfig
from cloud.db import SessionFactory, create_engine, session_factory
from cloud.events.repository import store_batch
from cloud.models import EventCountHourly, Gateway, GatewayDevice, GatewayPoint, LatestValue
from cloud.property.models import Building, Floor, Site, Unit
from protocols.envelope import EventRecord
from tests.cloud.tenancy import make_company, make_user
from tests.support.ports import free_port, wait_for_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PLATFORM_TOKEN = "console-test-platform-token-0123456789"
BOOT_ID = "0b5e7d0c-7e57-4a11-9d5e-0000000000c0"


# ---------------------------------------------------------------------------------------------
# A site to look at


@dataclass(frozen=True)
class SeededSite:
    company_id: int
    site_id: int
    site_code: str
    site_name: str
    gateway_id: str  # online, two buildings' worth of devices
    offline_gateway_id: str
    store_id: str
    point_source: str  # a telemetry point with a latest value
    door_source: str  # a door with a latest state


async def seed_site(
    sessions: SessionFactory,
    *,
    timezone: str = "Asia/Shanghai",
    last_seen: datetime | None = None,
    sites: int = 1,
) -> SeededSite:
    """A company with a site (more if ``sites``) in ``timezone``: two buildings (3 and 2 units),
    an online gateway with a Modbus meter and a door, an offline one, latest values, and event
    counts for the current hour."""
    tenant = await make_company(sessions, sites=sites)
    site_id = tenant.site_ids[0]
    suffix = secrets.token_hex(3)
    gateway_id = f"gw-{suffix}-a"
    offline_id = f"gw-{suffix}-b"
    store_id = secrets.token_hex(16)
    now = datetime.now(UTC)
    seen = last_seen or now
    async with sessions() as session:
        await session.execute(update(Site).where(Site.id == site_id).values(timezone=timezone))
        site = await session.get(Site, site_id)
        assert site is not None
        for b_code, units in (("T1", 3), ("T2", 2)):
            building = Building(
                company_id=tenant.company_id, site_id=site_id, code=b_code, name=f"Tower {b_code}"
            )
            session.add(building)
            await session.flush()
            floor = Floor(company_id=tenant.company_id, building_id=building.id, level=1, name="1F")
            session.add(floor)
            await session.flush()
            for n in range(units):
                session.add(
                    Unit(
                        company_id=tenant.company_id,
                        site_id=site_id,
                        building_id=building.id,
                        floor_id=floor.id,
                        number=f"10{n + 1}",
                        floor_area_m2=Decimal("88.50"),
                        created_at=now,
                    )
                )
        for gid, online in ((gateway_id, True), (offline_id, False)):
            session.add(
                Gateway(
                    id=gid,
                    site=tenant.site_codes[0],
                    password_hash="$7$unused",
                    created_at=now,
                    last_seen_at=seen,
                    online=online,
                    company_id=tenant.company_id,
                    site_id=site_id,
                    name=f"Plant room {gid[-1].upper()}",
                )
            )
        session.add(GatewayDevice(gateway_id=gateway_id, device="meter1", protocol="modbus", updated_at=now))
        session.add(
            GatewayPoint(
                gateway_id=gateway_id, source="meter1/power", device="meter1", unit="kW", updated_at=now
            )
        )
        session.add(
            LatestValue(
                gateway_id=gateway_id,
                source="meter1/power",
                kind="telemetry.point",
                event_id=1,
                reported_time=seen,
                data={"value": 12.5, "quality": "good", "unit": "kW"},
            )
        )
        session.add(
            LatestValue(
                gateway_id=gateway_id,
                source="door-lobby",
                kind="door.opened",
                event_id=2,
                reported_time=seen,
                data={"door": "Lobby door"},
            )
        )
        session.add(
            LatestValue(
                gateway_id=gateway_id,
                source="door-lobby",
                kind="door.lock_state",
                event_id=3,
                reported_time=seen - timedelta(minutes=1),
                data={"door": "Lobby door", "locked": False},
            )
        )
        hour = now.replace(minute=0, second=0, microsecond=0)
        session.add(EventCountHourly(gateway_id=gateway_id, hour=hour, count=41))
        session.add(EventCountHourly(gateway_id=offline_id, hour=hour, count=1))
        await session.commit()
        return SeededSite(
            tenant.company_id,
            site_id,
            tenant.site_codes[0],
            site.name,
            gateway_id,
            offline_id,
            store_id,
            "meter1/power",
            "door-lobby",
        )


def event_record(
    seq: int,
    *,
    kind: str = "telemetry.point",
    source: str = "meter1/power",
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> EventRecord:
    moment = at or datetime.now(UTC)
    return EventRecord(
        seq=seq,
        kind=kind,
        lane=2 if kind.startswith("telemetry") else 1,
        time_ms=int(moment.timestamp() * 1000),
        boot_id=BOOT_ID,
        mono_ns=seq * 1_000_000,
        clock_synced=True,
        source=source,
        data={"value": 12.5, "quality": "good", "unit": "kW"} if data is None else data,
    )


async def store_events(
    sessions: SessionFactory, gateway_id: str, store_id: str, records: Sequence[EventRecord]
) -> None:
    """Store events as ingest does (the same insert), committed."""
    async with sessions() as session:
        await store_batch(session, gateway_id, store_id, datetime.now(UTC), records)
        await session.commit()


# ---------------------------------------------------------------------------------------------
# A signed-in member of staff


@dataclass(frozen=True)
class StaffSession:
    user_id: int
    username: str
    cookie: str
    csrf_token: str

    @property
    def cookies(self) -> dict[str, str]:
        return {SESSION_COOKIE: self.cookie}

    def headers(self, **more: str) -> dict[str, str]:
        """The Cookie header of the session (httpx keeps no per-request cookies)."""
        cookie = "; ".join(f"{k}={v}" for k, v in {**self.cookies, **more}.items())
        return {"Cookie": cookie}


async def staff_session(
    sessions: SessionFactory,
    company_id: int,
    roles: Sequence[tuple[Role, int | None]],
    *,
    language: str = "zh",
    username: str | None = None,
    password_hash: str | None = None,
) -> StaffSession:
    """A user with ``roles`` and a console session of theirs, written straight to the tables."""
    username = username or f"staff-{secrets.token_hex(4)}"
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    async with sessions() as session:
        user = await make_user(session, company_id, username, roles, password_hash=password_hash)
        user.language = language
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
        await session.commit()
        return StaffSession(user.id, username, cookie, csrf)


# ---------------------------------------------------------------------------------------------
# The real app on a real port


class LiveServer:
    """The cloud's app served by uvicorn in a thread of its own (its own event loop and engine)."""

    def __init__(self, database_url: str, data_dir: Path, config: CloudConfig | None = None) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config or CloudConfig(data_dir=str(data_dir))
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._run, name="console-live-server", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported by start()
            self._error = e

    async def _serve(self) -> None:
        engine = create_engine(self.database_url)
        try:
            app = create_app(self.config, session_factory(engine), token=PLATFORM_TOKEN)
            config = uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
            self._server = uvicorn.Server(config)
            await self._server.serve()
        finally:
            await engine.dispose()

    def start(self, within: float = 15.0) -> None:
        self._thread.start()
        try:
            wait_for_port("127.0.0.1", self.port, within)
        except TimeoutError:
            raise RuntimeError(f"the console's live server did not start: {self._error!r}") from None

    def stop(self, within: float = 15.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(within)


@pytest.fixture
def live_server(sqlite_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """The app on a free loopback port over a migrated SQLite file (``sqlite_url``)."""
    server = LiveServer(sqlite_url, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """A headless Chromium (Debian's, /usr/bin/chromium), closed after the test."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()
