"""The alerts API (``/api/v1/alerts``, ``/api/v1/silences``) and the console's alert pages through the
real app (httpx over ASGI, SQLite): what each principal may do, the pages in Chinese with life
safety first, forms that act and come back, silences, photos in and out, the dashboard card; and
the live stream from the app served by uvicorn: an acknowledgement arrives as the alert's row."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from cloud.accounts.permissions import PLATFORM, Principal, Role, grants_for_roles
from cloud.alerts import actions
from cloud.alerts.models import LIFE_SAFETY, RESOLVED, AlertTimeline
from cloud.api import create_app
from cloud.audit.models import AuditEntry
from cloud.config import CloudConfig
from cloud.db import SessionFactory, create_engine, session_factory
from cloud.property.models import Site
from tests.cloud.alert_builders import make_alert, tiny_jpeg
from tests.cloud.browser import PLATFORM_TOKEN, LiveServer, StaffSession, staff_session
from tests.cloud.tenancy import Tenant, make_company
from tests.cloud.test_console_stream import messages, next_message


@dataclass
class Desk:
    sessions: SessionFactory
    client: httpx.AsyncClient
    tenant: Tenant
    other: Tenant
    tech: StaffSession
    guard: StaffSession
    manager: StaffSession


def cookie(staff: StaffSession, csrf: bool = True) -> dict[str, str]:
    headers = staff.headers()
    if csrf:
        headers["X-CSRF-Token"] = staff.csrf_token
    return headers


@pytest.fixture
async def desk(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Desk]:
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    app = create_app(CloudConfig(data_dir=str(tmp_path)), sessions, token=PLATFORM_TOKEN)
    tenant = await make_company(sessions, sites=2)
    other = await make_company(sessions)
    async with sessions() as session:
        site = await session.get(Site, tenant.site_ids[0])
        assert site is not None
        site.name = "翠湖花园"
        await session.commit()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://console"
        ) as client:
            yield Desk(
                sessions,
                client,
                tenant,
                other,
                await staff_session(
                    sessions, tenant.company_id, [(Role.TECHNICIAN, None)], username="tech-wang"
                ),
                await staff_session(
                    sessions, tenant.company_id, [(Role.SECURITY_GUARD, None)], username="guard-li"
                ),
                await staff_session(
                    sessions, tenant.company_id, [(Role.PROPERTY_MANAGER, None)], username="mgr"
                ),
            )
    finally:
        await engine.dispose()


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- the API -----------------------------------------------------------------------------------


async def test_the_api_acts_on_alerts_as_each_principal_may(desk: Desk) -> None:
    c, company, site = desk.client, desk.tenant.company_id, desk.tenant.site_ids[0]
    chiller = await make_alert(desk.sessions, company, site)
    smoke = await make_alert(desk.sessions, company, site, track=LIFE_SAFETY)
    theirs = await make_alert(desk.sessions, desk.other.company_id, desk.other.site_ids[0])

    listed = (await c.get("/api/v1/alerts", headers=cookie(desk.tech))).json()
    assert [a["id"] for a in listed["items"]] == [smoke, chiller] and listed["next_cursor"] is None
    assert (await c.get(f"/api/v1/alerts/{theirs}", headers=cookie(desk.tech))).status_code == 404
    assert (
        await c.post(f"/api/v1/alerts/{theirs}/acknowledge", headers=cookie(desk.manager))
    ).status_code == 404

    r = await c.post(f"/api/v1/alerts/{chiller}/acknowledge", headers=cookie(desk.tech))
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    r = await c.post(f"/api/v1/alerts/{chiller}/acknowledge", headers=cookie(desk.tech))
    assert r.status_code == 409 and r.json()["code"] == "alert_state"

    r = await c.post(f"/api/v1/alerts/{smoke}/acknowledge", headers=cookie(desk.tech))
    assert r.status_code == 403 and "life-safety" in r.json()["detail"]
    r = await c.post(f"/api/v1/alerts/{smoke}/resolve", headers=cookie(desk.guard), json={"resolution": ""})
    assert r.status_code == 422 and "resolution" in r.json()["detail"]
    r = await c.post(
        f"/api/v1/alerts/{smoke}/resolve", headers=cookie(desk.guard), json={"resolution": "dust"}
    )
    assert r.status_code == 200 and r.json()["state"] == RESOLVED

    r = await c.post(f"/api/v1/alerts/{chiller}/notes", headers=cookie(desk.tech), json={"text": "on my way"})
    assert r.status_code == 201 and r.json()["detail"] == {"text": "on my way"}
    assert r.json()["actor_name"] == "tech-wang"
    # A cookie session's POST without the CSRF token is refused.
    r = await c.post(
        f"/api/v1/alerts/{chiller}/notes", headers=cookie(desk.tech, csrf=False), json={"text": "x"}
    )
    assert r.status_code == 403

    jpeg = tiny_jpeg()
    files = {"file": ("IMG_0001.jpg", jpeg, "image/jpeg")}
    r = await c.post(f"/api/v1/alerts/{chiller}/photos", headers=cookie(desk.tech), files=files)
    assert r.status_code == 201, r.text
    url = r.json()["url"]
    got = await c.get(url, headers=cookie(desk.tech))
    assert got.status_code == 200 and got.content == jpeg and got.headers["content-type"] == "image/jpeg"
    assert got.headers["x-content-type-options"] == "nosniff"
    forged = {"file": ("evil.jpg", b"<svg onload=alert(1)>", "image/jpeg")}
    r = await c.post(f"/api/v1/alerts/{chiller}/photos", headers=cookie(desk.tech), files=forged)
    assert r.status_code == 415 and "JPEG, PNG or WebP" in r.json()["detail"]

    detail = (await c.get(f"/api/v1/alerts/{chiller}", headers=cookie(desk.manager))).json()
    assert [e["action"] for e in detail["timeline"]] == ["raised", "acknowledged", "note", "photo"]
    assert detail["site_name"] == "翠湖花园" and len(detail["photos"]) == 1

    r = await c.get("/api/v1/alerts", params={"state": "resolved"}, headers=cookie(desk.manager))
    assert [a["id"] for a in r.json()["items"]] == [smoke]
    r = await c.get("/api/v1/alerts", params={"state": "asleep"}, headers=cookie(desk.manager))
    assert r.status_code == 422


async def test_silences_through_the_api_are_checked_and_audited(desk: Desk) -> None:
    c, site = desk.client, desk.tenant.site_ids[0]
    ends = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    body = {"site_id": site, "source_pattern": "chiller-2/*", "reason": "overhaul", "ends_at": ends}
    assert (await c.post("/api/v1/silences", headers=cookie(desk.tech), json=body)).status_code == 403
    too_long = {**body, "ends_at": (datetime.now(UTC) + timedelta(days=31)).isoformat()}
    r = await c.post("/api/v1/silences", headers=cookie(desk.manager), json=too_long)
    assert r.status_code == 422 and "30 days" in r.json()["detail"]
    r = await c.post("/api/v1/silences", headers=cookie(desk.manager), json={**body, "reason": ""})
    assert r.status_code == 422 and "reason" in r.json()["detail"]
    r = await c.post("/api/v1/silences", headers=cookie(desk.manager), json=body)
    assert r.status_code == 201, r.text
    silence_id = r.json()["id"]
    listed = (await c.get("/api/v1/silences?active=true", headers=cookie(desk.manager))).json()
    assert [s["id"] for s in listed["items"]] == [silence_id]
    r = await c.delete(f"/api/v1/silences/{silence_id}", headers=cookie(desk.manager))
    assert r.status_code == 200 and r.json()["ended_at"]
    assert (await c.delete(f"/api/v1/silences/{silence_id}", headers=cookie(desk.manager))).status_code == 409
    async with desk.sessions() as session:
        audited = (
            await session.scalars(select(AuditEntry.action).where(AuditEntry.target_type == "silence"))
        ).all()
    assert list(audited) == ["alert.silence.create", "alert.silence.end"]


# --- the pages ---------------------------------------------------------------------------------


async def test_the_alert_list_shows_life_safety_first_in_red_in_chinese(desk: Desk) -> None:
    company, site = desk.tenant.company_id, desk.tenant.site_ids[0]
    chiller = await make_alert(desk.sessions, company, site)
    smoke = await make_alert(desk.sessions, company, site, track=LIFE_SAFETY)
    old = await make_alert(desk.sessions, company, site, state=RESOLVED, source="pump-9/status")
    r = await desk.client.get("/alerts", headers=cookie(desk.manager))
    assert r.status_code == 200
    rows = re.findall(r'<tr data-alert-id="(\d+)" data-rank="(\d)" class="([^"]+)"', r.text)
    assert [(int(i), rank) for i, rank, _ in rows] == [(smoke, "0"), (chiller, "1")]  # unresolved by default
    assert "urgent" in rows[0][2] and "urgent" not in rows[1][2]
    page = text_of(r.text)
    assert "告警" in page and "生命安全" in page and "翠湖花园" in page
    assert 'href="/alerts"' in r.text  # the navigation entry
    assert "/alerts/stream?" in r.text and "data-alert-stream" in r.text
    everything = await desk.client.get("/alerts?state=resolved&text=pump", headers=cookie(desk.manager))
    assert re.findall(r'data-alert-id="(\d+)"', everything.text) == [str(old)]
    english = await desk.client.get("/alerts", headers=desk.manager.headers(lang="en"))
    assert "Life safety" in text_of(english.text)


async def test_the_alert_page_shows_the_timeline_and_its_forms_act(desk: Desk) -> None:
    company, site = desk.tenant.company_id, desk.tenant.site_ids[0]
    chiller = await make_alert(desk.sessions, company, site, notify_user=desk.tech.user_id)
    until = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)  # 07:00 the next morning in Shanghai
    async with desk.sessions() as session:
        session.add(
            AlertTimeline(
                alert_id=chiller,
                at=datetime.now(UTC),
                action="held",
                detail={
                    "user_id": desk.tech.user_id,
                    "channel": "sms",
                    "until": until.isoformat(),
                    "why": "quiet_hours",
                },
            )
        )
        await session.commit()
    page = await desk.client.get(f"/alerts/{chiller}", headers=cookie(desk.tech))
    assert page.status_code == 200
    text = text_of(page.text)
    assert "已通过短信通知 Tech" in text  # "Notified Tech by SMS"
    assert "给 tech-wang 的通知暂缓至 2026-11-29 07:00:00 免打扰时段" in text
    assert f'action="/alerts/{chiller}/acknowledge"' in page.text
    form = {"csrf_token": desk.tech.csrf_token}
    r = await desk.client.post(f"/alerts/{chiller}/acknowledge", headers=desk.tech.headers(), data=form)
    assert r.status_code == 303 and r.headers["location"] == f"/alerts/{chiller}"
    # Twice (two phones): the page says so instead of an error page.
    r = await desk.client.post(f"/alerts/{chiller}/acknowledge", headers=desk.tech.headers(), data=form)
    assert r.status_code == 303
    flash_cookie = r.cookies.get("gh_flash") or ""
    back = await desk.client.get(f"/alerts/{chiller}", headers=desk.tech.headers(gh_flash=flash_cookie))
    assert "only an open alert can be acknowledged" in back.text
    assert "确认人" in text_of(back.text) or "tech-wang" in text_of(back.text)
    r = await desk.client.post(
        f"/alerts/{chiller}/resolve",
        headers=desk.tech.headers(),
        data={**form, "resolution": "reset the breaker"},
    )
    assert r.status_code == 303
    done = await desk.client.get(f"/alerts/{chiller}", headers=cookie(desk.tech))
    assert "reset the breaker" in done.text and f'action="/alerts/{chiller}/acknowledge"' not in done.text
    # Another company's alert is the 404 page; a life-safety alert the 403 page for a technician.
    theirs = await make_alert(desk.sessions, desk.other.company_id, desk.other.site_ids[0])
    assert (await desk.client.get(f"/alerts/{theirs}", headers=cookie(desk.tech))).status_code == 404
    smoke = await make_alert(desk.sessions, company, site, track=LIFE_SAFETY)
    smoke_page = await desk.client.get(f"/alerts/{smoke}", headers=cookie(desk.tech))
    assert f'action="/alerts/{smoke}/acknowledge"' not in smoke_page.text
    r = await desk.client.post(f"/alerts/{smoke}/acknowledge", headers=desk.tech.headers(), data=form)
    assert r.status_code == 403 and "life-safety" in r.text


async def test_silences_page_adds_and_ends_with_a_reason(desk: Desk) -> None:
    r = await desk.client.get("/alerts/silences", headers=cookie(desk.manager))
    assert r.status_code == 200 and "静默" in r.text
    assert (await desk.client.get("/alerts/silences", headers=cookie(desk.tech))).status_code == 403
    form = {"csrf_token": desk.manager.csrf_token, "site": str(desk.tenant.site_ids[0]), "reason": ""}
    # Typed as wall time in the site's zone (the default, Asia/Shanghai).
    end = (
        (datetime.now(UTC) + timedelta(hours=5))
        .astimezone(ZoneInfo("Asia/Shanghai"))
        .strftime("%Y-%m-%dT%H:%M")
    )
    r = await desk.client.post(
        "/alerts/silences", headers=desk.manager.headers(), data={**form, "ends_at": end}
    )
    assert r.status_code == 422 and "reason" in r.text
    r = await desk.client.post(
        "/alerts/silences",
        headers=desk.manager.headers(),
        data={**form, "ends_at": end, "reason": "pump swap"},
    )
    assert r.status_code == 303
    listed = await desk.client.get("/alerts/silences", headers=cookie(desk.manager))
    ids = re.findall(r'data-silence-id="(\d+)"', listed.text)
    assert len(ids) == 1 and "pump swap" in listed.text
    r = await desk.client.post(
        f"/alerts/silences/{ids[0]}/end",
        headers=desk.manager.headers(),
        data={"csrf_token": desk.manager.csrf_token},
    )
    assert r.status_code == 303
    async with desk.sessions() as session:
        assert (await actions.list_silences(session, PLATFORM, active=True)).items == []


async def test_the_dashboard_card_counts_open_alerts_by_track(desk: Desk) -> None:
    company, site = desk.tenant.company_id, desk.tenant.site_ids[0]
    await make_alert(desk.sessions, company, site)
    await make_alert(desk.sessions, company, site, track=LIFE_SAFETY)
    await make_alert(desk.sessions, company, site, state=RESOLVED)
    r = await desk.client.get("/", headers=cookie(desk.manager))
    card = r.text.split('id="card-open_alerts"', 1)[1].split("</section>", 1)[0]
    assert "未处理告警" in card
    figures = re.findall(r"<strong>(\d+)</strong>", card)
    assert figures[:2] == ["1", "1"]  # one life safety, one maintenance
    finance = await staff_session(desk.sessions, company, [(Role.FINANCE, None)])
    assert 'id="card-open_alerts"' not in (await desk.client.get("/", headers=cookie(finance))).text


# --- the live stream ---------------------------------------------------------------------------


async def test_the_stream_sends_a_changed_alert_and_what_left_the_filter(
    sqlite_url: str, tmp_path: Path
) -> None:
    server = LiveServer(sqlite_url, tmp_path)
    server.start()
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    try:
        tenant = await make_company(sessions)
        other = await make_company(sessions)
        manager = await staff_session(sessions, tenant.company_id, [(Role.PROPERTY_MANAGER, None)])
        chiller = await make_alert(sessions, tenant.company_id, tenant.site_ids[0])
        async with sessions() as session:
            after = await actions.newest_timeline_id(session)
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30) as client,
            client.stream("GET", f"/alerts/stream?state=open&after={after}", headers=manager.headers()) as r,
        ):
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            stream = messages(r)
            await next_message(stream, "ready")
            # Another company's alert never shows; a new open alert of ours does.
            await make_alert(sessions, other.company_id, other.site_ids[0])
            new = await make_alert(sessions, tenant.company_id, tenant.site_ids[0], source="ahu-7/fan")
            arrived = await next_message(stream, "alert")
            assert f'data-alert-id="{new}"' in arrived.data and "ahu-7/fan" in arrived.data
            # Acknowledged, the chiller no longer matches state=open: it leaves the page.
            principal = Principal(
                kind="user",
                id=manager.user_id,
                name=manager.username,
                company_id=tenant.company_id,
                grants=grants_for_roles([(Role.PROPERTY_MANAGER, None)]),
            )
            async with sessions() as session:
                await actions.acknowledge(session, principal, chiller)
            gone = await next_message(stream, "gone")
            assert gone.data == str(chiller) and int(gone.id) > after
    finally:
        await engine.dispose()
        server.stop()
