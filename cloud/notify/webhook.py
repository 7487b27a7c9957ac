"""Webhooks: the alert as JSON, POSTed to a company's URL and signed with its secret.

Headers: ``X-Gatehouse-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``,
``X-Gatehouse-Timestamp`` (Unix seconds) and ``X-Gatehouse-Delivery`` (the notification id: the
same on every attempt, so a receiver drops the copy a retry after a crash sends again). A receiver
checks a request with ``verify_signature``; a stale timestamp is refused, so a captured request
cannot be replayed later.
"""

import time

import httpx
import orjson

from cloud.notify.errors import SendFailed, http_failure
from cloud.notify.signing import sign, signatures_match

SIGNATURE_PREFIX = "sha256="
DEFAULT_TOLERANCE_S = 300.0


def signature_header(secret: str, timestamp: str, body: bytes) -> str:
    return SIGNATURE_PREFIX + sign(secret, timestamp, body)


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    header: str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True if ``header`` (X-Gatehouse-Signature) signs ``body`` at ``timestamp``
    (X-Gatehouse-Timestamp) under ``secret`` and the timestamp is within ``tolerance_s`` of
    ``now`` (default: the clock)."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    if not header.startswith(SIGNATURE_PREFIX):
        return False
    return signatures_match(sign(secret, timestamp, body), header[len(SIGNATURE_PREFIX) :])


class WebhookSender:
    def __init__(self, timeout_s: float, client: httpx.AsyncClient | None = None) -> None:
        self.timeout_s = timeout_s
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._own_client = client is None

    async def send(self, url: str, secret: str, payload: dict[str, object], delivery_id: str) -> str:
        """POST the payload; returns the delivery id. Raises SendFailed."""
        body = orjson.dumps(payload)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Gatehouse-Webhook/1",
            "X-Gatehouse-Timestamp": timestamp,
            "X-Gatehouse-Signature": signature_header(secret, timestamp, body),
            "X-Gatehouse-Delivery": delivery_id,
        }
        try:
            reply = await self._client.post(url, content=body, headers=headers, timeout=self.timeout_s)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            raise SendFailed(f"webhook: {url}: {e}", permanent=True) from None
        except httpx.HTTPError as e:
            raise SendFailed(f"webhook: {url}: {type(e).__name__}: {e}") from None
        if not 200 <= reply.status_code < 300:
            raise http_failure("webhook", reply.status_code, reply.text)
        return delivery_id

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()
