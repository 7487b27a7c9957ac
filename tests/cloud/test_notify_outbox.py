"""The outbox: which notices enqueue writes (channels, quiet hours, webhooks, dedupe, groups),
cancel_pending, the quiet-hours rule and the message texts."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from cloud.alerts.models import CANCELLED, LIFE_SAFETY, MAINTENANCE, PENDING, Notification
from cloud.db import create_engine, session_factory
from cloud.notify.messages import AlertView, person_message, webhook_payload
from cloud.notify.outbox import cancel_pending
from cloud.notify.quiet import quiet_end
from cloud.oncall.recipients import QuietHours
from tests.cloud.notify_support import (
    enqueue_for,
    make_alert,
    make_person,
    make_webhook,
    notifications,
    timeline,
    utcnow,
)
from tests.cloud.tenancy import make_company

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def sessions(sqlite_url: str):  # type: ignore[no-untyped-def]
    engine = create_engine(sqlite_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def at(hour: int, minute: int = 0, day: int = 10) -> datetime:
    """A Shanghai wall time on 2026-03-<day>, as the aware UTC time the code gets."""
    return datetime(2026, 3, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


def test_quiet_hours_wrap_midnight_and_plain() -> None:
    night = QuietHours(time(22, 0), time(7, 0), "Asia/Shanghai")
    assert quiet_end(night, at(23, 30)) == at(7, 0, day=11)
    assert quiet_end(night, at(3, 0)) == at(7, 0)
    assert quiet_end(night, at(22, 0)) == at(7, 0, day=11)  # the start is inside
    assert quiet_end(night, at(7, 0)) is None  # the end is not
    assert quiet_end(night, at(12, 0)) is None
    lunch = QuietHours(time(12, 0), time(13, 30), "Asia/Shanghai")
    assert quiet_end(lunch, at(12, 45)) == at(13, 30)
    assert quiet_end(lunch, at(14, 0)) is None
    assert quiet_end(QuietHours(time(8, 0), time(8, 0), "Asia/Shanghai"), at(8, 0)) is None
    # Wall times are the person's zone: 23:30 in Shanghai is 15:30 UTC, quiet for a Shanghai night.
    assert quiet_end(QuietHours(time(22, 0), time(7, 0), "UTC"), at(23, 30)) is None


def test_quiet_hours_across_a_daylight_saving_change() -> None:
    # Berlin springs forward on 2026-03-29 at 02:00: a 22:00-07:00 night is one hour shorter.
    night = QuietHours(time(22, 0), time(7, 0), "Europe/Berlin")
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 3, 28, 23, 0, tzinfo=berlin)
    assert quiet_end(night, now) == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)


async def test_enqueue_writes_each_channel_and_webhook_once(sessions) -> None:  # type: ignore[no-untyped-def]
    tenant = await make_company(sessions, sites=2)
    ls = await make_alert(sessions, tenant, track=LIFE_SAFETY, kind="smoke.alarm", source="T1/3F/smoke-12")
    email_only = await make_person(sessions, tenant, channels=("email",))
    no_phone = await make_person(sessions, tenant, phone="")
    everywhere = await make_webhook(sessions, tenant, "http://127.0.0.1:9/a", tracks=[LIFE_SAFETY])
    await make_webhook(sessions, tenant, "http://127.0.0.1:9/b", tracks=[MAINTENANCE])  # other track
    await make_webhook(
        sessions, tenant, "http://127.0.0.1:9/c", tracks=[LIFE_SAFETY], site_id=tenant.site_ids[1]
    )  # other site
    await make_webhook(sessions, tenant, "http://127.0.0.1:9/d", tracks=[LIFE_SAFETY], active=False)
    here = await make_webhook(
        sessions,
        tenant,
        "http://127.0.0.1:9/e",
        tracks=[LIFE_SAFETY, MAINTENANCE],
        site_id=tenant.site_ids[0],
    )

    written = await enqueue_for(sessions, ls, [email_only, no_phone], step=0)
    rows = await notifications(sessions, ls.id)
    # Life safety: every channel the person has an address for, whatever their preferences.
    got = {(r.user_id, r.webhook_id, r.channel) for r in rows}
    assert got == {
        (email_only.user_id, None, "email"),
        (email_only.user_id, None, "sms"),
        (no_phone.user_id, None, "email"),
        (None, everywhere.id, "webhook"),
        (None, here.id, "webhook"),
    }
    assert written == 5
    assert all(r.status == PENDING and r.group_key == "" and r.not_before == r.created_at for r in rows)
    assert f"{ls.id}|user:{email_only.user_id}|sms|raised|0" in {r.dedupe_key for r in rows}
    # The same notice again (an escalator that ran the step twice) writes nothing.
    assert await enqueue_for(sessions, ls, [email_only, no_phone], step=0) == 0
    # A repeat is a new notice for people; webhooks do not hear about repeats.
    assert await enqueue_for(sessions, ls, [email_only], reason="repeated", step=0, repeat=1) == 2
    keys = {r.dedupe_key for r in await notifications(sessions, ls.id)}
    assert f"{ls.id}|user:{email_only.user_id}|email|repeated|0|1" in keys


async def test_maintenance_follows_preferences_groups_and_quiet_hours(sessions) -> None:  # type: ignore[no-untyped-def]
    tenant = await make_company(sessions)
    alert = await make_alert(sessions, tenant)
    now = at(23, 0)
    sleeper = await make_person(
        sessions, tenant, channels=("sms",), quiet=QuietHours(time(22, 0), time(7, 0), "Asia/Shanghai")
    )
    awake = await make_person(sessions, tenant, channels=("email", "sms", "pager"))
    assert await enqueue_for(sessions, alert, [sleeper, awake], now=now) == 3
    rows = {(r.user_id, r.channel): r for r in await notifications(sessions, alert.id)}
    assert set(rows) == {(sleeper.user_id, "sms"), (awake.user_id, "email"), (awake.user_id, "sms")}
    held = rows[(sleeper.user_id, "sms")]
    assert held.not_before == at(7, 0, day=11) and held.held_reason == "quiet_hours"
    assert rows[(awake.user_id, "email")].not_before == now
    assert rows[(awake.user_id, "email")].group_key == f"{awake.user_id}|email|{tenant.site_ids[0]}"
    (row,) = await timeline(sessions, alert.id, "held")
    assert row.detail == {
        "user_id": sleeper.user_id,
        "channel": "sms",
        "until": at(7, 0, day=11).isoformat(),
        "why": "quiet_hours",
    }


async def test_cancel_pending_leaves_claimed_sent_and_closing_notices(sessions) -> None:  # type: ignore[no-untyped-def]
    tenant = await make_company(sessions)
    alert = await make_alert(sessions, tenant)
    person = await make_person(sessions, tenant)
    await make_webhook(sessions, tenant, "http://127.0.0.1:9/hook", tracks=[MAINTENANCE])
    await enqueue_for(sessions, alert, [person])
    await enqueue_for(sessions, alert, [person], reason="acknowledged")
    rows = await notifications(sessions, alert.id)
    async with sessions() as session, session.begin():
        claimed = await session.get(Notification, rows[0].id)
        assert claimed is not None
        claimed.status = "sending"
    async with sessions() as session, session.begin():
        assert await cancel_pending(session, alert.id, utcnow()) == 1
    statuses = {(r.reason, r.channel): r.status for r in await notifications(sessions, alert.id)}
    assert statuses == {
        ("raised", "email"): "sending",
        ("raised", "sms"): CANCELLED,
        ("raised", "webhook"): PENDING,
        ("acknowledged", "email"): PENDING,
        ("acknowledged", "sms"): PENDING,
        ("acknowledged", "webhook"): PENDING,
    }


def _view(**kw: object) -> AlertView:
    base: dict[str, object] = {
        "id": 42,
        "track": LIFE_SAFETY,
        "state": "open",
        "kind": "smoke.alarm",
        "source": "T1/3F/smoke-12",
        "fault": "",
        "severity": "critical",
        "site_id": 1,
        "site_name": "海景花园",
        "site_timezone": "Asia/Shanghai",
        "raised_at": at(14, 3),
    }
    base.update(kw)
    return AlertView(**base)  # type: ignore[arg-type]


def test_messages_in_both_languages() -> None:
    base = "https://gh.example.cn"
    zh = person_message([(_view(), "raised")], "zh", base)
    assert zh.subject == "【紧急】新告警: 烟感报警 T1/3F/smoke-12 · 海景花园"
    assert "地点: 海景花园" in zh.text and "2026-03-10 14:03 Asia/Shanghai" in zh.text
    assert zh.sms.endswith(f"{base}/tech/alerts/42") and "烟感报警" in zh.sms
    assert len(zh.sms) <= 70
    long_place = _view(site_name="海景花园二期北区" * 4, source="T12/B2/plant-room/smoke-detector-0042")
    cut = person_message([(long_place, "raised")], "zh", base).sms
    assert len(cut) <= 70 and cut.endswith(f"{base}/tech/alerts/42")
    en = person_message([(_view(site_name="Seaview Garden"), "escalated")], "en", base)
    assert en.subject == "[URGENT] Not acknowledged: escalated: Smoke alarm T1/3F/smoke-12 · Seaview Garden"
    assert "Site: Seaview Garden" in en.text and f"{base}/tech/alerts/42" in en.text

    faults = [
        (_view(id=1, track=MAINTENANCE, kind="equipment.fault", source="CH-1", fault="high_temp"), "raised"),
        (_view(id=2, track=MAINTENANCE, kind="device.offline", source="P-2", fault=""), "raised"),
        (_view(id=3, track=MAINTENANCE, kind="device.fault", source="AHU-3", fault="unreadable"), "raised"),
    ]
    grouped = person_message(faults, "zh", base)
    assert grouped.subject.startswith("【维修】3 个新故障 · 海景花园: 设备故障 CH-1 温度过高; 设备离线 P-2")
    assert all(f"{base}/tech/alerts/{i}" in grouped.text for i in (1, 2, 3))
    assert grouped.sms.startswith("3 个新故障·海景花园: ") and len(grouped.sms) <= 70
    assert person_message(faults, "en", base).subject.startswith("[Maintenance] 3 new faults · 海景花园")


def test_webhook_payload_times_are_utc() -> None:
    view = _view(acknowledged_at=at(14, 5))
    payload = webhook_payload(view, "acknowledged", 1, "https://gh.example.cn", "77")
    assert payload["raised_at"] == (at(14, 3) - timedelta(0)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert payload["raised_at"] == "2026-03-10T06:03:00Z"
    assert payload["acknowledged_at"] == "2026-03-10T06:05:00Z" and payload["resolved_at"] is None
    assert payload["link"] == "https://gh.example.cn/tech/alerts/42"
    assert {payload["alert_id"], payload["reason"], payload["delivery_id"]} == {42, "acknowledged", "77"}


def test_quiet_hours_ending_in_a_spring_forward_gap_end_at_the_jump() -> None:
    from datetime import UTC, datetime, time

    from cloud.notify.quiet import quiet_end
    from cloud.oncall.recipients import QuietHours

    quiet = QuietHours(time(22, 0), time(2, 30), "Europe/Berlin")
    # 29 March 2026, 01:00 in Berlin (00:00 UTC): at 02:00 the clocks jump to 03:00, so 02:30 never
    # shows; the quiet hours are over at the jump (01:00 UTC), not an hour later.
    jump = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert quiet_end(quiet, datetime(2026, 3, 29, 0, 0, tzinfo=UTC)) == jump
    # 25 October 2026: 02:30 shows twice; from 01:00 (CEST) the end is the first 02:30 (00:30 UTC).
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert quiet_end(quiet, datetime(2026, 10, 24, 23, 0, tzinfo=UTC)) == first
