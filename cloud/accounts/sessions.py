"""Sign-in sessions: the rows behind the ``gh_session`` cookie.

The cookie holds 256 random bits; the table holds their SHA-256 only, so a copy of the database
(a backup, a replica) signs nobody in. Every sign-in makes a new token (an attacker who planted a
cookie before sign-in gains nothing: no session fixation), and so does finishing the second
factor. Expired rows are swept at each sign-in rather than by a timer: the table stays small
without one more background task.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.authn import token_hash
from cloud.accounts.models import SignInSession

# Password accepted, code still owed: that half-open session lives only this long.
PENDING_LIFETIME = timedelta(minutes=5)
MAX_USER_AGENT = 300


@dataclass(frozen=True, slots=True)
class NewSession:
    cookie: str  # the gh_session value: shown to the browser once, kept only as a hash
    csrf_token: str
    expires_at: datetime


async def open_session(
    session: AsyncSession,
    *,
    company_id: int,
    now: datetime,
    lifetime: timedelta,
    user_id: int | None = None,
    resident_id: int | None = None,
    second_factor_pending: bool = False,
    ip: str = "",
    user_agent: str = "",
) -> NewSession:
    """Add a session row (in the caller's transaction) and return the cookie that stands for it."""
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = now + (PENDING_LIFETIME if second_factor_pending else lifetime)
    session.add(
        SignInSession(
            token_hash=token_hash(cookie),
            company_id=company_id,
            user_id=user_id,
            resident_id=resident_id,
            csrf_token=csrf,
            second_factor_pending=second_factor_pending,
            created_at=now,
            last_seen_at=now,
            expires_at=expires,
            ip=ip[:64],
            user_agent=user_agent[:MAX_USER_AGENT],
        )
    )
    await session.flush()
    return NewSession(cookie, csrf, expires)


async def find_session(session: AsyncSession, cookie: str, now: datetime) -> SignInSession | None:
    """The live session the cookie stands for, or None (unknown or expired)."""
    row = await session.get(SignInSession, token_hash(cookie))
    if row is None or row.expires_at <= now:
        return None
    return row


async def end_session(session: AsyncSession, cookie: str) -> None:
    await session.execute(delete(SignInSession).where(SignInSession.token_hash == token_hash(cookie)))


async def end_user_sessions(session: AsyncSession, user_id: int, *, keep: str | None = None) -> None:
    """End every session of the user (but the one whose hash is ``keep``): after a password
    change or reset, or when the account is deactivated."""
    stmt = delete(SignInSession).where(SignInSession.user_id == user_id)
    if keep is not None:
        stmt = stmt.where(SignInSession.token_hash != keep)
    await session.execute(stmt)


async def end_resident_sessions(session: AsyncSession, resident_id: int, *, keep: str | None = None) -> None:
    stmt = delete(SignInSession).where(SignInSession.resident_id == resident_id)
    if keep is not None:
        stmt = stmt.where(SignInSession.token_hash != keep)
    await session.execute(stmt)


async def sweep_expired(session: AsyncSession, now: datetime) -> None:
    await session.execute(delete(SignInSession).where(SignInSession.expires_at <= now))
