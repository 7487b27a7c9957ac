"""Importing units and people from CSV and .xlsx (all or nothing, row-by-row reports, Chinese or
English headers, UTF-8 or GB18030) and exporting them so that they import again as they are."""

import io
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
from sqlalchemy import func, select

from cloud.accounts.permissions import Role
from cloud.api import create_app
from cloud.audit.models import AuditEntry
from cloud.config import CloudConfig
from cloud.db import create_engine, session_factory
from cloud.property.models import Building, Floor, Occupancy, Person, Unit
from cloud.property.sheets import MAX_FILE_BYTES
from tests.cloud.conftest import Database
from tests.cloud.tenancy import Tenant, bearer, make_company, role_token

TOKEN = "platform-token-0123456789"

UNITS_CSV = """楼栋,楼层,房号,建筑面积,用途
1栋,1,101,89.50,住宅
1栋,1,102,92,住宅
1栋,12F,1201,120.25,住宅
2栋,B1,B-01,45.5,商业
"""

PEOPLE_CSV = """姓名,电话,邮箱,楼栋,房号,身份,入住日期,结束日期,主联系人,备注
张三,138 0013 8000,zs@example.cn,1栋,101,业主,2020-01-01,,是,
张三,13800138000,,1栋,102,业主,2021/6/1,,是,
李四,13900139000,,1栋,101,租户,2024年3月1日,2025-02-28,否,一年租约
王五,,,1栋,101,住户,2024-03-01,,否,
"""


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as c:
        yield c


async def admin(db: Database, tenant: Tenant) -> dict[str, str]:
    return bearer(await role_token(db.sessions, tenant.company_id, Role.COMPANY_ADMIN))


async def upload(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    site_id: int,
    kind: str,
    data: bytes,
    filename: str = "file.csv",
    *,
    dry_run: bool = False,
) -> httpx.Response:
    return await client.post(
        f"/api/v1/sites/{site_id}/imports/{kind}",
        files={"file": (filename, data, "application/octet-stream")},
        data={"dry_run": "true" if dry_run else "false"},
        headers=auth,
    )


async def count(db: Database, model: Any, **where: Any) -> int:
    async with db.sessions() as session:
        stmt = select(func.count()).select_from(model)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        return int(await session.scalar(stmt) or 0)


async def site_units(db: Database, site_id: int) -> set[tuple[str, int, str, str, str]]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(Building.code, Floor.level, Unit.number, Unit.floor_area_m2, Unit.use)
            .join(Building, Building.id == Unit.building_id)
            .join(Floor, Floor.id == Unit.floor_id)
            .where(Unit.site_id == site_id)
        )
        return {(r[0], r[1], r[2], f"{r[3]:.2f}", r[4]) for r in rows}


async def site_people(db: Database, site_id: int) -> set[tuple[Any, ...]]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(
                Person.name,
                Person.phone,
                Person.email,
                Building.code,
                Unit.number,
                Occupancy.role,
                Occupancy.start_date,
                Occupancy.end_date,
                Occupancy.primary,
                Person.note,
            )
            .join(Person, Person.id == Occupancy.person_id)
            .join(Unit, Unit.id == Occupancy.unit_id)
            .join(Building, Building.id == Unit.building_id)
            .where(Unit.site_id == site_id)
        )
        return {tuple(r) for r in rows}


