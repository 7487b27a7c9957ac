"""A real Chromium against the real app on a loopback port: the session cookie is Secure by
default, and Chromium keeps and sends it on plain http://127.0.0.1 and http://localhost (both
count as secure origins), HttpOnly keeps it from page scripts, and the CSRF token is needed."""

import secrets
from typing import Any

import pytest

from cloud.accounts.authn import SESSION_COOKIE
from cloud.accounts.passwords import hash_password
from cloud.accounts.permissions import Role
from cloud.db import create_engine, session_factory
from tests.cloud.browser import LiveServer, chromium, live_server  # noqa: F401  (pytest fixtures)
from tests.cloud.tenancy import make_company, make_user

PASSWORD = "Harbour-lights-42"

SIGN_IN_AND_CHANGE = """
async ([username, password]) => {
  const signIn = await fetch('/api/v1/session', {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({username, password}),
  });
  const body = await signIn.json();
  const me = await fetch('/api/v1/me');
  const forged = await fetch('/api/v1/me/totp', {method: 'POST'});
  const honest = await fetch('/api/v1/me/totp', {method: 'POST', headers: {'X-CSRF-Token': body.csrf_token}});
  return {
    signIn: signIn.status,
    me: me.status,
    username: me.ok ? (await me.json()).username : null,
    forged: forged.status,
    honest: honest.status,
    scriptSees: document.cookie,
  };
}
"""


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_chromium_keeps_the_secure_session_cookie_on_loopback(
    live_server: LiveServer,  # noqa: F811
    chromium: Any,  # noqa: F811
    host: str,
) -> None:
    assert live_server.config.console.secure_cookies is True
    engine = create_engine(live_server.database_url)
    try:
        sessions = session_factory(engine)
        tenant = await make_company(sessions)
        async with sessions() as session:
            user = await make_user(
                session,
                tenant.company_id,
                f"staff-{secrets.token_hex(4)}",
                [(Role.COMPANY_ADMIN, None)],
                password_hash=await hash_password(PASSWORD),
            )
            await session.commit()
    finally:
        await engine.dispose()

    context = await chromium.new_context()
    try:
        page = await context.new_page()
        origin = f"http://{host}:{live_server.port}"
        await page.goto(f"{origin}/healthz")
        seen = await page.evaluate(SIGN_IN_AND_CHANGE, [user.username, PASSWORD])
        assert seen == {
            "signIn": 200,
            "me": 200,
            "username": user.username,
            "forged": 403,
            "honest": 200,
            "scriptSees": "",
        }
        (cookie,) = [c for c in await context.cookies(origin) if c["name"] == SESSION_COOKIE]
        assert cookie["secure"] is True
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Lax"
        assert cookie["path"] == "/"
    finally:
        await context.close()
