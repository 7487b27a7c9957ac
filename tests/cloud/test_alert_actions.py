"""What people do to alerts (``cloud.alerts.actions``) on SQLite: the state rules, life safety for
security staff only, another company's alert as 404, silences checked and audited, photos in the
blob store checked by their bytes, the list's filters and order, and "my alerts"."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cloud.accounts.permissions import Forbidden, Principal, Role, grants_for_roles
from cloud.alerts import actions
from cloud.alerts.models import (
    ACKNOWLEDGED,
    CANCELLED,
    IN_PROGRESS,
    LIFE_SAFETY,
    OPEN,
    RESOLVED,
    Alert,
    AlertPhoto,
    AlertTimeline,
    Notification,
    OncallRota,
    Webhook,
)
from cloud.audit.models import AuditEntry
from cloud.blobs import BlobStore, TooLarge, UnsupportedType, sniff_image
from cloud.db import SessionFactory, create_engine, session_factory
from cloud.kit.errors import Conflict, InvalidInput, NotFound
from cloud.models import Gateway
from tests.cloud.alert_builders import add_notice, make_alert, tiny_jpeg
from tests.cloud.tenancy import Tenant, make_company, make_user

PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@dataclass
class World:
    sessions: SessionFactory
    tenant: Tenant
    other: Tenant
    tech: Principal
    guard: Principal
    manager: Principal
    site_a_manager: Principal


async def principal_of(
    sessions: SessionFactory, tenant: Tenant, name: str, role: Role, site: int | None
) -> Principal:
    async with sessions() as session:
        user = await make_user(session, tenant.company_id, f"{name}-{tenant.company_id}", [(role, site)])
        await session.commit()
        return Principal(
            kind="user",
            id=user.id,
            name=name,
            company_id=tenant.company_id,
            grants=grants_for_roles([(role, site)]),
        )


@pytest.fixture
async def world(sqlite_url: str) -> AsyncIterator[World]:
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    try:
        tenant = await make_company(sessions, sites=2)
        other = await make_company(sessions)
        yield World(
            sessions,
            tenant,
            other,
            await principal_of(sessions, tenant, "tech", Role.TECHNICIAN, None),
            await principal_of(sessions, tenant, "guard", Role.SECURITY_GUARD, None),
            await principal_of(sessions, tenant, "manager", Role.PROPERTY_MANAGER, None),
            await principal_of(sessions, tenant, "manager-a", Role.PROPERTY_MANAGER, tenant.site_ids[0]),
        )
    finally:
        await engine.dispose()


async def timeline(sessions: SessionFactory, alert_id: int) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(
            select(AlertTimeline.action).where(AlertTimeline.alert_id == alert_id).order_by(AlertTimeline.id)
        )
        return list(rows.all())


async def audit_actions(sessions: SessionFactory, company_id: int) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(
            select(AuditEntry.action).where(AuditEntry.company_id == company_id).order_by(AuditEntry.seq)
        )
        return list(rows.all())


# --- the state rules ---------------------------------------------------------------------------


async def test_acknowledge_start_resolve_follow_the_state_rules(world: World) -> None:
    s, site = world.sessions, world.tenant.site_ids[0]
    alert_id = await make_alert(s, world.tenant.company_id, site)
    async with s() as session:
        alert = await session.get(Alert, alert_id)
        assert alert is not None
        await add_notice(session, alert, world.tech.id or 0, datetime.now(UTC), status="pending")
        await session.commit()
    now = datetime.now(UTC)
    async with s() as session:
        alert = await actions.acknowledge(session, world.tech, alert_id, now)
        assert (alert.state, alert.acknowledged_by, alert.acknowledged_at) == (
            ACKNOWLEDGED,
            world.tech.id,
            now,
        )
        assert alert.next_action_at == now  # the escalator looks again: no more steps
        assert (
            await session.scalar(select(Notification.status).where(Notification.alert_id == alert_id))
            == CANCELLED
        )
    async with s() as session:
        with pytest.raises(Conflict, match="only an open alert can be acknowledged"):
            await actions.acknowledge(session, world.tech, alert_id)
    async with s() as session:
        assert (await actions.start_work(session, world.tech, alert_id)).state == IN_PROGRESS
    async with s() as session:
        with pytest.raises(Conflict, match="open or acknowledged"):
            await actions.start_work(session, world.tech, alert_id)
    async with s() as session:
        done = await actions.resolve(session, world.tech, alert_id, "  replaced the sensor  ")
        assert (done.state, done.resolution, done.resolved_by) == (
            RESOLVED,
            "replaced the sensor",
            world.tech.id,
        )
    async with s() as session:
        with pytest.raises(Conflict, match="already resolved"):
            await actions.resolve(session, world.tech, alert_id, "again")
    async with s() as session:
        with pytest.raises(Conflict, match="resolved"):
            await actions.acknowledge(session, world.tech, alert_id)
    # Nothing after resolved but notes.
    async with s() as session:
        with pytest.raises(Conflict, match="add a note instead"):
            await actions.add_photo(
                session, world.tech, alert_id, tiny_jpeg(), store=BlobStore(Path("/nonexistent"))
            )
    async with s() as session:
        note = await actions.add_note(session, world.tech, alert_id, "checked again at 9")
        assert note.detail == {"text": "checked again at 9"} and note.actor_id == world.tech.id
    assert await timeline(s, alert_id) == [
        "raised",
        "notified",
        "acknowledged",
        "started",
        "resolved",
        "note",
    ]
    assert await audit_actions(s, world.tenant.company_id) == [
        "alert.acknowledge",
        "alert.start",
        "alert.resolve",
        "alert.note",
    ]


async def test_starting_work_on_an_open_alert_acknowledges_it(world: World) -> None:
    alert_id = await make_alert(world.sessions, world.tenant.company_id, world.tenant.site_ids[0])
    async with world.sessions() as session:
        alert = await actions.start_work(session, world.tech, alert_id)
        assert alert.state == IN_PROGRESS and alert.acknowledged_by == world.tech.id and alert.started_at
    assert await timeline(world.sessions, alert_id) == ["raised", "acknowledged", "started"]


async def test_acknowledging_and_resolving_tell_the_webhooks(world: World) -> None:
    s, company = world.sessions, world.tenant.company_id
    async with s() as session:
        session.add(
            Webhook(
                company_id=company,
                name="BMS",
                url="http://127.0.0.1:9/hook",
                secret="s3cret",
                tracks=["maintenance"],
                created_at=datetime.now(UTC),
            )
        )
        await session.commit()
    alert_id = await make_alert(s, company, world.tenant.site_ids[0])
    async with s() as session:
        await actions.acknowledge(session, world.tech, alert_id)
    async with s() as session:
        await actions.resolve(session, world.tech, alert_id, "done")
    async with s() as session:
        rows = (
            await session.execute(
                select(Notification.reason, Notification.channel, Notification.status).order_by(
                    Notification.id
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("acknowledged", "webhook", "pending"),
        ("resolved", "webhook", "pending"),
    ]


async def test_an_empty_note_is_refused(world: World) -> None:
    alert_id = await make_alert(world.sessions, world.tenant.company_id, world.tenant.site_ids[0])
    async with world.sessions() as session:
        with pytest.raises(InvalidInput, match="text"):
            await actions.add_note(session, world.tech, alert_id, "   ")


# --- life safety -------------------------------------------------------------------------------


async def test_life_safety_is_for_security_staff_and_needs_a_resolution(world: World) -> None:
    s = world.sessions
    alert_id = await make_alert(s, world.tenant.company_id, world.tenant.site_ids[0], track=LIFE_SAFETY)
    for act in (actions.acknowledge, actions.start_work):
        async with s() as session:
            with pytest.raises(Forbidden, match="life-safety alert; only security staff and managers"):
                await act(session, world.tech, alert_id)
    async with s() as session:
        with pytest.raises(Forbidden, match=r"alarms\.lifesafety"):
            await actions.resolve(session, world.tech, alert_id, "false alarm")
    async with s() as session:  # a technician may still say what they saw
        await actions.add_note(session, world.tech, alert_id, "smell of burning in the plant room")
    async with s() as session:
        assert (await actions.acknowledge(session, world.guard, alert_id)).state == ACKNOWLEDGED
    async with s() as session:
        with pytest.raises(InvalidInput, match="resolution: say what was found"):
            await actions.resolve(session, world.guard, alert_id, " ")
    async with s() as session:
        assert (await actions.resolve(session, world.guard, alert_id, "burnt toast, reset")).state == RESOLVED


# --- visibility --------------------------------------------------------------------------------


async def test_another_companys_alert_is_not_found(world: World) -> None:
    s = world.sessions
    theirs = await make_alert(s, world.other.company_id, world.other.site_ids[0])
    site_b = await make_alert(s, world.tenant.company_id, world.tenant.site_ids[1])
    async with s() as session:
        for act in (actions.acknowledge, actions.start_work):
            with pytest.raises(NotFound):
                await act(session, world.manager, theirs)
        with pytest.raises(NotFound):
            await actions.get_alert(session, world.manager, theirs)
        with pytest.raises(NotFound):
            await actions.add_note(session, world.manager, theirs, "hello")
        # A manager of site A does not see site B's alerts.
        with pytest.raises(NotFound):
            await actions.resolve(session, world.site_a_manager, site_b, "x")
        page = await actions.list_alerts(session, world.manager)
        assert theirs not in [a.id for a in page.items] and site_b in [a.id for a in page.items]
        assert site_b not in [a.id for a in (await actions.list_alerts(session, world.site_a_manager)).items]
        with pytest.raises(NotFound, match="site_id"):
            await actions.list_alerts(session, world.manager, site_id=world.other.site_ids[0])
    async with s() as session:
        assert (await session.get(Alert, theirs)).state == OPEN  # type: ignore[union-attr]


# --- the list ----------------------------------------------------------------------------------


async def test_the_list_puts_life_safety_first_then_newest_and_pages(world: World) -> None:
    s, company, (site_a, site_b) = world.sessions, world.tenant.company_id, world.tenant.site_ids
    t0 = datetime.now(UTC) - timedelta(hours=1)
    old_smoke = await make_alert(s, company, site_a, track=LIFE_SAFETY, raised_at=t0)
    maintenance = [
        await make_alert(s, company, site, source=f"ahu-{i}/fan", raised_at=t0 + timedelta(minutes=i))
        for i, site in enumerate((site_a, site_b, site_a, site_b, site_a))
    ]
    resolved_smoke = await make_alert(s, company, site_b, track=LIFE_SAFETY, state=RESOLVED)
    async with s() as session:
        seen: list[int] = []
        cursor = None
        while True:
            page = await actions.list_alerts(session, world.manager, cursor=cursor, limit=2)
            seen.extend(a.id for a in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [old_smoke, resolved_smoke, *reversed(maintenance)]
        unresolved = await actions.list_alerts(session, world.manager, state="unresolved")
        assert resolved_smoke not in [a.id for a in unresolved.items]
        by_site = await actions.list_alerts(session, world.manager, site_id=site_b, track="maintenance")
        assert [a.id for a in by_site.items] == [maintenance[3], maintenance[1]]
        found = await actions.list_alerts(session, world.manager, text="AHU-2")
        assert [a.id for a in found.items] == [maintenance[2]]
        assert (await actions.list_alerts(session, world.manager, text="100%_")).items == []
        with pytest.raises(InvalidInput, match="cursor"):
            await actions.list_alerts(session, world.manager, cursor="bm9wZQ")
        with pytest.raises(InvalidInput, match="state"):
            await actions.list_alerts(session, world.manager, state="sleeping")
        counts = await actions.counts_by_track(session, world.manager)
        assert counts == {"life_safety": 1, "maintenance": 5}


async def test_get_alert_has_the_timeline_and_who_was_notified(world: World) -> None:
    alert_id = await make_alert(
        world.sessions, world.tenant.company_id, world.tenant.site_ids[0], notify_user=world.tech.id
    )
    async with world.sessions() as session:
        await actions.acknowledge(session, world.tech, alert_id)
    async with world.sessions() as session:
        detail = await actions.get_alert(session, world.manager, alert_id)
    assert [e.action for e in detail.timeline] == ["raised", "notified", "acknowledged"]
    tech_name = f"tech-{world.tenant.company_id}"  # the user's display name
    assert detail.timeline[-1].actor_name == tech_name
    assert [(n.name, n.channel, n.status) for n in detail.notices] == [(tech_name, "sms", "sent")]
    assert detail.recipients == [tech_name]


# --- my alerts ---------------------------------------------------------------------------------


async def test_my_alerts_are_those_i_was_told_of_or_am_on_call_for(world: World) -> None:
    s, company, (site_a, site_b) = world.sessions, world.tenant.company_id, world.tenant.site_ids
    told = await make_alert(s, company, site_a, skill="electrical", notify_user=world.tech.id)
    on_call = await make_alert(s, company, site_b, skill="hvac")
    await make_alert(s, company, site_b, skill="plumbing")  # nobody's
    smoke = await make_alert(s, company, site_a, track=LIFE_SAFETY, notify_user=world.tech.id)
    done = await make_alert(s, company, site_a, state=RESOLVED, notify_user=world.tech.id)
    async with s() as session:
        session.add(
            OncallRota(
                company_id=company,
                site_id=site_b,
                skill="hvac",
                name="HVAC B",
                members=[world.tech.id],
                starts_on=date.today() - timedelta(days=3),
                created_at=datetime.now(UTC),
            )
        )
        await session.commit()
    async with s() as session:
        mine = [a.id for a in await actions.my_alerts(session, world.tech)]
        assert mine == [smoke, on_call, told]  # life safety first, then newest first
        assert await actions.mine_among(session, world.tech, [told, on_call, done], datetime.now(UTC)) == {
            told,
            on_call,
        }
        assert await actions.my_alerts(session, world.guard) == []


# --- silences ----------------------------------------------------------------------------------


async def test_silences_are_checked_audited_and_ended(world: World) -> None:
    s, company, (site_a, site_b) = world.sessions, world.tenant.company_id, world.tenant.site_ids
    now = datetime.now(UTC)
    later = now + timedelta(hours=2)
    async with s() as session:
        session.add(
            Gateway(
                id="gw-silence-b",
                site="x",
                password_hash="$7$x",
                created_at=now,
                company_id=company,
                site_id=site_b,
            )
        )
        await session.commit()
    bad = [
        ({"reason": "  ", "ends_at": later, "site_id": site_a}, InvalidInput, "reason"),
        ({"reason": "x", "ends_at": now - timedelta(minutes=1), "site_id": site_a}, InvalidInput, "future"),
        ({"reason": "x", "ends_at": now + timedelta(days=31), "site_id": site_a}, InvalidInput, "30 days"),
        ({"reason": "x", "ends_at": later, "site_id": world.other.site_ids[0]}, NotFound, "site_id"),
        (
            {"reason": "x", "ends_at": later, "site_id": site_a, "gateway_id": "gw-silence-b"},
            InvalidInput,
            "not at site",
        ),
        (
            {"reason": "x", "ends_at": later, "site_id": site_a, "gateway_id": "gw-nope"},
            NotFound,
            "gateway_id",
        ),
    ]
    for kwargs, error, match in bad:
        async with s() as session:
            with pytest.raises(error, match=match):
                await actions.create_silence(session, world.manager, now=now, **kwargs)  # type: ignore[arg-type]
    async with s() as session:
        with pytest.raises(Forbidden):
            await actions.create_silence(session, world.tech, reason="x", ends_at=later, site_id=site_a)
        with pytest.raises(Forbidden, match="every site"):
            await actions.create_silence(session, world.site_a_manager, reason="x", ends_at=later)
    async with s() as session:
        silence = await actions.create_silence(
            session,
            world.manager,
            reason="chiller 2 overhaul",
            ends_at=later.replace(tzinfo=None),  # no zone: UTC
            site_id=site_b,
            gateway_id="gw-silence-b",
            source_pattern="chiller-2/*",
            now=now,
        )
        assert silence.ends_at == later and silence.created_by == world.manager.id
    async with s() as session:
        active = await actions.list_silences(session, world.manager, active=True)
        assert [x.id for x in active.items] == [silence.id]
        # The manager of site A neither sees nor ends site B's silence.
        assert (await actions.list_silences(session, world.site_a_manager)).items == []
        with pytest.raises(NotFound):
            await actions.end_silence(session, world.site_a_manager, silence.id)
    async with s() as session:
        ended = await actions.end_silence(session, world.manager, silence.id)
        assert ended.ended_at is not None and ended.ended_by == world.manager.id
    async with s() as session:
        with pytest.raises(Conflict, match="already ended"):
            await actions.end_silence(session, world.manager, silence.id)
        assert (await actions.list_silences(session, world.manager, active=True)).items == []
    assert await audit_actions(s, company) == ["alert.silence.create", "alert.silence.end"]


# --- photos ------------------------------------------------------------------------------------


async def test_a_photo_is_kept_by_its_hash_and_anything_but_an_image_is_refused(
    world: World, tmp_path: Path
) -> None:
    store = BlobStore(tmp_path / "blobs")
    alert_id = await make_alert(world.sessions, world.tenant.company_id, world.tenant.site_ids[0])
    jpeg = tiny_jpeg()
    async with world.sessions() as session:
        photo = await actions.add_photo(
            session, world.tech, alert_id, jpeg, "application/octet-stream", store=store
        )
    sha = hashlib.sha256(jpeg).hexdigest()
    assert (photo.sha256, photo.content_type, photo.size) == (sha, "image/jpeg", len(jpeg))
    assert (tmp_path / "blobs" / sha[:2] / sha).read_bytes() == jpeg
    assert store.get(sha) == jpeg
    # The same bytes again: the same file, no temporary left behind.
    assert store.put(jpeg).sha256 == sha
    assert sorted(p.name for p in (tmp_path / "blobs" / sha[:2]).iterdir()) == [sha]
    assert await timeline(world.sessions, alert_id) == ["raised", "photo"]
    for data, error in (
        (b"%PDF-1.4 not a photo", UnsupportedType),
        (b"<html><script>alert(1)</script>", UnsupportedType),
        (b"", InvalidInput),
    ):
        async with world.sessions() as session:
            with pytest.raises(error):
                await actions.add_photo(session, world.tech, alert_id, data, "image/jpeg", store=store)
    async with world.sessions() as session:
        with pytest.raises(TooLarge):
            await actions.add_photo(session, world.tech, alert_id, jpeg, store=store, max_bytes=len(jpeg) - 1)
        assert await session.scalar(select(func.count()).select_from(AlertPhoto)) == 1
    assert UnsupportedType.status_code == 415 and TooLarge.status_code == 413
    assert sniff_image(PNG_1PX) == "image/png"
    assert sniff_image(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "image/webp"
    with pytest.raises(NotFound):
        store.get("../../etc/passwd")
