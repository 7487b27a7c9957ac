"""The session cookie as the browser gets it, for the API and the console's pages alike.

- ``HttpOnly``: page scripts cannot read it (an injected script cannot carry it off);
- ``SameSite=Lax``: other sites' forms and scripts do not send it (links still do, so following a
  link into the console keeps one signed in); the CSRF token covers the rest;
- ``Secure`` unless ``[console] secure_cookies = false``: sent over HTTPS only. Chromium and
  Firefox count http://localhost and http://127.0.0.1 as secure, so a local console works with it;
- ``Max-Age`` the session's own lifetime: the browser drops it when the server would refuse it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.responses import Response

from cloud.accounts.authn import SESSION_COOKIE
from cloud.config import ConsoleConfig


def set_session_cookie(response: Response, cookie: str, expires_at: datetime, policy: ConsoleConfig) -> None:
    max_age = max(0, int((expires_at - datetime.now(UTC)).total_seconds()))
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=max_age,
        path="/",
        secure=policy.secure_cookies,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, policy: ConsoleConfig) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=policy.secure_cookies, httponly=True, samesite="lax"
    )
