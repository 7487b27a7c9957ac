"""Who an alert reaches: the escalation policy that applies (most specific first, the built-in one
of each track without any), the people each kind of step target names (only active staff of the
alert's company, each once, with their channels and quiet hours), and quiet hours at their edges
(wrapping midnight, exactly at start and end, nights when Berlin's clocks change)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete

from cloud.accounts.models import User
from cloud.accounts.permissions import Role
from cloud.alerts.models import (
    LIFE_SAFETY,
    MAINTENANCE,
    Alert,
    EscalationPolicy,
    NotifyPreference,
    OncallRota,
)
from cloud.db import SessionFactory, create_engine, session_factory
from cloud.oncall.recipients import (
    DEFAULT_STEPS,
    QuietHours,
    Recipient,
    policy_for,
    quiet_until,
    recipients_for_step,
)
from tests.cloud.tenancy import make_company, make_user

NOW = datetime(2026, 3, 4, 4, tzinfo=UTC)  # a Wednesday, noon in Shanghai


@pytest.fixture
async def sessions(sqlite_url: str) -> AsyncIterator[SessionFactory]:
    engine = create_engine(sqlite_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def alert(
    company_id: int | None, site_id: int | None, skill: str = "hvac", track: str = MAINTENANCE
) -> Alert:
    """An alert as the recipients see it (never stored: they read only these fields)."""
    return Alert(
        company_id=company_id, site_id=site_id, skill=skill, track=track, key="k", kind="device.fault"
    )


# -- policies


async def add_policy(
    sessions: SessionFactory, company_id: int, site_id: int | None, skill: str, track: str = MAINTENANCE
) -> int:
    async with sessions() as session, session.begin():
        row = EscalationPolicy(
            company_id=company_id,
            site_id=site_id,
            track=track,
            skill=skill,
            name=f"{site_id}/{skill}",
            steps=[{"after_s": 0, "targets": [{"type": "user", "user_id": 1}]}],
            ack_timeout_s=600,
            repeat_s=60,
            created_at=NOW,
        )
        session.add(row)
        await session.flush()
        return row.id


async def test_the_most_specific_policy_applies_then_the_built_in_one(sessions: SessionFactory) -> None:
    x = await make_company(sessions, sites=2)
    y = await make_company(sessions)
    site_a, site_b = x.site_ids
    company_default = await add_policy(sessions, x.company_id, None, "")
    company_hvac = await add_policy(sessions, x.company_id, None, "hvac")
    site_any = await add_policy(sessions, x.company_id, site_a, "")
    site_hvac = await add_policy(sessions, x.company_id, site_a, "hvac")
    # Never chosen for an hvac maintenance alert at site A:
    await add_policy(sessions, x.company_id, site_b, "hvac")  # another site
    await add_policy(sessions, x.company_id, site_a, "plumbing")  # another skill
    await add_policy(sessions, x.company_id, site_a, "hvac", LIFE_SAFETY)  # another track
    await add_policy(sessions, y.company_id, None, "")  # another company

    hvac_at_a = alert(x.company_id, site_a)
    chosen = []
    for policy_id in (site_hvac, site_any, company_hvac, company_default):
        async with sessions() as session:
            view = await policy_for(session, hvac_at_a)
        chosen.append(view.policy_id)
        assert (view.ack_timeout_s, view.repeat_s) == (600, 60)
        async with sessions() as session, session.begin():
            await session.execute(delete(EscalationPolicy).where(EscalationPolicy.id == policy_id))
    assert chosen == [site_hvac, site_any, company_hvac, company_default]

    async with sessions() as session:
        builtin = await policy_for(session, hvac_at_a)
        other_skill = await policy_for(session, alert(x.company_id, site_a, "plumbing"))
        life_safety = await policy_for(session, alert(x.company_id, site_a, "hvac", LIFE_SAFETY))
        no_company = await policy_for(session, alert(None, None, "", LIFE_SAFETY))
    assert builtin.policy_id is None
    assert builtin.steps == [
        {"after_s": 0, "targets": [{"type": "oncall"}]},
        {"after_s": 900, "targets": [{"type": "lead"}]},
        {"after_s": 1800, "targets": [{"type": "role", "role": "property_manager"}]},
    ]
    assert (builtin.ack_timeout_s, builtin.repeat_s) == (4 * 3600, 120)
    assert other_skill.policy_id is not None and other_skill.policy_id != builtin.policy_id
    assert life_safety.policy_id is not None  # site A's hvac life-safety policy
    assert no_company.policy_id is None
    assert no_company.steps == [
        {
            "after_s": 0,
            "targets": [
                {"type": "role", "role": "security_guard"},
                {"type": "oncall", "skill": "security"},
                {"type": "role", "role": "property_manager"},
            ],
        },
        {"after_s": 300, "targets": [{"type": "role", "role": "company_admin"}]},
    ]
    assert (no_company.ack_timeout_s, no_company.repeat_s) == (30 * 60, 120)
    # A caller changing its copy does not change the built-in policy.
    builtin.steps[0]["targets"].append({"type": "user", "user_id": 9})
    assert DEFAULT_STEPS["maintenance"][0]["targets"] == [{"type": "oncall"}]


# -- recipients


@dataclass
class Staff:
    company_id: int
    site_a: int
    site_b: int
    ids: dict[str, int]


async def staff(sessions: SessionFactory) -> Staff:
    """Company X (sites A and B) with its people, and company Y with one."""
    x = await make_company(sessions, sites=2)
    y = await make_company(sessions)
    site_a, site_b = x.site_ids
    people: dict[str, tuple[int, list[tuple[Role, int | None]]]] = {
        "tech1": (x.company_id, [(Role.TECHNICIAN, site_a)]),
        "tech2": (x.company_id, [(Role.TECHNICIAN, site_a)]),
        "retired": (x.company_id, [(Role.TECHNICIAN, site_a), (Role.PROPERTY_MANAGER, site_a)]),
        "lead": (x.company_id, [(Role.TECHNICIAN, None)]),
        "pm_a": (x.company_id, [(Role.PROPERTY_MANAGER, site_a)]),
        "pm_all": (x.company_id, [(Role.PROPERTY_MANAGER, None)]),
        "pm_b": (x.company_id, [(Role.PROPERTY_MANAGER, site_b)]),
        "guard": (x.company_id, [(Role.SECURITY_GUARD, site_a)]),
        "outsider": (y.company_id, [(Role.PROPERTY_MANAGER, None)]),
    }
    ids: dict[str, int] = {}
    async with sessions() as session, session.begin():
        for name, (company_id, roles) in people.items():
            user = await make_user(session, company_id, f"{name}-{x.company_id}", roles)
            user.display_name = name
            user.email = f"{name}@example.com"
            user.phone = "13800000000"
            ids[name] = user.id
        retired = await session.get(User, ids["retired"])
        assert retired is not None
        retired.active = False
        english = await session.get(User, ids["tech2"])
        assert english is not None
        english.language = "en"
        session.add(
            NotifyPreference(
                user_id=ids["tech1"],
                channels=["sms"],
                quiet_start="22:00",
                quiet_end="07:00",
                timezone="Asia/Shanghai",
            )
        )
        # The rota names the retired member and another company's user as well: neither is told.
        session.add(
            OncallRota(
                company_id=x.company_id,
                site_id=site_a,
                skill="hvac",
                name="HVAC",
                members=[ids["tech1"], ids["retired"], ids["outsider"]],
                lead_user_id=ids["lead"],
                handover_time="08:00",
                period_days=1,
                starts_on=date(2026, 3, 4),
                created_at=NOW,
            )
        )
        session.add(
            OncallRota(
                company_id=x.company_id,
                site_id=site_a,
                skill="general",
                name="General",
                members=[ids["tech2"]],
                handover_time="08:00",
                period_days=7,
                starts_on=date(2026, 3, 2),
                created_at=NOW,
            )
        )
    return Staff(x.company_id, site_a, site_b, ids)


async def told(
    sessions: SessionFactory, s: Staff, targets: list[dict[str, Any]], when: datetime = NOW, **kw: Any
) -> list[str]:
    names = {v: k for k, v in s.ids.items()}
    async with sessions() as session:
        found = await recipients_for_step(
            session,
            alert(s.company_id, kw.get("site", s.site_a), kw.get("skill", "hvac")),
            {"targets": targets},
            when,
        )
    return [names[r.user_id] for r in found]


async def test_each_kind_of_target_names_active_staff_of_the_company_once(sessions: SessionFactory) -> None:
    s = await staff(sessions)
    # oncall: the hvac rota's turn (daily from 4 March 08:00 Shanghai: tech1, retired, outsider).
    assert await told(sessions, s, [{"type": "oncall"}]) == ["tech1"]
    assert await told(sessions, s, [{"type": "oncall"}], NOW.replace(day=5)) == []  # retired's turn
    assert await told(sessions, s, [{"type": "oncall"}], NOW.replace(day=6)) == []  # another company's
    assert await told(sessions, s, [{"type": "oncall"}], NOW.replace(day=7)) == ["tech1"]  # round again
    # A skill without a rota: the site's general rota; a target's own skill picks its rota.
    assert await told(sessions, s, [{"type": "oncall"}], skill="plumbing") == ["tech2"]
    assert await told(sessions, s, [{"type": "oncall", "skill": "general"}]) == ["tech2"]
    assert await told(sessions, s, [{"type": "oncall"}], site=s.site_b) == []  # site B has no rota
    # lead: the rota's team lead.
    assert await told(sessions, s, [{"type": "lead"}]) == ["lead"]
    assert await told(sessions, s, [{"type": "lead", "skill": "general"}]) == []  # no lead there
    # role: at the alert's site or company-wide, active, of the company.
    assert await told(sessions, s, [{"type": "role", "role": "property_manager"}]) == ["pm_a", "pm_all"]
    assert await told(sessions, s, [{"type": "role", "role": "property_manager"}], site=s.site_b) == [
        "pm_all",
        "pm_b",
    ]
    assert await told(sessions, s, [{"type": "role", "role": "security_guard"}], site=s.site_b) == []
    # user: only an active member of the alert's company.
    assert await told(sessions, s, [{"type": "user", "user_id": s.ids["guard"]}]) == ["guard"]
    assert await told(sessions, s, [{"type": "user", "user_id": s.ids["retired"]}]) == []
    assert await told(sessions, s, [{"type": "user", "user_id": s.ids["outsider"]}]) == []
    assert await told(sessions, s, [{"type": "user", "user_id": 987654321}]) == []
    # Together: in the targets' order, each person once.
    everyone = [
        {"type": "oncall"},
        {"type": "user", "user_id": s.ids["tech1"]},
        {"type": "role", "role": "technician"},
        {"type": "lead"},
        {"type": "role", "role": "property_manager"},
        {"type": "user", "user_id": s.ids["pm_a"]},
    ]
    assert await told(sessions, s, everyone) == ["tech1", "tech2", "lead", "pm_a", "pm_all"]
    # An alert of no company, or a target of no known kind, names nobody.
    async with sessions() as session:
        assert (
            await recipients_for_step(session, alert(None, None), {"targets": [{"type": "oncall"}]}, NOW)
            == []
        )
    assert await told(sessions, s, [{"type": "pager"}]) == []


async def test_a_recipient_carries_the_persons_addresses_channels_and_quiet_hours(
    sessions: SessionFactory,
) -> None:
    s = await staff(sessions)
    async with sessions() as session:
        found = await recipients_for_step(
            session,
            alert(s.company_id, s.site_a),
            {
                "targets": [
                    {"type": "user", "user_id": s.ids["tech1"]},
                    {"type": "user", "user_id": s.ids["tech2"]},
                ]
            },
            NOW,
        )
    tech1, tech2 = found
    assert tech1 == Recipient(
        user_id=s.ids["tech1"],
        name="tech1",
        email="tech1@example.com",
        phone="13800000000",
        language="zh",
        channels=("sms",),
        quiet=QuietHours(time(22), time(7), "Asia/Shanghai"),
    )
    # No preferences saved: both channels, no quiet hours.
    assert (tech2.channels, tech2.quiet, tech2.language) == (("email", "sms"), None, "en")


# -- quiet hours


def person(start: str, end: str, zone: str = "Asia/Shanghai") -> Recipient:
    h1, m1 = map(int, start.split(":"))
    h2, m2 = map(int, end.split(":"))
    return Recipient(1, "x", "", "", "zh", quiet=QuietHours(time(h1, m1), time(h2, m2), zone))


def local(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)  # type: ignore[misc]


def test_quiet_hours_wrap_midnight_and_end_exactly_at_their_end() -> None:
    night = person("22:00", "07:00")
    sh = "Asia/Shanghai"
    assert quiet_until(night, local(sh, 2026, 3, 4, 21, 59, 59)) is None
    assert quiet_until(night, local(sh, 2026, 3, 4, 22, 0)) == local(sh, 2026, 3, 5, 7, 0)  # start: inside
    assert quiet_until(night, local(sh, 2026, 3, 4, 23, 30)) == local(sh, 2026, 3, 5, 7, 0)
    assert quiet_until(night, local(sh, 2026, 3, 5, 0, 0)) == local(sh, 2026, 3, 5, 7, 0)
    assert quiet_until(night, local(sh, 2026, 3, 5, 6, 59, 59)) == local(sh, 2026, 3, 5, 7, 0)
    assert quiet_until(night, local(sh, 2026, 3, 5, 7, 0)) is None  # end: outside
    assert quiet_until(night, local(sh, 2026, 3, 5, 12, 0)) is None
    # 07:00 in Shanghai is 23:00 UTC the day before: the answer is UTC.
    assert quiet_until(night, local(sh, 2026, 3, 5, 1, 0)) == datetime(2026, 3, 4, 23, tzinfo=UTC)

    lunch = person("12:00", "14:00")
    assert quiet_until(lunch, local(sh, 2026, 3, 4, 11, 59)) is None
    assert quiet_until(lunch, local(sh, 2026, 3, 4, 12, 0)) == local(sh, 2026, 3, 4, 14, 0)
    assert quiet_until(lunch, local(sh, 2026, 3, 4, 14, 0)) is None
    # Equal times, or none at all: never quiet.
    assert quiet_until(person("07:00", "07:00"), local(sh, 2026, 3, 4, 7, 0)) is None
    assert quiet_until(Recipient(1, "x", "", "", "zh"), NOW) is None


def test_quiet_hours_keep_to_the_clock_when_berlin_changes_time() -> None:
    night = person("22:00", "07:00", "Europe/Berlin")
    berlin = "Europe/Berlin"
    # Spring forward (29 March 2026, 02:00 -> 03:00): the night is an hour shorter.
    assert quiet_until(night, local(berlin, 2026, 3, 28, 23, 0)) == datetime(2026, 3, 29, 5, tzinfo=UTC)
    assert quiet_until(night, datetime(2026, 3, 29, 1, 30, tzinfo=UTC)) == datetime(
        2026, 3, 29, 5, tzinfo=UTC
    )
    assert quiet_until(night, datetime(2026, 3, 29, 5, 0, tzinfo=UTC)) is None  # 07:00 CEST
    assert quiet_until(night, datetime(2026, 3, 29, 4, 59, tzinfo=UTC)) is not None  # 06:59 CEST
    # Fall back (25 October 2026, 03:00 -> 02:00): an hour longer, still ending at 07:00 on the clock.
    assert quiet_until(night, local(berlin, 2026, 10, 24, 23, 0)) == datetime(2026, 10, 25, 6, tzinfo=UTC)
    assert quiet_until(night, datetime(2026, 10, 25, 1, 30, tzinfo=UTC)) == datetime(
        2026, 10, 25, 6, tzinfo=UTC
    )
    assert quiet_until(night, datetime(2026, 10, 25, 6, 0, tzinfo=UTC)) is None
