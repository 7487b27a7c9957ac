"""Importing a site's units and people from a spreadsheet (CSV or .xlsx): all or nothing.

Every row is checked first, against the file and against what the site already holds; the report
lists every problem as (row, column, value, message), rows numbered as the sheet shows them (the
header is row 1). If there is any problem nothing is written; otherwise every row is written in the
caller's transaction, and one audit entry records the import (file name and counts, not the rows).
``dry_run`` checks and counts without writing. See ``cloud.property.sheets`` for the files read
(UTF-8 or GB18030 CSV, .xlsx; header row found even under a title row).

Units (PROPERTY_WRITE at the site). Headers in Chinese or English, any order:

====================  ===========================  ========  ====================================
column                also accepted                required  value
====================  ===========================  ========  ====================================
楼栋 / building        楼号, 楼栋号, 楼宇             yes       the building's code; a new code
                                                             creates the building
楼栋名称 / building_name  楼宇名称                     no        a new building's name (else the code)
楼层 / floor            层, 所在楼层, level            yes       12, 12F, 12层, -1, B1, 地下1; a new
                                                             level creates the floor
房号 / number           单元号, 房间号, 房屋编号, 门牌号  yes       unique within the building; an
                                                             existing unit is updated
建筑面积 / floor_area_m2  面积, area                    yes       m², above 0, at most 2 decimals
用途 / use              房屋用途, usage                no        住宅 residential (default), 商业
                                                             commercial, 办公 office, 储藏
                                                             storage, 车位 parking, 其他 other
====================  ===========================  ========  ====================================

People (PEOPLE_WRITE at the site); one row per person and unit:

====================  ===========================  ========  ====================================
姓名 / name             名字                          yes
电话 / phone            手机, 手机号, 联系电话, mobile  no        a person with a phone is the
                                                             company's person with that phone
邮箱 / email            电子邮箱, e-mail               no
楼栋 / building         as for units                  yes       with 房号: an existing unit of the
房号 / number           as for units                  yes       site (import the units first)
身份 / role             角色, 关系                     yes       业主 owner, 租户/租客 tenant, 住户
                                                             resident
入住日期 / start_date    开始日期, 起始日期              yes       2024-03-01, 2024/3/1, 2024年3月1日
结束日期 / end_date      迁出日期, 离开日期              no        the last day; empty: open
主联系人 / primary       是否主联系人                    no        是/否, yes/no, 1/0; one primary per
                                                             unit at a time
备注 / note             remark                        no
====================  ===========================  ========  ====================================

A person without a phone is the person of that name already linked to the unit, if any, else a new
one. An occupancy is the person's at the unit with that role from that start date: importing the
same file again changes nothing (an export re-imports as it is).
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.permissions import Permission, Principal
from cloud.audit.chain import record
from cloud.kit.errors import Conflict
from cloud.property.models import Building, Floor, Occupancy, Person, Site, Unit
from cloud.property.schemas import MAX_AREA, check_email, normalise_phone
from cloud.property.scope import flush, site_for
from cloud.property.sheets import Column, Problem, Sheet, SheetProblems, read_sheet
from cloud.property.tree import floor_name

P = Permission

_BUILDING = Column("building", "楼栋", ("楼号", "楼栋号", "楼宇", "楼栋编号", "building_code"), required=True)
_NUMBER = Column(
    "number", "房号", ("单元号", "房间号", "房屋编号", "门牌号", "unit", "unit_number", "room"), required=True
)

UNIT_COLUMNS = (
    _BUILDING,
    Column("building_name", "楼栋名称", ("楼宇名称",)),
    Column("floor", "楼层", ("层", "所在楼层", "level"), required=True),
    _NUMBER,
    Column("floor_area_m2", "建筑面积", ("面积", "floor_area", "area", "area_m2"), required=True),
    Column("use", "用途", ("房屋用途", "usage")),
)

PEOPLE_COLUMNS = (
    Column("name", "姓名", ("名字", "住户姓名", "业主姓名"), required=True),
    Column("phone", "电话", ("手机", "手机号", "手机号码", "联系电话", "电话号码", "mobile", "tel")),
    Column("email", "邮箱", ("电子邮箱", "邮件", "e-mail", "mail")),
    _BUILDING,
    _NUMBER,
    Column("role", "身份", ("角色", "关系", "住户类型"), required=True),
    Column("start_date", "入住日期", ("开始日期", "起始日期", "start", "from"), required=True),
    Column("end_date", "结束日期", ("迁出日期", "离开日期", "截止日期", "end", "until")),
    Column("primary", "主联系人", ("是否主联系人", "primary_contact")),
    Column("note", "备注", ("remark", "notes", "comment")),
)

# What a cell may say, in either language, and the stored value.
USE_VALUES = {
    "住宅": "residential",
    "商业": "commercial",
    "商铺": "commercial",
    "商用": "commercial",
    "办公": "office",
    "储藏": "storage",
    "储藏室": "storage",
    "仓储": "storage",
    "车位": "parking",
    "其他": "other",
    "其它": "other",
}
ROLE_VALUES = {"业主": "owner", "租户": "tenant", "租客": "tenant", "住户": "resident"}
USE_LABELS_ZH = {
    "residential": "住宅",
    "commercial": "商业",
    "office": "办公",
    "storage": "储藏",
    "parking": "车位",
    "other": "其他",
}
ROLE_LABELS_ZH = {"owner": "业主", "tenant": "租户", "resident": "住户"}
_YES = frozenset({"是", "yes", "y", "true", "1", "主"})
_NO = frozenset({"否", "no", "n", "false", "0", ""})
_DATE = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:[ T]00:00(?::00(?:\.0+)?)?)?$")
_LEVEL_PATTERNS = (
    (re.compile(r"^(-?\d{1,3})(?:F|层|楼)?$"), 1),
    (re.compile(r"^(?:B|负|地下)(\d{1,2})(?:F|层)?$"), -1),
)
_MAX_CODE = 64
_MAX_NAME = 200


@dataclass
class ImportResult:
    dry_run: bool
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# -- cells


def parse_level(text: str) -> int:
    compact = text.strip().upper().replace(" ", "")
    for pattern, sign in _LEVEL_PATTERNS:
        m = pattern.match(compact)
        if m:
            level = sign * int(m.group(1))
            if level == 0:
                break
            return level
    raise ValueError("not a floor: 12, 12F, 12层 above ground; -1, B1, 地下1 below (no floor 0)")


def parse_area(text: str) -> Decimal:
    try:
        value = Decimal(text.replace(",", "").replace("㎡", "").strip())
    except InvalidOperation:
        raise ValueError("not a number of m² (such as 89.50)") from None
    if not value.is_finite() or value <= 0:
        raise ValueError("an area above 0 m²")
    if value > MAX_AREA:
        raise ValueError(f"more than {MAX_AREA} m²")
    if value != value.quantize(Decimal("0.01")):
        raise ValueError("at most 2 decimals")
    return value.quantize(Decimal("0.01"))


def parse_date(text: str) -> date:
    m = _DATE.match(text.strip())
    if m:
        try:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            pass
    raise ValueError("not a date (2024-03-01, 2024/3/1 or 2024年3月1日)")


def parse_choice(text: str, values: dict[str, str], english: Iterable[str], what: str) -> str:
    value = text.strip()
    if value in values:
        return values[value]
    if value.lower() in english:
        return value.lower()
    known = ", ".join(f"{zh} {en}" for zh, en in values.items())
    raise ValueError(f"not a {what}: {known}")


def parse_yes_no(text: str) -> bool:
    value = text.strip().lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    raise ValueError("是 or 否 (yes or no)")


class _Rows:
    """Collects the problems of a sheet's rows, naming the column as the file names it."""

    def __init__(self, sheet: Sheet) -> None:
        self.sheet = sheet
        self.problems: list[Problem] = []

    def problem(self, row: int, key: str, value: str | None, message: str) -> None:
        self.problems.append(Problem(row, self.sheet.header(key), value, message))

    def text(self, row: int, cells: dict[str, str], key: str, limit: int, *, required: bool = False) -> str:
        value = cells.get(key, "")
        if required and not value:
            self.problem(row, key, value, "empty: a value is needed")
        elif len(value) > limit:
            self.problem(row, key, value, f"longer than {limit} characters")
        return value

    def parse(self, row: int, cells: dict[str, str], key: str, parser: Any, *, required: bool = False) -> Any:
        value = cells.get(key, "")
        if not value and not required:
            return None
        if not value and required:
            self.problem(row, key, value, "empty: a value is needed")
            return None
        try:
            return parser(value)
        except ValueError as e:
            self.problem(row, key, value, str(e))
            return None


