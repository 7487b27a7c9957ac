"""Appending to the audit log and verifying it.

Each entry's hash is SHA-256 over the previous entry's hash and the entry's canonical JSON (sorted
keys, no spaces, UTC times with microseconds), so changing, removing or inserting any entry breaks
every link after it, and a removed tail shows against the chain head (``audit_heads``). The
database refuses UPDATE and DELETE on ``audit_log`` (triggers, migration 0003); the hash chain
catches what goes around the database (a superuser dropping the trigger, a restored backup).

``record`` runs in the caller's transaction: the change and its audit entry commit together or not
at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.permissions import Principal
from cloud.audit.models import AuditEntry, AuditHead

GENESIS = "0" * 64
PLATFORM_CHAIN = 0


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact: money and areas are never floats
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"audit: cannot record a {type(value).__name__}")


def plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``value`` as JSON would give it back: what is stored is exactly what was hashed."""
    if value is None:
        return None
    return orjson.loads(orjson.dumps(value, default=_default))  # type: ignore[no-any-return]


def entry_hash(entry: AuditEntry) -> str:
    body = {
        "company_id": entry.company_id,
        "seq": entry.seq,
        "at": entry.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "actor_name": entry.actor_name,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "site_id": entry.site_id,
        "before": entry.before,
        "after": entry.after,
        "ip": entry.ip,
    }
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(entry.prev_hash.encode("ascii") + b"\n" + canonical).hexdigest()


async def record(
    session: AsyncSession,
    principal: Principal,
    action: str,
    target_type: str,
    target_id: str | int,
    *,
    company_id: int | None = None,
    site_id: int | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    ip: str = "",
) -> AuditEntry:
    """Append an entry (in the caller's transaction). ``company_id`` defaults to the principal's;
    the platform's own actions go to chain 0. Never record a secret in ``before``/``after``."""
    chain = company_id if company_id is not None else (principal.company_id or PLATFORM_CHAIN)
    # Taking the head row is the first write: it serialises appenders of one chain (a row lock on
    # PostgreSQL; SQLite has one writer anyway).
    head = await _lock_head(session, chain)
    entry = AuditEntry(
        company_id=chain,
        seq=head.seq + 1,
        at=datetime.now(UTC),
        actor=principal.actor,
        actor_name=principal.name,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        site_id=site_id,
        before=plain(before),
        after=plain(after),
        ip=ip,
        prev_hash=head.hash,
        hash="",
    )
    entry.hash = entry_hash(entry)
    session.add(entry)
    await session.execute(
        update(AuditHead).where(AuditHead.company_id == chain).values(seq=entry.seq, hash=entry.hash)
    )
    await session.flush()
    return entry


@dataclass(frozen=True, slots=True)
class _Head:
    seq: int
    hash: str


async def _lock_head(session: AsyncSession, chain: int) -> _Head:
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        await session.execute(
            pg_insert(AuditHead).values(company_id=chain, seq=0, hash=GENESIS).on_conflict_do_nothing()
        )
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        await session.execute(
            sqlite_insert(AuditHead).values(company_id=chain, seq=0, hash=GENESIS).on_conflict_do_nothing()
        )
    row = (
        await session.execute(
            select(AuditHead.seq, AuditHead.hash).where(AuditHead.company_id == chain).with_for_update()
        )
    ).one()
    return _Head(row.seq, row.hash)


@dataclass
class Problem:
    company_id: int
    seq: int | None
    reason: str


@dataclass
class Verification:
    entries: int = 0
    chains: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(session: AsyncSession, company_id: int | None = None, *, page: int = 5000) -> Verification:
    """Walk each chain (or one company's) in order and report every broken link."""
    result = Verification()
    heads_stmt = select(AuditHead)
    if company_id is not None:
        heads_stmt = heads_stmt.where(AuditHead.company_id == company_id)
    heads = {h.company_id: h for h in (await session.scalars(heads_stmt)).all()}
    chains_stmt = select(AuditEntry.company_id).distinct()
    if company_id is not None:
        chains_stmt = chains_stmt.where(AuditEntry.company_id == company_id)
    chains = set((await session.scalars(chains_stmt)).all()) | set(heads)
    for chain in sorted(chains):
        result.chains += 1
        expected_prev, expected_seq = GENESIS, 1
        last_seq = 0
        while True:
            rows = (
                await session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.company_id == chain, AuditEntry.seq >= expected_seq)
                    .order_by(AuditEntry.seq)
                    .limit(page)
                )
            ).all()
            if not rows:
                break
            for entry in rows:
                result.entries += 1
                if entry.seq != expected_seq:
                    result.problems.append(
                        Problem(chain, expected_seq, f"entries {expected_seq}..{entry.seq - 1} are missing")
                    )
                if entry.prev_hash != expected_prev:
                    result.problems.append(Problem(chain, entry.seq, "does not link to the entry before it"))
                if entry_hash(entry) != entry.hash:
                    result.problems.append(Problem(chain, entry.seq, "was changed after it was written"))
                expected_prev, expected_seq, last_seq = entry.hash, entry.seq + 1, entry.seq
            session.expunge_all()
        head = heads.get(chain)
        if head is None:
            result.problems.append(Problem(chain, None, "has entries but no chain head"))
        elif head.seq != last_seq or head.hash != expected_prev:
            result.problems.append(
                Problem(
                    chain, last_seq, f"ends at entry {last_seq} but its head says {head.seq}: entries removed"
                )
            )
    return result