async def test_a_good_units_file_is_imported_and_again_changes_nothing(
    db: Database, client: httpx.AsyncClient
) -> None:
    tenant = await make_company(db.sessions)
    auth, site_id = await admin(db, tenant), tenant.site_ids[0]
    data = "\ufeff".encode() + UNITS_CSV.encode()  # Excel's UTF-8 CSV starts with a BOM
    answer = (await upload(client, auth, site_id, "units", data)).json()
    assert answer["ok"] and not answer["problems"]
    assert (answer["rows"], answer["created"], answer["updated"]) == (4, 4, 0)
    assert answer["counts"] == {"buildings_created": 2, "floors_created": 3}
    assert await site_units(db, site_id) == {
        ("1栋", 1, "101", "89.50", "residential"),
        ("1栋", 1, "102", "92.00", "residential"),
        ("1栋", 12, "1201", "120.25", "residential"),
        ("2栋", -1, "B-01", "45.50", "commercial"),
    }
    again = (await upload(client, auth, site_id, "units", data)).json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 4)
    changed = UNITS_CSV.replace("89.50", "90.00").replace("1栋,1,102", "1栋,2,102")
    third = (await upload(client, auth, site_id, "units", changed.encode())).json()
    assert (third["created"], third["updated"], third["unchanged"]) == (0, 2, 2)
    assert third["counts"]["floors_created"] == 1
    assert ("1栋", 2, "102", "92.00", "residential") in await site_units(db, site_id)

    async with db.sessions() as session:
        entries = (
            await session.scalars(
                select(AuditEntry).where(
                    AuditEntry.company_id == tenant.company_id, AuditEntry.action == "units.import"
                )
            )
        ).all()
    assert len(entries) == 3  # one per import, not per row
    assert entries[0].after is not None
    assert entries[0].after["file"] == "file.csv" and entries[0].after["created"] == 4
    assert entries[0].target_type == "sites" and entries[0].site_id == site_id


async def test_a_units_file_with_problems_names_each_and_writes_nothing(
    db: Database, client: httpx.AsyncClient
) -> None:
    tenant = await make_company(db.sessions)
    auth, site_id = await admin(db, tenant), tenant.site_ids[0]
    bad = """building,floor,number,floor_area_m2,use
T1,1,101,89.5,residential
T1,0,102,80,residential
T1,2,103,-5,residential
T1,2,101,70,residential
,3,104,70,residential
T1,3,105,70.123,garage
T1,forty,106,70,residential
"""
    response = await upload(client, auth, site_id, "units", bad.encode())
    assert response.status_code == 422
    answer = response.json()
    assert answer["code"] == "invalid_rows" and "nothing was imported" in answer["detail"]
    assert not answer["ok"] and answer["created"] == 0
    problems = {(p["row"], p["column"]): p for p in answer["problems"]}
    assert set(problems) == {
        (3, "floor"),
        (4, "floor_area_m2"),
        (5, "number"),
        (6, "building"),
        (7, "floor_area_m2"),
        (7, "use"),
        (8, "floor"),
    }
    assert problems[(5, "number")]["message"] == "unit 101 of building T1 is also on row 2"
    assert problems[(4, "floor_area_m2")]["value"] == "-5"
    assert "2 decimals" in problems[(7, "floor_area_m2")]["message"]
    assert problems[(8, "floor")]["value"] == "forty"
    assert await count(db, Unit, site_id=site_id) == 0
    assert await count(db, Building, site_id=site_id) == 0

    # A dry run of the same file answers 200 with the same report; of a good file, the counts.
    dry = await upload(client, auth, site_id, "units", bad.encode(), dry_run=True)
    assert dry.status_code == 200 and not dry.json()["ok"] and len(dry.json()["problems"]) == 7
    good = await upload(client, auth, site_id, "units", UNITS_CSV.encode(), dry_run=True)
    assert good.json()["ok"] and good.json()["dry_run"] and good.json()["created"] == 4
    assert await count(db, Unit, site_id=site_id) == 0


async def test_the_file_itself_is_checked(db: Database, client: httpx.AsyncClient) -> None:
    tenant = await make_company(db.sessions)
    auth, site_id = await admin(db, tenant), tenant.site_ids[0]
    missing = await upload(client, auth, site_id, "units", "楼栋,房号,用途\n1栋,101,住宅\n".encode())
    assert missing.status_code == 422
    columns = {p["column"] for p in missing.json()["problems"]}
    assert columns == {"楼层/floor", "建筑面积/floor_area_m2"}
    assert all(p["row"] == 1 for p in missing.json()["problems"])

    pdf = await upload(client, auth, site_id, "units", b"%PDF-1.4 ...", "units.pdf")
    assert (
        pdf.status_code == 422 and pdf.json()["code"] == "wrong_file_type" and ".pdf" in pdf.json()["detail"]
    )
    xls = await upload(
        client, auth, site_id, "units", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, "u.xls"
    )
    assert xls.status_code == 422 and ".xlsx" in xls.json()["detail"]
    damaged = await upload(client, auth, site_id, "units", b"PK\x03\x04garbage", "u.xlsx")
    assert damaged.status_code == 422 and damaged.json()["code"] == "wrong_file_type"
    big = await upload(client, auth, site_id, "units", b"a" * (MAX_FILE_BYTES + 1))
    assert big.status_code == 413 and big.json()["code"] == "too_large"
    empty = await upload(client, auth, site_id, "units", b"")
    assert empty.status_code == 422 and empty.json()["problems"][0]["message"] == "the file is empty"


