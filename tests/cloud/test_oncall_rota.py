"""Who is on call: a weekly rota handing over at 08:00 in Asia/Shanghai (and across a summer-time
change in Europe/Berlin), overrides winning over the turn (the inner of two nested ones), the
forward schedule, and wall times the clock skips or shows twice. On SQLite, with the rows written
straight to the tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from cloud.accounts.permissions import PLATFORM
from cloud.alerts.models import OncallOverride, OncallRota
from cloud.db import SessionFactory, create_engine, session_factory
from cloud.oncall.recipients import on_call, schedule
from cloud.oncall.schemas import RotaIn
from cloud.oncall.service import create_rota
from cloud.oncall.walltime import wall_instant
from cloud.property.models import Site
from tests.cloud.tenancy import make_company, make_user

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def at(tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=tz).astimezone(UTC)


@dataclass
class Rota:
    sessions: SessionFactory
    company_id: int
    site_id: int
    rota_id: int
    members: list[int]  # a, b, c


@pytest.fixture
async def sessions(sqlite_url: str) -> AsyncIterator[SessionFactory]:
    engine = create_engine(sqlite_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def weekly_rota(sessions: SessionFactory, timezone: str, starts_on: date, skill: str = "hvac") -> Rota:
    """Three members taking weeks in turn, handing over at 08:00 local from ``starts_on``."""
    tenant = await make_company(sessions)
    site_id = tenant.site_ids[0]
    async with sessions() as session, session.begin():
        await session.execute(update(Site).where(Site.id == site_id).values(timezone=timezone))
        members = [(await make_user(session, tenant.company_id, f"{n}-{site_id}")).id for n in "abc"]
        rota = OncallRota(
            company_id=tenant.company_id,
            site_id=site_id,
            skill=skill,
            name="HVAC",
            members=members,
            handover_time="08:00",
            period_days=7,
            starts_on=starts_on,
            created_at=datetime.now(UTC),
        )
        session.add(rota)
        await session.flush()
        return Rota(sessions, tenant.company_id, site_id, rota.id, members)


async def add_override(r: Rota, user_id: int, starts_at: datetime, ends_at: datetime) -> int:
    async with r.sessions() as session, session.begin():
        row = OncallOverride(
            rota_id=r.rota_id, user_id=user_id, starts_at=starts_at, ends_at=ends_at, created_at=starts_at
        )
        session.add(row)
        await session.flush()
        return row.id


async def who(r: Rota, moment: datetime, skill: str = "hvac") -> int | None:
    async with r.sessions() as session:
        return await on_call(session, r.site_id, skill, moment)


async def test_a_weekly_rota_hands_over_at_eight_in_shanghai(sessions: SessionFactory) -> None:
    r = await weekly_rota(sessions, "Asia/Shanghai", date(2026, 3, 2))
    a, b, c = r.members
    expected = [
        (at(SHANGHAI, 2026, 3, 2, 7, 59, 59), None),  # before the first handover: not in force yet
        (at(SHANGHAI, 2026, 3, 2, 8), a),
        (at(SHANGHAI, 2026, 3, 5, 3), a),
        (at(SHANGHAI, 2026, 3, 9, 7, 59, 59), a),
        (at(SHANGHAI, 2026, 3, 9, 8), b),
        (at(SHANGHAI, 2026, 3, 16, 8), c),
        (at(SHANGHAI, 2026, 3, 23, 7, 59), c),
        (at(SHANGHAI, 2026, 3, 23, 8), a),  # round again
        (at(SHANGHAI, 2027, 3, 1, 8), b),  # 52 weeks on: 52 mod 3 = 1
    ]
    assert [await who(r, moment) for moment, _ in expected] == [user for _, user in expected]
    # 08:00 in Shanghai is midnight UTC.
    assert at(SHANGHAI, 2026, 3, 9, 8) == datetime(2026, 3, 9, tzinfo=UTC)
    # No rota for the skill, or no members: nobody.
    assert await who(r, at(SHANGHAI, 2026, 3, 9, 8), "plumbing") is None
    async with sessions() as session, session.begin():
        await session.execute(update(OncallRota).where(OncallRota.id == r.rota_id).values(members=[]))
    assert await who(r, at(SHANGHAI, 2026, 3, 9, 8)) is None


async def test_an_override_wins_and_the_inner_of_two_nested_ones_wins(sessions: SessionFactory) -> None:
    r = await weekly_rota(sessions, "Asia/Shanghai", date(2026, 3, 2))
    a, b, c = r.members
    # b covers a's week from Wednesday noon for a day; c covers Wednesday afternoon inside it.
    outer = await add_override(r, b, at(SHANGHAI, 2026, 3, 4, 12), at(SHANGHAI, 2026, 3, 5, 12))
    inner = await add_override(r, c, at(SHANGHAI, 2026, 3, 4, 14), at(SHANGHAI, 2026, 3, 4, 18))
    assert await who(r, at(SHANGHAI, 2026, 3, 4, 11, 59)) == a
    assert await who(r, at(SHANGHAI, 2026, 3, 4, 12)) == b  # starts: inside
    assert await who(r, at(SHANGHAI, 2026, 3, 4, 15)) == c
    assert await who(r, at(SHANGHAI, 2026, 3, 4, 18)) == b
    assert await who(r, at(SHANGHAI, 2026, 3, 5, 12)) == a  # ends: outside
    # An override wins even before the rota starts.
    await add_override(r, c, at(SHANGHAI, 2026, 3, 1), at(SHANGHAI, 2026, 3, 2))
    assert await who(r, at(SHANGHAI, 2026, 3, 1, 12)) == c

    async with sessions() as session:
        plan = await schedule(session, r.rota_id, at(SHANGHAI, 2026, 3, 2), 14)
    rows = [(s.user_id, s.starts_at.astimezone(SHANGHAI).strftime("%d %H:%M"), s.override_id) for s in plan]
    assert rows == [
        (None, "02 00:00", None),  # the rota starts at 08:00
        (a, "02 08:00", None),
        (b, "04 12:00", outer),
        (c, "04 14:00", inner),
        (b, "04 18:00", outer),
        (a, "05 12:00", None),
        (b, "09 08:00", None),
    ]
    assert plan[-1].ends_at == at(SHANGHAI, 2026, 3, 16)
    assert all(x.ends_at == y.starts_at for x, y in pairwise(plan))


async def test_the_handover_stays_at_eight_on_the_clock_across_summer_time(sessions: SessionFactory) -> None:
    # Berlin springs forward on Sunday 29 March 2026 and falls back on Sunday 25 October.
    r = await weekly_rota(sessions, "Europe/Berlin", date(2026, 3, 23))
    a, b, _ = r.members
    assert await who(r, datetime(2026, 3, 23, 7, tzinfo=UTC)) == a  # 08:00 CET
    assert await who(r, datetime(2026, 3, 30, 5, 59, tzinfo=UTC)) == a  # 07:59 CEST
    assert await who(r, datetime(2026, 3, 30, 6, tzinfo=UTC)) == b  # 08:00 CEST: a week of 167 hours
    async with sessions() as session:
        plan = await schedule(session, r.rota_id, datetime(2026, 3, 23, 7, tzinfo=UTC), 7)
    assert plan[0].user_id == a
    assert (plan[0].ends_at - plan[0].starts_at).total_seconds() == 167 * 3600  # not 168


def test_wall_times_the_clock_skips_or_shows_twice() -> None:
    # 02:30 does not exist in Berlin on 29 March 2026: it happens at the jump (01:00 UTC).
    assert wall_instant(date(2026, 3, 29), time(2, 30), BERLIN) == datetime(2026, 3, 29, 1, tzinfo=UTC)
    # 02:30 happens twice on 25 October: the first, or the first after a given instant.
    first, second = datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert wall_instant(date(2026, 10, 25), time(2, 30), BERLIN) == first
    assert wall_instant(date(2026, 10, 25), time(2, 30), BERLIN, after=first) == second
    # An ordinary day.
    assert wall_instant(date(2026, 3, 2), time(8), SHANGHAI) == datetime(2026, 3, 2, tzinfo=UTC)


async def test_a_rota_without_a_first_day_is_in_force_at_once(sessions: SessionFactory) -> None:
    tenant = await make_company(sessions, sites=2)
    async with sessions() as session, session.begin():
        member = (await make_user(session, tenant.company_id, f"m-{tenant.company_id}")).id
        early = await create_rota(
            session,
            PLATFORM,
            RotaIn(site_id=tenant.site_ids[0], skill="hvac", name="x", members=[member]),
            now=at(SHANGHAI, 2026, 3, 4, 7, 0),  # before the 08:00 handover: it began yesterday
        )
        late = await create_rota(
            session,
            PLATFORM,
            RotaIn(site_id=tenant.site_ids[1], skill="hvac", name="y", members=[member]),
            now=at(SHANGHAI, 2026, 3, 4, 8, 0),
        )
        assert (early.starts_on, late.starts_on) == (date(2026, 3, 3), date(2026, 3, 4))
        assert await on_call(session, tenant.site_ids[0], "hvac", at(SHANGHAI, 2026, 3, 4, 7, 0)) == member
