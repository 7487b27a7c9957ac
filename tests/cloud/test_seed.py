"""The demo's company (seed_demo: complete, believable, idempotent) and the benchmark's large one
(seed_scale, at a small size), on SQLite and PostgreSQL."""

import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from cloud.accounts.models import RoleGrant, User
from cloud.accounts.passwords import verify_password
from cloud.accounts.permissions import Role
from cloud.audit.models import AuditEntry
from cloud.kit.errors import Conflict
from cloud.models import Event, EventCountHourly, Gateway, GatewayPoint, LatestValue
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
from cloud.seed import DEMO_PASSWORD_SUFFIX, chinese_name, mobile_number, seed_demo, seed_scale
from tests.cloud.conftest import Database

COUNTED = (Site, Building, Floor, Unit, Person, Occupancy, ParkingSpace, CommonArea, Meter, Department, User)


async def _counts(db: Database, company_id: int) -> dict[str, int]:
    out = {}
    async with db.sessions() as session:
        for model in COUNTED:
            column: Any = model.company_id  # type: ignore[attr-defined]
            out[model.__tablename__] = int(
                await session.scalar(select(func.count()).select_from(model).where(column == company_id)) or 0
            )
        out["role_grants"] = int(
            await session.scalar(select(func.count()).where(RoleGrant.company_id == company_id)) or 0
        )
    return out


async def test_the_demo_company_is_complete_and_a_second_run_changes_nothing(db: Database) -> None:
    code = f"hb{secrets.token_hex(3)}"
    gateway_id = f"{code}-gw1"
    # The demo gateway registered before the seed (by `gatehouse demo`): placed at the estate.
    async with db.sessions() as session, session.begin():
        session.add(Gateway(id=gateway_id, password_hash="", created_at=datetime.now(UTC)))

    demo = await seed_demo(db.sessions, company_code=code, site_code=f"{code}-view", gateway_id=gateway_id)
    counts = await _counts(db, demo.company_id)
    assert counts["units"] >= 300  # hundreds of units
    assert counts["buildings"] >= 5 and counts["floors"] > 18 * 5
    assert counts["people"] > counts["units"]  # owners, tenants, families
    assert min(counts.values()) > 0, counts

    async with db.sessions() as session:
        site = await session.get(Site, demo.site_id)
        assert site is not None and site.timezone == "Asia/Shanghai" and "海景花园" in site.name
        company = await session.get(Company, demo.company_id)
        assert company is not None and company.name.startswith("海港物业")
        # Every role is held by someone, and one guard only at the estate.
        grants = (
            await session.execute(
                select(RoleGrant.role, RoleGrant.site_id).where(RoleGrant.company_id == demo.company_id)
            )
        ).all()
        assert {Role(g.role) for g in grants} == set(Role)
        assert (Role.SECURITY_GUARD.value, demo.site_id) in {(g.role, g.site_id) for g in grants}
        # Floor areas are Decimal with two places, never floats.
        areas = (
            await session.scalars(select(Unit.floor_area_m2).where(Unit.company_id == demo.company_id))
        ).all()
        assert all(isinstance(a, Decimal) and a == a.quantize(Decimal("0.01")) and a > 50 for a in areas)
        uses = set((await session.scalars(select(Unit.use).where(Unit.company_id == demo.company_id))).all())
        assert uses == {"residential", "commercial"}
        roles = set(
            (
                await session.scalars(select(Occupancy.role).where(Occupancy.company_id == demo.company_id))
            ).all()
        )
        assert roles == {"owner", "tenant", "resident"}
        people = (
            await session.execute(
                select(Person.name, Person.phone).where(Person.company_id == demo.company_id)
            )
        ).all()
        assert all(2 <= len(p.name) <= 3 and "\u4e00" <= p.name[0] <= "\u9fff" for p in people)
        assert all(len(p.phone) == 11 and p.phone.startswith("1") for p in people)
        assert len({p.phone for p in people}) == len(people)
        # The meters the demo gateway reads are linked to its points (the simulated building's).
        linked = (
            await session.execute(
                select(Meter.code, Meter.point).where(
                    Meter.company_id == demo.company_id, Meter.gateway_id == gateway_id
                )
            )
        ).all()
        assert {m.point for m in linked} == {
            "meter-b1-main/energy_total",
            "meter-b1-hvac/energy_total",
            "water-b1-main/volume_counter",
        }
        gateway = await session.get(Gateway, gateway_id)
        assert gateway is not None and (gateway.company_id, gateway.site_id) == (
            demo.company_id,
            demo.site_id,
        )
        # The known demo passwords work; staff without a role cannot sign in.
        for account in demo.accounts:
            user = await session.scalar(select(User).where(User.username == account.username))
            assert user is not None and user.company_id == demo.company_id
            if account.password is None:
                assert user.password_hash is None
            else:
                assert account.password == account.username + DEMO_PASSWORD_SUFFIX
                assert user.password_hash is not None
                assert (await verify_password(user.password_hash, account.password)).ok
        seeded = (
            await session.scalars(
                select(AuditEntry).where(
                    AuditEntry.company_id == demo.company_id, AuditEntry.action == "demo.seeded"
                )
            )
        ).all()
        assert len(seeded) == 1
        hashes = {
            row.username: row.password_hash
            for row in await session.execute(select(User.username, User.password_hash))
        }
    assert demo.admin.username == f"{code}-admin"
    password = demo.admin.password
    assert password is not None and any(password in line for line in demo.lines("http://127.0.0.1:8080/"))

    again = await seed_demo(db.sessions, company_code=code, site_code=f"{code}-view", gateway_id=gateway_id)
    assert again.created == {}
    assert (again.company_id, again.site_id, again.accounts) == (demo.company_id, demo.site_id, demo.accounts)
    assert await _counts(db, demo.company_id) == counts
    async with db.sessions() as session:
        rows = await session.execute(select(User.username, User.password_hash))
        assert {row.username: row.password_hash for row in rows} == hashes
        entries = await session.scalar(select(func.count()).where(AuditEntry.company_id == demo.company_id))
        assert entries == 1  # nothing changed, nothing recorded


