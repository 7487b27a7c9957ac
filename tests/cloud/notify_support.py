"""Real peers and builders for the notification tests: an aiosmtpd server that records what it
receives (and can stall on one message), an HTTP server in a thread playing the SMS provider or a
webhook receiver, alerts and people written straight through the models."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import select

from cloud.accounts.models import User
from cloud.alerts.models import MAINTENANCE, OPEN, Alert, AlertTimeline, Notification, Webhook
from cloud.config import CloudConfig, DatabaseConfig, NotifyConfig, SmsConfig, SmtpConfig
from cloud.db import SessionFactory
from cloud.notify.dispatcher import Dispatcher
from cloud.notify.outbox import enqueue
from cloud.oncall.recipients import QuietHours, Recipient
from cloud.property.models import Site
from tests.cloud.tenancy import Tenant, make_user
from tests.support.ports import free_port

SMS_SECRET = "sms-test-secret"
SMS_KEY_ID = "gatehouse-test"
BASE_URL = "https://gh.example.cn"


# -- SMTP ----------------------------------------------------------------------------------------


class _SmtpHandler:
    def __init__(self, recorder: SmtpRecorder) -> None:
        self.recorder = recorder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        r = self.recorder
        with r.lock:
            r.messages.append(msg)
            r.envelopes.append(list(envelope.rcpt_tos))
            stall = r.stall_on is not None and r.stall_on(msg) and not r.stalled.is_set()
            if stall:
                r.stalled.set()
        if stall:
            # The message is in, but the answer waits: a client killed now never hears "250".
            await asyncio.to_thread(r.release.wait, 30)
        return "250 OK"


@dataclass
class SmtpRecorder:
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[list[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stall_on: Callable[[EmailMessage], bool] | None = None
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def snapshot(self) -> list[EmailMessage]:
        with self.lock:
            return list(self.messages)


@asynccontextmanager
async def smtp_server() -> AsyncIterator[SmtpRecorder]:
    recorder = SmtpRecorder(port=free_port())
    controller = Controller(_SmtpHandler(recorder), hostname="127.0.0.1", port=recorder.port)
    await asyncio.to_thread(controller.start)
    try:
        yield recorder
    finally:
        recorder.release.set()
        await asyncio.to_thread(controller.stop)


# -- HTTP (SMS provider, webhook receiver) -------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpRecorder:
    url: str
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The answer to each request: (status, JSON body); default 200 with a provider id.
    respond: Callable[[Request, int], tuple[int, dict[str, Any]]] | None = None

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)


def _handler_for(recorder: HttpRecorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            headers = {k.lower(): v for k, v in self.headers.items()}
            req = Request(self.path, headers, self.rfile.read(length), time.monotonic())
            with recorder.lock:
                recorder.requests.append(req)
                n = len(recorder.requests)
            status, doc = (
                recorder.respond(req, n)
                if recorder.respond
                else (200, {"id": f"prov-{secrets.token_hex(4)}"})
            )
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@asynccontextmanager
async def http_server(path: str = "/") -> AsyncIterator[HttpRecorder]:
    port = free_port()
    recorder = HttpRecorder(url=f"http://127.0.0.1:{port}{path}")
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(recorder))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="http-recorder", daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()


def sms_signature_ok(req: Request, secret: str = SMS_SECRET) -> bool:
    """The provider's check, written out here rather than borrowed from the code under test."""
    ts = req.headers["x-gatehouse-timestamp"]
    expected = hmac.new(secret.encode(), ts.encode() + b"." + req.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, req.headers["x-gatehouse-signature"])


# -- configuration -------------------------------------------------------------------------------


def notify_config(
    db_url: str,
    *,
    smtp_port: int | None = None,
    sms_url: str = "",
    smtp_timeout_s: float = 5.0,
    **notify: Any,
) -> CloudConfig:
    settings: dict[str, Any] = {
        "base_url": BASE_URL,
        "poll_s": 0.2,
        "retry_min_s": 0.05,
        "retry_max_s": 0.2,
        "smtp": SmtpConfig(
            host="127.0.0.1" if smtp_port else "",
            port=smtp_port or 25,
            from_address="alerts@gh.example.cn",
            timeout_s=smtp_timeout_s,
        ),
        "sms": SmsConfig(url=sms_url, key_id=SMS_KEY_ID, secret=SMS_SECRET, timeout_s=5.0)
        if sms_url
        else SmsConfig(),
    }
    settings.update(notify)
    return CloudConfig(database=DatabaseConfig(url=db_url), notify=NotifyConfig(**settings))


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 15)


