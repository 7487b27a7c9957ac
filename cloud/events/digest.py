"""The ingest digest: what the console reads instead of searching the events table.

After each committed batch, ingest hands the digest the batch's events (``take``, on ingest's
loop: a dictionary update per event, no I/O). The digest keeps, until its next flush,

- the newest event of each (gateway, source, kind) for the kinds that have a "current value":
  ``telemetry.point``, ``meter.reading``, ``equipment.status`` and the ``door.*``, ``device.*``,
  ``intrusion.*``, ``fire.*`` and ``smoke.*`` families, for ``latest_values``;
- the number of events each gateway stored, per UTC hour of storing, for ``event_counts_hourly``;
- the ``gateway.inventory`` parts it saw (protocols/inventory.py), for ``gateway_devices`` and
  ``gateway_points``.

It flushes at most once a second, in short transactions of its own (at most ``CHUNK_ROWS`` rows
each, through ingest's write gate on SQLite, so an alarm still goes first and no flush holds the
single writer for long). A latest value is written only if it is newer than the stored one (by
reported time, then event id), so flushes of several ingest workers, in any order, end with the
newest. ``event_id`` is the stored event's id, looked up by its unique key inside the flush (the
hot path's bulk inserts do not return ids; the lookup is an index probe per row, off that path).

These are derived figures. A failed flush is logged and retried (what was pending is kept and
merged with what came since; memory is bounded by the number of distinct sources, not events);
ingest's progress never waits for it. A crash loses what was not flushed yet: up to about a
second of counts, and latest values that the next event of each source puts right. An inventory
lost that way comes again at the gateway's next start or config change.

Parts of one inventory may be stored by different ingest workers; each worker, after its own
commit, looks for all parts in the events table, so whichever commits the last part finds them
all and replaces the gateway's devices and points. An inventory is not applied when the gateway
has sent a newer one (a later seq in the same store), so batches committed out of order cannot
bring an old inventory back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from functools import lru_cache, partial
from typing import Any

from sqlalchemy import bindparam, delete, exists, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.db import SessionFactory, is_transient
from cloud.events.repository import IncomingBatch, reported_time
from cloud.models import Event, EventCountHourly, GatewayDevice, GatewayPoint, LatestValue
from protocols.envelope import EventRecord
from protocols.inventory import INVENTORY_KIND, INVENTORY_SOURCE, assemble, parse_part

log = logging.getLogger(__name__)

LATEST_KINDS = frozenset({"telemetry.point", "meter.reading", "equipment.status"})
LATEST_FAMILIES = frozenset({"door", "device", "intrusion", "fire", "smoke"})
FLUSH_EVERY_S = 1.0
CHUNK_ROWS = 500
# A flush that fails for a reason other than the database being away (a bug, a row it refuses)
# is tried this many times, then what it held is dropped (and logged): derived figures must not
# keep a worker retrying for ever.
MAX_FAILED_FLUSHES = 3
MAX_BACKOFF_S = 30.0
STOP_FLUSH_TIMEOUT_S = 5.0
_KNOWN_KINDS_LIMIT = 4096

Hold = Callable[[], AbstractAsyncContextManager[None]]


class _Want(IntEnum):
    NOTHING = 0
    LATEST = 1
    INVENTORY = 2


def wanted(kind: str) -> _Want:
    if kind == INVENTORY_KIND:
        return _Want.INVENTORY
    if kind in LATEST_KINDS or kind.split(".", 1)[0] in LATEST_FAMILIES:
        return _Want.LATEST
    return _Want.NOTHING


@dataclass(frozen=True, slots=True)
class _InventorySeen:
    store_id: str
    seq: int  # the highest seq seen of its parts


# Pending latest values, by gateway then (source, kind): (the newest event, its time, its store id).
# Two levels and the time kept apart: the hot path hashes a shorter key and reads one attribute less.
_Held = tuple[EventRecord, int, str]
# What a flush writes: (gateway, source, kind) -> (event, store id)
_LatestKey = tuple[str, str, str]
_Latest = tuple[EventRecord, str]
# (gateway, version, time_ms): the parts of one inventory share the time
_InventoryKey = tuple[str, str, int]


def _newer(a: EventRecord, b: EventRecord) -> bool:
    return a.time_ms > b.time_ms or (a.time_ms == b.time_ms and a.seq > b.seq)


class Digest:
    """Latest values, hourly counts and inventories, kept by one ingest worker."""

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        hold: Hold | None = None,
        every_s: float = FLUSH_EVERY_S,
        chunk_rows: int = CHUNK_ROWS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._hold: Hold = hold or nullcontext
        self._every_s = every_s
        self._chunk_rows = chunk_rows
        self._clock = clock
        self._wants: dict[str, _Want] = {}
        self._latest: dict[str, dict[tuple[str, str], _Held]] = {}
        self._counts: dict[tuple[str, int], int] = {}  # (gateway, hour as epoch seconds) -> events
        self._inventories: dict[_InventoryKey, _InventorySeen] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.flushes = 0  # completed flushes (for tests and the curious)

    @property
    def pending(self) -> bool:
        return bool(self._latest or self._counts or self._inventories)

    # -- ingest's side: no I/O, no await

    def take(self, batches: Iterable[IncomingBatch], new_by_gateway: Mapping[str, int]) -> None:
        """Note the events of batches just committed, and how many events each gateway stored."""
        hour = int(self._clock()) // 3600 * 3600
        counts = self._counts
        for gateway_id, new in new_by_gateway.items():
            if new:
                counts[(gateway_id, hour)] = counts.get((gateway_id, hour), 0) + new
        wants, latest_kind = self._wants, _Want.LATEST  # a local: an enum member's lookup costs
        for batch in batches:
            gateway_id, store_id = batch.gateway_id, batch.store_id
            mine = self._latest.get(gateway_id)
            if mine is None:
                mine = self._latest[gateway_id] = {}
            held = mine.get
            # Once per event, so kept short: about 0.4 us an event, a fifteenth of what decoding it costs.
            for e in batch.events:
                kind = e.kind
                want = wants.get(kind)
                if want is None:
                    want = wanted(kind)
                    if len(wants) < _KNOWN_KINDS_LIMIT:
                        wants[kind] = want
                if not want:
                    continue
                if want is latest_kind:
                    t = e.time_ms
                    key = (e.source, kind)
                    had = held(key)
                    if had is None or t > had[1] or (t == had[1] and e.seq > had[0].seq):
                        mine[key] = (e, t, store_id)
                else:
                    self._note_inventory(gateway_id, store_id, e)
            if not mine:
                del self._latest[gateway_id]
        if self.pending:
            self._wake.set()

    def _note_inventory(self, gateway_id: str, store_id: str, e: EventRecord) -> None:
        version = e.data.get("version")
        if not isinstance(version, str):
            return
        key = (gateway_id, version, e.time_ms)
        had = self._inventories.get(key)
        if had is None or e.seq > had.seq:
            self._inventories[key] = _InventorySeen(store_id, e.seq)

    # -- the flush task

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Flush at most every ``every_s`` while there is something to flush, until ``stop()``.
        ``close()`` flushes what is left, once the batches in progress are taken."""
        loop = asyncio.get_running_loop()
        failures = 0
        next_at = loop.time()
        while not self._stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                break
            delay = next_at - loop.time()
            if delay > 0:
                await self._sleep(delay)
            if not self.pending:
                continue
            try:
                await self.flush()
                failures = 0
                next_at = loop.time() + self._every_s
            except Exception as e:
                failures += 1
                failures = self._after_failure(e, failures)
                next_at = loop.time() + min(self._every_s * 2**failures, MAX_BACKOFF_S)
                self._wake.set()  # what was put back is still pending

    async def close(self) -> None:
        """The last flush, when ingest has stopped: bounded in time, since a database that is away
        must not hold up the stop (what it held is then lost, and logged)."""
        if not self.pending:
            return
        try:
            await asyncio.wait_for(self.flush(), STOP_FLUSH_TIMEOUT_S)
        except Exception as e:
            log.warning(
                "ingest digest: the last flush failed (%s); the latest values and counts of the "
                "last moment are lost",
                e,
            )

    async def _sleep(self, delay: float) -> None:
        # Woken early only by stop(): a take() in between waits for the next flush.
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except TimeoutError:
            pass

    def _after_failure(self, error: Exception, failures: int) -> int:
        if is_transient(error):
            if failures == 1:
                log.warning("ingest digest: flush failed, retrying (database unavailable: %s)", error)
            return min(failures, 5)
        log.error(
            "ingest digest: flush failed (attempt %d of %d)", failures, MAX_FAILED_FLUSHES, exc_info=error
        )
        if failures >= MAX_FAILED_FLUSHES:
            log.error(
                "ingest digest: dropping %d latest values, %d counts and %d inventories that could not be "
                "written",
                len(self._latest),
                len(self._counts),
                len(self._inventories),
            )
            self._latest, self._counts, self._inventories = {}, {}, {}
            return 0
        return failures

    async def flush(self) -> None:
        """Write what is pending, in transactions of at most ``chunk_rows`` rows. On failure what
        was not written is put back (merged with what came meanwhile) and the error raised."""
        latest, self._latest = self._latest, {}
        counts, self._counts = self._counts, {}
        inventories, self._inventories = self._inventories, {}
        try:
            # Sorted: two workers' flushes lock rows in the same order and cannot deadlock.
            count_rows = sorted(counts.items())
            latest_rows = sorted(
                (
                    ((gateway_id, source, kind), (e, store_id))
                    for gateway_id, held in latest.items()
                    for (source, kind), (e, _t, store_id) in held.items()
                ),
                key=lambda row: row[0],
            )
            # Counts first, then latest values, ``chunk_rows`` rows a transaction: usually one
            # transaction a flush, so the single SQLite writer is taken once a second, briefly.
            while count_rows or latest_rows:
                counts_chunk = count_rows[: self._chunk_rows]
                latest_chunk = latest_rows[: self._chunk_rows - len(counts_chunk)]
                await self._write(partial(_write_chunk, counts=counts_chunk, latest=latest_chunk))
                del count_rows[: len(counts_chunk)], latest_rows[: len(latest_chunk)]
                for key, _n in counts_chunk:
                    del counts[key]
                for (gateway_id, source, kind), _v in latest_chunk:
                    del latest[gateway_id][(source, kind)]
            for ikey in sorted(inventories):
                await self._write(partial(_apply_inventory, key=ikey, seen=inventories[ikey]))
                del inventories[ikey]
        except BaseException:
            self._put_back(latest, counts, inventories)
            raise
        self.flushes += 1

    async def _write(self, work: Callable[[AsyncSession], Awaitable[None]]) -> None:
        async with self._hold(), self._sessions() as session, session.begin():
            await work(session)

    def _put_back(
        self,
        latest: dict[str, dict[tuple[str, str], _Held]],
        counts: dict[tuple[str, int], int],
        inventories: dict[_InventoryKey, _InventorySeen],
    ) -> None:
        for gateway_id, held in latest.items():
            for key, value in held.items():
                mine = self._latest.setdefault(gateway_id, {})
                now = mine.get(key)
                if now is None or _newer(value[0], now[0]):
                    mine[key] = value
        for ckey, n in counts.items():
            self._counts[ckey] = self._counts.get(ckey, 0) + n
        for ikey, seen in inventories.items():
            had = self._inventories.get(ikey)
            if had is None or seen.seq > had.seq:
                self._inventories[ikey] = seen


