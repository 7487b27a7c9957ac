"""The alert engine and the escalator on a real database: events in, alerts and notices out.

Time is the engine's injected clock, so "after 15 minutes unacknowledged" is a step of the clock,
not a wait."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from cloud.accounts.models import User
from cloud.accounts.permissions import Role
from cloud.alerts import classify
from cloud.alerts.engine import AlertEngine
from cloud.alerts.escalator import Escalator
from cloud.alerts.models import (
    INHIBITED,
    LIFE_SAFETY,
    MAINTENANCE,
    OPEN,
    RESOLVED,
    Alert,
    AlertTimeline,
    EscalationPolicy,
    MaintenanceTicket,
    Notification,
    OncallRota,
    Silence,
)
from cloud.alerts.settings import AlertSettings
from cloud.db import SessionFactory, create_engine, session_factory
from cloud.events.repository import IncomingBatch
from cloud.models import Gateway
from tests.cloud.browser import event_record, store_events
from tests.cloud.tenancy import make_company, make_user

STORE = "s" * 32


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: nobody's quiet hours

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class World:
    sessions: SessionFactory
    company_id: int
    site_id: int
    tech: int
    lead: int
    guard: int
    manager: int
    clock: Clock
    engine: AlertEngine
    escalator: Escalator
    gateway: str
    seq: int = 0

    def events(self, *specs: tuple[str, str, dict[str, Any]], gateway: str | None = None) -> None:
        records = []
        for kind, source, data in specs:
            self.seq += 1
            records.append(event_record(self.seq, kind=kind, source=source, data=data, at=self.clock.now))
        self.engine.take([IncomingBatch(gateway or self.gateway, STORE, self.clock.now, records)])

    async def alerts(self, **where: Any) -> list[Alert]:
        async with self.sessions() as session:
            # This test's company only: on PostgreSQL the module's tests share one database.
            query = select(Alert).where(Alert.company_id == self.company_id).order_by(Alert.id)
            for k, v in where.items():
                query = query.where(getattr(Alert, k) == v)
            return list((await session.execute(query)).scalars())

    async def notices(self, **where: Any) -> list[Notification]:
        async with self.sessions() as session:
            query = (
                select(Notification)
                .where(Notification.company_id == self.company_id)
                .order_by(Notification.id)
            )
            for k, v in where.items():
                query = query.where(getattr(Notification, k) == v)
            return list((await session.execute(query)).scalars())

    async def timeline(self, alert_id: int) -> list[str]:
        async with self.sessions() as session:
            return list(
                (
                    await session.execute(
                        select(AlertTimeline.action)
                        .where(AlertTimeline.alert_id == alert_id)
                        .order_by(AlertTimeline.id)
                    )
                ).scalars()
            )

    async def set_gateway(self, online: bool) -> None:
        async with self.sessions() as session:
            await session.execute(
                update(Gateway)
                .where(Gateway.id == self.gateway)
                .values(online=online, last_seen_at=self.clock.now)
            )
            await session.commit()
        self.engine.gateway_changed(self.gateway)
        await self.engine.drain()


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    engine = create_engine(database_url)
    gateway = f"gw-{secrets.token_hex(4)}"
    sessions = session_factory(engine)
    tenant = await make_company(sessions)
    site = tenant.site_ids[0]
    clock = Clock()
    async with sessions() as session:
        tech = await make_user(session, tenant.company_id, f"tech-wang-{gateway}", [(Role.TECHNICIAN, site)])
        lead = await make_user(session, tenant.company_id, f"lead-chen-{gateway}", [(Role.TECHNICIAN, site)])
        guard = await make_user(
            session, tenant.company_id, f"guard-li-{gateway}", [(Role.SECURITY_GUARD, site)]
        )
        manager = await make_user(
            session, tenant.company_id, f"manager-zhao-{gateway}", [(Role.PROPERTY_MANAGER, site)]
        )
        for u, email, phone in (
            (tech, "wang@example.com", "+8613800000001"),
            (lead, "chen@example.com", "+8613800000002"),
            (guard, "li@example.com", "+8613800000003"),
            (manager, "zhao@example.com", "+8613800000004"),
        ):
            await session.execute(update(User).where(User.id == u.id).values(email=email, phone=phone))
        for skill in ("hvac", "electrical", "security"):
            session.add(
                OncallRota(
                    company_id=tenant.company_id,
                    site_id=site,
                    skill=skill,
                    name=f"{skill} rota",
                    members=[guard.id] if skill == "security" else [tech.id],
                    lead_user_id=lead.id,
                    handover_time="08:00",
                    period_days=7,
                    starts_on=(clock.now - timedelta(days=3)).date(),
                    created_at=clock.now,
                )
            )
        session.add(
            Gateway(
                id=gateway,
                site="x",
                password_hash="",
                created_at=clock.now,
                company_id=tenant.company_id,
                site_id=site,
                name="T1 plant room",
                online=True,
                last_seen_at=clock.now,
            )
        )
        ids = (tech.id, lead.id, guard.id, manager.id)
        await session.commit()
    settings = AlertSettings(gateway_offline_notify_after_s=60, release_after_s=120, flap_window_s=600)
    w = World(
        sessions,
        tenant.company_id,
        site,
        *ids,
        clock=clock,
        engine=AlertEngine(sessions, settings, clock=clock),
        escalator=Escalator(sessions, settings, clock=clock),
        gateway=gateway,
    )
    try:
        yield w
    finally:
        await engine.dispose()


CHILLER_FAULT = ("equipment.fault", "chiller-1", {"fault": "high_temp", "severity": "major", "skill": "hvac"})
CHILLER_CLEAR = ("equipment.fault_cleared", "chiller-1", {"fault": "high_temp", "skill": "hvac"})


def test_one_list_of_skills_from_the_gateway_rules_to_the_rotas() -> None:
    from typing import get_args

    from cloud.oncall.schemas import SKILLS
    from edge.rules import EquipmentRuleConfig

    # The gateway's config may not import the cloud: its Literal is a copy, held to the rotas' list.
    (literal,) = (
        a for a in get_args(EquipmentRuleConfig.model_fields["skill"].annotation) if a is not type(None)
    )
    assert set(get_args(literal)) == set(SKILLS)


def test_meaning_table() -> None:
    smoke = classify.meaning("smoke.alarm", {})
    assert smoke is not None and smoke.track == LIFE_SAFETY and smoke.effect is classify.Effect.RAISE
    fault = classify.meaning(
        "equipment.fault", {"fault": "high_temp", "skill": "hvac", "severity": "critical"}
    )
    assert fault is not None and (fault.track, fault.fault, fault.skill, fault.severity) == (
        MAINTENANCE,
        "high_temp",
        "hvac",
        "critical",
    )
    assert classify.meaning("equipment.fault", {"skill": "astrology"}).skill == "general"  # type: ignore[union-attr]
    assert classify.meaning("device.online", {}).fault == "offline"  # type: ignore[union-attr]
    assert classify.meaning("door.forced", {"armed": True}).track == LIFE_SAFETY  # type: ignore[union-attr]
    assert classify.meaning("door.forced", {}).track == MAINTENANCE  # type: ignore[union-attr]
    assert classify.meaning("telemetry.point", {}) is None
    assert classify.meaning("access.granted", {}) is None


async def test_a_fault_raises_one_alert_and_tells_the_on_call_technician(world: World) -> None:
    world.events(CHILLER_FAULT, CHILLER_FAULT, CHILLER_FAULT)
    await world.engine.drain()
    [alert] = await world.alerts()
    assert (alert.track, alert.state, alert.skill, alert.event_count) == (MAINTENANCE, OPEN, "hvac", 3)
    notices = await world.notices(alert_id=alert.id)
    assert {(n.user_id, n.channel) for n in notices} == {(world.tech, "email"), (world.tech, "sms")}
    assert {n.address for n in notices} == {"wang@example.com", "+8613800000001"}
    # The same events again (a resend, a catch-up) change nothing.
    world.seq -= 3
    world.events(CHILLER_FAULT, CHILLER_FAULT, CHILLER_FAULT)
    await world.engine.drain()
    [again] = await world.alerts()
    assert again.event_count == 3 and len(await world.notices()) == 2


async def test_unacknowledged_it_escalates_on_time_and_acknowledged_it_stops(world: World) -> None:
    world.events(CHILLER_FAULT)
    await world.engine.drain()
    [alert] = await world.alerts()
    await world.escalator.tick()
    world.clock.advance(14 * 60)
    await world.escalator.tick()
    assert {n.user_id for n in await world.notices()} == {world.tech}
    world.clock.advance(60)  # 15 minutes: the team lead
    await world.escalator.tick()
    assert {n.user_id for n in await world.notices(reason="escalated")} == {world.lead}
    assert "escalated" in await world.timeline(alert.id)
    # Acknowledged now: no property manager at 30 minutes.
    async with world.sessions() as session:
        await session.execute(
            update(Alert)
            .where(Alert.id == alert.id)
            .values(
                state="acknowledged",
                acknowledged_at=world.clock.now,
                acknowledged_by=world.tech,
                next_action_at=world.clock.now,
            )
        )
        await session.commit()
    await world.escalator.tick()
    world.clock.advance(20 * 60)
    await world.escalator.tick()
    assert world.manager not in {n.user_id for n in await world.notices()}
    # Not resolved within the ack timeout (4 h by default): raised again, from the first step.
    world.clock.advance(4 * 3600)
    await world.escalator.tick()
    [alert] = await world.alerts()
    assert alert.state == OPEN and "reraised" in await world.timeline(alert.id)
    assert {n.user_id for n in await world.notices(reason="reraised")} == {world.tech}


async def test_a_clear_resolves_and_a_quick_return_is_one_flapping_alert_then_a_ticket(world: World) -> None:
    world.events(CHILLER_FAULT)
    await world.engine.drain()
    for _ in range(3):
        world.clock.advance(30)
        world.events(CHILLER_CLEAR)
        await world.engine.drain()
        [alert] = await world.alerts()
        assert alert.state == RESOLVED and alert.resolved_by is None
        world.clock.advance(30)
        world.events(CHILLER_FAULT)
        await world.engine.drain()
    [alert] = await world.alerts()
    assert alert.state == OPEN and alert.flapping and alert.flap_count == 3
    # One notice per person and channel for the whole flapping alert.
    people = [(n.user_id, n.channel) for n in await world.notices() if n.user_id is not None]
    assert sorted(people) == sorted({(world.tech, "email"), (world.tech, "sms")})
    async with world.sessions() as session:
        tickets = (await session.execute(select(MaintenanceTicket))).scalars().all()
    assert [t.asset_key for t in tickets if t.company_id == world.company_id] == [
        f"{world.gateway}|chiller-1"
    ]
    # A return after the window is a new alert.
    world.events(CHILLER_CLEAR)
    await world.engine.drain()
    world.clock.advance(601)
    world.events(CHILLER_FAULT)
    await world.engine.drain()
    assert len(await world.alerts()) == 2


async def test_smoke_is_never_grouped_or_silenced_and_repeats_until_acknowledged(world: World) -> None:
    async with world.sessions() as session:
        session.add(
            Silence(
                company_id=world.company_id,
                site_id=None,
                reason="works",
                starts_at=world.clock.now,
                ends_at=world.clock.now + timedelta(hours=2),
                created_at=world.clock.now,
            )
        )
        await session.commit()
    world.events(("smoke.alarm", "smoke-b1", {}), ("smoke.alarm", "smoke-b1", {}))
    await world.engine.drain()
    alerts = await world.alerts()
    assert [a.track for a in alerts] == [LIFE_SAFETY, LIFE_SAFETY]
    first = await world.notices(alert_id=alerts[0].id)
    assert world.guard in {n.user_id for n in first} and world.manager in {n.user_id for n in first}
    assert all(n.group_key == "" and n.not_before <= world.clock.now for n in first)
    await world.escalator.tick()
    world.clock.advance(125)
    await world.escalator.tick()
    assert await world.notices(alert_id=alerts[0].id, reason="repeated")
    # A chiller fault under the same silence is silenced.
    world.events(CHILLER_FAULT)
    await world.engine.drain()
    fault = (await world.alerts(track=MAINTENANCE))[0]
    assert fault.silence_id is not None and not await world.notices(alert_id=fault.id)
    world.clock.advance(2 * 3600)
    await world.escalator.tick()
    assert await world.notices(alert_id=fault.id)


async def test_a_gateway_going_offline_is_one_alert_and_holds_its_devices_alerts(world: World) -> None:
    await world.set_gateway(online=False)
    [gw] = await world.alerts()
    assert gw.kind == "gateway.offline" and gw.details["gateway"] == "T1 plant room"
    world.events(("device.offline", "chiller-plc", {}), ("device.offline", "ahu-2", {}))
    await world.engine.drain()
    held = await world.alerts(state=INHIBITED)
    assert len(held) == 2 and all(a.inhibited_by == gw.id for a in held)
    await world.escalator.tick()
    assert not await world.notices()  # within the gateway's grace: nobody told yet
    world.clock.advance(61)
    await world.escalator.tick()
    assert {n.alert_id for n in await world.notices()} == {gw.id}
    # Back: the gateway alert resolves; one device came back meanwhile, one did not.
    world.events(("device.online", "ahu-2", {}))
    await world.engine.drain()
    await world.set_gateway(online=True)
    assert (await world.alerts(kind="gateway.offline"))[0].state == RESOLVED
    world.clock.advance(121)
    await world.escalator.tick()
    plc = (await world.alerts(source="chiller-plc"))[0]
    ahu = (await world.alerts(source="ahu-2"))[0]
    assert plc.state == OPEN and "released" in await world.timeline(plc.id)
    assert ahu.state == RESOLVED
    assert {n.alert_id for n in await world.notices(reason="raised")} == {gw.id, plc.id}


async def test_a_site_policy_wins_over_the_default(world: World) -> None:
    async with world.sessions() as session:
        session.add(
            EscalationPolicy(
                company_id=world.company_id,
                site_id=world.site_id,
                track=MAINTENANCE,
                skill="hvac",
                name="chillers",
                steps=[{"after_s": 0, "targets": [{"type": "user", "user_id": world.manager}]}],
                created_at=world.clock.now,
            )
        )
        await session.commit()
    world.events(CHILLER_FAULT)
    await world.engine.drain()
    assert {n.user_id for n in await world.notices()} == {world.manager}


async def test_catch_up_takes_what_was_stored_while_the_engine_was_down(world: World) -> None:
    world.events(CHILLER_FAULT)
    await world.engine.drain()  # sets the checkpoint
    world.seq += 1
    await store_events(
        world.sessions,
        world.gateway,
        STORE,
        [event_record(world.seq, kind="smoke.alarm", source="smoke-3f", data={}, at=world.clock.now)],
    )
    assert await world.engine.catch_up() == 1
    assert await world.alerts(source="smoke-3f")
    assert await world.engine.catch_up() == 0
    async with world.sessions() as session:
        count = select(func.count()).select_from(Alert).where(Alert.company_id == world.company_id)
        assert (await session.execute(count)).scalar() == 2


async def test_a_silence_made_after_the_raise_stops_the_escalation_until_it_ends(world: World) -> None:
    world.events(CHILLER_FAULT)
    await world.engine.drain()
    [alert] = await world.alerts()
    await world.escalator.tick()
    async with world.sessions() as session:
        session.add(
            Silence(
                company_id=world.company_id, site_id=world.site_id, source_pattern="chiller-*",
                reason="chiller 1 serviced", starts_at=world.clock.now,
                ends_at=world.clock.now + timedelta(hours=1), created_at=world.clock.now,
            )
        )  # fmt: skip
        # What create_silence does to the alerts in its scope: look at them now.
        wake = update(Alert).where(Alert.id == alert.id).values(next_action_at=world.clock.now)
        await session.execute(wake)
        await session.commit()
    await world.escalator.tick()
    [alert] = await world.alerts()
    assert alert.silence_id is not None and "silenced" in await world.timeline(alert.id)
    world.clock.advance(30 * 60)  # the lead's and the manager's steps fall in the silence
    await world.escalator.tick()
    assert {n.user_id for n in await world.notices()} == {world.tech}
    world.clock.advance(31 * 60)  # the silence is over and the chiller still warm: a new round
    await world.escalator.tick()
    assert len(await world.notices(user_id=world.tech)) == 4  # email and SMS, twice
    assert world.lead not in {n.user_id for n in await world.notices()}


async def test_a_new_fault_is_not_queued_behind_a_flood_of_known_ones(world: World) -> None:
    flood = [("equipment.fault", f"fcu-{i:02d}", {"fault": "fan", "skill": "general"}) for i in range(70)]
    world.events(*flood)
    await world.engine.drain()
    world.events(*flood)  # the same keys again: behind whatever is new
    world.events(CHILLER_FAULT)
    await world.engine.drain()
    [chiller] = await world.alerts(source="chiller-1")
    async with world.sessions() as session:
        raised = (
            await session.execute(
                select(AlertTimeline.id).where(
                    AlertTimeline.alert_id == chiller.id, AlertTimeline.action == "raised"
                )
            )
        ).scalar_one()
        flood_ids = (
            (
                await session.execute(
                    select(AlertTimeline.id)
                    .join(Alert, Alert.id == AlertTimeline.alert_id)
                    .where(
                        Alert.company_id == world.company_id,
                        Alert.source.like("fcu-%"),
                        AlertTimeline.action == "event",
                    )
                )
            )
            .scalars()
            .all()
        )
    assert len(flood_ids) == 70 and raised < min(flood_ids)
    assert all(a.event_count == 2 for a in await world.alerts() if a.source.startswith("fcu-"))
