"""The console in a real browser: headless Chromium (Debian's) through Playwright against the app
served by uvicorn over SQLite. Sign in with the form, see the dashboard, watch an event stored
after the site view opened appear in its live stream, search events and page, and fit a phone."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from cloud.accounts.passwords import hash_password
from cloud.accounts.permissions import Role
from cloud.db import SessionFactory, create_engine, session_factory
from tests.cloud.browser import (  # noqa: F401  (chromium, live_server: pytest fixtures)
    LiveServer,
    SeededSite,
    chromium,
    event_record,
    live_server,
    seed_site,
    staff_session,
    store_events,
)

pytestmark = pytest.mark.browser

PASSWORD = "harbour-view-2026!"
LIVE_WITHIN_MS = 2000  # the bound: a stored event is on screen within two seconds
PAGE_MS = 15_000  # navigation on a loaded test machine


@dataclass
class Scene:
    server: LiveServer
    sessions: SessionFactory
    site: SeededSite
    username: str


@pytest.fixture
async def scene(live_server: LiveServer) -> AsyncIterator[Scene]:  # noqa: F811
    engine = create_engine(live_server.database_url)
    sessions = session_factory(engine)
    try:
        site = await seed_site(sessions)
        staff = await staff_session(
            sessions,
            site.company_id,
            [(Role.PROPERTY_MANAGER, None)],
            username=f"manager-{secrets.token_hex(3)}",
            password_hash=await hash_password(PASSWORD),
        )
        yield Scene(live_server, sessions, site, staff.username)
    finally:
        await engine.dispose()


async def sign_in(page: Any, scene: Scene) -> None:
    await page.goto(f"{scene.server.url}/login", timeout=PAGE_MS)
    await page.fill("input[name=username]", scene.username)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{scene.server.url}/", timeout=PAGE_MS)


async def test_sign_in_with_the_form_and_see_the_dashboard(chromium: Any, scene: Scene) -> None:  # noqa: F811
    page = await chromium.new_page()
    await sign_in(page, scene)
    # The session cookie is Secure and HttpOnly, and Chromium keeps it on http://127.0.0.1.
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["gh_session"]["secure"] and cookies["gh_session"]["httpOnly"]
    assert await page.inner_text("h1") == "首页"
    sites = await page.inner_text("#card-sites")
    assert scene.site.site_name in sites
    gateways = await page.inner_text("#card-gateways")
    assert "1 在线" in gateways and "1 离线" in gateways
    assert "42" in await page.inner_text("#card-events_today")
    # Over to English and back.
    await page.click("a.lang")
    await page.wait_for_selector("h1:has-text('Dashboard')", timeout=PAGE_MS)
    await page.click("a.lang")
    await page.wait_for_selector("h1:has-text('首页')", timeout=PAGE_MS)


async def test_an_event_appears_in_the_live_stream_within_two_seconds(
    chromium: Any,  # noqa: F811
    scene: Scene,
) -> None:
    page = await chromium.new_page()
    await sign_in(page, scene)
    await page.click(f"#card-sites a[href='/sites/{scene.site.site_id}']")
    await page.wait_for_url(f"**/sites/{scene.site.site_id}", timeout=PAGE_MS)
    # The stream is open (its "ready" message arrived).
    await page.wait_for_selector("[data-live-status].is-live", timeout=PAGE_MS)
    # A simulated sensor changes: its reading is stored the way ingest stores it.
    value = 20 + secrets.randbelow(1000) / 100
    await store_events(
        scene.sessions,
        scene.site.gateway_id,
        scene.site.store_id,
        [
            event_record(
                101, source="ahu1/supply_temp", data={"value": value, "quality": "good", "unit": "°C"}
            )
        ],
    )
    stored = time.monotonic()
    row = await page.wait_for_selector(
        f"#live-events tbody tr:has-text('ahu1/supply_temp'):has-text('{value:.6g} °C')",
        timeout=LIVE_WITHIN_MS,
    )
    assert row is not None
    assert time.monotonic() - stored < LIVE_WITHIN_MS / 1000 + 0.5  # the wait above is the bound
    # The newest row is on top, with a link to the point's trend.
    first = await page.inner_text("#live-events tbody tr:first-child")
    assert "ahu1/supply_temp" in first
    await page.click("#live-events tbody tr:first-child a")
    await page.wait_for_selector("svg.chart.trend", timeout=PAGE_MS)


async def test_search_events_with_a_filter_and_page_through(chromium: Any, scene: Scene) -> None:  # noqa: F811
    records = [
        event_record(i, kind="door.opened", source=f"door-{i % 3}", data={"door": f"Door {i % 3}"})
        if i % 2
        else event_record(i)
        for i in range(1, 141)
    ]
    await store_events(scene.sessions, scene.site.gateway_id, scene.site.store_id, records)
    page = await chromium.new_page()
    await sign_in(page, scene)
    await page.click("nav.mainnav a[href='/events']")
    await page.wait_for_url("**/events", timeout=PAGE_MS)
    await page.fill("input[name=kind]", "door.opened")
    await page.click("#event-filters button[type=submit]")
    await page.wait_for_url("**/events?*kind=door.opened*", timeout=PAGE_MS)
    first = await page.eval_on_selector_all("#event-results tbody tr", "rows => rows.map(r => r.dataset.id)")
    kinds = await page.eval_on_selector_all("#event-results tbody code", "cs => cs.map(c => c.textContent)")
    assert len(first) == 50 and set(kinds) == {"door.opened"}
    await page.click("a[rel=next]")
    await page.wait_for_url("**cursor=*", timeout=PAGE_MS)
    second = await page.eval_on_selector_all("#event-results tbody tr", "rows => rows.map(r => r.dataset.id)")
    assert len(second) == 20  # 70 door events in all
    assert max(map(int, second)) < min(map(int, first))
    assert await page.query_selector("a[rel=next]") is None
    # The filter stays in the form on the next page.
    assert await page.input_value("input[name=kind]") == "door.opened"


async def test_pages_fit_a_phone_screen(chromium: Any, scene: Scene) -> None:  # noqa: F811
    await store_events(
        scene.sessions, scene.site.gateway_id, scene.site.store_id, [event_record(i) for i in range(1, 30)]
    )
    context = await chromium.new_context(
        viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
    )
    page = await context.new_page()
    await sign_in(page, scene)
    for path in ("/", f"/sites/{scene.site.site_id}", "/events"):
        await page.goto(f"{scene.server.url}{path}", timeout=PAGE_MS)
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than the phone's screen"
    await context.close()