async def test_excel_with_a_title_row_and_numbers_as_numbers(db: Database, client: httpx.AsyncClient) -> None:
    tenant = await make_company(db.sessions)
    auth, site_id = await admin(db, tenant), tenant.site_ids[0]
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["阳光花园房屋信息表"])  # a title above the header, as such sheets often have
    sheet.append(["楼栋", "楼层", "房号", "建筑面积(㎡)", "用途"])
    sheet.append(["A座", 3, 301, 88.8, "住宅"])
    sheet.append(["A座", 3, 302, 100, "办公"])
    sheet.append([None, None, None, None, None])
    sheet.append(["A座", "地下1", "B01", 12.5, "车位"])
    sheet.append(["A座", 4, 401, "lots", "住宅"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    rejected = await upload(client, auth, site_id, "units", buffer.getvalue(), "units.xlsx")
    assert rejected.status_code == 422
    # Rows as Excel numbers them: the title is row 1, the header row 2.
    (problem,) = rejected.json()["problems"]
    assert (problem["row"], problem["column"], problem["value"]) == (7, "建筑面积(㎡)", "lots")

    sheet.delete_rows(7)
    buffer = io.BytesIO()
    workbook.save(buffer)
    answer = (await upload(client, auth, site_id, "units", buffer.getvalue(), "units.xlsx")).json()
    assert answer["ok"] and answer["created"] == 3
    assert await site_units(db, site_id) == {
        ("A座", 3, "301", "88.80", "residential"),
        ("A座", 3, "302", "100.00", "office"),
        ("A座", -1, "B01", "12.50", "parking"),
    }


async def test_gb18030_csv_as_chinese_excel_saves_it(db: Database, client: httpx.AsyncClient) -> None:
    tenant = await make_company(db.sessions)
    auth, site_id = await admin(db, tenant), tenant.site_ids[0]
    data = UNITS_CSV.encode("gb18030")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    answer = (await upload(client, auth, site_id, "units", data)).json()
    assert answer["ok"] and answer["created"] == 4
    people = (await upload(client, auth, site_id, "people", PEOPLE_CSV.encode("gb18030"))).json()
    assert people["ok"], people["problems"]
    async with db.sessions() as session:
        names = set(
            (await session.scalars(select(Person.name).where(Person.company_id == tenant.company_id))).all()
        )
    assert names == {"张三", "李四", "王五"}


async def test_people_import_links_people_to_units(db: Database, client: httpx.AsyncClient) -> None:
    tenant = await make_company(db.sessions)
    auth, site_id = await admin(db, tenant), tenant.site_ids[0]
    await upload(client, auth, site_id, "units", UNITS_CSV.encode())
    answer = (await upload(client, auth, site_id, "people", PEOPLE_CSV.encode())).json()
    assert answer["ok"], answer["problems"]
    # 张三 twice by phone is one person, owning two units.
    assert (answer["created"], answer["updated"]) == (3, 0)
    assert answer["counts"]["occupancies_created"] == 4
    people = await site_people(db, site_id)
    zhang = {p for p in people if p[0] == "张三"}
    assert {(p[4], p[1], p[8]) for p in zhang} == {("101", "13800138000", True), ("102", "13800138000", True)}
    (li,) = [p for p in people if p[0] == "李四"]
    assert (li[5], str(li[6]), str(li[7]), li[9]) == ("tenant", "2024-03-01", "2025-02-28", "一年租约")

    again = (await upload(client, auth, site_id, "people", PEOPLE_CSV.encode())).json()
    assert (again["created"], again["updated"]) == (0, 0)
    assert again["counts"] == {"occupancies_created": 0, "occupancies_updated": 0, "occupancies_unchanged": 4}
    moved_out = PEOPLE_CSV.replace(
        "王五,,,1栋,101,住户,2024-03-01,,否,", "王五,,,1栋,101,住户,2024-03-01,2024-12-31,否,"
    )
    third = (await upload(client, auth, site_id, "people", moved_out.encode())).json()
    assert third["counts"]["occupancies_updated"] == 1 and third["created"] == 0


async def test_a_people_file_with_problems_names_each_and_writes_nothing(
    db: Database, client: httpx.AsyncClient
) -> None:
    tenant = await make_company(db.sessions)
    auth, site_id = await admin(db, tenant), tenant.site_ids[0]
    await upload(client, auth, site_id, "units", UNITS_CSV.encode())
    bad = """name,phone,email,building,number,role,start_date,end_date,primary
Ann,13800000001,ann@example.com,1栋,101,owner,2020-01-01,,yes
Bob,not-a-phone,,1栋,101,tenant,2020-01-01,,no
Cat,,cat@,1栋,999,owner,2020-01-01,,no
Dan,,,1栋,102,landlord,2020-13-01,,no
Eve,,,1栋,102,owner,2024-01-01,2023-01-01,maybe
Fay,13800000001,,1栋,102,owner,2020-01-01,,no
Gus,,,1栋,101,owner,2021-01-01,,yes
"""
    response = await upload(client, auth, site_id, "people", bad.encode())
    assert response.status_code == 422
    problems = {(p["row"], p["column"]) for p in response.json()["problems"]}
    assert problems == {
        (3, "phone"),
        (4, "email"),
        (4, "number"),
        (5, "role"),
        (5, "start_date"),
        (6, "end_date"),
        (6, "primary"),
    }
    assert await count(db, Person, company_id=tenant.company_id) == 0

    # Once each row is right on its own, the rows are checked against each other.
    across = """name,phone,building,number,role,start_date,primary
Ann,13800000001,1栋,101,owner,2020-01-01,yes
Fay,13800000001,1栋,102,owner,2020-01-01,no
Gus,,1栋,101,owner,2021-01-01,yes
Ann,13800000001,1栋,101,owner,2020-01-01,yes
"""
    response = await upload(client, auth, site_id, "people", across.encode())
    assert response.status_code == 422
    messages = {(p["row"], p["column"]): p["message"] for p in response.json()["problems"]}
    assert messages[(3, "name")] == "phone 13800000001 is Ann's on row 2"
    assert set(messages) == {(3, "name"), (4, "primary"), (5, "start_date")}
    assert "on row 2" in messages[(5, "start_date")]
    assert await count(db, Person, company_id=tenant.company_id) == 0


async def test_export_imports_again_as_it_is(db: Database, client: httpx.AsyncClient) -> None:
    tenant = await make_company(db.sessions, sites=2)
    auth = await admin(db, tenant)
    source, target = tenant.site_ids
    await upload(client, auth, source, "units", UNITS_CSV.encode())
    assert (await upload(client, auth, source, "people", PEOPLE_CSV.encode())).json()["ok"]
    units, people = await site_units(db, source), await site_people(db, source)

    for fmt, lang in (("csv", "zh"), ("xlsx", "en")):
        exported_units = await client.get(
            f"/api/v1/sites/{source}/exports/units", params={"format": fmt, "lang": lang}, headers=auth
        )
        assert exported_units.status_code == 200
        assert "-units-" in exported_units.headers["content-disposition"]
        exported_people = await client.get(
            f"/api/v1/sites/{source}/exports/people", params={"format": fmt, "lang": lang}, headers=auth
        )
        if fmt == "csv":
            assert exported_units.content.startswith("\ufeff楼栋,楼栋名称,楼层,房号".encode())
            assert "张三" in exported_people.content.decode("utf-8-sig")
        # Into the same site: nothing changes.
        name = f"export.{fmt}"
        same = (await upload(client, auth, source, "units", exported_units.content, name)).json()
        assert (same["created"], same["updated"], same["unchanged"]) == (0, 0, 4), same
        same_people = (await upload(client, auth, source, "people", exported_people.content, name)).json()
        assert same_people["ok"], same_people["problems"]
        assert same_people["created"] == 0 and same_people["counts"]["occupancies_unchanged"] == 4
        assert await site_units(db, source) == units and await site_people(db, source) == people

    # Into another site: the same units and occupancies (the people are the company's: found by phone).
    exported_units = await client.get(f"/api/v1/sites/{target}/exports/units", headers=auth)
    assert exported_units.content.decode("utf-8-sig").strip() == "楼栋,楼栋名称,楼层,房号,建筑面积,用途"
    exported_units = await client.get(
        f"/api/v1/sites/{source}/exports/units", params={"format": "xlsx"}, headers=auth
    )
    exported_people = await client.get(f"/api/v1/sites/{source}/exports/people", headers=auth)
    assert (await upload(client, auth, target, "units", exported_units.content, "u.xlsx")).json()[
        "created"
    ] == 4
    moved = (await upload(client, auth, target, "people", exported_people.content, "p.csv")).json()
    assert moved["ok"] and moved["created"] == 1  # 王五 has no phone: a new person at the new site
    assert await site_units(db, target) == units
    assert await site_people(db, target) == people


async def test_export_quotes_what_a_spreadsheet_would_run(db: Database, client: httpx.AsyncClient) -> None:
    tenant = await make_company(db.sessions)
    auth, site_id = await admin(db, tenant), tenant.site_ids[0]
    await upload(client, auth, site_id, "units", UNITS_CSV.encode())
    await upload(
        client,
        auth,
        site_id,
        "people",
        'name,building,number,role,start_date,note\n=HYPERLINK("x"),1栋,101,owner,2024-01-01,@SUM(1)\n'.encode(),
    )
    exported = await client.get(
        f"/api/v1/sites/{site_id}/exports/people", params={"lang": "en"}, headers=auth
    )
    text = exported.content.decode("utf-8-sig")
    assert "'=HYPERLINK" in text and "'@SUM(1)" in text
    again = (await upload(client, auth, site_id, "people", exported.content)).json()
    assert again["ok"] and again["counts"]["occupancies_unchanged"] == 1
    xlsx = await client.get(
        f"/api/v1/sites/{site_id}/exports/people", params={"format": "xlsx"}, headers=auth
    )
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx.content)).worksheets[0]
    cell = sheet.cell(row=2, column=1)
    assert cell.value == '=HYPERLINK("x")' and cell.data_type == "s"