# -- the statements


@lru_cache(maxsize=4)
def _statements(dialect: str) -> tuple[Any, Any]:
    """The hourly-count and latest-value upserts for ``dialect``, built once per process:
    building them (and their first compilation) costs far more than running them."""
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    ins = insert_(EventCountHourly)
    counts = ins.on_conflict_do_update(
        index_elements=[EventCountHourly.gateway_id, EventCountHourly.hour],
        set_={"count": EventCountHourly.count + ins.excluded.count},
    )

    table = LatestValue.__table__
    at = bindparam("t", type_=table.c.reported_time.type)
    # The stored event's id by its unique key (with the time: on PostgreSQL the key includes it,
    # and it picks the month's partition); 0 if it is not found (it always is: it was committed).
    event_id = select(Event.id).where(
        Event.gateway_id == bindparam("g"),
        Event.store_id == bindparam("st"),
        Event.seq == bindparam("sq"),
        Event.reported_time == at,
    )
    ins = insert_(LatestValue).values(
        gateway_id=bindparam("g"),
        source=bindparam("s"),
        kind=bindparam("k"),
        event_id=func.coalesce(event_id.scalar_subquery(), 0),
        reported_time=at,
        data=bindparam("d", type_=table.c.data.type),
    )
    excluded = ins.excluded
    latest = ins.on_conflict_do_update(
        index_elements=[LatestValue.gateway_id, LatestValue.source, LatestValue.kind],
        set_={"event_id": excluded.event_id, "reported_time": excluded.reported_time, "data": excluded.data},
        where=or_(
            excluded.reported_time > LatestValue.reported_time,
            (excluded.reported_time == LatestValue.reported_time)
            & (excluded.event_id > LatestValue.event_id),
        ),
    )
    return counts, latest


