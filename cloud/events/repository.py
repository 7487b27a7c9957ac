"""The events table: the idempotent bulk insert (ingest's hot path) and the paged query.

The insert must keep up with every gateway's backlog after an outage (tens of thousands of events
per second on two cores), so it skips the ORM and talks to each driver the fast way:
SQLite ``INSERT OR IGNORE`` through ``executemany`` on the aiosqlite connection, PostgreSQL a binary
``COPY`` into a temporary staging table followed by one ``INSERT ... SELECT ... ON CONFLICT DO
NOTHING``. Either way a resent event hits the unique key and is skipped, not stored twice.
"""

import json
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import UnaryExpression
from sqlalchemy.sql.operators import custom_op

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
    """Filters of the events list, all of them ANDed. ``since`` is inclusive and ``until``
    exclusive, both on the reported time; ``before_id`` continues a page (ids below it).
    ``gateway_ids`` and ``sources`` are sets to match any of (None: no restriction; empty:
    nothing matches); ``kind_prefix`` matches kinds starting with it (``"door."``)."""

    gateway_id: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None
    gateway_ids: tuple[str, ...] | None = None
    source: str | None = None
    sources: tuple[str, ...] | None = None
    kind_prefix: str | None = None


# How the newest page of a filter is found. Events are paged by id (ingest order), and the cheap
# way to the newest matches is usually to walk the id index downwards, checking the filters on the
# way, and stop at the page's end: right when matches are dense or recent (a company's own events,
# a common kind, the last hours). It is wrong when they are rare (an alarm kind: the walk passes the
# whole table) or old (a time window weeks back: it first passes every newer row). Then an index
# on the filter finds the matches and the newest are sorted out of them.
#
# PostgreSQL chooses between the two from its statistics, given a plan made for the query's own
# values. SQLite keeps no statistics unless someone runs ANALYZE (and none of ranges even then);
# without them it sorts a million rows to show a hundred. So on SQLite the choice is made here,
# and the filters the chosen way does not use are written "+column" (the same value, which no
# index serves), leaving the planner one way only.
#
# A time window far behind now (the time since its end longer than the window) goes through the
# time index on both: the window's newest ids from events_gateway_time alone (an index-only scan),
# then only their rows. The planners cannot see that themselves: they take matches as spread
# evenly along the id order.


def _old_window(query: EventQuery, now: datetime) -> bool:
    if query.since is None:
        return False
    end = min(query.until, now) if query.until is not None else now
    return now - end > end - query.since


async def select_events(
    session: AsyncSession, query: EventQuery, limit: int, *, now: datetime | None = None
) -> list[Event]:
    """Up to ``limit`` events matching ``query``, newest (highest id) first."""
    gateway_ids = _intersect(query.gateway_id, query.gateway_ids)
    sources = _intersect(query.source, query.sources)
    if gateway_ids == () or sources == ():
        return []
    dialect = session.get_bind().dialect.name
    old_window = _old_window(query, now or datetime.now(UTC))
    if dialect == "postgresql":
        if query.kind or query.kind_prefix or sources is not None or query.since or query.until:
            # A plan made for this query's values, never the generic plan PostgreSQL switches a
            # prepared statement to after five runs: that one is made for an "average" kind or
            # source and walks the whole table for a rare one (an alarm: seconds, not a millisecond).
            # Without such a filter the generic plan is the walk a custom one would be, and saves
            # planning the query anew over every partition each time.
            await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        indexed, ids_first = _ALL_FILTERS, old_window
    else:
        indexed, ids_first = await _sqlite_way(session, query, gateway_ids, sources, limit, old_window)
    where = _where(query, gateway_ids, sources, dialect, indexed)
    if not ids_first:
        stmt = select(Event).where(*where).order_by(Event.id.desc()).limit(limit)
    else:
        # The newest ids from the index alone (each index holds the id: SQLite's end with the
        # rowid, PostgreSQL's events_gateway_time names it), then only those rows. "id + 0" is the
        # id order, but no index provides it: the planner cannot fall back to the walk.
        newest = select(Event.id).where(*where).order_by((Event.id + 0).desc()).limit(limit)
        # On PostgreSQL the filters again, so that only the window's partitions are searched.
        outer = where if dialect == "postgresql" else []
        stmt = select(Event).where(*outer, Event.id.in_(newest.scalar_subquery())).order_by(Event.id.desc())
    return list((await session.scalars(stmt)).all())


_ALL_FILTERS = frozenset({"gateway", "source", "kind", "time"})


