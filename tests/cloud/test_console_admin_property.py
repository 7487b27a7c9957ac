"""The console's property, people and import pages through the real app (httpx over ASGI), on
SQLite and PostgreSQL: each page for a role allowed it, 403 for a role without the permission or
for a site outside a site-limited role's, 404 for another company's ids; the forms (with the
session's CSRF token, 403 without it) change what they say and are audited; an import with errors
shows the row-by-row report and imports nothing."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cloud.accounts.permissions import Permission, Role
from cloud.api import create_app
from cloud.audit.models import AuditEntry
from cloud.config import CloudConfig
from cloud.property.models import (
    Building,
    CommonArea,
    Floor,
    Meter,
    Occupancy,
    ParkingSpace,
    Person,
    Site,
    Unit,
)
from tests.cloud.browser import PLATFORM_TOKEN, SeededSite, StaffSession, seed_site, staff_session
from tests.cloud.conftest import Database
from tests.cloud.tenancy import bearer, make_token


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=PLATFORM_TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console") as c:
        yield c


@pytest.fixture
async def site(db: Database) -> SeededSite:
    return await seed_site(db.sessions, sites=2)


@pytest.fixture
async def admin(db: Database, site: SeededSite) -> StaffSession:
    return await staff_session(db.sessions, site.company_id, [(Role.COMPANY_ADMIN, None)])


def text_of(page: str) -> str:
    """The page's text without tags, whitespace collapsed: what a reader sees."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


async def post(
    client: httpx.AsyncClient, staff: StaffSession, path: str, fields: dict[str, Any], **kwargs: Any
) -> httpx.Response:
    """A form posted as the browser does: the session's cookie and its CSRF token."""
    return await client.post(
        path, data={"csrf_token": staff.csrf_token, **fields}, headers=staff.headers(), **kwargs
    )


async def ids_of(db: Database, site: SeededSite) -> dict[str, int]:
    """The seeded site's first building, its floor and its first unit; the company's second site."""
    async with db.sessions() as session:
        building = await session.scalar(
            select(Building).where(Building.site_id == site.site_id).order_by(Building.code).limit(1)
        )
        assert building is not None
        floor = await session.scalar(select(Floor).where(Floor.building_id == building.id))
        unit = await session.scalar(select(Unit).where(Unit.building_id == building.id).order_by(Unit.number))
        assert floor is not None and unit is not None
        other = await session.scalar(
            select(Site.id).where(Site.company_id == site.company_id, Site.id != site.site_id)
        )
        assert other is not None
        return {"building": building.id, "floor": floor.id, "unit": unit.id, "other_site": other}


async def audited(db: Database, action: str) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).where(AuditEntry.action == action)) or 0)


# --- the pages, who sees them ----------------------------------------------------------------


