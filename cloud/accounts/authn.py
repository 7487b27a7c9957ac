"""Who is asking: the request's principal, from its bearer token or its session cookie.

- ``Authorization: Bearer <token>``: the platform token (config ``api.token``), or an API token
  (looked up by its SHA-256; revoked or expired ones are refused);
- the ``gh_session`` cookie: a console or resident-portal session. A state-changing request
  (anything but GET, HEAD, OPTIONS) on a cookie session must carry the session's CSRF token in the
  ``X-CSRF-Token`` header or a ``csrf_token`` form field: a cookie is sent by the browser on its
  own, so without that check any other site could post in the user's name.

The principal is worked out once per request and kept on ``request.state``.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

from fastapi import Request
from sqlalchemy import select, update

from cloud.accounts.models import ApiToken, ResidentAccount, RoleGrant, SignInSession, User
from cloud.accounts.permissions import (
    PLATFORM,
    Forbidden,
    Principal,
    Role,
    grants_for_roles,
    grants_for_scopes,
)
from cloud.kit.errors import Unauthorized

SESSION_COOKIE = "gh_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A session's last_seen_at is written at most this often: a console polling every few seconds
# must not turn every read into a write.
TOUCH_EVERY = timedelta(minutes=1)


class CsrfFailed(Forbidden):
    code = "csrf_failed"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def current_principal(request: Request) -> Principal:
    """The request's principal; Unauthorized (401) if it has none."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    principal = await _resolve(request)
    request.state.principal = principal
    return principal


async def optional_principal(request: Request) -> Principal | None:
    """The principal if the request has one (the sign-in page uses this to skip itself)."""
    try:
        return await current_principal(request)
    except (Unauthorized, Forbidden):
        return None


async def _resolve(request: Request) -> Principal:
    authorization = request.headers.get("authorization", "")
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() == "bearer" and given:
        return await _from_bearer(request, given.strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        principal = await _from_session(request, cookie)
        if request.method not in SAFE_METHODS:
            await _check_csrf(request, principal)
        return principal
    raise Unauthorized("sign in, or send Authorization: Bearer <token>")


async def _from_bearer(request: Request, given: str) -> Principal:
    expected: str = request.app.state.api_token
    # Compared in constant time: the time a wrong token takes says nothing of the right one.
    if hmac.compare_digest(given.encode(), expected.encode()):
        return PLATFORM
    now = datetime.now(UTC)
    async with request.app.state.sessions() as session:
        token = await session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(given)))
        if token is None or token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
            raise Unauthorized("missing, wrong, revoked or expired API token")
        if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
            await session.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
            await session.commit()
    return Principal(
        kind="token",
        id=token.id,
        name=f"token {token.name}",
        company_id=token.company_id,
        grants=grants_for_scopes(token.scopes, token.site_ids),
    )


async def _from_session(request: Request, cookie: str) -> Principal:
    now = datetime.now(UTC)
    digest = token_hash(cookie)
    async with request.app.state.sessions() as session:
        row = await session.get(SignInSession, digest)
        if row is None or row.expires_at <= now:
            raise Unauthorized("your session has ended: sign in again")
        if row.second_factor_pending:
            raise Unauthorized("enter the code from your authenticator app to finish signing in")
        if now - row.last_seen_at > TOUCH_EVERY:
            await session.execute(
                update(SignInSession).where(SignInSession.token_hash == digest).values(last_seen_at=now)
            )
            await session.commit()
        if row.resident_id is not None:
            resident = await session.get(ResidentAccount, row.resident_id)
            if resident is None or not resident.active:
                raise Unauthorized("this account is disabled")
            return Principal(
                kind="resident",
                id=resident.id,
                name=resident.login,
                company_id=resident.company_id,
                csrf_token=row.csrf_token,
                session_hash=digest,
                person_id=resident.person_id,
            )
        user = await session.get(User, row.user_id) if row.user_id is not None else None
        if user is None or not user.active:
            raise Unauthorized("this account is disabled")
        grants = (
            await session.execute(
                select(RoleGrant.role, RoleGrant.site_id).where(RoleGrant.user_id == user.id)
            )
        ).all()
    return Principal(
        kind="user",
        id=user.id,
        name=user.display_name,
        company_id=user.company_id,
        grants=grants_for_roles((Role(r.role), r.site_id) for r in grants),
        language=user.language,
        csrf_token=row.csrf_token,
        session_hash=digest,
    )


async def _check_csrf(request: Request, principal: Principal) -> None:
    expected = principal.csrf_token or ""
    given = request.headers.get(CSRF_HEADER, "")
    if not given and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        # Reading the form here caches it on the request: the route reads the same parsed form.
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CsrfFailed(
            "the form is out of date or came from another site (CSRF check failed): reload the page"
        )