# -- rows ----------------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


async def name_site(sessions: SessionFactory, site_id: int, name: str) -> None:
    async with sessions() as session, session.begin():
        site = await session.get(Site, site_id)
        assert site is not None
        site.name = name


async def make_person(
    sessions: SessionFactory,
    tenant: Tenant,
    *,
    language: str = "zh",
    channels: tuple[str, ...] = ("email", "sms"),
    quiet: QuietHours | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> Recipient:
    name = f"tech-{secrets.token_hex(3)}"
    async with sessions() as session, session.begin():
        user = await make_user(session, tenant.company_id, name)
        user.email = email if email is not None else f"{name}@example.cn"
        user.phone = phone if phone is not None else f"+86138{secrets.randbelow(10**8):08d}"
        user.language = language
    return Recipient(user.id, name, user.email, user.phone, language, channels, quiet)


async def make_alert(
    sessions: SessionFactory,
    tenant: Tenant,
    *,
    track: str = MAINTENANCE,
    site: int = 0,
    kind: str = "equipment.fault",
    source: str = "CH-1",
    fault: str = "high_temp",
    state: str = OPEN,
    details: dict[str, Any] | None = None,
) -> Alert:
    now = utcnow()
    async with sessions() as session, session.begin():
        alert = Alert(
            company_id=tenant.company_id,
            site_id=tenant.site_ids[site],
            gateway_id="gw-notify",
            track=track,
            key=f"gw-notify|{source}|{fault}|{secrets.token_hex(4)}",
            kind=kind,
            source=source,
            fault=fault,
            skill="hvac",
            severity="critical" if track != MAINTENANCE else "major",
            details=details or {},
            state=state,
            raised_at=now,
            first_event_at=now,
            last_event_at=now,
            escalation_from=now,
        )
        session.add(alert)
    return alert


async def make_webhook(
    sessions: SessionFactory,
    tenant: Tenant,
    url: str,
    *,
    tracks: list[str],
    site_id: int | None = None,
    active: bool = True,
    secret: str | None = None,
) -> Webhook:
    async with sessions() as session, session.begin():
        hook = Webhook(
            company_id=tenant.company_id,
            site_id=site_id,
            name=f"hook-{secrets.token_hex(3)}",
            url=url,
            secret=secret or secrets.token_urlsafe(24),
            tracks=tracks,
            active=active,
            created_at=utcnow(),
        )
        session.add(hook)
    return hook


async def notifications(sessions: SessionFactory, alert_id: int | None = None) -> list[Notification]:
    async with sessions() as session:
        q = select(Notification).order_by(Notification.id)
        if alert_id is not None:
            q = q.where(Notification.alert_id == alert_id)
        return list((await session.scalars(q)).all())


async def timeline(sessions: SessionFactory, alert_id: int, action: str | None = None) -> list[AlertTimeline]:
    async with sessions() as session:
        q = select(AlertTimeline).where(AlertTimeline.alert_id == alert_id).order_by(AlertTimeline.id)
        if action is not None:
            q = q.where(AlertTimeline.action == action)
        return list((await session.scalars(q)).all())


async def set_alert_state(sessions: SessionFactory, alert_id: int, state: str) -> None:
    async with sessions() as session, session.begin():
        alert = await session.get(Alert, alert_id)
        assert alert is not None
        alert.state = state
        if state != OPEN:
            alert.acknowledged_at = utcnow()


async def user_of(sessions: SessionFactory, user_id: int) -> User:
    async with sessions() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return user


async def enqueue_for(
    sessions: SessionFactory,
    alert: Alert,
    recipients: list[Recipient],
    *,
    reason: str = "raised",
    step: int = 0,
    now: datetime | None = None,
    repeat: int = 0,
) -> int:
    """The engine's way: enqueue in a transaction that holds the alert, then commit."""
    async with sessions() as session, session.begin():
        row = await session.get(Alert, alert.id)
        assert row is not None
        return await enqueue(
            session, row, recipients, reason=reason, step=step, now=now or utcnow(), repeat=repeat
        )