def test_names_and_numbers_are_deterministic() -> None:
    import random

    a, b = random.Random(7), random.Random(7)
    assert [chinese_name(a) for _ in range(20)] == [chinese_name(b) for _ in range(20)]
    assert [mobile_number(a) for _ in range(20)] == [mobile_number(b) for _ in range(20)]


async def test_scale_seed_at_a_small_size(db: Database) -> None:
    code = f"sc{secrets.token_hex(3)}"
    now = datetime.now(UTC).replace(microsecond=0)
    scale = await seed_scale(
        db.sessions, units=150, events=6000, gateways=3, days=3, company_code=code, now=now
    )
    assert len(scale.gateway_ids) == len(scale.site_ids) == 3
    counts = await _counts(db, scale.company_id)
    assert counts["units"] == 150
    assert counts["sites"] == 3
    assert counts["occupancies"] == 150
    async with db.sessions() as session:
        events = (
            await session.execute(
                select(Event.kind, Event.gateway_id, Event.reported_time).where(
                    Event.gateway_id.in_(scale.gateway_ids)
                )
            )
        ).all()
        assert len(events) == 6000
        kinds = Counter(e.kind for e in events)
        assert 0.85 < kinds["telemetry.point"] / 6000 < 0.95
        assert {"door.opened", "access.granted", "meter.reading"} <= set(kinds)
        assert Counter(e.gateway_id for e in events) == {gw: 2000 for gw in scale.gateway_ids}
        assert all(now - timedelta(days=3) <= e.reported_time <= now for e in events)
        # What ingest's digest would have kept.
        hourly = await session.scalar(
            select(func.sum(EventCountHourly.count)).where(EventCountHourly.gateway_id.in_(scale.gateway_ids))
        )
        assert hourly == 6000
        gateways = (
            await session.scalars(select(Gateway).where(Gateway.company_id == scale.company_id))
        ).all()
        assert sorted(g.event_count for g in gateways) == [2000, 2000, 2000]
        latest = await session.scalar(
            select(func.count()).select_from(LatestValue).where(LatestValue.gateway_id.in_(scale.gateway_ids))
        )
        assert latest and latest > 100
        points = await session.scalar(
            select(func.count())
            .select_from(GatewayPoint)
            .where(GatewayPoint.gateway_id == scale.gateway_ids[0])
        )
        assert points == len(scale.sources)
    with pytest.raises(Conflict):
        await seed_scale(db.sessions, units=10, events=10, gateways=1, days=1, company_code=code)
