"""The console's pages through the real app (httpx over ASGI), on SQLite and PostgreSQL: each page
for a principal allowed to see it, 403 or 404 for the others, tenants kept apart, Chinese by
default and English on request, times in the site's zone."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from cloud.accounts.permissions import Permission, Role
from cloud.api import create_app
from cloud.config import CloudConfig
from cloud.models import LatestValue
from tests.cloud.browser import (
    PLATFORM_TOKEN,
    SeededSite,
    StaffSession,
    event_record,
    seed_site,
    staff_session,
    store_events,
)
from tests.cloud.conftest import Database
from tests.cloud.tenancy import bearer, make_token, role_token


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=PLATFORM_TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as c:
        yield c


@pytest.fixture
async def site(db: Database) -> SeededSite:
    return await seed_site(db.sessions)


@pytest.fixture
async def admin(db: Database, site: SeededSite) -> StaffSession:
    return await staff_session(db.sessions, site.company_id, [(Role.COMPANY_ADMIN, None)])


def text_of(html: str) -> str:
    """The page's text without tags, whitespace collapsed: what a reader sees."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- the dashboard ---------------------------------------------------------------------------


async def test_a_page_without_a_session_goes_to_the_sign_in_page(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/"


async def test_dashboard_shows_sites_gateways_and_todays_events(
    client: httpx.AsyncClient, site: SeededSite, admin: StaffSession
) -> None:
    r = await client.get("/", headers=admin.headers())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    page = text_of(r.text)
    assert site.site_name in page
    assert f'href="/sites/{site.site_id}"' in r.text
    # One gateway online, one offline, with when each was last seen.
    assert "1 在线" in page and "1 离线" in page
    assert "最后在线" in page
    # Today's events come from event_counts_hourly: 41 + 1 in the current hour.
    assert "42 今日零点以来" in page
    assert r.text.count("<rect ") == 24  # an hourly bar each


async def test_dashboard_shows_only_the_cards_a_role_allows(
    client: httpx.AsyncClient, db: Database, site: SeededSite
) -> None:
    finance = await staff_session(db.sessions, site.company_id, [(Role.FINANCE, None)])
    r = await client.get("/", headers=finance.headers())
    assert r.status_code == 200
    assert 'id="card-sites"' in r.text
    assert 'id="card-gateways"' not in r.text
    assert 'id="card-events_today"' not in r.text
    # Navigation: no event search for a role without events.read.
    assert 'href="/events"' not in r.text


async def test_dashboard_never_shows_another_companys_sites_or_gateways(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    other = await seed_site(db.sessions)
    r = await client.get("/", headers=admin.headers())
    assert other.site_name not in r.text
    assert other.gateway_id not in r.text
    assert "42 今日零点以来" in text_of(r.text)


async def test_dashboard_for_a_site_limited_guard_counts_only_its_sites(
    client: httpx.AsyncClient, db: Database
) -> None:
    seeded = await seed_site(db.sessions, sites=2)
    async with db.sessions() as session:
        from cloud.property.models import Site

        second = (
            await session.scalars(
                select(Site.id).where(Site.company_id == seeded.company_id, Site.id != seeded.site_id)
            )
        ).one()
    guard = await staff_session(db.sessions, seeded.company_id, [(Role.SECURITY_GUARD, second)])
    r = await client.get("/", headers=guard.headers())
    assert r.status_code == 200
    page = text_of(r.text)
    assert seeded.site_name not in page
    assert "0 在线" in page and "0 离线" in page  # the gateways are at the other site
    assert "0 今日零点以来" in page


async def test_an_api_token_is_a_principal_for_pages_too(client: httpx.AsyncClient, db: Database) -> None:
    seeded = await seed_site(db.sessions)
    token = await make_token(db.sessions, seeded.company_id, [Permission.SITES_READ])
    # The dashboard needs no permission, only a staff principal: a token's cards follow its scopes.
    r = await client.get("/", headers=bearer(token))
    assert r.status_code == 200


# --- languages and zones ---------------------------------------------------------------------


async def test_chinese_by_default_english_for_a_user_who_chose_it(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    zh = await client.get("/", headers=admin.headers())
    assert '<html lang="zh-CN">' in zh.text
    assert "首页" in zh.text and "今日事件" in zh.text
    english = await staff_session(db.sessions, site.company_id, [(Role.COMPANY_ADMIN, None)], language="en")
    en = await client.get("/", headers=english.headers())
    assert '<html lang="en">' in en.text
    assert "Dashboard" in en.text and "Today's events" in en.text
    assert "今日事件" not in en.text


async def test_the_language_cookie_overrides_the_account(
    client: httpx.AsyncClient, site: SeededSite, admin: StaffSession
) -> None:
    r = await client.get("/language?to=en", headers={"Referer": f"http://console/sites/{site.site_id}"})
    assert r.status_code == 303
    assert r.headers["location"] == f"/sites/{site.site_id}"
    assert "lang=en" in r.headers["set-cookie"]
    r = await client.get("/", headers=admin.headers(lang="en"))
    assert "Today's events" in r.text
    # A link from another site goes home, not back there.
    r = await client.get("/language?to=zh", headers={"Referer": "https://evil.example/x"})
    assert r.headers["location"] == "/"


async def test_times_are_shown_in_the_sites_zone(client: httpx.AsyncClient, db: Database) -> None:
    seen = datetime(2026, 1, 15, 1, 30, tzinfo=UTC)
    shanghai = await seed_site(db.sessions, timezone="Asia/Shanghai", last_seen=seen)
    london = await seed_site(db.sessions, timezone="Europe/London", last_seen=seen)
    for seeded, local in ((shanghai, "2026-01-15 09:30:00"), (london, "2026-01-15 01:30:00")):
        staff = await staff_session(db.sessions, seeded.company_id, [(Role.COMPANY_ADMIN, None)])
        r = await client.get(f"/sites/{seeded.site_id}", headers=staff.headers())
        assert r.status_code == 200
        assert local in r.text
    r = await client.get(f"/sites/{shanghai.site_id}", headers=bearer(PLATFORM_TOKEN))
    assert "UTC+08:00" in r.text


# --- the site view ---------------------------------------------------------------------------


async def test_site_view_shows_buildings_gateways_devices_doors_and_recent_events(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    await store_events(
        db.sessions,
        site.gateway_id,
        site.store_id,
        [event_record(1, kind="door.forced", source="door-lobby", data={"door": "Lobby door"})],
    )
    r = await client.get(f"/sites/{site.site_id}", headers=admin.headers())
    assert r.status_code == 200
    page = text_of(r.text)
    assert "T1 Tower T1 3" in page and "T2 Tower T2 2" in page  # unit counts per building
    assert "Plant room A" in page and "Plant room B" in page
    assert "12.5 kW" in page  # meter1/power's latest value
    assert "Lobby door" in page and "已打开" in page and "已释放" in page  # opened, lock released
    assert "door.forced" in page  # the recent events
    assert f"/sites/{site.site_id}/stream?after=" in r.text
    assert "/trend?gateway=" in r.text


async def test_site_view_shows_only_what_the_role_may_see(
    client: httpx.AsyncClient, db: Database, site: SeededSite
) -> None:
    finance = await staff_session(db.sessions, site.company_id, [(Role.FINANCE, None)])
    r = await client.get(f"/sites/{site.site_id}", headers=finance.headers())
    assert r.status_code == 200
    assert 'id="buildings"' in r.text
    for section in ("gateways", "devices", "doors", "live"):
        assert f'id="{section}"' not in r.text


async def test_site_view_of_another_company_or_site_is_not_found(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    other = await seed_site(db.sessions)
    r = await client.get(f"/sites/{other.site_id}", headers=admin.headers())
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "未找到" in r.text
    r = await client.get(f"/sites/{other.site_id}/stream", headers=admin.headers())
    assert r.status_code == 404
    # A guard of another site of the same company: 404 as well, not 403.
    second = await seed_site(db.sessions)
    guard = await staff_session(db.sessions, second.company_id, [(Role.SECURITY_GUARD, second.site_id)])
    assert (await client.get(f"/sites/{site.site_id}", headers=guard.headers())).status_code == 404
    assert (await client.get("/sites/999999", headers=admin.headers())).status_code == 404


async def test_pages_need_their_permission(client: httpx.AsyncClient, db: Database, site: SeededSite) -> None:
    # A token that may read events but not sites: no site view, but event search works.
    token = await make_token(db.sessions, site.company_id, [Permission.EVENTS_READ])
    r = await client.get(f"/sites/{site.site_id}", headers=bearer(token))
    assert r.status_code == 403
    assert "无权访问" in r.text
    assert (await client.get("/events", headers=bearer(token))).status_code == 200
    agent = await role_token(db.sessions, site.company_id, Role.SERVICE_AGENT)
    assert (await client.get("/events", headers=bearer(agent))).status_code == 403
    assert (await client.get(f"/sites/{site.site_id}/stream", headers=bearer(agent))).status_code == 403
    r = await client.get(f"/trend?gateway={site.gateway_id}&source=meter1/power", headers=bearer(agent))
    assert r.status_code == 403


async def test_a_bad_path_parameter_is_an_html_page(client: httpx.AsyncClient, admin: StaffSession) -> None:
    r = await client.get("/sites/not-a-number", headers=admin.headers())
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("text/html")
    assert "site_id" in r.text


# --- event search ----------------------------------------------------------------------------


async def _search(client: httpx.AsyncClient, staff: StaffSession, **params: str | int) -> str:
    r = await client.get("/events", params=params, headers=staff.headers())
    assert r.status_code == 200, r.text
    return r.text


def _row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', html)]


async def test_event_search_pages_newest_first(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    await store_events(db.sessions, site.gateway_id, site.store_id, [event_record(i) for i in range(1, 121)])
    first = await _search(client, admin)
    ids = _row_ids(first)
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    older = re.search(r'<a rel="next" href="([^"]+)"', first)
    assert older is not None
    r = await client.get(older.group(1).replace("&amp;", "&"), headers=admin.headers())
    second = _row_ids(r.text)
    assert len(second) == 50 and max(second) < min(ids)
    third_link = re.search(r'<a rel="next" href="([^"]+)"', r.text)
    assert third_link is not None
    r = await client.get(third_link.group(1).replace("&amp;", "&"), headers=admin.headers())
    assert len(_row_ids(r.text)) == 20
    assert 'rel="next"' not in r.text


async def test_event_search_filters(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    t0 = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
    await store_events(
        db.sessions,
        site.gateway_id,
        site.store_id,
        [
            event_record(1, at=t0),
            event_record(2, kind="door.forced", source="door-lobby", data={"door": "Lobby"}, at=t0),
            event_record(3, kind="door.opened", source="door-garage", data={"door": "Garage"}, at=t0),
            event_record(4, source="meter2/power", at=t0 + timedelta(hours=2)),
        ],
    )
    await store_events(db.sessions, site.offline_gateway_id, site.store_id, [event_record(1, at=t0)])

    def kinds(html: str) -> list[str]:
        return re.findall(r"<td><code>([a-z._]+)</code></td>", html)

    assert kinds(await _search(client, admin, kind="door.forced")) == ["door.forced"]
    assert sorted(kinds(await _search(client, admin, kind="door."))) == ["door.forced", "door.opened"]
    assert len(kinds(await _search(client, admin, gateway=site.offline_gateway_id))) == 1
    assert len(kinds(await _search(client, admin, site=site.site_id))) == 5
    assert kinds(await _search(client, admin, source="door-garage")) == ["door.opened"]
    # "contains": the sources that have it, from latest_values.
    async with db.sessions() as session:
        for source in ("door-garage", "meter2/power"):
            session.add(
                LatestValue(
                    gateway_id=site.gateway_id,
                    source=source,
                    kind="x.y",
                    event_id=1,
                    reported_time=t0,
                    data={},
                )
            )
        await session.commit()
    assert sorted(kinds(await _search(client, admin, source="door", match="contains"))) == [
        "door.forced",
        "door.opened",
    ]
    # The time window is typed in the site's zone: 13:00-15:00 Shanghai is 05:00-07:00 UTC.
    html = await _search(client, admin, since="2026-03-01T13:00", until="2026-03-01T15:00", site=site.site_id)
    assert len(kinds(html)) == 1 and "meter2/power" in html
    assert "2026-03-01 14:00:00" in html  # shown in the site's zone too


async def test_event_search_is_scoped_to_the_principals_gateways(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    other = await seed_site(db.sessions)
    await store_events(db.sessions, site.gateway_id, site.store_id, [event_record(1)])
    await store_events(db.sessions, other.gateway_id, other.store_id, [event_record(1), event_record(2)])
    assert len(_row_ids(await _search(client, admin))) == 1
    r = await client.get("/events", params={"gateway": other.gateway_id}, headers=admin.headers())
    assert r.status_code == 404
    r = await client.get("/events", params={"site": other.site_id}, headers=admin.headers())
    assert r.status_code == 404
    # The platform sees every company's events.
    r = await client.get("/events", headers=bearer(PLATFORM_TOKEN))
    assert len(_row_ids(r.text)) >= 3


async def test_event_search_says_what_was_wrong(client: httpx.AsyncClient, admin: StaffSession) -> None:
    r = await client.get("/events", params={"since": "yesterday"}, headers=admin.headers())
    assert r.status_code == 422
    assert "since" in r.text and "yesterday" in r.text
    r = await client.get("/events", params={"kind": "Not A Kind"}, headers=admin.headers())
    assert r.status_code == 422
    r = await client.get("/events", params={"cursor": "forged"}, headers=admin.headers())
    assert r.status_code == 422


# --- the trend -------------------------------------------------------------------------------


async def test_trend_page_draws_the_series(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    now = datetime.now(UTC)
    records = [
        event_record(
            i, data={"value": float(i), "quality": "good", "unit": "kW"}, at=now - timedelta(minutes=i)
        )
        for i in range(1, 31)
    ]
    await store_events(db.sessions, site.gateway_id, site.store_id, records)
    r = await client.get(
        "/trend",
        params={"gateway": site.gateway_id, "source": "meter1/power", "hours": 1},
        headers=admin.headers(),
    )
    assert r.status_code == 200
    assert "<polyline" in r.text and "<polygon" in r.text
    page = text_of(r.text)
    assert "最小值 1.000 kW" in page and "最大值 30.000 kW" in page
    assert "读数条数 30" in page


async def test_trend_of_another_companys_gateway_is_not_found(
    client: httpx.AsyncClient, db: Database, admin: StaffSession
) -> None:
    other = await seed_site(db.sessions)
    r = await client.get(
        "/trend", params={"gateway": other.gateway_id, "source": "x"}, headers=admin.headers()
    )
    assert r.status_code == 404


# --- static files ----------------------------------------------------------------------------


async def test_static_files_are_cached_by_their_hash(client: httpx.AsyncClient, admin: StaffSession) -> None:
    page = await client.get("/", headers=admin.headers())
    css = re.search(r'href="(/static/console\.css\?v=[0-9a-f]+)"', page.text)
    assert css is not None
    r = await client.get(css.group(1))
    assert r.status_code == 200
    assert "immutable" in r.headers["cache-control"]
    r = await client.get("/static/htmx.min.js")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache" and r.headers["etag"]
    assert (await client.get("/static/missing.js")).status_code == 404
    assert (await client.get("/static/../i18n.py")).status_code == 404
