"""Importing units in a real browser: headless Chromium (Debian's) through Playwright against the app
served by uvicorn over SQLite. Sign in with the form, go from the property pages to a site's
import page, upload a CSV with a bad row and see the report naming its row and column with
nothing imported; upload a good file and see the counts; and the admin pages fit a phone."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from cloud.accounts.passwords import hash_password
from cloud.accounts.permissions import Role
from cloud.db import SessionFactory, create_engine, session_factory
from cloud.property.models import Building, Unit
from tests.cloud.browser import (  # noqa: F401  (chromium, live_server: pytest fixtures)
    LiveServer,
    SeededSite,
    chromium,
    live_server,
    seed_site,
    staff_session,
)

pytestmark = pytest.mark.browser

PASSWORD = "harbour-view-2026!"
PAGE_MS = 15_000  # navigation on a loaded test machine
# Row 3 has an area that is no number: the report names row 3 and the column as the file does.
BAD = "楼栋,楼层,房号,建筑面积,用途\nT8,12,1201,89.50,住宅\nT8,12,1202,八十,住宅\nT8,13F,1301,92,住宅\n"
GOOD = "楼栋,楼层,房号,建筑面积,用途\nT8,12,1201,89.50,住宅\nT8,12,1202,80,住宅\nT8,13F,1301,92,办公\n"


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


async def units_of_t8(sessions: SessionFactory, site_id: int) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(
            select(Unit.number)
            .join(Building, Building.id == Unit.building_id)
            .where(Unit.site_id == site_id, Building.code == "T8")
            .order_by(Unit.number)
        )
        return list(rows.all())


async def upload(page: Any, name: str, content: str) -> None:
    await page.set_input_files(
        "input[name=file]", files=[{"name": name, "mimeType": "text/csv", "buffer": content.encode("utf-8")}]
    )
    await page.click("#import-form button[type=submit]")
    await page.wait_for_selector("#import-report", timeout=PAGE_MS)


async def test_import_a_csv_with_a_bad_row_then_a_good_one(chromium: Any, scene: Scene) -> None:  # noqa: F811
    page = await chromium.new_page()
    await sign_in(page, scene)
    # From the navigation to the site, and on to its import page.
    await page.click("nav.mainnav a[href='/property']")
    await page.wait_for_url("**/property", timeout=PAGE_MS)
    await page.click(f"#sites a[href='/property/sites/{scene.site.site_id}']")
    await page.wait_for_url(f"**/property/sites/{scene.site.site_id}", timeout=PAGE_MS)
    await page.click(f"a[href='/property/sites/{scene.site.site_id}/import']")
    await page.wait_for_url("**/import", timeout=PAGE_MS)
    assert await page.is_checked("input[name=kind][value=units]")

    await upload(page, "units.csv", BAD)
    assert await page.inner_text("#import-report h2") == "未导入任何数据"
    rows = await page.eval_on_selector_all(
        "#import-problems tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))"
    )
    assert len(rows) == 1, rows
    row, column, value, message = rows[0]
    assert (row, column, value) == ("3", "建筑面积", "八十")
    assert "number" in message
    assert await units_of_t8(scene.sessions, scene.site.site_id) == []

    await upload(page, "units.csv", GOOD)
    assert await page.inner_text("#import-report h2") == "已导入"
    counts = await page.eval_on_selector_all(
        "#import-counts dd", "dds => Object.fromEntries(dds.map(d => [d.dataset.count, d.innerText.trim()]))"
    )
    assert counts["rows"] == "3" and counts["created"] == "3" and counts["updated"] == "0"
    assert counts["buildings_created"] == "1" and counts["floors_created"] == "2"
    assert await units_of_t8(scene.sessions, scene.site.site_id) == ["1201", "1202", "1301"]

    # Again, checking only, with one area changed: one update, two unchanged, nothing written.
    await page.check("input[name=dry_run]")
    await upload(page, "units.csv", GOOD.replace("1202,80,", "1202,81,"))
    assert await page.inner_text("#import-report h2") == "检查完毕：没有问题"
    assert await page.inner_text("#import-counts dd[data-count=updated]") == "1"
    assert await page.inner_text("#import-counts dd[data-count=unchanged]") == "2"
    async with scene.sessions() as session:
        area = await session.scalar(select(Unit.floor_area_m2).where(Unit.number == "1202"))
    assert area == 80


async def test_the_admin_pages_fit_a_phone_screen(chromium: Any, scene: Scene) -> None:  # noqa: F811
    context = await chromium.new_context(
        viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
    )
    page = await context.new_page()
    await sign_in(page, scene)
    site = scene.site.site_id
    for path in (
        "/property",
        f"/property/sites/{site}",
        f"/property/sites/{site}/import",
        "/people",
        "/gateways",
        "/users",
        "/account",
    ):
        await page.goto(f"{scene.server.url}{path}", timeout=PAGE_MS)
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than the phone's screen"
    await context.close()
