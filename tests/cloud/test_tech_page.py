"""The technician's page (``/tech``) on SQLite: my alerts only, life safety on top, in its own small
layout; the email link signed out goes to the sign-in page and back; the buttons act (a photo from
the camera input included, anything but an image refused); the PWA's manifest and service worker
are served as what they are; the live stream sends my alert's change. And once in headless
Chromium on a phone's viewport: from the email link through the sign-in to acknowledge and
resolve, with the service worker installed."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.pofile import read_po
from sqlalchemy import select

from cloud.accounts.passwords import hash_password
from cloud.accounts.permissions import Principal, Role, grants_for_roles
from cloud.alerts import actions
from cloud.alerts.models import LIFE_SAFETY, Alert, AlertPhoto
from cloud.api import create_app
from cloud.config import CloudConfig
from cloud.console.i18n import TRANSLATIONS_DIR
from cloud.db import SessionFactory, create_engine, session_factory
from tests.cloud.alert_builders import make_alert, tiny_jpeg
from tests.cloud.browser import (  # noqa: F401  (chromium, live_server: pytest fixtures)
    PLATFORM_TOKEN,
    LiveServer,
    StaffSession,
    chromium,
    live_server,
    staff_session,
)
from tests.cloud.tenancy import Tenant, make_company
from tests.cloud.test_console_stream import messages, next_message

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "night-shift-2026!"
PAGE_MS = 15_000


@dataclass
class Shift:
    sessions: SessionFactory
    client: httpx.AsyncClient
    tenant: Tenant
    tech: StaffSession
    data_dir: Path


@pytest.fixture
async def shift(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Shift]:
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    app = create_app(CloudConfig(data_dir=str(tmp_path)), sessions, token=PLATFORM_TOKEN)
    tenant = await make_company(sessions)
    tech = await staff_session(sessions, tenant.company_id, [(Role.TECHNICIAN, None)], username="tech-zhao")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://tech"
        ) as client:
            yield Shift(sessions, client, tenant, tech, tmp_path)
    finally:
        await engine.dispose()


def form(staff: StaffSession, **fields: str) -> dict[str, str]:
    return {"csrf_token": staff.csrf_token, **fields}


async def test_my_alerts_in_the_technicians_own_layout(shift: Shift) -> None:
    s, company, site = shift.sessions, shift.tenant.company_id, shift.tenant.site_ids[0]
    chiller = await make_alert(s, company, site, notify_user=shift.tech.user_id)
    smoke = await make_alert(s, company, site, track=LIFE_SAFETY, notify_user=shift.tech.user_id)
    await make_alert(s, company, site, source="pump-3/status")  # not mine: nobody told me
    for path in ("/tech", "/tech/"):
        r = await shift.client.get(path, headers=shift.tech.headers())
        assert r.status_code == 200
        assert re.findall(r'<li data-alert-id="(\d+)"', r.text) == [str(smoke), str(chiller)]
    assert 'class="alert-card track-life_safety urgent"' in r.text
    assert "我的告警" in r.text and "门岗技术员" in r.text
    assert 'class="mainnav"' not in r.text  # no desktop navigation
    assert 'rel="manifest" href="/tech/manifest.webmanifest"' in r.text
    assert "/tech/stream?after=" in r.text


async def test_the_email_link_signed_out_goes_to_the_sign_in_page_and_back(shift: Shift) -> None:
    alert_id = await make_alert(shift.sessions, shift.tenant.company_id, shift.tenant.site_ids[0])
    r = await shift.client.get(f"/tech/alerts/{alert_id}")
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=/tech/alerts/{alert_id}"
    login = await shift.client.get(r.headers["location"])
    assert f'name="next" value="/tech/alerts/{alert_id}"' in login.text
    # Somewhere else is never a place to go back to.
    evil = await shift.client.get("/login?next=//evil.example/x")
    assert 'name="next" value="/"' in evil.text


async def test_the_buttons_act_and_a_photo_comes_from_the_camera(shift: Shift) -> None:
    c, tech = shift.client, shift.tech
    alert_id = await make_alert(shift.sessions, shift.tenant.company_id, shift.tenant.site_ids[0])
    page = await c.get(f"/tech/alerts/{alert_id}", headers=tech.headers())
    assert page.status_code == 200
    assert 'accept="image/*" capture="environment"' in page.text
    assert 'class="alert-detail track-maintenance"' in page.text  # not in red
    for action in ("acknowledge", "start"):
        assert f'action="/tech/alerts/{alert_id}/{action}"' in page.text
    r = await c.post(f"/tech/alerts/{alert_id}/acknowledge", headers=tech.headers(), data=form(tech))
    assert r.status_code == 303 and r.headers["location"] == f"/tech/alerts/{alert_id}"
    r = await c.post(f"/tech/alerts/{alert_id}/start", headers=tech.headers(), data=form(tech))
    assert r.status_code == 303
    r = await c.post(
        f"/tech/alerts/{alert_id}/notes", headers=tech.headers(), data=form(tech, text="valve stuck")
    )
    assert r.status_code == 303
    photo = {"file": ("IMG_2001.JPG", tiny_jpeg(), "image/jpeg")}
    r = await c.post(f"/tech/alerts/{alert_id}/photos", headers=tech.headers(), data=form(tech), files=photo)
    assert r.status_code == 303
    not_a_photo = {"file": ("notes.txt", b"hello", "text/plain")}
    r = await c.post(
        f"/tech/alerts/{alert_id}/photos", headers=tech.headers(), data=form(tech), files=not_a_photo
    )
    assert r.status_code == 303
    shown = await c.get(
        f"/tech/alerts/{alert_id}", headers=tech.headers(gh_flash=r.cookies.get("gh_flash", ""))
    )
    assert "not a JPEG, PNG or WebP image" in shown.text
    r = await c.post(
        f"/tech/alerts/{alert_id}/resolve",
        headers=tech.headers(),
        data=form(tech, resolution="freed the valve"),
    )
    assert r.status_code == 303
    async with shift.sessions() as session:
        alert = await session.get(Alert, alert_id)
        assert alert is not None and alert.state == "resolved" and alert.resolution == "freed the valve"
        photos = (await session.scalars(select(AlertPhoto))).all()
    assert len(photos) == 1 and (shift.data_dir / "blobs" / photos[0].sha256[:2] / photos[0].sha256).is_file()
    done = await c.get(f"/tech/alerts/{alert_id}", headers=tech.headers())
    assert f'action="/tech/alerts/{alert_id}/resolve"' not in done.text
    assert "valve stuck" in done.text and f"/api/v1/alerts/{alert_id}/photos/{photos[0].id}" in done.text


async def test_life_safety_buttons_are_not_a_technicians(shift: Shift) -> None:
    smoke = await make_alert(
        shift.sessions, shift.tenant.company_id, shift.tenant.site_ids[0], track=LIFE_SAFETY
    )
    page = await shift.client.get(f"/tech/alerts/{smoke}", headers=shift.tech.headers())
    assert f'action="/tech/alerts/{smoke}/acknowledge"' not in page.text
    assert 'class="alert-detail track-life_safety urgent"' in page.text
    assert "生命安全类告警由安保人员和经理确认和处理" in page.text
    r = await shift.client.post(
        f"/tech/alerts/{smoke}/acknowledge", headers=shift.tech.headers(), data=form(shift.tech)
    )
    assert r.status_code == 403 and "life-safety" in r.text


async def test_the_manifest_and_the_service_worker(shift: Shift) -> None:
    r = await shift.client.get("/tech/manifest.webmanifest", headers=shift.tech.headers())
    assert r.status_code == 200 and r.headers["content-type"] == "application/manifest+json"
    manifest = r.json()
    assert manifest["name"] == "门岗 Gatehouse 技术员" and manifest["scope"] == "/tech/"
    assert manifest["start_url"] == "/tech/" and manifest["display"] == "standalone"
    for icon in manifest["icons"]:
        got = await shift.client.get(icon["src"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert got.content.startswith(b"\x89PNG") and icon["sizes"] in ("192x192", "512x512")
    sw = await shift.client.get("/tech/sw.js", headers=shift.tech.headers())
    assert sw.status_code == 200 and sw.headers["content-type"].startswith("text/javascript")
    assert sw.headers["cache-control"] == "no-cache"
    shell = json.loads(re.search(r"const SHELL_URLS = (\[.*?\]);", sw.text).group(1))  # type: ignore[union-attr]
    assert all(u.startswith("/static/") and "?v=" in u for u in shell)
    offline = json.loads(re.search(r"const OFFLINE_HTML = (.*?);\n", sw.text).group(1))  # type: ignore[union-attr]
    assert "没有网络连接" in offline  # the offline page, in the user's language
    # Without a session: the sign-in page, like every page.
    assert (await shift.client.get("/tech/sw.js")).status_code == 303


async def test_the_stream_sends_my_alerts_change(live_server: LiveServer) -> None:  # noqa: F811
    engine = create_engine(live_server.database_url)
    sessions = session_factory(engine)
    try:
        tenant = await make_company(sessions)
        tech = await staff_session(sessions, tenant.company_id, [(Role.TECHNICIAN, None)])
        guard = Principal(
            kind="user",
            id=None,
            name="guard",
            company_id=tenant.company_id,
            grants=grants_for_roles([(Role.SECURITY_GUARD, None)]),
        )
        async with sessions() as session:
            after = await actions.newest_timeline_id(session)
        async with (
            httpx.AsyncClient(base_url=live_server.url, timeout=30) as client,
            client.stream("GET", f"/tech/stream?after={after}", headers=tech.headers()) as r,
        ):
            assert r.status_code == 200
            stream = messages(r)
            await next_message(stream, "ready")
            await make_alert(sessions, tenant.company_id, tenant.site_ids[0], source="not-mine/x")
            mine = await make_alert(
                sessions,
                tenant.company_id,
                tenant.site_ids[0],
                source="lift-2/door",
                notify_user=tech.user_id,
            )
            card = await next_message(stream, "alert")
            assert f'data-alert-id="{mine}"' in card.data and "lift-2/door" in card.data
            assert "not-mine" not in card.data
            # Someone else resolves it: it leaves my list.
            async with sessions() as session:
                await actions.resolve(session, guard, mine, "fixed by the lift company")
            gone = await next_message(stream, "gone")
            assert gone.data == str(mine)
    finally:
        await engine.dispose()


def test_every_string_of_the_alert_and_technician_pages_has_its_chinese() -> None:
    keywords = {**DEFAULT_KEYWORDS, "N_": None, "translate": (2,)}
    for name, sources in (
        (
            "alerts",
            [*(REPO / "cloud/console/templates/alerts").glob("*.html"), REPO / "cloud/alerts/pages.py"],
        ),
        ("tech", [*(REPO / "cloud/console/templates/tech").glob("*.html"), REPO / "cloud/tech/pages.py"]),
    ):
        with (TRANSLATIONS_DIR / "zh" / "LC_MESSAGES" / f"{name}.po").open("rb") as f:
            ours = {m.id: m.string for m in read_po(f, locale="zh") if m.id}
        with (TRANSLATIONS_DIR / "zh" / "LC_MESSAGES" / "messages.po").open("rb") as f:
            shared = {m.id: m.string for m in read_po(f, locale="zh") if m.id}
        missing = []
        for path in sources:
            method = "jinja2" if path.suffix == ".html" else "python"
            options = {"extensions": "jinja2.ext.i18n"} if method == "jinja2" else {}
            for _line, message, _c, _ctx in extract_from_file(
                method, path, keywords=keywords, options=options
            ):
                msgid = message[0] if isinstance(message, tuple) else message
                if msgid and not (ours.get(msgid) or shared.get(msgid)):
                    missing.append(msgid)
        assert not missing, f"add these to translations/zh/LC_MESSAGES/{name}.po: {sorted(set(missing))}"


# --- in Chromium, on a phone ---------------------------------------------------------------------


@pytest.mark.browser
async def test_from_the_email_link_to_resolved_on_a_phone(chromium: Any, live_server: LiveServer) -> None:  # noqa: F811
    engine = create_engine(live_server.database_url)
    sessions = session_factory(engine)
    try:
        tenant = await make_company(sessions)
        username = f"tech-{secrets.token_hex(3)}"
        tech = await staff_session(
            sessions,
            tenant.company_id,
            [(Role.TECHNICIAN, None)],
            username=username,
            password_hash=await hash_password(PASSWORD),
        )
        alert_id = await make_alert(
            sessions,
            tenant.company_id,
            tenant.site_ids[0],
            source="chiller-2/status",
            notify_user=tech.user_id,
        )
        context = await chromium.new_context(
            viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=3
        )
        page = await context.new_page()
        link = f"{live_server.url}/tech/alerts/{alert_id}"  # as the email and the SMS say
        await page.goto(link, timeout=PAGE_MS)
        await page.wait_for_url(f"**/login?next=/tech/alerts/{alert_id}", timeout=PAGE_MS)
        await page.fill("input[name=username]", username)
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(link, timeout=PAGE_MS)
        assert "chiller-2/status" in await page.inner_text("article.alert-detail")
        # The app installs its service worker (scope /tech/) and it takes the page.
        scope = await page.evaluate("navigator.serviceWorker.ready.then(r => r.scope)")
        assert scope == f"{live_server.url}/tech/"
        await page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=PAGE_MS)
        # The buttons fit the phone's width.
        box = await page.locator("#ack").bounding_box()
        assert box is not None and box["width"] <= 390 and box["height"] >= 44

        await page.click("#ack")
        await page.wait_for_selector("#alert-state:has-text('已确认')", timeout=PAGE_MS)
        await page.fill("textarea[name=resolution]", "复位了冷水机组")
        await page.click("#resolve")
        await page.wait_for_selector("#alert-state:has-text('已处理')", timeout=PAGE_MS)
        assert "复位了冷水机组" in await page.inner_text("article.alert-detail")
        assert await page.locator("#resolve").count() == 0

        # The manifest and the worker, as the browser fetches them (with the session).
        manifest = await page.request.get(f"{live_server.url}/tech/manifest.webmanifest")
        assert manifest.headers["content-type"] == "application/manifest+json"
        assert (await manifest.json())["name"] == "门岗 Gatehouse 技术员"
        worker = await page.request.get(f"{live_server.url}/tech/sw.js")
        assert worker.headers["content-type"].startswith("text/javascript")
        # The page was kept for a poor connection.
        kept = await page.evaluate(
            "caches.open('gh-tech-pages').then(c => c.keys())"
            ".then(keys => keys.map(k => new URL(k.url).pathname))"
        )
        assert f"/tech/alerts/{alert_id}" in kept

        # My list: a new alert of mine arrives by itself, life safety on top.
        await page.goto(f"{live_server.url}/tech/", timeout=PAGE_MS)
        await page.wait_for_selector("[data-live-status].is-live", timeout=PAGE_MS)
        pump = await make_alert(
            sessions, tenant.company_id, tenant.site_ids[0], source="pump-4/status", notify_user=tech.user_id
        )
        await page.wait_for_selector(f"#my-alerts li[data-alert-id='{pump}']", timeout=PAGE_MS)
        assert await page.locator("[data-alert-empty]").is_hidden()
        await context.close()
    finally:
        await engine.dispose()