async def _sqlite_way(
    session: AsyncSession,
    query: EventQuery,
    gateway_ids: tuple[str, ...] | None,
    sources: tuple[str, ...] | None,
    limit: int,
    old_window: bool,
) -> tuple[frozenset[str], bool]:
    """The filters SQLite may use an index for (the id always: it is the walk's own), and whether
    to take the newest ids from that index before reading any row."""
    if old_window:
        return frozenset({"gateway", "time"}), True  # events_gateway_time
    if query.kind is not None:
        return frozenset({"kind"}), False  # events_kind is (kind, rowid): newest first as it stands
    if query.kind_prefix or (sources is not None and gateway_ids is not None):
        # A count in the index, up to the point where the walk would find a page sooner than a
        # sort of every match: the walk reads about limit * rows / matches rows, the sort matches.
        rows = await session.scalar(select(func.max(Event.id))) or 0
        bound = max(1000, min(50_000, math.isqrt(limit * rows)))
        if query.kind_prefix:
            way, probe = frozenset({"kind"}), _kind_prefix_clause("sqlite", query.kind_prefix, indexed=True)
        else:
            assert sources is not None and gateway_ids is not None
            way, probe = (
                frozenset({"gateway", "source"}),
                and_(  # events_source_time
                    Event.gateway_id.in_(gateway_ids), Event.source.in_(sources)
                ),
            )
        if await _fewer_than(session, bound, probe):
            return way, True
    return frozenset(), False


async def _fewer_than(session: AsyncSession, bound: int, condition: ColumnElement[bool]) -> bool:
    counted = select(func.count()).select_from(select(Event.id).where(condition).limit(bound).subquery())
    return (await session.scalar(counted) or 0) < bound


def _unindexed(column: Any) -> Any:
    """``+column``: the same value, but no index serves it (SQLite's way of saying "not this one")."""
    return UnaryExpression(column, operator=custom_op("+"), type_=column.type)


def _where(
    query: EventQuery,
    gateway_ids: tuple[str, ...] | None,
    sources: tuple[str, ...] | None,
    dialect: str,
    indexed: frozenset[str],
) -> list[ColumnElement[bool]]:
    def column(name: str, col: Any) -> Any:
        return col if name in indexed else _unindexed(col)

    where: list[ColumnElement[bool]] = []
    if gateway_ids is not None:
        gateway = column("gateway", Event.gateway_id)
        where.append(gateway == gateway_ids[0] if len(gateway_ids) == 1 else gateway.in_(gateway_ids))
    if sources is not None:
        source = column("source", Event.source)
        where.append(source == sources[0] if len(sources) == 1 else source.in_(sources))
    if query.kind is not None:
        where.append(column("kind", Event.kind) == query.kind)
    if query.kind_prefix:
        where.append(_kind_prefix_clause(dialect, query.kind_prefix, indexed="kind" in indexed))
    reported = column("time", Event.reported_time)
    if query.since is not None:
        where.append(reported >= query.since)
    if query.until is not None:
        where.append(reported < query.until)
    if query.before_id is not None:
        where.append(Event.id < query.before_id)
    return where


def _kind_prefix_clause(dialect: str, prefix: str, *, indexed: bool) -> ColumnElement[bool]:
    if dialect == "postgresql":
        # LIKE with a fixed prefix becomes a range on the text_pattern_ops index (events_kind),
        # whatever the database's collation; _ and % in a kind are escaped, not wildcards.
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return Event.kind.like(escaped + "%", escape="\\")
    # SQLite compares text byte by byte (BINARY), so the prefix is exactly a range of events_kind
    # (its LIKE ignores case and so cannot use one). Kinds are ASCII: the next code point bounds it.
    kind = Event.kind if indexed else _unindexed(Event.kind)
    return and_(kind >= prefix, kind < prefix[:-1] + chr(ord(prefix[-1]) + 1))


async def select_events_after(
    session: AsyncSession,
    gateway_ids: Collection[str] | None,
    after_id: int,
    limit: int,
    *,
    exclude_kind: str | None = None,
) -> list[Event]:
    """Up to ``limit`` events with an id above ``after_id``, oldest first (without those of
    ``exclude_kind``, e.g. readings): what a live view polls. A short range of the id index (one
    per partition on PostgreSQL) whatever the table's size."""
    stmt = select(Event).where(Event.id > after_id)
    if gateway_ids is not None:
        if not gateway_ids:
            return []
        # On SQLite "+gateway_id": left to itself it would read all of the gateways' events by
        # their index and sort them, rather than take the few ids above after_id.
        dialect = session.get_bind().dialect.name
        gateway = Event.gateway_id if dialect == "postgresql" else _unindexed(Event.gateway_id)
        stmt = stmt.where(gateway.in_(sorted(gateway_ids)))
    if exclude_kind is not None:
        stmt = stmt.where(Event.kind != exclude_kind)
    return list((await session.scalars(stmt.order_by(Event.id).limit(limit))).all())


def _intersect(one: str | None, many: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The values both filters allow, sorted; None if neither restricts."""
    if one is None:
        return None if many is None else tuple(sorted(set(many)))
    return (one,) if many is None or one in many else ()