async def test_site_limits_hold_for_imports_and_exports(db: Database, client: httpx.AsyncClient) -> None:
    tenant = await make_company(db.sessions, sites=2)
    site_a, site_b = tenant.site_ids
    manager_a = bearer(await role_token(db.sessions, tenant.company_id, Role.PROPERTY_MANAGER, [site_a]))
    assert (await upload(client, manager_a, site_a, "units", UNITS_CSV.encode())).status_code == 200
    assert (await upload(client, manager_a, site_b, "units", UNITS_CSV.encode())).status_code == 403
    assert (await client.get(f"/api/v1/sites/{site_b}/exports/units", headers=manager_a)).status_code == 403
    finance = bearer(await role_token(db.sessions, tenant.company_id, Role.FINANCE))
    assert (await upload(client, finance, site_a, "units", UNITS_CSV.encode())).status_code == 403
    assert (await client.get(f"/api/v1/sites/{site_a}/exports/people", headers=finance)).status_code == 200
    guard = bearer(await role_token(db.sessions, tenant.company_id, Role.SECURITY_GUARD))
    assert (await client.get(f"/api/v1/sites/{site_a}/exports/people", headers=guard)).status_code == 403


async def test_ten_thousand_units_import_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    engine = create_engine(sqlite_url)
    db = Database("sqlite", sqlite_url, engine, session_factory(engine))
    try:
        tenant = await make_company(db.sessions, code=f"big-{secrets.token_hex(3)}")
        auth = await admin(db, tenant)
        lines = ["building,floor,number,floor_area_m2,use"]
        for b in range(1, 11):
            for floor in range(1, 35):
                for n in range(1, 31):
                    if len(lines) <= 10_000:
                        lines.append(f"T{b},{floor},{floor}{n:02d},{80 + n}.50,residential")
        data = ("\n".join(lines) + "\n").encode()
        app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=TOKEN)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://cloud"
        ) as client:
            started = time.monotonic()
            answer = (await upload(client, auth, tenant.site_ids[0], "units", data)).json()
            took = time.monotonic() - started
            assert answer["ok"] and answer["created"] == 10_000
            again = (await upload(client, auth, tenant.site_ids[0], "units", data)).json()
            assert again["unchanged"] == 10_000
            exported = await client.get(f"/api/v1/sites/{tenant.site_ids[0]}/exports/units", headers=auth)
            assert exported.content.decode("utf-8-sig").count("\r\n") == 10_001
        # Reported, not asserted: a loaded machine must not fail the suite on time alone.
        print(f"10,000 units imported in {took:.1f} s")
        assert await count(db, Unit, site_id=tenant.site_ids[0]) == 10_000
    finally:
        await engine.dispose()