async def _write_chunk(
    session: AsyncSession, counts: list[tuple[tuple[str, int], int]], latest: list[tuple[_LatestKey, _Latest]]
) -> None:
    # Core statements on the session's connection: the ORM's execution path adds nothing here.
    conn = await session.connection()
    count_upsert, latest_upsert = _statements(conn.dialect.name)
    if counts:
        await conn.execute(
            count_upsert,
            [
                {"gateway_id": gateway_id, "hour": datetime.fromtimestamp(hour, UTC), "count": n}
                for (gateway_id, hour), n in counts
            ],
        )
    if latest:
        await conn.execute(
            latest_upsert,
            [
                {
                    "g": gateway_id,
                    "s": source,
                    "k": kind,
                    "st": store_id,
                    "sq": e.seq,
                    "t": reported_time(e.time_ms),
                    "d": e.data,
                }
                for (gateway_id, source, kind), (e, store_id) in latest
            ],
        )


async def _apply_inventory(session: AsyncSession, key: _InventoryKey, seen: _InventorySeen) -> None:
    gateway_id, version, time_ms = key
    inventory_events = (
        Event.gateway_id == gateway_id,
        Event.source == INVENTORY_SOURCE,
        Event.kind == INVENTORY_KIND,
    )
    rows = await session.execute(
        select(Event.seq, Event.store_id, Event.data).where(
            *inventory_events, Event.reported_time == reported_time(time_ms)
        )
    )
    parts, last_seq = [], seen.seq
    for row in rows:
        part = parse_part(row.data)
        if part is not None and part.version == version and row.store_id == seen.store_id:
            parts.append(part)
            last_seq = max(last_seq, row.seq)
    found = assemble(parts, version)
    if found is None:
        return  # some parts are still to come: whoever stores the last one applies it
    newer = await session.scalar(
        select(exists().where(*inventory_events, Event.store_id == seen.store_id, Event.seq > last_seq))
    )
    if newer:
        log.info(
            "gateway %s: inventory %s not applied, the gateway has sent a newer one", gateway_id, version
        )
        return
    devices, points = found
    now = datetime.now(UTC)
    await session.execute(delete(GatewayDevice).where(GatewayDevice.gateway_id == gateway_id))
    await session.execute(delete(GatewayPoint).where(GatewayPoint.gateway_id == gateway_id))
    if devices:
        await session.execute(
            insert(GatewayDevice),
            [
                {
                    "gateway_id": gateway_id,
                    "device": d.name,
                    "protocol": d.protocol,
                    "description": d.description,
                    "updated_at": now,
                }
                for d in {d.name: d for d in devices}.values()
            ],
        )
    if points:
        await session.execute(
            insert(GatewayPoint),
            [
                {
                    "gateway_id": gateway_id,
                    "source": p.source,
                    "device": p.device,
                    "unit": p.unit,
                    "updated_at": now,
                }
                for p in {p.source: p for p in points}.values()
            ],
        )
    log.info(
        "gateway %s: inventory %s applied (%d devices, %d points)",
        gateway_id,
        version,
        len(devices),
        len(points),
    )
