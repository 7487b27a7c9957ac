"""Seed data: the demo's believable property company, and the benchmark's large one.

- ``seed_demo``: 海港物业 (Harbour Property) with one estate, 海景花园 Harbour View Gardens: towers,
  floors and hundreds of flats, owners, tenants and residents with Chinese names, parking, common
  areas, meters (three read by the demo gateway's simulated Modbus meters), departments and one
  member of staff per role (plus a guard limited to the estate), each with a known demo password.
  Idempotent: what exists (by its natural key) is left alone, so a second run changes nothing.
- ``seed_scale``: 10,000 units over a few sites and 1,000,000 events over 60 days from a few
  gateways, as fast as the events table's bulk insert allows (``store_batches``), for
  ``bench/console.py``. Not idempotent: it refuses a company code that exists.

Everything is deterministic for a given ``seed``: the same names, phone numbers and events.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import RoleGrant, User
from cloud.accounts.passwords import hash_password
from cloud.accounts.permissions import PLATFORM, Role
from cloud.alerts.seed import seed_demo_alerting
from cloud.audit.chain import record
from cloud.db import SessionFactory
from cloud.events.repository import IncomingBatch, store_batches
from cloud.kit.errors import Conflict
from cloud.models import EventCountHourly, Gateway, GatewayDevice, GatewayPoint
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
from protocols.envelope import EventRecord
from protocols.events import lane_of

# ---------------------------------------------------------------------------------------- names

# The commonest surnames and a spread of given-name characters: combinations read as real names.
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
)
_GIVEN = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红玉梅海燕雪晨宇浩然欣怡子涵思远嘉欣梓萱"
    "俊杰文博雨轩"
)
# Mobile prefixes of the three carriers.
_MOBILE_PREFIXES = ("139", "138", "137", "136", "135", "158", "159", "186", "185", "133", "153", "189")


def chinese_name(rng: random.Random) -> str:
    given = rng.choice(_GIVEN) + (rng.choice(_GIVEN) if rng.random() < 0.7 else "")
    return rng.choice(_SURNAMES) + given


def mobile_number(rng: random.Random) -> str:
    """A number of the mainland's mobile shape (fake: drawn from the seed, not from anyone)."""
    return rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"


# ------------------------------------------------------------------------------------- seed_demo

DEMO_COMPANY_CODE = "harbour"
DEMO_SITE_CODE = "harbour-view"
# The gateway `gatehouse demo` registers, reading the simulated building (drivers/sim/building.py).
DEMO_GATEWAY_ID = "hv-tower-gw1"
DEMO_PASSWORD_SUFFIX = "-demo-2026"
# (tower code, floors above ground, flats per floor)
_DEMO_TOWERS = (("T1", 18, 4), ("T2", 24, 4), ("T3", 26, 6), ("T4", 28, 4), ("T5", 30, 6), ("T6", 32, 4))
# Floor area (m², built-up) of each flat position on a floor: 01 and 04 the corner three-rooms...
_DEMO_LAYOUTS = ("118.36", "89.52", "76.18", "118.36", "143.75", "96.40")
# The building's meters the demo gateway reads (drivers/sim/building.py), as (code, kind, common
# area, the telemetry source of its total).
_DEMO_GATEWAY_METERS = (
    ("E-B1-MAIN", "electricity", "B1 设备房 Plant room", "meter-b1-main/energy_total"),
    ("E-B1-HVAC", "electricity", "B1 设备房 Plant room", "meter-b1-hvac/energy_total"),
    ("W-B1-MAIN", "water", "B1 设备房 Plant room", "water-b1-main/volume_counter"),
)
_DEMO_DEPARTMENTS = (
    ("管理处", None),
    ("客服部", "管理处"),
    ("工程部", "管理处"),
    ("安保部", "管理处"),
    ("财务部", "管理处"),
    ("环境部", "管理处"),
)
# (username after the company code, display name, department, role, limited to the estate?): one
# per role, plus a guard who may act at the estate only. Staff without a role cannot sign in.
_DEMO_STAFF: tuple[tuple[str, str, str, Role | None, bool], ...] = (
    ("admin", "陈建国", "管理处", Role.COMPANY_ADMIN, False),
    ("manager", "林晓梅", "管理处", Role.PROPERTY_MANAGER, False),
    ("finance", "王丽华", "财务部", Role.FINANCE, False),
    ("service", "张敏", "客服部", Role.SERVICE_AGENT, False),
    ("tech", "刘志强", "工程部", Role.TECHNICIAN, False),
    # The engineering team the on-call rotas are made of (cloud/alerts/seed.py).
    ("tech-lead", "吴海涛", "工程部", Role.TECHNICIAN, False),
    ("tech-hvac", "何伟", "工程部", Role.TECHNICIAN, False),
    ("tech-elec", "郑浩", "工程部", Role.TECHNICIAN, False),
    ("tech-plumb", "冯刚", "工程部", Role.TECHNICIAN, False),
    ("tech-lift", "许明", "工程部", Role.TECHNICIAN, False),
    ("guard", "赵军", "安保部", Role.SECURITY_GUARD, False),
    ("guard-hv", "孙磊", "安保部", Role.SECURITY_GUARD, True),
    ("clean-1", "黄秀英", "环境部", None, False),
    ("clean-2", "周桂兰", "环境部", None, False),
)


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str | None  # None: cannot sign in
    role: str  # the Role value, or "" for staff without one
    site_limited: bool


