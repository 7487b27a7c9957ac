"""One's own account: who am I, change my password, turn my second factor on and off.

Enrolling TOTP takes two steps so that nobody ends up locked out by a secret their phone never
stored: ``begin_totp`` makes a secret (kept, not yet enforced) and ``confirm_totp`` turns it on
once a code made from it is given. Turning it off needs a current code too: a borrowed session
alone cannot remove the second factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.lockout import count_failure, is_locked, locked_error
from cloud.accounts.models import ResidentAccount, RoleGrant, User
from cloud.accounts.passwords import Checked, check_policy, hash_password, verify_password
from cloud.accounts.permissions import Forbidden, Principal
from cloud.accounts.service import claim_step
from cloud.accounts.sessions import end_resident_sessions, end_user_sessions
from cloud.accounts.totp import matching_step, new_secret, provisioning_uri
from cloud.audit.chain import record
from cloud.config import ConsoleConfig
from cloud.db import SessionFactory
from cloud.kit.errors import CloudError, Conflict, InvalidInput, NotFound
from cloud.property.models import Company


# 422, not 401: the session is fine, what was typed is not (and a console page must not take a
# 401 for "signed out").
class WrongPassword(InvalidInput):
    code = "wrong_password"


class WrongTotpCode(InvalidInput):
    code = "wrong_code"


@dataclass(frozen=True)
class Me:
    principal: Principal
    user: User | None
    company: Company | None
    roles: list[RoleGrant]


@dataclass(frozen=True)
class TotpEnrolment:
    secret: str
    otpauth_uri: str


def _now() -> datetime:
    return datetime.now(UTC)


async def whoami(session: AsyncSession, principal: Principal) -> Me:
    company = await session.get(Company, principal.company_id) if principal.company_id is not None else None
    if principal.kind != "user" or principal.id is None:
        return Me(principal, None, company, [])
    user = await session.get(User, principal.id)
    roles = list(
        await session.scalars(
            select(RoleGrant).where(RoleGrant.user_id == principal.id).order_by(RoleGrant.id)
        )
    )
    return Me(principal, user, company, roles)


class NotAUser(Conflict):
    """An API token or the platform asked about a password or second factor: it may use /me, but
    has neither (409, not 403: nothing is being refused that another permission would allow)."""

    code = "not_a_user"


async def _own_user(session: AsyncSession, principal: Principal) -> User:
    if principal.kind != "user" or principal.id is None:
        raise NotAUser("only a signed-in user has a password and a second factor, not an API token")
    user = await session.get(User, principal.id)
    if user is None:
        raise NotFound("your account no longer exists")
    return user


async def change_password(
    sessions: SessionFactory,
    policy: ConsoleConfig,
    principal: Principal,
    old_password: str,
    new_password: str,
    *,
    ip: str = "",
) -> None:
    """Change one's own password, given the current one. A wrong current password counts toward
    the lockout (a borrowed session must not be a way to guess it). Other sessions end."""
    async with sessions() as session:
        user = await _own_user(session, principal)
    check_policy(new_password, field="new_password", username=user.username)
    await _replace_password(sessions, policy, principal, user, old_password, new_password, ip=ip)


async def change_resident_password(
    sessions: SessionFactory,
    policy: ConsoleConfig,
    principal: Principal,
    old_password: str,
    new_password: str,
    *,
    ip: str = "",
) -> None:
    check_policy(new_password, field="new_password")
    async with sessions() as session:
        account = await session.get(ResidentAccount, principal.id) if principal.kind == "resident" else None
    if account is None:
        raise Forbidden("only a signed-in resident can change a resident's password")
    await _replace_password(sessions, policy, principal, account, old_password, new_password, ip=ip)


async def _replace_password(
    sessions: SessionFactory,
    policy: ConsoleConfig,
    principal: Principal,
    account: User | ResidentAccount,
    old_password: str,
    new_password: str,
    *,
    ip: str,
) -> None:
    """Check the old password and store the new one; the hashing runs with no connection held."""
    if is_locked(account, _now()):
        raise locked_error(account.locked_until)
    stored = account.password_hash
    checked = await verify_password(stored, old_password) if stored else Checked(False)
    new_hash = await hash_password(new_password) if checked.ok else None
    table = type(account)
    kind = "user" if isinstance(account, User) else "resident"
    failure: CloudError
    async with sessions() as session, session.begin():
        current = cast(User | ResidentAccount | None, await session.get(table, account.id))
        if current is None:
            raise NotFound("your account no longer exists")
        if new_hash is not None:
            current.password_hash = new_hash
            current.failed_logins = 0
            if isinstance(current, User):
                await end_user_sessions(session, current.id, keep=principal.session_hash)
            else:
                await end_resident_sessions(session, current.id, keep=principal.session_hash)
            await record(session, principal, f"{kind}.password.change", kind, current.id, ip=ip)
            return
        locked_until = await count_failure(session, current, policy, _now(), ip=ip)
        failure = (
            locked_error(locked_until) if locked_until else WrongPassword("old_password: not your password")
        )
    raise failure


async def begin_totp(sessions: SessionFactory, principal: Principal) -> TotpEnrolment:
    """A new secret for the user's authenticator app; not enforced until confirmed. Conflict if
    TOTP is on already (turn it off first, with a code)."""
    async with sessions() as session, session.begin():
        user = await _own_user(session, principal)
        if user.totp_enabled:
            raise Conflict("two-factor sign-in is on already: turn it off first to enrol a new phone")
        user.totp_secret = new_secret()
        return TotpEnrolment(user.totp_secret, provisioning_uri(user.totp_secret, user.username))


async def confirm_totp(
    sessions: SessionFactory, policy: ConsoleConfig, principal: Principal, code: str, *, ip: str = ""
) -> None:
    """Turn TOTP on, given a code from the secret ``begin_totp`` made."""
    async with sessions() as session, session.begin():
        user = await _own_user(session, principal)
        if user.totp_enabled:
            raise Conflict("two-factor sign-in is on already")
        if not user.totp_secret:
            raise Conflict("start the enrolment first (POST /api/v1/me/totp)")
        secret = user.totp_secret
    await _spend_code(sessions, policy, principal, secret, code, ip=ip)
    async with sessions() as session, session.begin():
        user = await _own_user(session, principal)
        user.totp_enabled = True
        await record(
            session, principal, "user.totp.enable", "user", user.id, after={"totp_enabled": True}, ip=ip
        )


async def disable_totp(
    sessions: SessionFactory, policy: ConsoleConfig, principal: Principal, code: str, *, ip: str = ""
) -> None:
    async with sessions() as session, session.begin():
        user = await _own_user(session, principal)
        if not user.totp_enabled or not user.totp_secret:
            raise Conflict("two-factor sign-in is off already")
        secret = user.totp_secret
    await _spend_code(sessions, policy, principal, secret, code, ip=ip)
    async with sessions() as session, session.begin():
        user = await _own_user(session, principal)
        user.totp_enabled = False
        user.totp_secret = None
        await record(
            session, principal, "user.totp.disable", "user", user.id, after={"totp_enabled": False}, ip=ip
        )


async def _spend_code(
    sessions: SessionFactory, policy: ConsoleConfig, principal: Principal, secret: str, code: str, *, ip: str
) -> None:
    """Accept ``code`` once (as at sign-in), or count a failure toward the lockout and raise."""
    now = _now()
    failure: CloudError
    async with sessions() as session, session.begin():
        user = await _own_user(session, principal)
        if is_locked(user, now):
            raise locked_error(user.locked_until)
        step = matching_step(secret, code, now)
        if step is not None and await claim_step(session, user, step):
            user.failed_logins = 0
            return
        locked_until = await count_failure(session, user, policy, now, ip=ip)
        failure = (
            locked_error(locked_until)
            if locked_until
            else WrongTotpCode("code: wrong or already used; enter the code your authenticator app shows now")
        )
    raise failure
