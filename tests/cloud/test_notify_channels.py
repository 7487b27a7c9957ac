"""The channels against real peers: an aiosmtpd server receives the emails (zh and en), a local
HTTP server plays the SMS provider and checks its signature, a webhook receiver checks with
verify_signature; and the dispatcher's record of it all."""

import hashlib
import hmac
import time

import pytest

from cloud.alerts.models import LIFE_SAFETY, MAINTENANCE, SENT
from cloud.db import create_engine, session_factory
from cloud.notify.dispatcher import Dispatcher
from cloud.notify.webhook import verify_signature
from tests.cloud.notify_support import (
    BASE_URL,
    SMS_KEY_ID,
    enqueue_for,
    http_server,
    make_alert,
    make_person,
    make_webhook,
    name_site,
    notifications,
    notify_config,
    running,
    sms_signature_ok,
    smtp_server,
    timeline,
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


async def test_a_smoke_alarm_reaches_email_sms_and_webhook(sqlite_url: str, sessions) -> None:  # type: ignore[no-untyped-def]
    tenant = await make_company(sessions)
    await name_site(sessions, tenant.site_ids[0], "海景花园")
    zh = await make_person(sessions, tenant, language="zh")
    en = await make_person(sessions, tenant, language="en", channels=("email",), phone="")
    secret = "whsec-test-1"
    async with smtp_server() as smtp, http_server("/sms") as provider, http_server("/hook") as receiver:
        hook = await make_webhook(sessions, tenant, receiver.url, tracks=[LIFE_SAFETY], secret=secret)
        config = notify_config(sqlite_url, smtp_port=smtp.port, sms_url=provider.url)
        alert = await make_alert(
            sessions, tenant, track=LIFE_SAFETY, kind="smoke.alarm", source="T1/3F/smoke-12", fault=""
        )
        async with running(Dispatcher(config, sessions)) as dispatcher:
            assert await enqueue_for(sessions, alert, [zh, en]) == 4
            dispatcher.wake()
            await until(lambda: len(smtp.snapshot()) == 2, "two emails")
            await until(lambda: len(provider.snapshot()) == 1, "one SMS")
            await until(lambda: len(receiver.snapshot()) == 1, "one webhook")

            async def all_sent() -> bool:
                return all(r.status == SENT for r in await notifications(sessions, alert.id))

            await until(all_sent, "every notice marked sent")

    rows = {(r.user_id, r.webhook_id, r.channel): r for r in await notifications(sessions, alert.id)}
    link = f"{BASE_URL}/tech/alerts/{alert.id}"

    by_to = {str(m["To"]): m for m in smtp.snapshot()}
    zh_mail, en_mail = by_to[zh.email], by_to[en.email]
    assert zh_mail["Subject"] == "【紧急】新告警: 烟感报警 T1/3F/smoke-12 · 海景花园"
    zh_body = zh_mail.get_body().get_content()  # type: ignore[union-attr]
    assert "设备: T1/3F/smoke-12" in zh_body and link in zh_body
    assert (
        zh_mail["Message-ID"]
        == f"<gatehouse-notification-{rows[(zh.user_id, None, 'email')].id}@gh.example.cn>"
    )
    assert en_mail["Subject"] == "[URGENT] New alert: Smoke alarm T1/3F/smoke-12 · 海景花园"
    en_body = en_mail.get_body().get_content()  # type: ignore[union-attr]
    assert "Device: T1/3F/smoke-12" in en_body and link in en_body
    assert (
        en_mail["Message-ID"]
        == f"<gatehouse-notification-{rows[(en.user_id, None, 'email')].id}@gh.example.cn>"
    )
    assert rows[(zh.user_id, None, "email")].message_id == zh_mail["Message-ID"]

    (sms,) = provider.snapshot()
    sms_row = rows[(zh.user_id, None, "sms")]
    assert sms_signature_ok(sms) and sms.headers["x-gatehouse-key"] == SMS_KEY_ID
    assert sms.headers["idempotency-key"] == f"gatehouse-notification-{sms_row.id}"
    doc = sms.json()
    assert (
        doc["to"] == zh.phone and doc["sender"] == "Gatehouse" and doc["id"] == sms.headers["idempotency-key"]
    )
    assert doc["text"].endswith(link) and "烟感报警" in doc["text"] and len(doc["text"]) <= 70
    assert sms_row.message_id.startswith("prov-")  # the provider's id from its answer

    (call,) = receiver.snapshot()
    ts, signature = call.headers["x-gatehouse-timestamp"], call.headers["x-gatehouse-signature"]
    assert verify_signature(secret, ts, call.body, signature)
    assert not verify_signature("another-secret", ts, call.body, signature)
    hook_row = rows[(None, hook.id, "webhook")]
    assert call.headers["x-gatehouse-delivery"] == str(hook_row.id)
    payload = call.json()
    assert (
        payload["alert_id"] == alert.id
        and payload["track"] == LIFE_SAFETY
        and payload["kind"] == "smoke.alarm"
    )
    assert payload["site"] == "海景花园" and payload["reason"] == "raised" and payload["link"] == link
    assert payload["raised_at"].endswith("Z")

    notified = await timeline(sessions, alert.id, "notified")
    assert len(notified) == 4
    details = {
        (d.detail.get("user_id"), d.detail.get("webhook_id"), d.detail["channel"]): d.detail for d in notified
    }
    assert details[(zh.user_id, None, "sms")] == {
        "user_id": zh.user_id,
        "name": zh.name,
        "channel": "sms",
        "address": zh.phone,
        "reason": "raised",
        "step": 0,
        "message_id": sms_row.message_id,
    }
    assert details[(None, hook.id, "webhook")]["name"] == hook.name


async def test_a_stalled_smtp_server_delays_neither_sms_nor_webhooks(sqlite_url: str, sessions) -> None:  # type: ignore[no-untyped-def]
    tenant = await make_company(sessions)
    person = await make_person(sessions, tenant)
    async with smtp_server() as smtp, http_server("/sms") as provider, http_server("/hook") as receiver:
        await make_webhook(sessions, tenant, receiver.url, tracks=[LIFE_SAFETY, MAINTENANCE])
        smtp.stall_on = lambda msg: True  # the first email gets no answer until released
        config = notify_config(sqlite_url, smtp_port=smtp.port, sms_url=provider.url)
        async with running(Dispatcher(config, sessions)) as dispatcher:
            fault = await make_alert(sessions, tenant)
            await enqueue_for(sessions, fault, [person])
            dispatcher.wake()
            await until(smtp.stalled.is_set, "the SMTP server stalling on the first email")
            smoke = await make_alert(sessions, tenant, track=LIFE_SAFETY, kind="smoke.alarm", fault="")
            await enqueue_for(sessions, smoke, [person])
            dispatcher.wake()
            await until(lambda: len(provider.snapshot()) == 2, "both SMS while the email hangs")
            await until(lambda: len(receiver.snapshot()) == 2, "both webhooks while the email hangs")
            # The smoke alarm's email is not queued behind the stalled maintenance email either.
            await until(lambda: len(smtp.snapshot()) == 2, "the life-safety email beside the stalled one")
            smtp.release.set()

            async def all_sent() -> bool:
                return all(r.status == SENT for r in await notifications(sessions))

            await until(all_sent, "every notice sent once the server answers")


def test_verify_signature_refuses_stale_tampered_and_malformed() -> None:
    secret, body = "s3cret", b'{"alert_id": 1}'
    ts = str(int(time.time()))
    header = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert verify_signature(secret, ts, body, header)
    assert not verify_signature(secret, ts, body + b" ", header)
    assert not verify_signature(secret, ts, body, header.removeprefix("sha256="))
    assert not verify_signature(secret, "yesterday", body, header)
    assert not verify_signature(secret, ts, body, header, tolerance_s=60, now=int(ts) + 61)
    assert verify_signature(secret, ts, body, header, tolerance_s=60, now=int(ts) + 59)
