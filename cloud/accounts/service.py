"""Signing in and out: staff (password, then the TOTP code if they enrolled one) and residents.

These functions know nothing of HTTP: the API (``endpoints``) and the console's login pages both
call them and put the answer in a cookie their own way. Each owns its transaction, because a
failed attempt must still be counted (and committed) before the error is raised.

A staff sign-in with TOTP enabled opens a session with ``second_factor_pending``: it can do
nothing (``authn`` refuses it) but finish with ``finish_totp``, which replaces it with a fresh one.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts import logins
from cloud.accounts.authn import CsrfFailed
from cloud.accounts.lockout import (
    BadCredentials,
    WrongCode,
    clear_failures,
    count_failure,
    is_locked,
    locked_error,
)
from cloud.accounts.models import ResidentAccount, User
from cloud.accounts.passwords import (
    Checked,
    check_policy,
    dummy_verify,
    hash_password,
    normalised_setup_code,
    verify_password,
)
from cloud.accounts.sessions import end_session, find_session, open_session, sweep_expired
from cloud.accounts.totp import matching_step
from cloud.config import ConsoleConfig
from cloud.db import SessionFactory
from cloud.kit.errors import CloudError, InvalidInput, Unauthorized

WRONG_PASSWORD = "wrong username or password"
WRONG_RESIDENT_PASSWORD = "wrong phone number, email or password"


@dataclass(frozen=True)
class SignedIn:
    """A new session: ``cookie`` goes to the browser (``gh_session``), ``csrf_token`` to the page."""

    cookie: str
    csrf_token: str
    expires_at: datetime
    second_factor_required: bool
    user: User | None = None
    resident: ResidentAccount | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def session_lifetime(policy: ConsoleConfig) -> timedelta:
    return timedelta(hours=policy.session_hours)


async def sign_in(
    sessions: SessionFactory,
    policy: ConsoleConfig,
    username: str,
    password: str,
    *,
    ip: str = "",
    user_agent: str = "",
    replacing: str | None = None,
) -> SignedIn:
    """Check a staff member's password and open a session (pending its second factor if the user
    has TOTP on). ``replacing``: the cookie the browser still had, whose session ends here.
    BadCredentials (401) or AccountLocked (423)."""
    name = logins.username_or_none(username)
    found = None
    if name is not None:
        async with sessions() as session:
            found = await session.scalar(select(User.id).where(User.username == name))
    verdict = await _check_secret(sessions, User, found, lambda u: u.password_hash, password)
    now = _now()
    failure: CloudError
    async with sessions() as session, session.begin():
        # Read again for the write: the count or the lock may have moved while the hash ran.
        user = await session.get(User, found) if found is not None else None
        if user is None or verdict.refused:
            failure = BadCredentials(WRONG_PASSWORD)
        elif is_locked(user, now):
            failure = locked_error(user.locked_until)
        elif verdict.checked.ok:
            if verdict.checked.rehashed:
                user.password_hash = verdict.checked.rehashed
            pending = user.totp_enabled
            if not pending:
                # With a second factor owed, the count stands until the code is right too: else
                # one who knows the password could start over for every few guesses at the code.
                clear_failures(user)
                user.last_login_at = now
            await sweep_expired(session, now)
            if replacing:
                await end_session(session, replacing)
            new = await open_session(
                session,
                company_id=user.company_id,
                now=now,
                lifetime=session_lifetime(policy),
                user_id=user.id,
                second_factor_pending=pending,
                ip=ip,
                user_agent=user_agent,
            )
            return SignedIn(new.cookie, new.csrf_token, new.expires_at, pending, user=user)
        else:
            locked_until = await count_failure(session, user, policy, now, ip=ip)
            failure = locked_error(locked_until) if locked_until else BadCredentials(WRONG_PASSWORD)
    raise failure


@dataclass(frozen=True)
class _Verdict:
    checked: Checked
    refused: bool  # no such account, inactive, or no secret of that kind: answered as a wrong one


async def _check_secret(
    sessions: SessionFactory,
    table: type[User] | type[ResidentAccount],
    account_id: int | None,
    secret_of: Callable[[Any], str | None],
    given: str,
) -> _Verdict:
    """Verify ``given`` against the account's stored hash with no database connection held: the
    hash takes a fifth of a second on purpose, and a burst of guesses must not take every pooled
    connection from the rest of the cloud (ingest shares the pool). A locked account is not
    verified at all: its answer does not depend on the guess."""
    stored = None
    if account_id is not None:
        async with sessions() as session:
            account = cast(User | ResidentAccount | None, await session.get(table, account_id))
            if account is not None and account.active and not is_locked(account, _now()):
                stored = secret_of(account)
            elif account is not None and account.active:
                return _Verdict(Checked(False), refused=False)
    if stored is None:
        await dummy_verify(given)
        return _Verdict(Checked(False), refused=True)
    return _Verdict(await verify_password(stored, given), refused=False)


async def finish_totp(
    sessions: SessionFactory,
    policy: ConsoleConfig,
    cookie: str,
    code: str,
    *,
    csrf_token: str,
    ip: str = "",
    user_agent: str = "",
) -> SignedIn:
    """Finish a sign-in that is waiting for its TOTP code: the pending session is replaced by a
    full one (a new cookie). WrongCode (401; the pending session stays for another try),
    AccountLocked, Unauthorized (no sign-in waiting), CsrfFailed."""
    now = _now()
    failure: CloudError
    async with sessions() as session, session.begin():
        row = await find_session(session, cookie, now) if cookie else None
        user = await session.get(User, row.user_id) if row is not None and row.user_id is not None else None
        if row is None or not row.second_factor_pending or user is None:
            failure = Unauthorized("no sign-in is waiting for a code (it may have timed out): sign in again")
        elif not hmac.compare_digest(csrf_token.encode(), row.csrf_token.encode()):
            failure = CsrfFailed("the sign-in form is out of date (CSRF check failed): sign in again")
        elif not user.active or not user.totp_enabled or not user.totp_secret:
            await end_session(session, cookie)
            failure = Unauthorized("this account cannot sign in now: sign in again")
        elif is_locked(user, now):
            await end_session(session, cookie)
            failure = locked_error(user.locked_until)
        else:
            step = matching_step(user.totp_secret, code, now)
            if step is not None and await claim_step(session, user, step):
                clear_failures(user)
                user.last_login_at = now
                await end_session(session, cookie)
                new = await open_session(
                    session,
                    company_id=user.company_id,
                    now=now,
                    lifetime=session_lifetime(policy),
                    user_id=user.id,
                    ip=ip,
                    user_agent=user_agent,
                )
                return SignedIn(new.cookie, new.csrf_token, new.expires_at, False, user=user)
            locked_until = await count_failure(session, user, policy, now, ip=ip)
            if locked_until:
                await end_session(session, cookie)
                failure = locked_error(locked_until)
            else:
                failure = WrongCode(
                    "code: wrong or already used; enter the code your authenticator app shows now"
                )
    raise failure


async def claim_step(session: AsyncSession, user: User, step: int) -> bool:
    """Mark ``step`` used, if no code of it or a later step was used before (one UPDATE: two
    requests with the same code cannot both win)."""
    result = await session.execute(
        update(User)
        .where(User.id == user.id, User.totp_last_step < step)
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    user.totp_last_step = step
    return True


async def sign_out(sessions: SessionFactory, cookie: str, *, csrf_token: str) -> None:
    """End the session the cookie stands for. Signing out is a state change like any other: the
    CSRF token must match (another site must not be able to sign people out). Nothing to do for
    an unknown or expired cookie."""
    async with sessions() as session, session.begin():
        row = await find_session(session, cookie, _now()) if cookie else None
        if row is None:
            return
        if not hmac.compare_digest(csrf_token.encode(), row.csrf_token.encode()):
            raise CsrfFailed("the page is out of date (CSRF check failed): reload it and sign out again")
        await end_session(session, cookie)


async def resident_sign_in(
    sessions: SessionFactory,
    policy: ConsoleConfig,
    login: str,
    *,
    password: str | None = None,
    setup_code: str | None = None,
    new_password: str | None = None,
    ip: str = "",
    user_agent: str = "",
    replacing: str | None = None,
) -> SignedIn:
    """Sign a resident in with their password, or (first time) with the one-time set-up code the
    office gave them and the password they choose (``new_password``). Same lockout as staff."""
    if (password is None) == (setup_code is None):
        raise InvalidInput("give either password or code (the one-time set-up code), not both")
    if setup_code is not None:
        if not new_password:
            raise InvalidInput("new_password: choose a password to sign in with from now on")
        check_policy(new_password, field="new_password")
    secret = password if password is not None else normalised_setup_code(setup_code or "")
    normalised = logins.resident_login_or_none(login)
    found = None
    if normalised:
        async with sessions() as session:
            found = await session.scalar(
                select(ResidentAccount.id).where(ResidentAccount.login == normalised)
            )
    verdict = await _check_secret(
        sessions, ResidentAccount, found, lambda a: _resident_secret(a, setup_code is not None), secret
    )
    # Hashed only for a good code: a wrong guess costs the guesser, not us, one hash.
    ok_with_code = verdict.checked.ok and setup_code is not None and new_password
    new_hash = await hash_password(new_password) if ok_with_code and new_password else None
    now = _now()
    failure: CloudError
    async with sessions() as session, session.begin():
        account = await session.get(ResidentAccount, found) if found is not None else None
        if account is None or verdict.refused:
            failure = BadCredentials(WRONG_RESIDENT_PASSWORD)
        elif is_locked(account, now):
            failure = locked_error(account.locked_until)
        elif verdict.checked.ok:
            clear_failures(account)
            if new_hash is not None:
                account.password_hash = new_hash
                account.setup_code_hash = None
                account.setup_code_expires_at = None
            elif verdict.checked.rehashed:
                account.password_hash = verdict.checked.rehashed
            account.last_login_at = now
            await sweep_expired(session, now)
            if replacing:
                await end_session(session, replacing)
            new = await open_session(
                session,
                company_id=account.company_id,
                now=now,
                lifetime=session_lifetime(policy),
                resident_id=account.id,
                ip=ip,
                user_agent=user_agent,
            )
            return SignedIn(new.cookie, new.csrf_token, new.expires_at, False, resident=account)
        else:
            locked_until = await count_failure(session, account, policy, now, ip=ip)
            failure = locked_error(locked_until) if locked_until else BadCredentials(WRONG_RESIDENT_PASSWORD)
    raise failure


def _resident_secret(account: ResidentAccount, by_setup_code: bool) -> str | None:
    """The hash to check: the password's, or the set-up code's while it is good."""
    if not by_setup_code:
        return account.password_hash
    expires = account.setup_code_expires_at
    return account.setup_code_hash if expires is not None and expires > _now() else None
