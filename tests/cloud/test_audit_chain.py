"""The audit log's hash chain on both databases: entries link up and verify; the database refuses to
change or remove an entry; and what goes around the database (the trigger dropped as a superuser
would, then a row changed or removed) is found by ``verify``. Concurrent appenders on PostgreSQL
keep one unbroken chain."""

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from cloud.accounts.permissions import PLATFORM, Principal
from cloud.audit.chain import GENESIS, record, verify
from cloud.audit.models import AuditEntry, AuditHead
from tests.cloud.conftest import Database


def new_chain() -> int:
    """A chain of its own for each test: the PostgreSQL database is shared by the module."""
    return 1_000_000 + secrets.randbelow(1_000_000_000)


def staff(company_id: int) -> Principal:
    return Principal(kind="user", id=7, name="Wang Fang", company_id=company_id)


async def append(db: Database, chain: int, count: int) -> None:
    for i in range(count):
        async with db.sessions() as session, session.begin():
            await record(
                session,
                staff(chain),
                "unit.update",
                "unit",
                i,
                site_id=3,
                before={"floor_area_m2": "88.50", "note": f"before {i}"},
                after={"floor_area_m2": "89.00", "note": f"after {i}"},
                ip="10.0.0.5",
            )


async def entries(db: Database, chain: int) -> list[AuditEntry]:
    async with db.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(AuditEntry).where(AuditEntry.company_id == chain).order_by(AuditEntry.seq)
                )
            ).all()
        )


@contextlib.asynccontextmanager
async def guard_lifted(db: Database) -> AsyncIterator[None]:
    """What a superuser (or someone with the database file) can do: switch the append-only
    triggers off, for the time of the block."""
    async with db.engine.begin() as conn:
        if db.backend == "postgresql":
            await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update"))
        else:
            await conn.execute(text("DROP TRIGGER audit_log_no_update"))
            await conn.execute(text("DROP TRIGGER audit_log_no_delete"))
    try:
        yield
    finally:
        async with db.engine.begin() as conn:
            if db.backend == "postgresql":
                await conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update"))
            else:
                await conn.execute(
                    text(
                        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
                        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END"
                    )
                )
                await conn.execute(
                    text(
                        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
                        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END"
                    )
                )