async def test_a_site_limited_import_links_other_sites_people_but_neither_shows_nor_changes_them(
    db: Database, client: httpx.AsyncClient
) -> None:
    tenant = await make_company(db.sessions, sites=2)
    site_a, site_b = tenant.site_ids
    auth = await admin(db, tenant)
    for site_id in (site_a, site_b):
        await upload(client, auth, site_id, "units", UNITS_CSV.encode())
    header = "姓名,电话,邮箱,楼栋,房号,身份,入住日期\n"
    assert (
        await upload(
            client, auth, site_b, "people", (header + "张三,13800138000,,1栋,101,业主,2020-01-01\n").encode()
        )
    ).json()["ok"]
    manager_a = bearer(await role_token(db.sessions, tenant.company_id, Role.PROPERTY_MANAGER, [site_a]))

    wrong_name = await upload(
        client, manager_a, site_a, "people", (header + "李四,13800138000,,1栋,101,租户,2024-01-01\n").encode()
    )
    (problem,) = wrong_name.json()["problems"]
    assert (
        problem["column"] == "姓名"
        and "another person" in problem["message"]
        and "张三" not in problem["message"]
    )
    new_email = await upload(
        client,
        manager_a,
        site_a,
        "people",
        (header + "张三,13800138000,z@example.cn,1栋,101,业主,2024-01-01\n").encode(),
    )
    (problem,) = new_email.json()["problems"]
    assert problem["column"] == "邮箱" and "may not change" in problem["message"]
    linked = (
        await upload(
            client,
            manager_a,
            site_a,
            "people",
            (header + "张三,13800138000,,1栋,101,业主,2024-01-01\n").encode(),
        )
    ).json()
    assert linked["ok"] and linked["created"] == 0 and linked["counts"]["occupancies_created"] == 1
    found = (await client.get("/api/v1/people", params={"q": "138 0013"}, headers=manager_a)).json()
    assert [p["name"] for p in found["items"]] == ["张三"]


