"""The inbox: where notices land when there is no real mail server or SMS company yet.

A local SMTP server (aiosmtpd) and an HTTP endpoint that plays the SMS provider (``POST /sms``)
and a webhook receiver (``POST /webhook``), checking each request's signature the way a real
receiver must. Every message is printed as the phone or mailbox would show it and appended to a
JSON-lines file. ``gatehouse demo`` runs one, so a newcomer sees the on-call technician's text
message arrive when the simulated chiller fails; installers point a site's ``[notify]`` at it to
rehearse escalation before the real accounts exist; the system tests and ``bench/alerts.py`` use it
as the real peer at the other end of each channel.

A message seen again with the same Message-ID or Idempotency-Key (a retry after a dispatcher died
mid-send) is recorded with ``duplicate: true`` and not printed again, as a real provider drops it.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cloud.notify.signing import sign, signatures_match

log = logging.getLogger(__name__)
MAX_SKEW_S = 300


@dataclass
class Inbox:
    """What arrived, in order. Thread-safe: the SMTP server runs on a thread of its own."""

    sms_secret: str = ""
    webhook_secret: str = ""
    log_path: Path | None = None
    out: TextIO | None = None  # where to print each message (None: quiet)
    messages: list[dict[str, Any]] = field(default_factory=list)
    _keys: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, channel: str, key: str, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            duplicate = bool(key) and (channel, key) in self._keys
            if key:
                self._keys.add((channel, key))
            entry = {
                "channel": channel,
                "key": key,
                "received_at": time.time(),
                "duplicate": duplicate,
                **message,
            }
            self.messages.append(entry)
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        if self.out is not None and not duplicate:
            print(_one_line(entry), file=self.out, flush=True)
        return entry

    def unique(self, channel: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                m
                for m in self.messages
                if not m["duplicate"] and (channel is None or m["channel"] == channel)
            ]


def _one_line(m: dict[str, Any]) -> str:
    if m["channel"] == "email":
        return f"[inbox] email → {m['to']}: {m['subject']}"
    if m["channel"] == "sms":
        return f"[inbox] SMS → {m['to']}: {m['text']}"
    b = m.get("body", {})
    what = f"{b.get('source')} {b.get('fault')} ({b.get('state')})"
    return f"[inbox] webhook {b.get('reason')}: alert #{b.get('alert_id')} {what}"


class _MailHandler:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        self.inbox.record(
            "email",
            str(message.get("Message-ID", "")),
            {
                "to": ", ".join(envelope.rcpt_tos),
                "from": envelope.mail_from,
                "subject": str(message.get("Subject", "")),
                "text": body.get_content() if body is not None else "",  # type: ignore[union-attr]
            },
        )
        return "250 OK"


def inbox_app(inbox: Inbox) -> FastAPI:
    app = FastAPI(title="Gatehouse inbox", docs_url=None, redoc_url=None, openapi_url=None)

    def checked(request: Request, body: bytes, secret: str, header: str) -> str | None:
        if not secret:
            return None
        timestamp = request.headers.get("X-Gatehouse-Timestamp", "")
        given = request.headers.get(header, "").removeprefix("sha256=")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW_S:
            return "X-Gatehouse-Timestamp missing or too far from now"
        if not signatures_match(sign(secret, timestamp, body), given):
            return f"{header} does not match the body"
        return None

    @app.post("/sms")
    async def sms(request: Request) -> JSONResponse:
        body = await request.body()
        problem = checked(request, body, inbox.sms_secret, "X-Gatehouse-Signature")
        if problem:
            return JSONResponse({"error": problem}, status_code=401)
        data = json.loads(body)
        key = request.headers.get("Idempotency-Key", "")
        entry = inbox.record(
            "sms", key, {"to": data.get("to", ""), "text": data.get("text", ""), "id": data.get("id")}
        )
        return JSONResponse({"id": f"inbox-sms-{len(inbox.messages)}", "duplicate": entry["duplicate"]})

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        problem = checked(request, body, inbox.webhook_secret, "X-Gatehouse-Signature")
        if problem:
            return JSONResponse({"error": problem}, status_code=401)
        key = request.headers.get("X-Gatehouse-Delivery", "")
        inbox.record("webhook", key, {"body": json.loads(body)})
        return JSONResponse({"ok": True})

    return app


class InboxServer:
    """Both servers on loopback; ``start()`` returns once both listen."""

    def __init__(self, inbox: Inbox, smtp_port: int, http_port: int, host: str = "127.0.0.1") -> None:
        self.inbox = inbox
        self.host = host
        self.smtp_port = smtp_port
        self.http_port = http_port
        self._smtp = Controller(_MailHandler(inbox), hostname=host, port=smtp_port)
        self._http = uvicorn.Server(
            uvicorn.Config(inbox_app(inbox), host=host, port=http_port, log_config=None, lifespan="off")
        )
        self._thread: threading.Thread | None = None

    @property
    def sms_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/sms"

    @property
    def webhook_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/webhook"

    def start(self) -> None:
        self._smtp.start()
        self._thread = threading.Thread(target=self._http.run, name="inbox-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._http.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"inbox: cannot listen on {self.host}:{self.http_port}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._http.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._smtp.stop()


def run_inbox(smtp_port: int, http_port: int, sms_secret: str, webhook_secret: str, log_path: str) -> None:
    """``gatehouse cloud inbox``: run until interrupted, printing each message."""
    # Its own [inbox] lines say what arrived; the servers' connection chatter would drown them.
    for name in ("mail.log", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    inbox = Inbox(sms_secret, webhook_secret, Path(log_path) if log_path else None, out=sys.stdout)
    server = InboxServer(inbox, smtp_port, http_port)
    server.start()
    print(
        f"[inbox] SMTP on 127.0.0.1:{smtp_port}, SMS at {server.sms_url}, webhooks at {server.webhook_url}",
        flush=True,
    )
    try:
        asyncio.run(_forever())
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


async def _forever() -> None:
    await asyncio.Event().wait()