async def test_entries_link_up_and_verify(db: Database) -> None:
    chain = new_chain()
    await append(db, chain, 5)
    rows = await entries(db, chain)
    assert [e.seq for e in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert (rows[2].actor, rows[2].actor_name, rows[2].after) == (
        "user:7",
        "Wang Fang",
        {"floor_area_m2": "89.00", "note": "after 2"},
    )
    assert rows[0].at.tzinfo is not None
    async with db.sessions() as session:
        result = await verify(session, chain)
        head = await session.get(AuditHead, chain)
    assert result.ok, result.problems
    assert (result.entries, result.chains) == (5, 1)
    assert head is not None and (head.seq, head.hash) == (5, rows[-1].hash)


async def test_platform_actions_go_to_chain_zero_and_chains_do_not_mix(db: Database) -> None:
    chain = new_chain()
    async with db.sessions() as session, session.begin():
        await record(session, staff(chain), "person.create", "person", 1)
        platform = await record(session, PLATFORM, "company.create", "company", chain)
        for_company = await record(session, PLATFORM, "gateway.register", "gateway", "gw-1", company_id=chain)
    assert platform.company_id == 0 and platform.actor == "platform"
    assert (for_company.company_id, for_company.seq) == (chain, 2)
    async with db.sessions() as session:
        assert (await verify(session, chain)).ok
        assert (await verify(session, 0)).ok


async def test_the_database_refuses_update_and_delete(db: Database) -> None:
    chain = new_chain()
    await append(db, chain, 2)
    for statement in (
        update(AuditEntry).where(AuditEntry.company_id == chain).values(actor_name="someone else"),
        delete(AuditEntry).where(AuditEntry.company_id == chain),
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.sessions() as session, session.begin():
                await session.execute(statement)
    assert len(await entries(db, chain)) == 2


async def test_a_changed_entry_is_found(db: Database) -> None:
    chain = new_chain()
    await append(db, chain, 5)
    async with guard_lifted(db), db.sessions() as session, session.begin():
        await session.execute(
            update(AuditEntry)
            .where(AuditEntry.company_id == chain, AuditEntry.seq == 3)
            .values(after={"floor_area_m2": "12.00", "note": "after 2"})
        )
    async with db.sessions() as session:
        result = await verify(session, chain)
    assert not result.ok
    assert [(p.company_id, p.seq, p.reason) for p in result.problems] == [
        (chain, 3, "was changed after it was written")
    ]


async def test_a_changed_entry_with_its_hash_recomputed_breaks_the_next_link(db: Database) -> None:
    from cloud.audit.chain import entry_hash

    chain = new_chain()
    await append(db, chain, 4)
    rows = await entries(db, chain)
    forged = rows[1]
    forged.actor_name = "nobody"
    async with guard_lifted(db), db.sessions() as session, session.begin():
        await session.execute(
            update(AuditEntry)
            .where(AuditEntry.id == forged.id)
            .values(actor_name="nobody", hash=entry_hash(forged))
        )
    async with db.sessions() as session:
        result = await verify(session, chain)
    assert [(p.seq, p.reason) for p in result.problems] == [(3, "does not link to the entry before it")]


async def test_a_removed_middle_entry_is_a_gap(db: Database) -> None:
    chain = new_chain()
    await append(db, chain, 5)
    async with guard_lifted(db), db.sessions() as session, session.begin():
        await session.execute(delete(AuditEntry).where(AuditEntry.company_id == chain, AuditEntry.seq == 3))
    async with db.sessions() as session:
        result = await verify(session, chain)
    assert [(p.seq, p.reason) for p in result.problems] == [
        (3, "entries 3..3 are missing"),
        (4, "does not link to the entry before it"),
    ]


async def test_a_removed_tail_shows_against_the_head(db: Database) -> None:
    chain = new_chain()
    await append(db, chain, 5)
    async with guard_lifted(db), db.sessions() as session, session.begin():
        await session.execute(delete(AuditEntry).where(AuditEntry.company_id == chain, AuditEntry.seq >= 4))
    async with db.sessions() as session:
        result = await verify(session, chain)
    assert [(p.seq, p.reason) for p in result.problems] == [
        (3, "ends at entry 3 but its head says 5: entries removed")
    ]


async def test_a_whole_chain_removed_still_shows(db: Database) -> None:
    chain = new_chain()
    await append(db, chain, 2)
    async with guard_lifted(db), db.sessions() as session, session.begin():
        await session.execute(delete(AuditEntry).where(AuditEntry.company_id == chain))
    async with db.sessions() as session:
        result = await verify(session, chain)
    assert [(p.seq, p.reason) for p in result.problems] == [
        (0, "ends at entry 0 but its head says 2: entries removed")
    ]


async def test_a_failed_change_leaves_no_entry(db: Database) -> None:
    """The entry is in the caller's transaction: a change that rolls back takes its entry with it."""
    chain = new_chain()
    await append(db, chain, 1)
    with pytest.raises(RuntimeError):
        async with db.sessions() as session, session.begin():
            await record(session, staff(chain), "unit.delete", "unit", 9)
            raise RuntimeError("the change failed")
    await append(db, chain, 1)
    assert [e.seq for e in await entries(db, chain)] == [1, 2]
    async with db.sessions() as session:
        assert (await verify(session, chain)).ok


async def test_concurrent_appends_keep_one_chain(pg: Database) -> None:
    chain = new_chain()
    other = new_chain()

    async def one(i: int) -> None:
        async with pg.sessions() as session, session.begin():
            await record(session, staff(chain if i % 4 else other), "door.unlock", "door", f"gw-1/d{i}")

    await asyncio.gather(*(one(i) for i in range(20)))
    rows = await entries(pg, chain)
    assert [e.seq for e in rows] == list(range(1, 16))
    assert [e.seq for e in await entries(pg, other)] == list(range(1, 6))
    async with pg.sessions() as session:
        for c in (chain, other):
            result = await verify(session, c)
            assert result.ok, result.problems
