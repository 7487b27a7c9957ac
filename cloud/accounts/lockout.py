"""Lockout after repeated failures, for staff and residents alike.

``lockout_failures`` wrong passwords or codes in a row (config ``[console]``) lock the account for
``lockout_minutes``; a success resets the count. The count is raised by one atomic UPDATE, so two
guesses at once cannot both read 4 and write 5. While locked, even the right password is refused
with the same answer: the answer never tells whether a guess was right. Locking is audited.

The count restarts at zero when the lock is set, so after the lock runs out a guesser has the
same few tries again, not one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import ResidentAccount, User
from cloud.accounts.permissions import Principal
from cloud.audit.chain import record
from cloud.config import ConsoleConfig
from cloud.kit.errors import CloudError, Unauthorized

Account = User | ResidentAccount


class BadCredentials(Unauthorized):
    code = "bad_credentials"


class WrongCode(Unauthorized):
    code = "wrong_code"


class AccountLocked(CloudError):
    status_code = 423
    code = "account_locked"


@dataclass(frozen=True)
class _SignInDesk(Principal):
    """Who locks an account in the audit log: the sign-in itself, not the (unknown) guesser.
    It holds no grant: it is only ever an audit entry's actor."""

    @property
    def actor(self) -> str:
        return "system:sign-in"


def is_locked(account: Account, now: datetime) -> bool:
    return account.locked_until is not None and account.locked_until > now


def locked_error(until: datetime | None) -> AccountLocked:
    when = f" until {until:%Y-%m-%d %H:%M} UTC" if until is not None else ""
    return AccountLocked(
        f"too many failed sign-in attempts: this account is locked{when}. "
        "Try again later, or ask an administrator to unlock it"
    )


async def count_failure(
    session: AsyncSession, account: Account, policy: ConsoleConfig, now: datetime, *, ip: str = ""
) -> datetime | None:
    """Count a wrong password or code (in the caller's transaction, which must commit even though
    the sign-in fails). Returns the lock's end if this failure locked the account."""
    table: Any = type(account)
    failures = await session.scalar(
        update(table)
        .where(table.id == account.id)
        .values(failed_logins=table.failed_logins + 1)
        .returning(table.failed_logins)
        .execution_options(synchronize_session=False)
    )
    if failures is None or failures < policy.lockout_failures:
        return None
    until = now + timedelta(minutes=policy.lockout_minutes)
    await session.execute(
        update(table)
        .where(table.id == account.id)
        .values(failed_logins=0, locked_until=until)
        .execution_options(synchronize_session=False)
    )
    kind = "user" if isinstance(account, User) else "resident"
    await record(
        session,
        _SignInDesk(kind="user", id=None, name="sign-in", company_id=account.company_id),
        f"{kind}.lock",
        kind,
        account.id,
        company_id=account.company_id,
        after={"failures": int(failures), "locked_until": until},
        ip=ip,
    )
    return until


def clear_failures(account: Account) -> None:
    """A success: the count starts again (the caller's transaction writes it)."""
    account.failed_logins = 0
    account.locked_until = None