async def _sheet(data: bytes, filename: str, columns: Sequence[Column], result: ImportResult) -> Sheet | None:
    try:
        # Decoding and parsing a large workbook takes seconds of CPU: not on the event loop.
        return await asyncio.to_thread(read_sheet, data, filename, columns)
    except SheetProblems as e:
        result.problems = e.problems
        return None


async def _audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    site: Site,
    filename: str,
    result: ImportResult,
    ip: str,
) -> None:
    await record(
        session,
        principal,
        action,
        "sites",
        site.id,
        company_id=site.company_id,
        site_id=site.id,
        after={
            "file": filename,
            "rows": result.rows,
            "created": result.created,
            "updated": result.updated,
            "unchanged": result.unchanged,
            **result.counts,
        },
        ip=ip,
    )


async def _bulk(session: AsyncSession, stmt: Any, rows: list[dict[str, Any]], conflict: str) -> None:
    """An executemany of ``stmt`` (an insert, or an update by primary key); a constraint the
    database caught (someone changed the site meanwhile) is a Conflict."""
    if not rows:
        return
    try:
        await session.execute(stmt, rows)
    except IntegrityError:
        await session.rollback()
        raise Conflict(conflict) from None


def _in_chunks(values: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


# -- units


@dataclass(frozen=True, slots=True)
class _UnitRow:
    row: int
    building: str
    building_name: str
    level: int
    number: str
    area: Decimal
    use: str


def _unit_rows(sheet: Sheet, rows: _Rows) -> list[_UnitRow]:
    parsed: list[_UnitRow] = []
    first: dict[tuple[str, str], int] = {}
    for r in sheet.rows:
        c, n = r.cells, r.number
        before = len(rows.problems)
        building = rows.text(n, c, "building", _MAX_CODE, required=True)
        building_name = rows.text(n, c, "building_name", _MAX_NAME)
        number = rows.text(n, c, "number", _MAX_CODE, required=True)
        level = rows.parse(n, c, "floor", parse_level, required=True)
        area = rows.parse(n, c, "floor_area_m2", parse_area, required=True)
        use = (
            rows.parse(n, c, "use", lambda v: parse_choice(v, USE_VALUES, USE_LABELS_ZH, "use"))
            or "residential"
        )
        if building and number:
            key = (building, number)
            if key in first:
                rows.problem(
                    n, "number", number, f"unit {number} of building {building} is also on row {first[key]}"
                )
            else:
                first[key] = n
        if len(rows.problems) == before:
            parsed.append(_UnitRow(n, building, building_name, level, number, area, use))
    return parsed


async def import_units(
    session: AsyncSession,
    principal: Principal,
    site_id: int,
    data: bytes,
    filename: str,
    *,
    dry_run: bool = False,
    ip: str = "",
) -> ImportResult:
    """Create and update the site's units from a sheet (see the module's docstring)."""
    site = await site_for(session, principal, site_id, P.PROPERTY_WRITE)
    result = ImportResult(dry_run=dry_run)
    sheet = await _sheet(data, filename, UNIT_COLUMNS, result)
    if sheet is None:
        return result
    result.rows = len(sheet.rows)
    rows = _Rows(sheet)
    parsed = _unit_rows(sheet, rows)
    result.problems = rows.problems
    if result.problems:
        return result

    buildings = {
        b.code: b for b in (await session.scalars(select(Building).where(Building.site_id == site.id)))
    }
    floors = {
        (f.building_id, f.level): f
        for f in await session.scalars(
            select(Floor).join(Building, Building.id == Floor.building_id).where(Building.site_id == site.id)
        )
    }
    units = {
        (u.building_id, u.number): u
        for u in await session.scalars(select(Unit).where(Unit.site_id == site.id))
    }

    new_buildings: dict[str, Building] = {}
    new_floors: dict[tuple[str, int], Floor] = {}
    creates: list[tuple[_UnitRow, str]] = []
    updates: list[tuple[Unit, _UnitRow, str]] = []
    for row in parsed:
        building = buildings.get(row.building)
        if building is None and row.building not in new_buildings:
            new_buildings[row.building] = Building(
                company_id=site.company_id,
                site_id=site.id,
                code=row.building,
                name=row.building_name or row.building,
            )
        floor = floors.get((building.id, row.level)) if building is not None else None
        if floor is None and (row.building, row.level) not in new_floors:
            new_floors[(row.building, row.level)] = Floor(
                company_id=site.company_id, level=row.level, name=floor_name(row.level)
            )
        unit = units.get((building.id, row.number)) if building is not None else None
        if unit is None:
            creates.append((row, row.building))
            continue
        same_floor = floor is not None and floor.id == unit.floor_id
        if same_floor and unit.floor_area_m2 == row.area and unit.use == row.use:
            result.unchanged += 1
        else:
            updates.append((unit, row, row.building))
    result.created, result.updated = len(creates), len(updates)
    result.counts = {"buildings_created": len(new_buildings), "floors_created": len(new_floors)}
    if dry_run:
        return result

    session.add_all(new_buildings.values())
    await flush(session, "units: the site's buildings changed meanwhile; import again")
    buildings |= new_buildings
    for (code, level), floor in new_floors.items():
        floor.building_id = buildings[code].id
        floors[(floor.building_id, level)] = floor
    session.add_all(new_floors.values())
    await flush(session, "units: the site's floors changed meanwhile; import again")
    now = datetime.now(UTC)
    # Core executemany, not ORM objects: 10,000 units are one statement, not 10,000 round trips.
    await _bulk(
        session,
        insert(Unit),
        [
            {
                "company_id": site.company_id,
                "site_id": site.id,
                "building_id": buildings[code].id,
                "floor_id": floors[(buildings[code].id, row.level)].id,
                "number": row.number,
                "floor_area_m2": row.area,
                "use": row.use,
                "created_at": now,
            }
            for row, code in creates
        ],
        "units: the site's units changed meanwhile; import again",
    )
    await _bulk(
        session,
        update(Unit),
        [
            {
                "id": unit.id,
                "floor_id": floors[(buildings[code].id, row.level)].id,
                "floor_area_m2": row.area,
                "use": row.use,
            }
            for unit, row, code in updates
        ],
        "units: the site's units changed meanwhile; import again",
    )
    for unit, _row, _code in updates:
        session.expire(unit)  # the bulk update went past it
    await _audit(session, principal, "units.import", site, filename, result, ip)
    return result


# -- people


@dataclass(frozen=True, slots=True)
class _PersonRow:
    row: int
    name: str
    phone: str
    email: str
    unit: Unit
    role: str
    start: date
    end: date | None
    primary: bool
    note: str


def _people_rows(sheet: Sheet, rows: _Rows, units: dict[tuple[str, str], Unit]) -> list[_PersonRow]:
    parsed: list[_PersonRow] = []
    for r in sheet.rows:
        c, n = r.cells, r.number
        before = len(rows.problems)
        name = rows.text(n, c, "name", _MAX_NAME, required=True)
        phone = rows.parse(n, c, "phone", normalise_phone) or ""
        email = rows.parse(n, c, "email", check_email) or ""
        note = rows.text(n, c, "note", 2000)
        building = rows.text(n, c, "building", _MAX_CODE, required=True)
        number = rows.text(n, c, "number", _MAX_CODE, required=True)
        role = rows.parse(
            n, c, "role", lambda v: parse_choice(v, ROLE_VALUES, ROLE_LABELS_ZH, "role"), required=True
        )
        start = rows.parse(n, c, "start_date", parse_date, required=True)
        end = rows.parse(n, c, "end_date", parse_date)
        primary = rows.parse(n, c, "primary", parse_yes_no) or False
        if start is not None and end is not None and end < start:
            rows.problem(n, "end_date", c.get("end_date", ""), f"before the start date {start}")
        unit = units.get((building, number))
        if building and number and unit is None:
            rows.problem(
                n,
                "number",
                number,
                f"the site has no unit {number} in building {building} (import units first)",
            )
        if len(rows.problems) == before:
            assert unit is not None
            parsed.append(_PersonRow(n, name, phone, email, unit, role, start, end, primary, note))
    return parsed


@dataclass
class _Plan:
    """What the people import will do: persons by key (an existing id, or a new one's first row)."""

    new_people: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> the row to insert
    changed_people: dict[int, tuple[Person, dict[str, str]]] = field(default_factory=dict)
    unchanged_people: set[int] = field(default_factory=set)
    person_of_row: dict[int, str] = field(default_factory=dict)  # row -> person key
    new_occupancies: list[tuple[_PersonRow, str]] = field(default_factory=list)
    changed_occupancies: list[tuple[Occupancy, _PersonRow]] = field(default_factory=list)
    unchanged_occupancies: int = 0


async def import_people(
    session: AsyncSession,
    principal: Principal,
    site_id: int,
    data: bytes,
    filename: str,
    *,
    dry_run: bool = False,
    ip: str = "",
) -> ImportResult:
    """Create and update people and their occupancies of the site's units from a sheet."""
    site = await site_for(session, principal, site_id, P.PEOPLE_WRITE)
    result = ImportResult(dry_run=dry_run)
    sheet = await _sheet(data, filename, PEOPLE_COLUMNS, result)
    if sheet is None:
        return result
    result.rows = len(sheet.rows)
    rows = _Rows(sheet)
    codes = {b.id: b.code for b in await session.scalars(select(Building).where(Building.site_id == site.id))}
    units = {
        (codes[u.building_id], u.number): u
        for u in await session.scalars(select(Unit).where(Unit.site_id == site.id))
    }
    parsed = _people_rows(sheet, rows, units)
    if rows.problems:
        result.problems = rows.problems
        return result

    plan = await _plan_people(session, principal, site, parsed, rows)
    result.problems = rows.problems
    if result.problems:
        return result
    result.created = len(plan.new_people)
    result.updated = len(plan.changed_people)
    result.unchanged = len(plan.unchanged_people - set(plan.changed_people))
    result.counts = {
        "occupancies_created": len(plan.new_occupancies),
        "occupancies_updated": len(plan.changed_occupancies),
        "occupancies_unchanged": plan.unchanged_occupancies,
    }
    if dry_run:
        return result

    conflict = "people: changed meanwhile; import again"
    ids = {str(i): i for i in plan.changed_people} | {str(i): i for i in plan.unchanged_people}
    if plan.new_people:
        keys = list(plan.new_people)
        created = await session.scalars(
            insert(Person).returning(Person.id, sort_by_parameter_order=True),
            [plan.new_people[k] for k in keys],
        )
        ids |= dict(zip(keys, created.all(), strict=True))
    await _bulk(
        session,
        insert(Occupancy),
        [
            {
                "company_id": site.company_id,
                "unit_id": row.unit.id,
                "person_id": ids[key],
                "role": row.role,
                "start_date": row.start,
                "end_date": row.end,
                "primary": row.primary,
            }
            for row, key in plan.new_occupancies
        ],
        conflict,
    )
    await _bulk(
        session,
        update(Person),
        [{"id": person.id, **changes} for person, changes in plan.changed_people.values()],
        conflict,
    )
    await _bulk(
        session,
        update(Occupancy),
        [{"id": o.id, "end_date": row.end, "primary": row.primary} for o, row in plan.changed_occupancies],
        conflict,
    )
    for person, _changes in plan.changed_people.values():
        session.expire(person)
    for occupancy, _row in plan.changed_occupancies:
        session.expire(occupancy)
    await _audit(session, principal, "people.import", site, filename, result, ip)
    return result


async def _plan_people(
    session: AsyncSession, principal: Principal, site: Site, parsed: list[_PersonRow], rows: _Rows
) -> _Plan:
    plan = _Plan()
    # The site's occupancies and their people: who is already linked to which unit.
    existing = (
        await session.execute(
            select(Occupancy, Person)
            .join(Unit, Unit.id == Occupancy.unit_id)
            .join(Person, Person.id == Occupancy.person_id)
            .where(Unit.site_id == site.id)
        )
    ).all()
    people: dict[int, Person] = {p.id: p for _, p in existing}
    by_unit_name: dict[tuple[int, str], int] = {}
    occupancies: dict[tuple[int, int, str, date], Occupancy] = {}
    for occupancy, person in existing:
        by_unit_name.setdefault((occupancy.unit_id, person.name), person.id)
        occupancies[(occupancy.person_id, occupancy.unit_id, occupancy.role, occupancy.start_date)] = (
            occupancy
        )
    by_phone: dict[str, Person] = {}
    phones = sorted({r.phone for r in parsed if r.phone})
    for chunk in _in_chunks(phones):
        for person in await session.scalars(
            select(Person)
            .where(Person.company_id == site.company_id, Person.phone.in_(chunk))
            .order_by(Person.id.desc())  # the oldest wins
        ):
            by_phone[person.phone] = person
            people.setdefault(person.id, person)

    # For a principal limited to some sites: where the people found by phone are linked. One not
    # linked to any of its sites is not shown to it by name, and is linked here but not changed.
    read_scope, write_scope = principal.sites(P.PEOPLE_READ), principal.sites(P.PEOPLE_WRITE)
    sites_of = await _sites_of(session, list(people)) if write_scope is not None else {}

    first_phone_row: dict[str, _PersonRow] = {}
    new_by_unit_name: dict[tuple[int, str], str] = {}
    for row in parsed:
        key = _person_key(plan, row, by_phone, by_unit_name, new_by_unit_name, first_phone_row, rows)
        if key is None:
            continue
        plan.person_of_row[row.row] = key
        if not key.isdigit():
            continue
        person = people[int(key)]
        linked = sites_of.get(person.id, set())
        visible = read_scope is None or not linked or bool(linked & read_scope)
        if row.phone and person.name != row.name:
            whose = f"{person.name}'s (person {person.id})" if visible else "another person's of the company"
            rows.problem(
                row.row, "name", row.name, f"phone {row.phone} is {whose}: correct the name or phone"
            )
            continue
        changes = {
            k: v for k, v in (("email", row.email), ("note", row.note)) if v and getattr(person, k) != v
        }
        if not changes:
            plan.unchanged_people.add(person.id)
        elif write_scope is not None and not linked <= write_scope:
            rows.problem(
                row.row,
                "email" if "email" in changes else "note",
                changes.get("email", changes.get("note")),
                f"person {person.id} is also of sites you may not change: leave email and note as stored",
            )
        else:
            plan.changed_people.setdefault(person.id, (person, {}))[1].update(changes)

    seen: dict[tuple[str, int, str, date], int] = {}
    for row in parsed:
        key = plan.person_of_row.get(row.row)
        if key is None:
            continue  # its person is in doubt: reported already
        occupancy_key = (key, row.unit.id, row.role, row.start)
        if occupancy_key in seen:
            rows.problem(
                row.row,
                "start_date",
                row.start.isoformat(),
                f"the same occupancy is on row {seen[occupancy_key]}",
            )
            continue
        seen[occupancy_key] = row.row
        found = occupancies.get((int(key), row.unit.id, row.role, row.start)) if key.isdigit() else None
        if found is None:
            plan.new_occupancies.append((row, key))
        elif found.end_date != row.end or found.primary != row.primary:
            plan.changed_occupancies.append((found, row))
        else:
            plan.unchanged_occupancies += 1
    _check_primaries(plan, [o for o, _ in existing], rows)
    return plan


def _person_key(
    plan: _Plan,
    row: _PersonRow,
    by_phone: dict[str, Person],
    by_unit_name: dict[tuple[int, str], int],
    new_by_unit_name: dict[tuple[int, str], str],
    first_phone_row: dict[str, _PersonRow],
    rows: _Rows,
) -> str | None:
    """The row's person: an existing person's id (as text) or a new person's key."""
    if row.phone:
        first = first_phone_row.setdefault(row.phone, row)
        if first is not row and first.name != row.name:
            rows.problem(row.row, "name", row.name, f"phone {row.phone} is {first.name}'s on row {first.row}")
            return None
        if row.phone in by_phone:
            return str(by_phone[row.phone].id)
        key = f"phone:{row.phone}"
    else:
        existing = by_unit_name.get((row.unit.id, row.name))
        if existing is not None:
            return str(existing)
        key = new_by_unit_name.setdefault((row.unit.id, row.name), f"row:{row.row}")
    if key not in plan.new_people:
        plan.new_people[key] = {
            "company_id": row.unit.company_id,
            "name": row.name,
            "phone": row.phone,
            "email": row.email,
            "note": row.note,
            "created_at": datetime.now(UTC),
        }
    return key


async def _sites_of(session: AsyncSession, person_ids: Sequence[int]) -> dict[int, set[int]]:
    """The sites of the units each person occupies or occupied."""
    sites: dict[int, set[int]] = defaultdict(set)
    for chunk in _in_chunks(sorted(set(person_ids))):
        for person_id, site_id in await session.execute(
            select(Occupancy.person_id, Unit.site_id)
            .join(Unit, Unit.id == Occupancy.unit_id)
            .where(Occupancy.person_id.in_(chunk))
        ):
            sites[person_id].add(site_id)
    return sites


def _check_primaries(plan: _Plan, existing: list[Occupancy], rows: _Rows) -> None:
    """One primary occupant per unit at a time, counting the file's rows as they will be."""
    changed = {o.id: row for o, row in plan.changed_occupancies}
    spans: dict[int, list[tuple[date, date, int | None, str]]] = defaultdict(
        list
    )  # unit -> (start, end, row, what)
    for o in existing:
        change = changed.get(o.id)
        primary, end = (change.primary, change.end) if change is not None else (o.primary, o.end_date)
        if primary:
            spans[o.unit_id].append(
                (o.start_date, end or date.max, change.row if change else None, f"occupancy {o.id}")
            )
    for row, _key in plan.new_occupancies:
        if row.primary:
            spans[row.unit.id].append((row.start, row.end or date.max, row.row, f"row {row.row}"))
    for unit_spans in spans.values():
        unit_spans.sort(key=lambda span: (span[0], span[1]))
        # Each span against the one before it that reaches furthest: any overlap shows there.
        reach = unit_spans[0]
        for span in unit_spans[1:]:
            if span[0] <= reach[1]:
                at, other = (span[2], reach[3]) if span[2] is not None else (reach[2], span[3])
                if at is not None:
                    rows.problem(
                        at, "primary", "yes", f"the unit already has a primary occupant then ({other})"
                    )
            if span[1] > reach[1]:
                reach = span
