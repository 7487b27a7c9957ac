"""HMAC-SHA256 request signatures, the same scheme for the SMS provider and webhooks: the hex
digest of ``f"{timestamp}.{body}"`` under the shared secret, the timestamp in Unix seconds."""

import hashlib
import hmac


def sign(secret: str, timestamp: str, body: bytes) -> str:
    message = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signatures_match(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("ascii", "replace"))
