"""The events table: the idempotent bulk insert (ingest's hot path) and the paged query.

The insert must keep up with every gateway's backlog after an outage (tens of thousands of events
per second on two cores), so it skips the ORM and talks to each driver the fast way:
SQLite ``INSERT OR IGNORE`` through ``executemany`` on the aiosqlite connection, PostgreSQL a binary
``COPY`` into a temporary staging table followed by one ``INSERT ... SELECT ... ON CONFLICT DO
NOTHING``. Either way a resent event hits the unique key and is skipped, not stored twice.
"""

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.models import Event
from protocols.envelope import EventRecord

_COLUMNS = (
    "gateway_id",
    "store_id",
    "seq",
    "kind",
    "lane",
    "reported_time",
    "received_time",
    "boot_id",
    "mono_ns",
    "clock_synced",
    "source",
    "data",
)
_COLUMN_LIST = ", ".join(_COLUMNS)

_SQLITE_INSERT = f"INSERT OR IGNORE INTO events ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(_COLUMNS))})"

# Per connection, made on first use. It lives only as long as the connection, so there is nothing
# to clean up, and ON COMMIT DELETE ROWS leaves it empty whatever happened in a transaction.
_PG_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS events_staging (
    gateway_id text, store_id text, seq bigint, kind text, lane smallint,
    reported_time timestamptz, received_time timestamptz, boot_id text, mono_ns bigint,
    clock_synced boolean, source text, data jsonb
) ON COMMIT DELETE ROWS
"""
# Moves the staging rows into events in one statement and says how many rows each gateway really
# added (the staging table is emptied right after).
_PG_MOVE = f"""
WITH inserted AS (
    INSERT INTO events ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM events_staging
    ON CONFLICT DO NOTHING RETURNING gateway_id
)
SELECT gateway_id, count(*) FROM inserted GROUP BY gateway_id
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = _EPOCH.replace(tzinfo=None)
_MS = timedelta(milliseconds=1)
# A gateway's clock may say anything; a time Python cannot represent is pinned to the nearest one it
# can (the same for every resend, so the unique key still matches).
_MIN_MS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MS
_MAX_MS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MS


@dataclass(frozen=True, slots=True)
class IncomingBatch:
    """One decoded batch as ingest hands it over."""

    gateway_id: str
    store_id: str
    received_time: datetime
    events: Sequence[EventRecord]


@dataclass(slots=True)
class StoreResult:
    new: int = 0
    duplicates: int = 0
    new_by_gateway: dict[str, int] = field(default_factory=dict)


# A gateway stamps a whole group commit with one time, so a batch repeats few distinct times:
# caching the conversions takes them off the ingest hot path.
@lru_cache(maxsize=8192)
def reported_time(time_ms: int) -> datetime:
    """The event's wall-clock time as an aware UTC datetime."""
    return _EPOCH + min(max(time_ms, _MIN_MS), _MAX_MS) * _MS


@lru_cache(maxsize=8192)
def _sqlite_time(time_ms: int) -> str:
    # The text form SQLAlchemy's DateTime uses on SQLite, always with microseconds so that
    # comparisons as text stay comparisons in time.
    return (_EPOCH_NAIVE + min(max(time_ms, _MIN_MS), _MAX_MS) * _MS).isoformat(" ", "microseconds")


def _json_text(data: dict[str, Any]) -> str:
    try:
        return orjson.dumps(data).decode()
    except orjson.JSONEncodeError:
        # orjson refuses integers beyond 64 bits, which JSON (and so the envelope) allows.
        return json.dumps(data, separators=(",", ":"))


async def store_batch(
    session: AsyncSession,
    gateway_id: str,
    store_id: str,
    received_time: datetime,
    events: Sequence[EventRecord],
) -> tuple[int, int]:
    """Insert one batch's events, skipping those already stored. Returns (new, duplicates).
    Runs in the session's transaction; the caller commits."""
    result = await store_batches(session, [IncomingBatch(gateway_id, store_id, received_time, events)])
    return result.new, result.duplicates


async def store_batches(session: AsyncSession, batches: Sequence[IncomingBatch]) -> StoreResult:
    """Insert several batches (of any gateways) at once, skipping events already stored."""
    total = sum(len(b.events) for b in batches)
    if not total:
        return StoreResult()
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        new_by_gateway = await _insert_postgresql(session, batches)
    else:
        new_by_gateway = await _insert_sqlite(session, batches)
    new = sum(new_by_gateway.values())
    return StoreResult(new=new, duplicates=total - new, new_by_gateway=new_by_gateway)