def test_cells_as_people_write_them() -> None:
    from cloud.property.importing import parse_area, parse_date, parse_level

    assert [parse_level(t) for t in ("12", "12F", "12层", "-1", "B1", "b2", "地下1", "负2")] == [
        12,
        12,
        12,
        -1,
        -1,
        -2,
        -1,
        -2,
    ]
    for bad in ("0", "B0", "twelve", ""):
        with pytest.raises(ValueError):
            parse_level(bad)
    assert [
        str(parse_date(t))
        for t in ("2024-03-01", "2024/3/1", "2024.3.1", "2024年3月1日", "2024-03-01 00:00:00")
    ] == ["2024-03-01"] * 5
    with pytest.raises(ValueError):
        parse_date("2024-02-30")
    assert str(parse_area("1,089.5㎡")) == "1089.50"


def test_a_file_over_the_row_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloud.property import sheets
    from cloud.property.importing import UNIT_COLUMNS

    monkeypatch.setattr(sheets, "MAX_ROWS", 3)
    data = UNITS_CSV.encode()  # four data rows
    with pytest.raises(sheets.SheetProblems) as caught:
        sheets.read_sheet(data, "u.csv", UNIT_COLUMNS)
    (problem,) = caught.value.problems
    assert problem.row == 5 and "over 3 rows" in problem.message
