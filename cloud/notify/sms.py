"""SMS through a provider: an interface, and the HTTP provider the cloud ships.

The HTTP provider POSTs ``{"to", "text", "sender", "id"}`` as JSON, signed: ``X-Gatehouse-Key``
(which key), ``X-Gatehouse-Timestamp`` (Unix seconds) and ``X-Gatehouse-Signature`` (hex
HMAC-SHA256 of ``f"{timestamp}.{body}"``), with an ``Idempotency-Key`` that is the same on every
attempt of one message, so a provider drops the copy a retry after a crash sends again. A gateway
to a particular SMS company (Aliyun, Tencent Cloud, Twilio) is a small relay speaking this.
"""

import time
from typing import Protocol

import httpx
import orjson

from cloud.config import SmsConfig
from cloud.notify.errors import SendFailed, http_failure
from cloud.notify.signing import sign

NOT_CONFIGURED = "sms: no SMS provider configured ([notify.sms] url)"


class SmsProvider(Protocol):
    @property
    def enabled(self) -> bool: ...

    async def send(self, to: str, text: str, idempotency_key: str) -> str:
        """Hand the text over; returns the provider's message id. Raises SendFailed."""
        ...

    async def aclose(self) -> None: ...


class HttpSmsProvider:
    def __init__(self, config: SmsConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client or httpx.AsyncClient(timeout=config.timeout_s, follow_redirects=False)
        self._own_client = client is None

    @property
    def enabled(self) -> bool:
        return bool(self.config.url)

    async def send(self, to: str, text: str, idempotency_key: str) -> str:
        c = self.config
        if not self.enabled:
            raise SendFailed(NOT_CONFIGURED, permanent=True)
        body = orjson.dumps({"to": to, "text": text, "sender": c.sender, "id": idempotency_key})
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Gatehouse-Key": c.key_id,
            "X-Gatehouse-Timestamp": timestamp,
            "X-Gatehouse-Signature": sign(c.secret, timestamp, body),
            "Idempotency-Key": idempotency_key,
        }
        try:
            reply = await self._client.post(c.url, content=body, headers=headers, timeout=c.timeout_s)
        except httpx.HTTPError as e:  # connection refused, reset, timed out
            raise SendFailed(f"sms: {c.url}: {type(e).__name__}: {e}") from None
        if not 200 <= reply.status_code < 300:
            raise http_failure("sms", reply.status_code, reply.text)
        return _provider_id(reply) or idempotency_key

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()


def _provider_id(reply: httpx.Response) -> str:
    try:
        doc = reply.json()
    except ValueError:
        return ""
    value = doc.get("id") if isinstance(doc, dict) else None
    return str(value) if value not in (None, "") else ""