async def _insert_sqlite(session: AsyncSession, batches: Sequence[IncomingBatch]) -> dict[str, int]:
    rows_by_gateway: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for batch in batches:
        received = batch.received_time.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        rows_by_gateway[batch.gateway_id].extend(
            (
                batch.gateway_id,
                batch.store_id,
                e.seq,
                e.kind,
                e.lane,
                _sqlite_time(e.time_ms),
                received,
                e.boot_id,
                e.mono_ns,
                e.clock_synced,
                e.source,
                _json_text(e.data),
            )
            for e in batch.events
        )
    conn = await session.connection()
    driver = (await conn.get_raw_connection()).driver_connection  # aiosqlite.Connection
    assert driver is not None
    new_by_gateway: dict[str, int] = {}
    # One executemany per gateway: its rowcount (rows really inserted) is that gateway's new count.
    # sqlite3 opens the transaction before the first INSERT; the session's commit ends it.
    for gateway_id, rows in rows_by_gateway.items():
        cursor = await driver.executemany(_SQLITE_INSERT, rows)
        new_by_gateway[gateway_id] = max(cursor.rowcount, 0)
        await cursor.close()
    return new_by_gateway


# A few events (an alarm, a door event) go in with one statement: the staging table's COPY pays
# off for a batch, but costs an alarm four extra round trips to the database.
SMALL_BATCH_EVENTS = 64
_PG_TYPES: tuple[str, ...] = (
    *("text", "text", "bigint", "text", "smallint", "timestamptz", "timestamptz", "text", "bigint"),
    *("boolean", "text", "jsonb"),
)
_PG_INSERT_SMALL = f"""
WITH inserted AS (
    INSERT INTO events ({_COLUMN_LIST})
    SELECT * FROM unnest({", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_PG_TYPES))})
    ON CONFLICT DO NOTHING RETURNING gateway_id
)
SELECT gateway_id, count(*) FROM inserted GROUP BY gateway_id
"""


async def _insert_postgresql(session: AsyncSession, batches: Sequence[IncomingBatch]) -> dict[str, int]:
    conn = await session.connection()
    if sum(len(b.events) for b in batches) <= SMALL_BATCH_EVENTS:
        columns = list(zip(*_pg_rows(batches), strict=True))
        result = await conn.exec_driver_sql(_PG_INSERT_SMALL, tuple(list(c) for c in columns))
        rows: list[Any] = list(result.all())
        return {row[0]: row[1] for row in rows}
    # Through SQLAlchemy first: this also opens the driver's transaction, which the raw calls
    # below must run inside.
    await conn.exec_driver_sql(_PG_STAGING)
    driver = (await conn.get_raw_connection()).driver_connection  # asyncpg.Connection
    assert driver is not None
    await driver.copy_records_to_table("events_staging", records=_pg_rows(batches), columns=_COLUMNS)
    added = {row[0]: row[1] for row in await driver.fetch(_PG_MOVE)}
    # Empty now rather than at commit, so a second call in the same transaction starts clean.
    await driver.execute("TRUNCATE events_staging")
    return added


def _pg_rows(batches: Iterable[IncomingBatch]) -> Iterable[tuple[Any, ...]]:
    for batch in batches:
        received = batch.received_time.astimezone(UTC)
        for e in batch.events:
            yield (
                batch.gateway_id,
                batch.store_id,
                e.seq,
                e.kind,
                e.lane,
                reported_time(e.time_ms),
                received,
                e.boot_id,
                e.mono_ns,
                e.clock_synced,
                e.source,
                _json_text(e.data),
            )


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of the events list. ``since`` is inclusive and ``until`` exclusive, both on the
    reported time; ``before_id`` continues a page (ids below it)."""

    gateway_id: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None


async def select_events(session: AsyncSession, query: EventQuery, limit: int) -> list[Event]:
    """Up to ``limit`` events matching ``query``, newest (highest id) first."""
    stmt = select(Event)
    if query.gateway_id is not None:
        stmt = stmt.where(Event.gateway_id == query.gateway_id)
    if query.kind is not None:
        stmt = stmt.where(Event.kind == query.kind)
    if query.since is not None:
        stmt = stmt.where(Event.reported_time >= query.since)
    if query.until is not None:
        stmt = stmt.where(Event.reported_time < query.until)
    if query.before_id is not None:
        stmt = stmt.where(Event.id < query.before_id)
    stmt = stmt.order_by(Event.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())
