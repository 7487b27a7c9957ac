"""The second factor: time-based one-time codes (RFC 6238, 30 s steps, 6 digits), as every
authenticator app makes them.

A code is accepted for the step before and after the current one (``VALID_WINDOW``: phones'
clocks drift), and once only: the caller keeps the last step used (``User.totp_last_step``) and
refuses a code of that step or an earlier one, so a code read over a shoulder cannot be replayed.
"""

from __future__ import annotations

import hmac
import re
from datetime import datetime

import pyotp

ISSUER = "Gatehouse"
VALID_WINDOW = 1
_CODE = re.compile(r"^\d{6}$")


def new_secret() -> str:
    return pyotp.random_base32()  # 160 bits, as RFC 4226 recommends


def provisioning_uri(secret: str, account: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (usually from a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def normalised(code: str) -> str:
    """The code as typed, without the spaces and dashes apps show in the middle."""
    return re.sub(r"[\s-]", "", code)


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step whose code ``code`` is (within the window around ``now``), or None."""
    code = normalised(code)
    if not _CODE.match(code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    found = None
    # Every candidate is compared (in constant time) so the time taken does not say which matched.
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def code_at(secret: str, when: datetime) -> str:
    """The code an authenticator app shows at ``when`` (tests and the CLI use it)."""
    return pyotp.TOTP(secret).at(when)
