"""The dispatcher's rules: retries with back-off, giving up, grouping maintenance notices, quiet
hours, cancelling what is already in hand, and claims that two dispatchers never share."""

import asyncio
import itertools
from contextlib import aclosing
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from cloud.alerts.models import (
    ACKNOWLEDGED,
    CANCELLED,
    FAILED,
    LIFE_SAFETY,
    MAINTENANCE,
    PENDING,
    SENDING,
    SENT,
    Notification,
)
from cloud.db import create_engine, session_factory
from cloud.notify.dispatcher import Dispatcher
from cloud.notify.quiet import quiet_end
from cloud.oncall.recipients import QuietHours
from tests.cloud.conftest import Database
from tests.cloud.notify_support import (
    enqueue_for,
    http_server,
    make_alert,
    make_person,
    make_webhook,
    name_site,
    notifications,
    notify_config,
    running,
    smtp_server,
    timeline,
    utcnow,
)
from tests.cloud.tenancy import make_company
from tests.support.waits import until


@pytest.fixture
async def sessions(sqlite_url: str):  # type: ignore[no-untyped-def]
    engine = create_engine(sqlite_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def _statuses(sessions, alert_id: int | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.status for r in await notifications(sessions, alert_id)]


async def test_retries_with_back_off_after_server_errors_then_succeeds(sqlite_url: str, sessions) -> None:  # type: ignore[no-untyped-def]
    tenant = await make_company(sessions)
    async with http_server("/hook") as receiver:
        receiver.respond = lambda req, n: (500, {"error": "busy"}) if n <= 2 else (200, {})
        hook = await make_webhook(sessions, tenant, receiver.url, tracks=[MAINTENANCE])
        config = notify_config(sqlite_url, retry_min_s=0.1, retry_max_s=0.3)
        alert = await make_alert(sessions, tenant)
        async with running(Dispatcher(config, sessions)) as dispatcher:
            await enqueue_for(sessions, alert, [])
            dispatcher.wake()

            async def sent() -> bool:
                return await _statuses(sessions, alert.id) == [SENT]

            await until(sent, "the webhook sent on the third attempt")
        (row,) = await notifications(sessions, alert.id)
        assert row.attempts == 3 and row.webhook_id == hook.id and row.last_error == ""
        calls = receiver.snapshot()
        assert len(calls) == 3
        # Each retry waited at least retry_min_s (full jitter draws between it and the ceiling).
        assert all(later.at - earlier.at >= 0.1 for earlier, later in itertools.pairwise(calls))
        # The same delivery each time, so a receiver that took one of the failed ones can tell.
        assert {c.headers["x-gatehouse-delivery"] for c in calls} == {str(row.id)}
    assert [t.action for t in await timeline(sessions, alert.id)] == ["notified"]


async def test_gives_up_after_max_attempts_or_at_once_when_permanent(sqlite_url: str, sessions) -> None:  # type: ignore[no-untyped-def]
    tenant = await make_company(sessions)
    person = await make_person(sessions, tenant, channels=("email", "sms"))
    async with http_server("/hook") as receiver, http_server("/sms") as provider:
        receiver.respond = lambda req, n: (503, {"error": "down"})
        provider.respond = lambda req, n: (400, {"error": "no such number"})
        await make_webhook(sessions, tenant, receiver.url, tracks=[MAINTENANCE])
        # No SMTP host: email is off, and says so.
        config = notify_config(sqlite_url, sms_url=provider.url, max_attempts=3)
        alert = await make_alert(sessions, tenant)
        async with running(Dispatcher(config, sessions)) as dispatcher:
            await enqueue_for(sessions, alert, [person])
            dispatcher.wake()

            async def all_failed() -> bool:
                return await _statuses(sessions, alert.id) == [FAILED] * 3

            await until(all_failed, "every notice failed")
        assert len(receiver.snapshot()) == 3 and len(provider.snapshot()) == 1
    rows = {r.channel: r for r in await notifications(sessions, alert.id)}
    assert (
        rows["webhook"].attempts == 3 and rows["webhook"].last_error == 'webhook: HTTP 503: {"error": "down"}'
    )
    assert rows["sms"].attempts == 1 and rows["sms"].last_error.startswith("sms: HTTP 400")
    assert rows["email"].attempts == 1
    assert rows["email"].last_error == "email: no SMTP server configured ([notify.smtp] host)"
    failed = {t.detail["channel"]: t.detail for t in await timeline(sessions, alert.id, "notify_failed")}
    assert set(failed) == {"email", "sms", "webhook"}
    assert failed["email"]["error"] == rows["email"].last_error
    assert failed["sms"]["user_id"] == person.user_id and failed["sms"]["address"] == person.phone


async def test_maintenance_notices_of_one_site_are_grouped(sqlite_url: str, sessions) -> None:  # type: ignore[no-untyped-def]
    tenant = await make_company(sessions)
    await name_site(sessions, tenant.site_ids[0], "海景花园")
    person = await make_person(sessions, tenant, channels=("email",))
    async with smtp_server() as smtp:
        config = notify_config(sqlite_url, smtp_port=smtp.port, group_interval_s=60)
        async with aclosing(Dispatcher(config, sessions)) as dispatcher:
            first = await make_alert(sessions, tenant, source="CH-1", fault="high_temp")
            await enqueue_for(sessions, first, [person])
            (batch,) = await dispatcher.claim_due()
            await dispatcher.deliver(batch)
            (row1,) = await notifications(sessions, first.id)
            assert row1.status == SENT and row1.sent_at is not None

            second = await make_alert(sessions, tenant, source="P-2", kind="device.offline", fault="")
            third = await make_alert(sessions, tenant, source="AHU-3", fault="unreadable")
            await enqueue_for(sessions, second, [person])
            await enqueue_for(sessions, third, [person])
            # Due, but their group went out moments ago: they wait for the interval's end.
            assert await dispatcher.claim_due() == []
            held = await notifications(sessions, second.id) + await notifications(sessions, third.id)
            until_ = row1.sent_at + timedelta(seconds=60)
            assert [(r.status, r.held_reason, r.not_before) for r in held] == [
                (PENDING, "grouped", until_)
            ] * 2
            assert (await timeline(sessions, second.id, "held"))[0].detail["why"] == "grouped"
            assert await dispatcher.claim_due(now=until_ - timedelta(seconds=1)) == []

            (together,) = await dispatcher.claim_due(now=until_)
            assert sorted(together.ids) == sorted(r.id for r in held)
            await dispatcher.deliver(together)
            await until(lambda: len(smtp.snapshot()) == 2, "the second message")

    one, two = smtp.snapshot()
    assert "CH-1" in str(one["Subject"]) and "P-2" not in str(one["Subject"])
    assert str(two["Subject"]).startswith("【维修】2 个新故障 · 海景花园: 设备离线 P-2; 设备故障 AHU-3")
    body = two.get_body().get_content()  # type: ignore[union-attr]
    assert f"/tech/alerts/{second.id}" in body and f"/tech/alerts/{third.id}" in body
    ids = "-".join(str(r.id) for r in sorted(held, key=lambda r: r.id))
    assert two["Message-ID"] == f"<gatehouse-notification-{ids}@gh.example.cn>"
    rows = await notifications(sessions, second.id) + await notifications(sessions, third.id)
    assert {r.status for r in rows} == {SENT} and {r.message_id for r in rows} == {two["Message-ID"]}
    assert len(await timeline(sessions, third.id, "notified")) == 1


async def test_quiet_hours_hold_maintenance_but_never_life_safety(sqlite_url: str, sessions) -> None:  # type: ignore[no-untyped-def]
    tenant = await make_company(sessions)
    now = utcnow()
    local = now.astimezone(ZoneInfo("Asia/Shanghai"))
    quiet = QuietHours(
        (local - timedelta(hours=1)).time(), (local + timedelta(hours=1)).time(), "Asia/Shanghai"
    )
    person = await make_person(sessions, tenant, channels=("sms",), quiet=quiet)
    async with http_server("/sms") as provider:
        config = notify_config(sqlite_url, sms_url=provider.url)
        async with aclosing(Dispatcher(config, sessions)) as dispatcher:
            fault = await make_alert(sessions, tenant)
            smoke = await make_alert(sessions, tenant, track=LIFE_SAFETY, kind="smoke.alarm", fault="")
            await enqueue_for(sessions, fault, [person], now=now)
            await enqueue_for(sessions, smoke, [person], now=now)
            batches = await dispatcher.claim_due()
            # Life safety: at once, on every channel (email too, which is off here and fails).
            assert sorted((b.rows[0].alert_id, b.channel) for b in batches) == [
                (smoke.id, "email"),
                (smoke.id, "sms"),
            ]
            await asyncio.gather(*(dispatcher.deliver(b) for b in batches))
            assert len(provider.snapshot()) == 1
            (held,) = await notifications(sessions, fault.id)
            assert held.status == PENDING and held.held_reason == "quiet_hours"
            assert held.not_before == quiet_end(quiet, now) and held.not_before > now + timedelta(minutes=59)
            # At the end of the quiet hours it goes.
            (later,) = await dispatcher.claim_due(now=held.not_before)
            await dispatcher.deliver(later)
            assert len(provider.snapshot()) == 2
            assert await _statuses(sessions, fault.id) == [SENT]


async def test_a_notice_about_an_acknowledged_alert_is_cancelled(sqlite_url: str, sessions) -> None:  # type: ignore[no-untyped-def]
    tenant = await make_company(sessions)
    person = await make_person(sessions, tenant, channels=("sms",))
    async with http_server("/sms") as provider:
        config = notify_config(sqlite_url, sms_url=provider.url)
        async with aclosing(Dispatcher(config, sessions)) as dispatcher:
            fault = await make_alert(sessions, tenant)
            smoke = await make_alert(sessions, tenant, track=LIFE_SAFETY, kind="smoke.alarm", fault="")
            await enqueue_for(sessions, fault, [person])
            await enqueue_for(sessions, smoke, [person])
            # Acknowledged between the enqueue and the dispatcher's turn.
            for alert in (fault, smoke):
                async with sessions() as session, session.begin():
                    row = await session.get(type(alert), alert.id)
                    assert row is not None
                    row.state, row.acknowledged_at = ACKNOWLEDGED, utcnow()
            await enqueue_for(sessions, fault, [person], reason="acknowledged")
            batches = await dispatcher.claim_due()
            # The acknowledgement's own notice still goes.
            assert [(b.rows[0].alert_id, b.rows[0].reason) for b in batches] == [(fault.id, "acknowledged")]
            statuses = {(r.alert_id, r.reason, r.channel): r.status for r in await notifications(sessions)}
            assert statuses == {
                (fault.id, "raised", "sms"): CANCELLED,
                (smoke.id, "raised", "email"): CANCELLED,
                (smoke.id, "raised", "sms"): CANCELLED,
                (fault.id, "acknowledged", "sms"): SENDING,
            }
            assert provider.snapshot() == []


async def test_two_dispatchers_never_claim_the_same_notice(db: Database) -> None:
    tenant = await make_company(db.sessions)
    people = [await make_person(db.sessions, tenant, channels=("sms",)) for _ in range(6)]
    smoke = await make_alert(db.sessions, tenant, track=LIFE_SAFETY, kind="smoke.alarm", fault="")
    fault = await make_alert(db.sessions, tenant)
    await enqueue_for(db.sessions, fault, people)
    await enqueue_for(db.sessions, smoke, people)
    config = notify_config(db.url, sms_url="http://127.0.0.1:9/sms")
    async with aclosing(Dispatcher(config, db.sessions)) as a, aclosing(Dispatcher(config, db.sessions)) as b:
        first_a, first_b = await asyncio.gather(a.claim_due(), b.claim_due())
        claimed = [i for batch in (*first_a, *first_b) for i in batch.ids]
        assert len(claimed) == len(set(claimed))
        # Life safety first, in either dispatcher's list.
        for batches in (first_a, first_b):
            tracks = [batch.life_safety for batch in batches]
            assert tracks == sorted(tracks, reverse=True)
        ls_ids = {r.id for r in await notifications(db.sessions, smoke.id)}
        assert ls_ids <= set(claimed)
        # The rest over further rounds (maintenance SMS slots are per dispatcher), each once.
        for _ in range(4):
            more = await asyncio.gather(a.claim_due(), b.claim_due())
            claimed += [i for batches in more for batch in batches for i in batch.ids]
        assert sorted(claimed) == sorted(r.id for r in await notifications(db.sessions))
        assert len(claimed) == len(set(claimed)) == 18  # 6 maintenance SMS, 6 x 2 life safety
        async with db.sessions() as session:
            rows = (await session.execute(Notification.__table__.select())).all()
        assert {r.status for r in rows} == {SENDING} and {r.attempts for r in rows} == {1}