@dataclass(frozen=True)
class DemoSeed:
    company_id: int
    site_id: int
    site_code: str
    accounts: list[DemoAccount]
    created: dict[str, int]  # rows added by this run, per table (empty when it changed nothing)

    @property
    def admin(self) -> DemoAccount:
        return next(a for a in self.accounts if a.role == Role.COMPANY_ADMIN.value)

    def lines(self, url: str = "") -> list[str]:
        """What the demo prints: where to sign in, and as whom."""
        out = [f"Console        {url or '/'}  (sign in as {self.admin.username} / {self.admin.password})"]
        for a in self.accounts:
            if a.password is not None:
                where = " at Harbour View Gardens only" if a.site_limited else ""
                out.append(f"  {a.role:<17} {a.username:<17} {a.password}{where}")
        return out


@dataclass
class _Resident:
    name: str
    phone: str
    role: str  # owner, tenant, resident
    start: date
    end: date | None
    primary: bool


async def seed_demo(
    sessions: SessionFactory,
    *,
    company_code: str = DEMO_COMPANY_CODE,
    site_code: str = DEMO_SITE_CODE,
    gateway_id: str = DEMO_GATEWAY_ID,
    seed: int = 2026,
    webhook_url: str = "",
) -> DemoSeed:
    """海港物业 and its estate 海景花园, filled as a property company would have it (see the module
    docstring). Idempotent: every row is found by its natural key (codes, numbers, phone numbers,
    usernames) and only what is missing is added; passwords of existing staff are left alone. If
    ``gateway_id`` is registered without a company or site, it is placed at the estate. The
    alerting set-up (on-call rotas, a webhook to ``webhook_url`` if given, past alerts) is in
    cloud/alerts/seed.py."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    created: Counter[str] = Counter()
    async with sessions() as session, session.begin():
        company = await session.scalar(select(Company).where(Company.code == company_code))
        if company is None:
            company = Company(
                code=company_code, name="海港物业服务有限公司", timezone="Asia/Shanghai", created_at=now
            )
            session.add(company)
            await session.flush()
            created["companies"] += 1
        site = await session.scalar(select(Site).where(Site.code == site_code))
        if site is None:
            site = Site(
                company_id=company.id,
                code=site_code,
                name="海景花园 Harbour View Gardens",
                address="广东省深圳市南山区海景路88号",
                timezone="Asia/Shanghai",
                created_at=now,
            )
            session.add(site)
            await session.flush()
            created["sites"] += 1
        elif site.company_id != company.id:
            raise Conflict(f"site {site_code!r} belongs to another company")
        units = await _demo_property(session, company.id, site.id, rng, now, created)
        await _demo_people(session, company.id, units, rng, now, created)
        await _demo_site_things(session, company.id, site.id, gateway_id, units, rng, created)
        accounts = await _demo_staff(session, company.id, company_code, site.id, now, created)
        await seed_demo_alerting(
            session, company.id, site.id, company_code, gateway_id, now, created, webhook_url
        )
        gateway = await session.get(Gateway, gateway_id)
        # Placed only if nobody placed it yet and it names no other site (the access data of a
        # gateway is keyed by its site's code: a gateway of another site stays where it is).
        if gateway is not None and gateway.company_id is None and gateway.site in ("", site.code):
            gateway.company_id, gateway.site_id, gateway.site = company.id, site.id, site.code
            created["gateways placed"] += 1
        if created:
            # The seed is the platform's doing; what it added is on the company's audit chain.
            await record(
                session,
                PLATFORM,
                "demo.seeded",
                "company",
                company.id,
                company_id=company.id,
                site_id=site.id,
                after=dict(sorted(created.items())),
            )
        company_id, site_id = company.id, site.id
    return DemoSeed(company_id, site_id, site_code, accounts, dict(created))


async def _demo_property(
    session: AsyncSession,
    company_id: int,
    site_id: int,
    rng: random.Random,
    now: datetime,
    created: Counter[str],
) -> dict[tuple[str, str], int]:
    """Towers, floors and flats; returns {(tower, number): unit id}."""
    buildings = {
        b.code: b.id
        for b in (await session.scalars(select(Building).where(Building.site_id == site_id))).all()
    }
    for code, _floors, _per in _DEMO_TOWERS:
        if code not in buildings:
            building = Building(
                company_id=company_id, site_id=site_id, code=code, name=f"{code[1:]}栋 Tower {code[1:]}"
            )
            session.add(building)
            await session.flush()
            buildings[code] = building.id
            created["buildings"] += 1
    floors = {
        (f.building_id, f.level): f.id
        for f in (await session.scalars(select(Floor).where(Floor.building_id.in_(buildings.values())))).all()
    }
    new_floors = []
    for code, top, _per in _DEMO_TOWERS:
        # A basement under every tower: the car park and plant rooms, no flats.
        for level in (-1, *range(1, top + 1)):
            if (buildings[code], level) not in floors:
                name = "B1" if level < 0 else f"{level}F"
                new_floors.append(
                    Floor(company_id=company_id, building_id=buildings[code], level=level, name=name)
                )
    if new_floors:
        session.add_all(new_floors)
        await session.flush()
        floors.update({(f.building_id, f.level): f.id for f in new_floors})
        created["floors"] += len(new_floors)
    existing = {
        (u.building_id, u.number)
        for u in (
            await session.execute(select(Unit.building_id, Unit.number).where(Unit.site_id == site_id))
        ).all()
    }
    rows = []
    for code, top, per in _DEMO_TOWERS:
        for level in range(1, top + 1):
            for n in range(1, per + 1):
                number = f"{level}{n:02d}"
                # Drawn whether or not the flat exists, so that a second run draws the same.
                area = Decimal(_DEMO_LAYOUTS[n - 1]) + Decimal(rng.randrange(-120, 121)) / 100
                if (buildings[code], number) in existing:
                    continue
                # The podium of the first two towers holds shops.
                use = "commercial" if level == 1 and code in ("T1", "T2") else "residential"
                rows.append(
                    {
                        "company_id": company_id,
                        "site_id": site_id,
                        "building_id": buildings[code],
                        "floor_id": floors[(buildings[code], level)],
                        "number": number,
                        "floor_area_m2": area,
                        "use": use,
                        "created_at": now,
                    }
                )
    if rows:
        await session.execute(insert(Unit), rows)
        created["units"] += len(rows)
    code_of = {v: k for k, v in buildings.items()}
    return {
        (code_of[u.building_id], u.number): u.id
        for u in (
            await session.execute(
                select(Unit.id, Unit.building_id, Unit.number).where(Unit.site_id == site_id)
            )
        ).all()
    }


def _demo_residents(
    rng: random.Random, units: list[tuple[str, str]]
) -> dict[tuple[str, str], list[_Resident]]:
    """Who lives where: most flats sold (an owner, the main contact), a fifth of those let to a
    tenant, families living with the owner or the tenant, some flats empty. Deterministic."""
    phones: set[str] = set()

    def person(role: str, start: date, end: date | None = None, primary: bool = False) -> _Resident:
        phone = mobile_number(rng)
        while phone in phones:
            phone = mobile_number(rng)
        phones.add(phone)
        return _Resident(chinese_name(rng), phone, role, start, end, primary)

    out: dict[tuple[str, str], list[_Resident]] = {}
    for key in units:
        if rng.random() < 0.06:  # unsold, or the developer's still
            continue
        bought = date(2014, 6, 1) + timedelta(days=rng.randrange(3650))
        people = [person("owner", bought, primary=True)]
        if rng.random() < 0.2:
            start = date(2023, 1, 1) + timedelta(days=rng.randrange(1000))
            people.append(person("tenant", start, start + timedelta(days=365 * rng.choice((1, 2, 3)))))
            living_from = start
        else:
            living_from = bought
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            people.append(person("resident", living_from))
        out[key] = people
    return out


async def _demo_people(
    session: AsyncSession,
    company_id: int,
    units: dict[tuple[str, str], int],
    rng: random.Random,
    now: datetime,
    created: Counter[str],
) -> None:
    residents = _demo_residents(rng, sorted(units, key=lambda k: (k[0], int(k[1]))))
    by_phone = {
        p.phone: p.id
        for p in (
            await session.execute(select(Person.id, Person.phone).where(Person.company_id == company_id))
        ).all()
    }
    missing = [r for people in residents.values() for r in people if r.phone not in by_phone]
    if missing:
        await session.execute(
            insert(Person),
            [
                {"company_id": company_id, "name": r.name, "phone": r.phone, "created_at": now}
                for r in missing
            ],
        )
        created["people"] += len(missing)
        by_phone = {
            p.phone: p.id
            for p in (
                await session.execute(select(Person.id, Person.phone).where(Person.company_id == company_id))
            ).all()
        }
    have = {
        (o.unit_id, o.person_id, o.role)
        for o in (
            await session.execute(
                select(Occupancy.unit_id, Occupancy.person_id, Occupancy.role).where(
                    Occupancy.company_id == company_id
                )
            )
        ).all()
    }
    rows = []
    for key, people in residents.items():
        for r in people:
            if (units[key], by_phone[r.phone], r.role) in have:
                continue
            rows.append(
                {
                    "company_id": company_id,
                    "unit_id": units[key],
                    "person_id": by_phone[r.phone],
                    "role": r.role,
                    "start_date": r.start,
                    "end_date": r.end,
                    "primary": r.primary,
                }
            )
    if rows:
        await session.execute(insert(Occupancy), rows)
        created["occupancies"] += len(rows)


async def _demo_site_things(
    session: AsyncSession,
    company_id: int,
    site_id: int,
    gateway_id: str,
    units: dict[tuple[str, str], int],
    rng: random.Random,
    created: Counter[str],
) -> None:
    """Departments, common areas, parking and meters."""
    departments = {
        d.name: d.id
        for d in (await session.scalars(select(Department).where(Department.company_id == company_id))).all()
    }
    for name, parent in _DEMO_DEPARTMENTS:
        if name not in departments:
            department = Department(company_id=company_id, name=name, parent_id=departments.get(parent or ""))
            session.add(department)
            await session.flush()
            departments[name] = department.id
            created["departments"] += 1

    buildings = {
        b.code: b.id
        for b in (await session.scalars(select(Building).where(Building.site_id == site_id))).all()
    }
    areas_wanted: list[tuple[str, str, str | None, Decimal | None]] = [
        (f"{code} 大堂 Lobby", "lobby", code, Decimal("126.50")) for code, _f, _p in _DEMO_TOWERS
    ]
    areas_wanted += [
        ("中心花园 Central garden", "garden", None, Decimal("4820.00")),
        ("会所 Clubhouse", "clubhouse", None, Decimal("960.00")),
        ("B1 设备房 Plant room", "plant_room", "T1", Decimal("310.40")),
        ("T1 天台 Roof", "roof", "T1", None),
    ]
    areas = {
        a.name: a.id
        for a in (await session.scalars(select(CommonArea).where(CommonArea.site_id == site_id))).all()
    }
    for name, kind, building, size in areas_wanted:
        if name not in areas:
            area = CommonArea(
                company_id=company_id,
                site_id=site_id,
                building_id=buildings[building] if building else None,
                name=name,
                kind=kind,
                area_m2=size,
            )
            session.add(area)
            await session.flush()
            areas[name] = area.id
            created["common areas"] += 1

    # Parking: two basement levels; owners bought some spaces with their flat, others are let.
    owners = dict(
        (
            await session.execute(
                select(Occupancy.unit_id, Occupancy.person_id).where(
                    Occupancy.company_id == company_id, Occupancy.role == "owner"
                )
            )
        ).all()
    )
    owned_units = sorted(owners)
    spaces: list[dict[str, Any]] = []
    for level, count in (("B1", 240), ("B2", 160)):
        for n in range(1, count + 1):
            draw = rng.random()
            unit_id = rng.choice(owned_units) if owned_units else None
            kind, unit, person = "rented", None, None
            if draw < 0.45 and unit_id is not None:
                kind, unit, person = "owned", unit_id, owners[unit_id]
            elif draw < 0.75 and unit_id is not None:
                kind, person = "rented", owners[unit_id]
            elif draw < 0.8:
                kind = "reserved"
            spaces.append({"code": f"{level}-{n:03d}", "kind": kind, "unit_id": unit, "person_id": person})
    spaces += [
        {"code": f"V-{n:02d}", "kind": "visitor", "unit_id": None, "person_id": None} for n in range(1, 21)
    ]
    have = set(
        (await session.scalars(select(ParkingSpace.code).where(ParkingSpace.site_id == site_id))).all()
    )
    rows = [{"company_id": company_id, "site_id": site_id, **s} for s in spaces if s["code"] not in have]
    if rows:
        await session.execute(insert(ParkingSpace), rows)
        created["parking spaces"] += len(rows)

    # Meters: electricity and water for every flat, and the plant room's three that the demo
    # gateway reads (their readings are that gateway's events with the point as source).
    meters: list[dict[str, Any]] = []
    for code, kind, area_name, point in _DEMO_GATEWAY_METERS:
        meters.append(
            {
                "code": code,
                "kind": kind,
                "unit_id": None,
                "common_area_id": areas[area_name],
                "gateway_id": gateway_id,
                "point": point,
                "multi_tariff": False,
            }
        )
    commercial = set(
        (
            await session.scalars(select(Unit.id).where(Unit.site_id == site_id, Unit.use == "commercial"))
        ).all()
    )
    for (tower, number), unit_id in sorted(units.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
        meters.append(
            {
                "code": f"E-{tower}-{number}",
                "kind": "electricity",
                "unit_id": unit_id,
                "common_area_id": None,
                "gateway_id": None,
                "point": None,
                "multi_tariff": unit_id in commercial,
            }
        )
        meters.append(
            {
                "code": f"W-{tower}-{number}",
                "kind": "water",
                "unit_id": unit_id,
                "common_area_id": None,
                "gateway_id": None,
                "point": None,
                "multi_tariff": False,
            }
        )
    have = set((await session.scalars(select(Meter.code).where(Meter.site_id == site_id))).all())
    rows = [{"company_id": company_id, "site_id": site_id, **m} for m in meters if m["code"] not in have]
    if rows:
        await session.execute(insert(Meter), rows)
        created["meters"] += len(rows)


async def _demo_staff(
    session: AsyncSession,
    company_id: int,
    company_code: str,
    site_id: int,
    now: datetime,
    created: Counter[str],
) -> list[DemoAccount]:
    departments = {
        d.name: d.id
        for d in (await session.scalars(select(Department).where(Department.company_id == company_id))).all()
    }
    accounts = []
    for suffix, name, department, role, limited in _DEMO_STAFF:
        username = f"{company_code}-{suffix}"
        password = username + DEMO_PASSWORD_SUFFIX if role is not None else None
        user = await session.scalar(select(User).where(User.username == username))
        if user is None:
            user = User(
                company_id=company_id,
                username=username,
                display_name=name,
                department_id=departments[department],
                password_hash=await hash_password(password) if password else None,
                phone="",
                email=f"{suffix}@{company_code}.example",
                language="zh",
                created_at=now,
            )
            session.add(user)
            await session.flush()
            created["users"] += 1
        elif user.company_id != company_id:
            raise Conflict(f"username {username!r} belongs to another company")
        if role is not None:
            grant_site = site_id if limited else None
            exists = await session.scalar(
                select(RoleGrant.id).where(
                    RoleGrant.user_id == user.id,
                    RoleGrant.role == role.value,
                    RoleGrant.site_id.is_(None) if grant_site is None else RoleGrant.site_id == grant_site,
                )
            )
            if exists is None:
                session.add(
                    RoleGrant(company_id=company_id, user_id=user.id, role=role.value, site_id=grant_site)
                )
                await session.flush()
                created["role grants"] += 1
        accounts.append(DemoAccount(username, password, role.value if role else "", limited))
    return accounts


# ------------------------------------------------------------------------------------ seed_scale

# A gateway's points: (device kind, point, unit, typical value, spread). Every gateway of the
# benchmark runs several devices of each kind, ~76 points each: a few hundred sources in all.
_SCALE_DEVICES: dict[str, tuple[int, list[tuple[str, str, float, float]]]] = {
    "ahu": (
        4,
        [
            ("supply_air_temp", "degC", 16.0, 1.5),
            ("return_air_temp", "degC", 23.5, 1.0),
            ("fan_speed", "%", 70.0, 10.0),
            ("filter_dp", "Pa", 120.0, 15.0),
            ("valve_position", "%", 40.0, 20.0),
        ],
    ),
    "chiller": (
        2,
        [
            ("chw_supply_temp", "degC", 7.0, 0.6),
            ("chw_return_temp", "degC", 12.0, 0.8),
            ("power", "kW", 180.0, 30.0),
            ("load", "%", 60.0, 15.0),
        ],
    ),
    "pump": (
        4,
        [("differential_pressure", "kPa", 85.0, 6.0), ("speed", "%", 75.0, 8.0), ("power", "kW", 11.0, 2.0)],
    ),
    "meter": (
        8,
        [("energy_total", "kWh", 12_000.0, 0.0), ("power", "kW", 18.0, 4.0), ("voltage", "V", 230.0, 2.0)],
    ),
    "iaq": (
        4,
        [("co2", "ppm", 600.0, 120.0), ("temperature", "degC", 24.0, 1.0), ("humidity", "%RH", 50.0, 8.0)],
    ),
}
_SCALE_DOORS = 8  # per gateway
_SCALE_CARDS = 400
_BOOT_ID = "5ca1e000-0000-4000-8000-000000000000"
# Of the events that are not telemetry.point, in proportion; the rest (~90%) are readings.
_SCALE_OTHER_KINDS: tuple[tuple[str, float], ...] = (
    ("meter.reading", 1.5),
    ("equipment.status", 1.0),
    ("access.granted", 1.6),
    ("door.opened", 1.6),
    ("door.closed", 1.6),
    ("access.denied", 0.3),
    ("door.lock_state", 0.8),
    ("door.exit_request", 0.5),
    ("door.held_open", 0.05),
    ("device.offline", 0.2),
    ("device.online", 0.2),
    ("device.fault", 0.1),
)
_SCALE_TELEMETRY_SHARE = 0.90
# A few alarms in a million events: rare kinds are the case an index must find without scanning.
_SCALE_ALARM_EVERY = 20_000
_SCALE_ALARMS = ("smoke.alarm", "door.forced", "fire.alarm", "intrusion.alarm")
_SCALE_CHUNK = 50_000  # events per insert transaction


@dataclass(frozen=True)
class ScaleSeed:
    company_id: int
    company_code: str
    site_ids: list[int]
    gateway_ids: list[str]
    units: int
    events: int
    first_time: datetime
    last_time: datetime
    sources: list[str] = field(default_factory=list)  # telemetry sources of the first gateway
    doors: list[str] = field(default_factory=list)


def _scale_points(gateway_no: int) -> list[tuple[str, str, str, float, float]]:
    """(device, source, unit, typical, spread) of every point of one benchmark gateway."""
    points = []
    for kind, (count, template) in _SCALE_DEVICES.items():
        for n in range(1, count + 1):
            device = f"{kind}-{gateway_no}-{n}"
            for point, unit, typical, spread in template:
                points.append((device, f"{device}/{point}", unit, typical, spread))
    return points


async def seed_scale(
    sessions: SessionFactory,
    *,
    units: int = 10_000,
    events: int = 1_000_000,
    gateways: int = 4,
    days: int = 60,
    company_code: str = "scale",
    seed: int = 1,
    now: datetime | None = None,
) -> ScaleSeed:
    """A large company for the benchmark: ``gateways`` sites (one gateway each) holding ``units``
    units with one resident each, and ``events`` events spread over the ``days`` before ``now``,
    interleaved across the gateways in time order as ingest would have stored them. Also fills what
    ingest's digest keeps (latest values, hourly counts, each gateway's event count) and the
    gateways' device and point inventory, so that the console's pages have what they read.
    Planner statistics are left to the caller (PostgreSQL's autovacuum gathers them after a while,
    ``VACUUM ANALYZE`` at once; a SQLite database has none unless ANALYZE is run, and the
    cloud does not need them)."""
    if units < gateways or gateways < 1 or events < 0 or days < 1:
        raise ValueError("seed_scale: need at least one gateway, a unit per site and a day")
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    rng = random.Random(seed)
    async with sessions() as session, session.begin():
        if await session.scalar(select(Company.id).where(Company.code == company_code)) is not None:
            raise Conflict(f"company {company_code!r} exists: seed_scale fills an empty company only")
        company = Company(code=company_code, name=f"规模测试物业 ({company_code})", created_at=now)
        session.add(company)
        await session.flush()
        site_ids, gateway_ids = await _scale_property(
            session, company.id, company_code, units, gateways, rng, now
        )
    first = now - timedelta(days=days)
    counts = await _scale_events(sessions, gateway_ids, events, first, now, seed)
    async with sessions() as session, session.begin():
        await _scale_digest(session, gateway_ids, counts)
    return ScaleSeed(
        company_id=company.id,
        company_code=company_code,
        site_ids=site_ids,
        gateway_ids=gateway_ids,
        units=units,
        events=events,
        first_time=first,
        last_time=now,
        sources=[p[1] for p in _scale_points(1)],
        doors=[f"door-1-{d}" for d in range(1, _SCALE_DOORS + 1)],
    )


async def _scale_property(
    session: AsyncSession,
    company_id: int,
    code: str,
    units: int,
    gateways: int,
    rng: random.Random,
    now: datetime,
) -> tuple[list[int], list[str]]:
    floors_per_building, per_floor = 25, 8
    site_ids: list[int] = []
    gateway_ids: list[str] = []
    unit_rows: list[dict[str, Any]] = []
    for s in range(gateways):
        site = Site(
            company_id=company_id,
            code=f"{code}-site{s + 1}",
            name=f"规模花园{s + 1}期",
            address=f"深圳市南山区规模路{s + 1}号",
            created_at=now,
        )
        session.add(site)
        await session.flush()
        site_ids.append(site.id)
        gateway_id = f"{code}-gw{s + 1}"
        gateway_ids.append(gateway_id)
        session.add(
            Gateway(
                id=gateway_id,
                site=site.code,
                password_hash="",  # never signs in: its events are written straight to the table
                created_at=now,
                last_seen_at=now,
                online=s != gateways - 1,  # one offline, so the dashboard has both
                company_id=company_id,
                site_id=site.id,
                name=f"{site.name} 机房网关",
            )
        )
        share = units // gateways + (1 if s < units % gateways else 0)
        buildings = -(-share // (floors_per_building * per_floor))
        made = 0
        for b in range(1, buildings + 1):
            building = Building(company_id=company_id, site_id=site.id, code=f"T{b}", name=f"{b}栋")
            session.add(building)
            await session.flush()
            floor_rows = [
                Floor(company_id=company_id, building_id=building.id, level=level, name=f"{level}F")
                for level in range(1, floors_per_building + 1)
            ]
            session.add_all(floor_rows)
            await session.flush()
            for floor in floor_rows:
                for n in range(1, per_floor + 1):
                    if made == share:
                        break
                    made += 1
                    unit_rows.append(
                        {
                            "company_id": company_id,
                            "site_id": site.id,
                            "building_id": building.id,
                            "floor_id": floor.id,
                            "number": f"{floor.level}{n:02d}",
                            "floor_area_m2": Decimal(rng.randrange(6000, 16000)) / 100,
                            "use": "residential",
                            "created_at": now,
                        }
                    )
    for chunk in _chunks(unit_rows, 5000):
        await session.execute(insert(Unit), chunk)
    await _scale_people(session, company_id, rng, now)
    devices, points = [], []
    for g, gateway_id in enumerate(gateway_ids, start=1):
        scale_points = _scale_points(g)
        for device in sorted({p[0] for p in scale_points}):
            devices.append(
                {
                    "gateway_id": gateway_id,
                    "device": device,
                    "protocol": "modbus",
                    "description": "",
                    "updated_at": now,
                }
            )
        for device, source, unit, _typical, _spread in scale_points:
            points.append(
                {
                    "gateway_id": gateway_id,
                    "source": source,
                    "device": device,
                    "unit": unit,
                    "updated_at": now,
                }
            )
    await session.execute(insert(GatewayDevice), devices)
    await session.execute(insert(GatewayPoint), points)
    return site_ids, gateway_ids


async def _scale_people(session: AsyncSession, company_id: int, rng: random.Random, now: datetime) -> None:
    """One resident (the owner) per unit."""
    unit_ids = list((await session.scalars(select(Unit.id).where(Unit.company_id == company_id))).all())
    people = [
        {"company_id": company_id, "name": chinese_name(rng), "phone": mobile_number(rng), "created_at": now}
        for _ in unit_ids
    ]
    for chunk in _chunks(people, 5000):
        await session.execute(insert(Person), chunk)
    person_ids = list(
        (
            await session.scalars(
                select(Person.id).where(Person.company_id == company_id).order_by(Person.id)
            )
        ).all()
    )
    start = date(2020, 1, 1)
    occupancies = [
        {
            "company_id": company_id,
            "unit_id": unit_id,
            "person_id": person_id,
            "role": "owner",
            "start_date": start + timedelta(days=rng.randrange(2000)),
            "end_date": None,
            "primary": True,
        }
        for unit_id, person_id in zip(unit_ids, person_ids, strict=True)
    ]
    for chunk in _chunks(occupancies, 5000):
        await session.execute(insert(Occupancy), chunk)


def _scale_event_stream(
    gateway_ids: Sequence[str], total: int, first: datetime, last: datetime, seed: int
) -> Iterator[tuple[str, _Record]]:
    """(gateway id, event) in the order ingest would have stored them: time order, gateways
    interleaved. Each gateway's seq counts from 1 and its clock moves forward evenly."""
    rng = random.Random(seed * 7919 + 1)
    span_ms = int((last - first).total_seconds() * 1000)
    first_ms = int(first.timestamp() * 1000)
    per_gateway = -(-total // len(gateway_ids)) if total else 0
    step_ms = span_ms / max(per_gateway, 1)
    points = [_scale_points(g) for g in range(1, len(gateway_ids) + 1)]
    meters = [[p for p in pts if p[1].endswith("/energy_total")] for pts in points]
    other_kinds = [k for k, _ in _SCALE_OTHER_KINDS]
    other_weights = [w for _, w in _SCALE_OTHER_KINDS]
    totals = [[12_000.0] * len(m) for m in meters]
    lanes = {k: int(lane_of(k)) for k in ("telemetry.point", *other_kinds, *_SCALE_ALARMS)}
    made = 0
    for i in range(per_gateway):
        for g, gateway_id in enumerate(gateway_ids):
            if made == total:
                return
            made += 1
            seq = i + 1
            time_ms = first_ms + int(i * step_ms) + g * 37
            r = rng.random()
            if made % _SCALE_ALARM_EVERY == 0:
                kind = _SCALE_ALARMS[(made // _SCALE_ALARM_EVERY) % len(_SCALE_ALARMS)]
                source = f"smoke-{g + 1}-{rng.randrange(1, 9)}" if kind != "door.forced" else _door(g, rng)
                data: dict[str, Any] = {
                    "zone": f"T{rng.randrange(1, 9)} {rng.randrange(1, 26)}F",
                    "state": "alarm",
                }
            elif r < _SCALE_TELEMETRY_SHARE:
                kind = "telemetry.point"
                _device, source, unit, typical, spread = rng.choice(points[g])
                value = round(rng.gauss(typical, spread), 2) if spread else round(typical + i / 100, 2)
                data = {"value": value, "unit": unit, "quality": "good"}
            else:
                kind = rng.choices(other_kinds, other_weights)[0]
                source, data = _scale_other(kind, g, rng, meters[g], totals[g])
            yield (
                gateway_id,
                _Record(seq, kind, lanes[kind], time_ms, _BOOT_ID, seq * 1_000_000, True, source, data),
            )


@dataclass(slots=True)
class _Record:
    """What ``store_batches`` reads of an ``EventRecord``, without validating a million models
    that this module made itself."""

    seq: int
    kind: str
    lane: int
    time_ms: int
    boot_id: str
    mono_ns: int
    clock_synced: bool
    source: str
    data: dict[str, Any]


def _door(g: int, rng: random.Random) -> str:
    return f"door-{g + 1}-{rng.randrange(1, _SCALE_DOORS + 1)}"


def _scale_other(
    kind: str,
    g: int,
    rng: random.Random,
    meters: list[tuple[str, str, str, float, float]],
    totals: list[float],
) -> tuple[str, dict[str, Any]]:
    if kind == "meter.reading":
        m = rng.randrange(len(meters))
        use = round(rng.uniform(0.5, 3.0), 3)
        totals[m] += use
        return meters[m][0], {"total": round(totals[m], 3), "use": use, "unit": "kWh"}
    if kind == "equipment.status":
        return f"pump-{g + 1}-{rng.randrange(1, 5)}", {
            "running": rng.random() < 0.8,
            "run_hours": rng.randrange(20_000),
        }
    if kind.startswith("device."):
        return f"ahu-{g + 1}-{rng.randrange(1, 5)}", {"family": "modbus", "reason": "timeout"}
    door = _door(g, rng)
    if kind.startswith("access."):
        card = f"{rng.randrange(_SCALE_CARDS):07d}"
        return door, {"card": card, "holder": f"holder-{card}"} if kind == "access.granted" else {
            "card": card,
            "reason": "unknown card",
        }
    if kind == "door.lock_state":
        return door, {"locked": rng.random() < 0.5}
    return door, {}


async def _scale_events(
    sessions: SessionFactory,
    gateway_ids: Sequence[str],
    total: int,
    first: datetime,
    last: datetime,
    seed: int,
) -> Counter[tuple[str, datetime]]:
    """Insert the events in chunks through ingest's own bulk path; returns the hourly counts.
    Within a chunk, each gateway's events of one hour form one batch, received two seconds after
    its newest event, as a gateway's group commits would have arrived. The next chunk is made in
    a worker thread while the database stores this one."""
    store_ids = {gw: f"{i + 1:032x}" for i, gw in enumerate(gateway_ids)}
    counts: Counter[tuple[str, datetime]] = Counter()
    stream = _scale_event_stream(gateway_ids, total, first, last, seed)

    def next_chunk() -> list[IncomingBatch]:
        chunk: dict[tuple[str, int], list[_Record]] = {}
        for gateway_id, event in itertools.islice(stream, _SCALE_CHUNK):
            chunk.setdefault((gateway_id, event.time_ms // 3_600_000), []).append(event)
        batches = []
        for (gw, hour_no), evs in chunk.items():
            received = datetime.fromtimestamp(evs[-1].time_ms / 1000 + 2, UTC)
            batches.append(IncomingBatch(gw, store_ids[gw], received, cast("list[EventRecord]", evs)))
            counts[(gw, datetime.fromtimestamp(hour_no * 3600, UTC))] += len(evs)
        return batches

    loop = asyncio.get_running_loop()
    async with sessions() as session:
        coming = loop.run_in_executor(None, next_chunk)
        while batches := await coming:
            coming = loop.run_in_executor(None, next_chunk)
            await store_batches(session, batches)
            await session.commit()
    return counts


async def _scale_digest(
    session: AsyncSession, gateway_ids: Sequence[str], counts: Counter[tuple[str, datetime]]
) -> None:
    """What ingest's digest would have kept: latest values, hourly counts, each gateway's count."""
    rows = [{"gateway_id": gw, "hour": hour, "count": n} for (gw, hour), n in sorted(counts.items())]
    for chunk in _chunks(rows, 5000):
        await session.execute(insert(EventCountHourly), chunk)
    per_gateway: Counter[str] = Counter()
    for (gw, _hour), n in counts.items():
        per_gateway[gw] += n
    for gw in gateway_ids:
        await session.execute(update(Gateway).where(Gateway.id == gw).values(event_count=per_gateway[gw]))
    # The newest event of each (gateway, source, kind), found once by the database itself.
    await session.execute(
        text(
            "INSERT INTO latest_values (gateway_id, source, kind, event_id, reported_time, data) "
            "SELECT e.gateway_id, e.source, e.kind, e.id, e.reported_time, e.data FROM events e "
            "JOIN (SELECT max(id) AS id FROM events WHERE gateway_id IN "
            f"({', '.join(f':g{i}' for i in range(len(gateway_ids)))}) "
            "GROUP BY gateway_id, source, kind) newest ON newest.id = e.id"
        ),
        {f"g{i}": gw for i, gw in enumerate(gateway_ids)},
    )


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


__all__ = ["DemoAccount", "DemoSeed", "ScaleSeed", "seed_demo", "seed_scale"]