async def test_every_property_page_renders_for_the_company_admin_in_chinese(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    ids = await ids_of(db, site)
    pages = {
        "/property": ["物业资料", site.site_name, "已入住房屋"],
        f"/property/sites/{site.site_id}": ["楼栋", "T1", "Tower T1", "添加楼栋", "导出"],
        f"/property/buildings/{ids['building']}": ["房屋列表", "101", "88.50", "住宅", "添加房屋"],
        f"/property/units/{ids['unit']}": ["房屋 101", "住户", "添加住户", "车位", "仪表"],
        "/people": ["住户", "姓名或电话"],
        f"/property/sites/{site.site_id}/parking": ["车位", "添加车位"],
        f"/property/sites/{site.site_id}/common-areas": ["公共区域", "添加公共区域"],
        f"/property/sites/{site.site_id}/meters": ["仪表", "添加仪表"],
        f"/property/sites/{site.site_id}/import": ["导入", "房屋资料", "住户及其房屋", "仅检查（不导入）"],
    }
    for path, expected in pages.items():
        r = await client.get(path, headers=admin.headers())
        assert r.status_code == 200, (path, r.text[:500])
        assert r.headers["cache-control"] == "no-store"
        page = text_of(r.text)
        for words in expected:
            assert words in page, (path, words)
        # Mobile first: the console's viewport and the tables that scroll inside their panel.
        assert 'name="viewport"' in r.text
    # The site page offers both exports, as CSV and Excel, in the user's language.
    r = await client.get(f"/property/sites/{site.site_id}", headers=admin.headers())
    for what in ("units", "people"):
        for fmt in ("csv", "xlsx"):
            assert f"/api/v1/sites/{site.site_id}/exports/{what}?format={fmt}&amp;lang=zh" in r.text


async def test_english_for_a_user_who_chose_it(
    client: httpx.AsyncClient, db: Database, site: SeededSite
) -> None:
    english = await staff_session(
        db.sessions, site.company_id, [(Role.PROPERTY_MANAGER, None)], language="en"
    )
    r = await client.get(f"/property/sites/{site.site_id}/import", headers=english.headers())
    assert r.status_code == 200
    assert "People and their units" in r.text and "Check only (import nothing)" in r.text
    assert "住户及其房屋" not in r.text


async def test_a_role_without_the_permission_gets_403(
    client: httpx.AsyncClient, db: Database, site: SeededSite
) -> None:
    technician = await staff_session(db.sessions, site.company_id, [(Role.TECHNICIAN, None)])
    # Technicians read the property model but not people, and change nothing.
    assert (await client.get("/property", headers=technician.headers())).status_code == 200
    assert (await client.get("/people", headers=technician.headers())).status_code == 403
    assert (
        await client.get(f"/property/sites/{site.site_id}/import", headers=technician.headers())
    ).status_code == 403
    r = await post(
        client, technician, f"/property/sites/{site.site_id}/buildings", {"code": "T9", "name": "x"}
    )
    assert r.status_code == 403
    # The unit page leaves out the occupants for them rather than refusing the page.
    ids = await ids_of(db, site)
    r = await client.get(f"/property/units/{ids['unit']}", headers=technician.headers())
    assert r.status_code == 200
    assert 'id="occupants"' not in r.text and 'id="edit-unit"' not in r.text
    # No navigation entry for what the role cannot open.
    assert 'href="/people"' not in r.text and 'href="/property"' in r.text


async def test_a_site_limited_manager_gets_403_at_the_other_site(
    client: httpx.AsyncClient, db: Database, site: SeededSite
) -> None:
    ids = await ids_of(db, site)
    manager = await staff_session(db.sessions, site.company_id, [(Role.PROPERTY_MANAGER, ids["other_site"])])
    for path in (
        f"/property/sites/{site.site_id}",
        f"/property/buildings/{ids['building']}",
        f"/property/units/{ids['unit']}",
        f"/property/sites/{site.site_id}/import",
        f"/property/sites/{site.site_id}/meters",
    ):
        r = await client.get(path, headers=manager.headers())
        assert r.status_code == 403, path
        assert "<h1>" in r.text  # an HTML error page, not the API's JSON
    r = await post(client, manager, f"/property/buildings/{ids['building']}/units", {"number": "9"})
    assert r.status_code == 403
    # Its own site is fine, and the sites list shows only it.
    assert (
        await client.get(f"/property/sites/{ids['other_site']}", headers=manager.headers())
    ).status_code == 200
    listed = text_of((await client.get("/property", headers=manager.headers())).text)
    assert site.site_name not in listed


async def test_another_companys_ids_are_404(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    other = await seed_site(db.sessions)
    theirs = await ids_of(db, await seed_site(db.sessions, sites=2))
    async with db.sessions() as session:
        person = Person(company_id=other.company_id, name="Their owner", created_at=datetime.now(UTC))
        session.add(person)
        await session.commit()
        person_id = person.id
    for path in (
        f"/property/sites/{other.site_id}",
        f"/property/buildings/{theirs['building']}",
        f"/property/units/{theirs['unit']}",
        f"/people/{person_id}",
        f"/property/sites/{other.site_id}/parking",
        f"/property/sites/{other.site_id}/common-areas",
        f"/property/sites/{other.site_id}/meters",
        f"/property/sites/{other.site_id}/import",
    ):
        r = await client.get(path, headers=admin.headers())
        assert r.status_code == 404, path
        assert other.site_name not in r.text and "Their owner" not in r.text
    r = await post(
        client, admin, f"/property/sites/{other.site_id}/buildings", {"code": "X1", "name": "Mine now"}
    )
    assert r.status_code == 404
    r = await post(client, admin, f"/property/units/{theirs['unit']}/occupancies", _occupant("Intruder"))
    assert r.status_code == 404


# --- forms -----------------------------------------------------------------------------------


async def test_a_form_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    ids = await ids_of(db, site)
    for path, fields in (
        (f"/property/sites/{site.site_id}/buildings", {"code": "T7", "name": "Tower 7"}),
        (f"/property/buildings/{ids['building']}/units", {"number": "901", "floor_id": ids["floor"]}),
        (f"/property/units/{ids['unit']}/occupancies", _occupant("Wang Fang")),
    ):
        r = await client.post(path, data=fields, headers=admin.headers())
        assert r.status_code == 403, path
        assert "CSRF" in r.text
        r = await client.post(path, data={**fields, "csrf_token": "not-the-token"}, headers=admin.headers())
        assert r.status_code == 403, path
    async with db.sessions() as session:
        assert await session.scalar(select(Building.id).where(Building.code == "T7")) is None
        assert await session.scalar(select(Person.id).where(Person.name == "Wang Fang")) is None


async def test_add_a_building_a_floor_and_a_unit_then_change_the_unit(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    r = await post(
        client, admin, f"/property/sites/{site.site_id}/buildings", {"code": "T3", "name": "Tower 3"}
    )
    assert r.status_code == 303
    building_path = r.headers["location"]
    building_id = int(building_path.rsplit("/", 1)[1])
    # The flash message of the redirect is shown on the next page (Chinese by default).
    flash = r.cookies.get("gh_flash")
    assert flash
    page = await client.get(building_path, headers=admin.headers(gh_flash=flash))
    assert "已添加楼栋 T3。" in text_of(page.text)

    r = await post(client, admin, f"/property/buildings/{building_id}/floors", {"level": "12", "name": ""})
    assert r.status_code == 303
    async with db.sessions() as session:
        floor = await session.scalar(select(Floor).where(Floor.building_id == building_id))
        assert floor is not None and floor.name == "12F"
    fields = {"number": "1203", "floor_id": str(floor.id), "floor_area_m2": "89.5", "use": "office"}
    r = await post(client, admin, f"/property/buildings/{building_id}/units", fields)
    assert r.status_code == 303
    async with db.sessions() as session:
        unit = await session.scalar(select(Unit).where(Unit.building_id == building_id))
        assert unit is not None
        assert (unit.number, unit.floor_area_m2, unit.use, unit.site_id) == (
            "1203",
            Decimal("89.50"),
            "office",
            site.site_id,
        )
    page = text_of((await client.get(building_path, headers=admin.headers())).text)
    assert "1203" in page and "89.50" in page and "办公" in page

    fields = {"number": "1204", "floor_id": str(floor.id), "floor_area_m2": "1,090.25", "use": "residential"}
    r = await post(client, admin, f"/property/units/{unit.id}", fields)
    assert r.status_code == 303
    async with db.sessions() as session:
        changed = await session.get_one(Unit, unit.id)
        assert (changed.number, changed.floor_area_m2, changed.use) == (
            "1204",
            Decimal("1090.25"),
            "residential",
        )
    for action in ("building.create", "floor.create", "unit.create", "unit.update"):
        assert await audited(db, action) >= 1, action


async def test_a_form_with_a_mistake_is_shown_again_with_the_message_and_what_was_typed(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    ids = await ids_of(db, site)
    # A duplicate code: 409, the form again, naming the field.
    r = await post(
        client, admin, f"/property/sites/{site.site_id}/buildings", {"code": "T1", "name": "Again"}
    )
    assert r.status_code == 409
    assert "code: the site already has a building 'T1'" in text_of(r.text)
    assert 'value="Again"' in r.text
    # An area with three decimals and one that is not a number: 422, nothing stored.
    for area in ("89.555", "lots"):
        fields = {"number": "777", "floor_id": str(ids["floor"]), "floor_area_m2": area, "use": "residential"}
        r = await post(client, admin, f"/property/buildings/{ids['building']}/units", fields)
        assert r.status_code == 422, area
        assert "floor_area_m2" in text_of(r.text)
        assert 'value="777"' in r.text
    async with db.sessions() as session:
        assert await session.scalar(select(Unit.id).where(Unit.number == "777")) is None
    # A floor of another building is refused too.
    async with db.sessions() as session:
        other_floor = await session.scalar(
            select(Floor.id)
            .join(Building, Building.id == Floor.building_id)
            .where(Building.site_id == site.site_id, Building.id != ids["building"])
        )
    fields = {"number": "778", "floor_id": str(other_floor), "floor_area_m2": "50", "use": "residential"}
    r = await post(client, admin, f"/property/buildings/{ids['building']}/units", fields)
    assert r.status_code == 422
    assert "is not in building" in r.text


def _occupant(name: str, phone: str = "", role: str = "owner", primary: bool = False) -> dict[str, str]:
    fields = {"name": name, "phone": phone, "role": role, "start_date": "2024-03-01", "end_date": ""}
    if primary:
        fields["primary"] = "1"
    return fields


async def test_link_people_to_a_unit_and_end_an_occupancy(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    ids = await ids_of(db, site)
    unit_path = f"/property/units/{ids['unit']}"
    r = await post(
        client, admin, f"{unit_path}/occupancies", _occupant("李明", "138-0013 8000", primary=True)
    )
    assert r.status_code == 303, r.text
    # The same phone at another unit is the same person, not a new one.
    async with db.sessions() as session:
        second = await session.scalar(
            select(Unit.id).where(Unit.site_id == site.site_id, Unit.id != ids["unit"])
        )
    r = await post(
        client, admin, f"/property/units/{second}/occupancies", _occupant("李明", "13800138000", "tenant")
    )
    assert r.status_code == 303
    # The phone of someone else: refused, saying whose it is not.
    r = await post(client, admin, f"{unit_path}/occupancies", _occupant("王芳", "13800138000"))
    assert r.status_code == 422
    alert = re.search(r'<p class="flash flash-error" role="alert">(.*?)</p>', r.text, re.S)
    assert alert is not None and "another person's number" in html.unescape(alert.group(1))
    assert "李明" not in alert.group(1)
    # A second primary contact at once: 409 from the service, on the form.
    r = await post(client, admin, f"{unit_path}/occupancies", _occupant("王芳", primary=True))
    assert r.status_code == 409
    async with db.sessions() as session:
        people = (await session.scalars(select(Person).where(Person.company_id == site.company_id))).all()
        assert [p.name for p in people] == ["李明"]
        assert people[0].phone == "13800138000"
        occupancy = await session.scalar(select(Occupancy).where(Occupancy.unit_id == ids["unit"]))
        assert occupancy is not None and occupancy.primary and occupancy.end_date is None
    page = text_of((await client.get(unit_path, headers=admin.headers())).text)
    assert "李明" in page and "业主" in page and "主联系人" in page and "未结束" in page

    r = await post(client, admin, f"/property/occupancies/{occupancy.id}/end", {"end_date": "2025-06-30"})
    assert r.status_code == 303 and r.headers["location"] == unit_path
    async with db.sessions() as session:
        assert (await session.get_one(Occupancy, occupancy.id)).end_date == date(2025, 6, 30)
    r = await post(client, admin, f"/property/occupancies/{occupancy.id}/end", {"end_date": "2020-01-01"})
    assert r.status_code == 422  # before its start
    assert await audited(db, "occupancy.create") >= 2 and await audited(db, "occupancy.update") >= 1

    # The person's page lists both units, and the people search finds them by a part of the phone.
    person_id = people[0].id
    page = text_of((await client.get(f"/people/{person_id}", headers=admin.headers())).text)
    assert "T1-101" in page and "租户" in page
    found = await client.get("/people", params={"q": "0013"}, headers=admin.headers())
    assert f'href="/people/{person_id}"' in found.text
    none = await client.get("/people", params={"q": "nobody-like-this"}, headers=admin.headers())
    assert "没有符合条件的人员" in text_of(none.text)
    r = await post(
        client,
        admin,
        f"/people/{person_id}",
        {"name": "李明", "phone": "13800138000", "email": "li@example.com", "note": "VIP"},
    )
    assert r.status_code == 303
    r = await post(
        client, admin, f"/people/{person_id}", {"name": "李明", "phone": "x", "email": "", "note": ""}
    )
    assert r.status_code == 422 and "phone" in r.text


async def test_the_people_list_pages_with_a_cursor(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    async with db.sessions() as session:
        session.add_all(
            Person(company_id=site.company_id, name=f"Resident {i:03d}", created_at=datetime.now(UTC))
            for i in range(55)
        )
        await session.commit()
    first = await client.get("/people", headers=admin.headers())
    assert first.text.count('href="/people/') == 50
    more = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert more is not None
    second = await client.get(html.unescape(more.group(1)), headers=admin.headers())
    assert second.text.count('href="/people/') == 5
    assert 'rel="next"' not in second.text


async def test_parking_spaces_common_areas_and_meters(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    ids = await ids_of(db, site)
    base = f"/property/sites/{site.site_id}"
    fields = {"code": "B1-042", "kind": "owned", "building_id": str(ids["building"]), "unit_number": "101"}
    assert (await post(client, admin, f"{base}/parking", fields)).status_code == 303
    r = await post(client, admin, f"{base}/parking", {**fields, "code": "B1-043", "unit_number": "999"})
    assert r.status_code == 422 and "no unit" in r.text
    fields = {"name": "North lobby", "kind": "lobby", "building_id": str(ids["building"]), "area_m2": "120.5"}
    assert (await post(client, admin, f"{base}/common-areas", fields)).status_code == 303
    fields = {
        "code": "W-101",
        "kind": "water",
        "building_id": str(ids["building"]),
        "unit_number": "101",
        "gateway_id": site.gateway_id,
        "point": "meter1/power",
        "multi_tariff": "1",
    }
    assert (await post(client, admin, f"{base}/meters", fields)).status_code == 303
    # A point the gateway does not report: the service's check, on the form.
    r = await post(client, admin, f"{base}/meters", {**fields, "code": "W-102", "point": "meter1/nothing"})
    assert r.status_code == 422 and "reports no point" in r.text
    async with db.sessions() as session:
        space = await session.scalar(select(ParkingSpace).where(ParkingSpace.site_id == site.site_id))
        area = await session.scalar(select(CommonArea).where(CommonArea.site_id == site.site_id))
        meter = await session.scalar(select(Meter).where(Meter.site_id == site.site_id))
        assert space is not None and (space.code, space.kind, space.unit_id) == (
            "B1-042",
            "owned",
            ids["unit"],
        )
        assert area is not None and area.area_m2 == Decimal("120.50")
        assert meter is not None and meter.multi_tariff and meter.unit_id == ids["unit"]
    assert "B1-042" in text_of((await client.get(f"{base}/parking", headers=admin.headers())).text)
    assert "North lobby" in text_of((await client.get(f"{base}/common-areas", headers=admin.headers())).text)
    meters = text_of((await client.get(f"{base}/meters", headers=admin.headers())).text)
    assert "W-101" in meters and "T1-101" in meters and site.gateway_id in meters
    unit = text_of((await client.get(f"/property/units/{ids['unit']}", headers=admin.headers())).text)
    assert "B1-042" in unit and "W-101" in unit


# --- import ----------------------------------------------------------------------------------

UNITS_WITH_ERRORS = (
    "楼栋,楼层,房号,建筑面积,用途\nT5,12,1201,89.50,住宅\nT5,13F,1301,abc,住宅\nT5,0,1302,75,车库\n"
)
UNITS_GOOD = (
    "楼栋,楼层,房号,建筑面积,用途\nT5,12,1201,89.50,住宅\nT5,13F,1301,92.00,办公\nT5,B1,B01,15,储藏\n"
)


async def upload(
    client: httpx.AsyncClient,
    staff: StaffSession,
    site_id: int,
    kind: str,
    content: str,
    *,
    dry_run: bool = False,
) -> httpx.Response:
    fields = {"csrf_token": staff.csrf_token, "kind": kind}
    if dry_run:
        fields["dry_run"] = "1"
    files = {"file": (f"{kind}.csv", content.encode("utf-8"), "text/csv")}
    return await client.post(
        f"/property/sites/{site_id}/import", data=fields, files=files, headers=staff.headers()
    )


async def units_of(db: Database, site_id: int) -> list[str]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(Building.code, Unit.number)
            .join(Building, Building.id == Unit.building_id)
            .where(Unit.site_id == site_id, Building.code == "T5")
            .order_by(Unit.number)
        )
        return [f"{b}-{n}" for b, n in rows]


async def test_an_import_with_errors_shows_the_report_and_imports_nothing(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    r = await upload(client, admin, site.site_id, "units", UNITS_WITH_ERRORS)
    assert r.status_code == 422
    page = text_of(r.text)
    assert "未导入任何数据" in page
    report = r.text.split('id="import-problems"', 1)[1].split("</table>", 1)[0]
    rows = [text_of(tr).strip() for tr in re.findall(r"<tr>(.*?)</tr>", report, re.S)]
    # Row 3: the area; row 4: the floor and the use; numbered as the sheet shows them.
    assert any(row.startswith("3 建筑面积 abc") for row in rows), rows
    assert any(row.startswith("4 楼层 0") for row in rows), rows
    assert any(row.startswith("4 用途 车库") for row in rows), rows
    assert await units_of(db, site.site_id) == []
    assert await audited(db, "units.import") == 0


async def test_a_check_only_import_counts_and_writes_nothing_then_the_import_writes(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    r = await upload(client, admin, site.site_id, "units", UNITS_GOOD, dry_run=True)
    assert r.status_code == 200
    assert "检查完毕：没有问题" in text_of(r.text) and 'data-count="created">3<' in r.text
    assert await units_of(db, site.site_id) == []
    r = await upload(client, admin, site.site_id, "units", UNITS_GOOD)
    assert r.status_code == 200
    page = text_of(r.text)
    assert "units.csv 已导入" in page
    assert 'data-count="created">3<' in r.text and 'data-count="updated">0<' in r.text
    assert 'data-count="buildings_created">1<' in r.text and 'data-count="floors_created">3<' in r.text
    assert await units_of(db, site.site_id) == ["T5-1201", "T5-1301", "T5-B01"]
    assert await audited(db, "units.import") == 1
    # People next: their units exist now.
    people = "姓名,电话,楼栋,房号,身份,入住日期,主联系人\n张伟,13900001111,T5,1201,业主,2024-03-01,是\n"
    r = await upload(client, admin, site.site_id, "people", people)
    assert r.status_code == 200, text_of(r.text)[:800]
    assert 'data-count="created">1<' in r.text and 'data-count="occupancies_created">1<' in r.text


async def test_an_import_without_a_file_or_kind_says_so(
    client: httpx.AsyncClient, site: SeededSite, admin: StaffSession
) -> None:
    r = await post(client, admin, f"/property/sites/{site.site_id}/import", {"kind": "units"})
    assert r.status_code == 422 and "请选择要导入的文件" in text_of(r.text)
    r = await upload(client, admin, site.site_id, "cars", UNITS_GOOD)
    assert r.status_code == 422 and "请选择文件内容" in text_of(r.text)


async def test_the_import_page_offers_what_the_role_may_import(
    client: httpx.AsyncClient, db: Database, site: SeededSite
) -> None:
    # A token with people.write only: people, not units.
    token = await make_token(db.sessions, site.company_id, [Permission.PEOPLE_WRITE, Permission.SITES_READ])
    r = await client.get(f"/property/sites/{site.site_id}/import", headers=bearer(token))
    assert r.status_code == 200
    assert 'value="people"' in r.text and 'value="units"' not in r.text


# --- languages -------------------------------------------------------------------------------

ADMIN_MODULES = [
    "cloud/property/pages.py",
    "cloud/property/tree_pages.py",
    "cloud/property/people_pages.py",
    "cloud/property/space_pages.py",
    "cloud/property/import_page.py",
    "cloud/property/labels.py",
    "cloud/accounts/pages.py",
    "cloud/accounts/token_pages.py",
    "cloud/accounts/account_pages.py",
    "cloud/accounts/labels.py",
    "cloud/gateways/pages.py",
    "cloud/console/formkit.py",
]


def test_every_string_of_these_pages_has_its_chinese() -> None:
    """The console's own catalogue test reads cloud/console only: these pages' Python modules are
    read here (their templates, in cloud/console/templates/, are read there too)."""
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file

    from tests.cloud.test_console_i18n import catalogue

    root = Path(__file__).resolve().parents[2]
    keywords = {**DEFAULT_KEYWORDS, "N_": None, "translate": (2,)}
    files = [(root / f, "python", {}) for f in ADMIN_MODULES] + [
        (p, "jinja2", {"extensions": "jinja2.ext.i18n"})
        for folder in ("property", "accounts", "gateways")
        for p in (root / "cloud/console/templates" / folder).glob("*.html")
    ]
    found = set()
    for path, method, options in files:
        for _line, message, _comments, _context in extract_from_file(
            method, str(path), keywords=keywords, options=options
        ):
            found.add(message[0] if isinstance(message, tuple) else message)
    zh = catalogue("zh")
    missing = sorted(m for m in found if m and not zh.get(m))
    assert not missing, f"add these to translations/zh/LC_MESSAGES/messages.po: {missing}"
    assert "Unit records" in found and "Register a gateway" in found and "Company administrator" in found
