"""The outbox: every event the gateway accepts, kept in SQLite until the cloud acknowledges it.

- SQLite in WAL mode with ``synchronous=FULL``: a commit that returned survives a power cut.
- Producers hand over batches and wait until the group commit holding them is done; commits are
  grouped (``commit_interval_ms`` or ``commit_max_events``); a life-safety event is committed at once.
- ``seq`` comes from one persisted counter across all lanes, written in the same transaction as
  the events: strictly increasing and never reused, even after the newest rows were deleted.
- ``store_id`` is made when the store is created, so a wiped gateway's new events are never
  taken for duplicates of the old ones.
- A byte cap: past it the oldest telemetry is evicted, in the same transaction that inserts, and an
  eviction report (a ``gateway.evicted`` event naming the ranges) is stored with it. Life-safety and
  security events are never evicted; when they alone fill the store, new telemetry is refused,
  counted, and a ``gateway.store_full`` fault is raised, while alarms are still accepted.
- Rows leave only on the cloud's ack (deleted) or reject (moved to ``dead_letter``).

Each event is encoded once, here, to the JSON body it will have inside a batch; the uplink joins
stored bodies and never re-encodes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from edge.clock import Clock
from protocols.envelope import encode_event
from protocols.events import Lane, NewEvent
from protocols.ranges import Ranges, to_ranges

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,      -- assigned from meta.next_seq, never by SQLite
    lane INTEGER NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,        -- bytes counted against the cap
    body BLOB NOT NULL            -- the event's JSON, exactly as it is sent
);
-- Only the few urgent rows (life safety, security) are indexed by lane: telemetry, the bulk, is
-- read in seq order straight from the primary key, so each insert updates one B-tree, not two.
DROP INDEX IF EXISTS events_lane_seq;
CREATE INDEX IF NOT EXISTS events_urgent ON events (lane, seq) WHERE lane < 2;
CREATE TABLE IF NOT EXISTS dead_letter (
    seq INTEGER PRIMARY KEY,
    lane INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    rejected_ms INTEGER NOT NULL
);
"""
# Counters kept in meta, in the same transactions as the changes they count.
COUNTERS = (
    "accepted_total",
    "acked_total",
    "evicted_events",
    "evicted_bytes",
    "refused_telemetry",
    "rejected_events",
)
_ROW_OVERHEAD = 48  # rough per-row cost in SQLite beyond the body, so the cap means disk bytes
_EVICT_TO = 0.95  # evict down to 95% of the cap, so a full store does not evict on every commit
_RANGES_PER_REPORT = 400  # keeps an eviction report far below one message's size
_INSERT_EVENTS = "INSERT INTO events (seq, lane, kind, size, body) VALUES (?, ?, ?, ?, ?)"
_SET_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"


class OutboxClosed(RuntimeError):
    pass


@dataclass(slots=True)
class StoredEvent:
    seq: int
    lane: int
    body: bytes


@dataclass
class OutboxStats:
    store_id: str
    next_seq: int
    backlog: dict[str, int]
    backlog_bytes: int
    max_bytes: int
    dead_letters: int
    counters: dict[str, int]
    store_full: bool
    last_ack_ms: int | None


@dataclass(slots=True)
class _Pending:
    events: Sequence[NewEvent]
    future: asyncio.Future[list[int]]


class Outbox:
    """Open with ``await Outbox.open(path, ...)``; close with ``await outbox.close()``."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        clock: Clock,
        *,
        max_bytes: int,
        commit_interval_s: float,
        commit_max_events: int,
    ) -> None:
        self._db = db
        self.path = path
        self.clock = clock
        self.max_bytes = max_bytes
        self._commit_interval = commit_interval_s
        self._commit_max = commit_max_events
        # One lock around every use of the connection: the writer's transaction spans several
        # awaits, and a reader must never see (and send) rows that are not committed yet.
        self._lock = asyncio.Lock()
        self._pending: list[_Pending] = []
        self._pending_events = 0
        self._work = asyncio.Event()
        self._urgent = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.store_id = ""
        self._next_seq = 1
        self._bytes = {lane: 0 for lane in Lane}
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._store_full = False
        self.last_ack_ms: int | None = None
        # Set after each commit that stored events, and after each commit holding a life-safety
        # event: the uplink waits on these instead of polling.
        self.new_events = asyncio.Event()
        self.new_alarm = asyncio.Event()

    # ---------------------------------------------------------------- opening and closing

    @classmethod
    async def open(
        cls,
        path: str | Path,
        clock: Clock | None = None,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        commit_interval_ms: float = 2.0,
        commit_max_events: int = 2000,
    ) -> Outbox:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=10000")
            await db.executescript(_SCHEMA)
            self = cls(
                db,
                path,
                clock or Clock(),
                max_bytes=max_bytes,
                commit_interval_s=commit_interval_ms / 1000,
                commit_max_events=commit_max_events,
            )
            await self._load()
        except BaseException:
            await db.close()
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="outbox-writer")
        return self

    async def _load(self) -> None:
        meta: dict[str, str] = {
            k: v for k, v in await self._db.execute_fetchall("SELECT key, value FROM meta")
        }
        if "store_id" not in meta:
            store_id = secrets.token_hex(16)
            await self._db.execute("BEGIN IMMEDIATE")
            await self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("store_id", store_id),
                    ("next_seq", "1"),
                    ("schema_version", SCHEMA_VERSION),
                    ("created_ms", str(Clock.now_ms())),
                ],
            )
            await self._db.execute("COMMIT")
            meta.update(store_id=store_id, next_seq="1")
            log.info("created outbox %s with store id %s", self.path, store_id)
        self.store_id = str(meta["store_id"])
        self._next_seq = int(meta["next_seq"])
        for name in COUNTERS:
            self._counters[name] = int(meta.get(name, 0))
        self._store_full = meta.get("store_full") == "1"
        self.last_ack_ms = int(meta["last_ack_ms"]) if "last_ack_ms" in meta else None
        for lane, total in await self._db.execute_fetchall(
            "SELECT lane, COALESCE(SUM(size), 0) FROM events GROUP BY lane"
        ):
            self._bytes[Lane(lane)] = int(total)

    async def close(self) -> None:
        """Commit what producers already handed over, then close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._work.set()
        self._urgent.set()
        if self._writer:
            await self._writer
        await self._db.close()

    # ---------------------------------------------------------------- producers

    async def accept(self, events: Sequence[NewEvent]) -> list[int]:
        """Store ``events``; returns once they are durably committed, with the seqs given.
        Telemetry refused because the store is full gets no seq (and is counted)."""
        if self._closed:
            raise OutboxClosed("outbox is closed")
        if not events:
            return []
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(events, fut))
        self._pending_events += len(events)
        if self._pending_events >= self._commit_max or any(e.lane == Lane.LIFE_SAFETY for e in events):
            self._urgent.set()
        self._work.set()
        return await fut

    async def emit(self, events: Sequence[NewEvent]) -> None:
        """The EventSink interface that drivers emit into."""
        await self.accept(events)

    async def _write_loop(self) -> None:
        while True:
            await self._work.wait()
            if not self._urgent.is_set() and not self._closed:
                # asyncio.timeout, not wait_for: no task per commit (this runs hundreds of times
                # a second under a busy driver).
                try:
                    async with asyncio.timeout(self._commit_interval):
                        await self._urgent.wait()
                except TimeoutError:
                    pass
            group, self._pending, self._pending_events = self._pending, [], 0
            self._work.clear()
            self._urgent.clear()
            if group:
                try:
                    results = await self._commit(group)
                except Exception as e:  # the disk failed us: every producer in the group hears it
                    log.exception("outbox commit failed")
                    for p in group:
                        if not p.future.done():
                            p.future.set_exception(e)
                else:
                    for p, seqs in zip(group, results, strict=True):
                        if not p.future.done():
                            p.future.set_result(seqs)
            if self._closed and not self._pending:
                return

    def _unevictable_bytes(self) -> int:
        return self._bytes[Lane.LIFE_SAFETY] + self._bytes[Lane.SECURITY]

    def _stamp(
        self,
        kind: str,
        lane: int,
        source: str,
        data: dict,
        time_ms: int | None,
        now_ms: int,
        mono_ns: int,
        synced: bool,
    ) -> tuple[int, int, str, int, bytes]:
        seq = self._next_seq
        self._next_seq += 1
        body = encode_event(
            seq=seq,
            kind=kind,
            lane=lane,
            time_ms=now_ms if time_ms is None else time_ms,
            boot_id=self.clock.boot_id,
            mono_ns=mono_ns,
            clock_synced=synced,
            source=source,
            data=data,
        )
        return (seq, lane, kind, len(body) + _ROW_OVERHEAD, body)

    async def _commit(self, group: list[_Pending]) -> list[list[int]]:
        now_ms, mono_ns, synced = Clock.now_ms(), Clock.mono_ns(), self.clock.synced()
        refusing = self._unevictable_bytes() >= self.max_bytes
        rows: list[tuple[int, int, str, int, bytes]] = []
        results: list[list[int]] = []
        refused = 0
        seq_before = self._next_seq
        try:
            for p in group:
                seqs = []
                for ev in p.events:
                    lane = int(ev.lane if ev.lane is not None else Lane.SECURITY)
                    if refusing and lane == Lane.TELEMETRY:
                        refused += 1
                        continue
                    row = self._stamp(ev.kind, lane, ev.source, ev.data, ev.time_ms, now_ms, mono_ns, synced)
                    rows.append(row)
                    seqs.append(row[0])
                results.append(seqs)
            if refusing != self._store_full:
                # Entering or leaving the "store full" fault is itself an event someone must see.
                rows.append(
                    self._stamp(
                        "gateway.store_full",
                        Lane.SECURITY,
                        "outbox",
                        {
                            "full": refusing,
                            "max_bytes": self.max_bytes,
                            "refused_total": self._counters["refused_telemetry"] + refused,
                        },
                        None,
                        now_ms,
                        mono_ns,
                        synced,
                    )
                )
        except Exception:
            self._next_seq = seq_before
            raise

        added = {lane: 0 for lane in Lane}
        for r in rows:
            added[r[1]] += r[3]  # type: ignore[index]  # an IntEnum key is found by its int: no Lane() per row
        async with self._lock:
            if sum(self._bytes.values()) + sum(added.values()) <= self.max_bytes:
                # The common case, nothing to evict: the whole transaction is one job on aiosqlite's
                # thread (one round trip instead of four), rolled back there if any step fails.
                evicted = _Eviction()
                counters = dict(self._counters)
                counters["accepted_total"] += len(rows)
                counters["refused_telemetry"] += refused
                meta = self._meta_rows(counters, refusing)
                await self._db._execute(_insert_and_commit, self._db._conn, rows, meta)
            else:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    await self._db.executemany(_INSERT_EVENTS, rows)
                    evicted = await self._evict_if_over(added, now_ms, mono_ns, synced)
                    counters = dict(self._counters)
                    counters["accepted_total"] += len(rows) + len(evicted.report_rows)
                    counters["refused_telemetry"] += refused
                    counters["evicted_events"] += evicted.count
                    counters["evicted_bytes"] += evicted.freed
                    await self._db.executemany(_SET_META, self._meta_rows(counters, refusing))
                    await self._db.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise
        # Only now, with the commit done, does memory follow the disk.
        for lane in Lane:
            self._bytes[lane] += added[lane] - evicted.bytes_by_lane.get(lane, 0)
        for r in evicted.report_rows:
            self._bytes[Lane.SECURITY] += r[3]
        self._counters = counters
        if refusing != self._store_full:
            log.warning(
                "outbox store full: %s (unevictable events fill %d of %d bytes)",
                refusing,
                self._unevictable_bytes(),
                self.max_bytes,
            )
        self._store_full = refusing
        if refused:
            log.warning("outbox refused %d telemetry events: store full of unevictable events", refused)
        self.new_events.set()
        if added[Lane.LIFE_SAFETY]:
            self.new_alarm.set()
        return results

    def _meta_rows(self, counters: dict[str, int], refusing: bool) -> list[tuple[str, str]]:
        meta = [(k, str(v)) for k, v in counters.items()]
        meta += [("next_seq", str(self._next_seq)), ("store_full", "1" if refusing else "0")]
        return meta

    async def _rollback(self) -> None:
        try:
            await self._db.execute("ROLLBACK")
        except Exception:  # pragma: no cover - the transaction may already be gone
            log.debug("rollback failed", exc_info=True)

    async def _evict_if_over(
        self, added: dict[Lane, int], now_ms: int, mono_ns: int, synced: bool
    ) -> _Eviction:
        ev = _Eviction()
        total = sum(self._bytes.values()) + sum(added.values())
        if total <= self.max_bytes:
            return ev
        need = total - int(self.max_bytes * _EVICT_TO)
        seqs: list[int] = []
        freed = 0
        after = 0
        while freed < need:
            rows = await self._db.execute_fetchall(
                "SELECT seq, size FROM events WHERE lane = ? AND seq > ? ORDER BY seq LIMIT 2000",
                (int(Lane.TELEMETRY), after),
            )
            if not rows:
                break
            for seq, size in rows:
                seqs.append(seq)
                freed += size
                after = seq
                if freed >= need:
                    break
        if not seqs:
            return ev
        await self._db.execute(
            "DELETE FROM events WHERE lane = ? AND seq <= ?", (int(Lane.TELEMETRY), seqs[-1])
        )
        ev.count, ev.freed = len(seqs), freed
        ev.bytes_by_lane[Lane.TELEMETRY] = freed
        ranges = to_ranges(seqs)
        for i in range(0, len(ranges), _RANGES_PER_REPORT):
            chunk = ranges[i : i + _RANGES_PER_REPORT]
            ev.report_rows.append(
                self._stamp(
                    "gateway.evicted",
                    Lane.SECURITY,
                    "outbox",
                    # The ranges are exact: every seq in them was a telemetry event evicted unsent.
                    {
                        "lane": int(Lane.TELEMETRY),
                        "ranges": [list(r) for r in chunk],
                        "count": sum(b - a + 1 for a, b in chunk),
                        "bytes": freed,
                    },
                    None,
                    now_ms,
                    mono_ns,
                    synced,
                )
            )
        await self._db.executemany(_INSERT_EVENTS, ev.report_rows)
        log.warning(
            "outbox over its cap: evicted %d telemetry events (%d bytes), ranges %s",
            len(seqs),
            freed,
            ranges[:3],
        )
        return ev

    # ---------------------------------------------------------------- the uplink's side

    async def fetch(self, lane: int, after: int, limit: int, upto: int | None = None) -> list[StoredEvent]:
        """Stored events of one lane with ``after < seq [<= upto]``, oldest first."""
        sql = "SELECT seq, body FROM events WHERE lane = ? AND seq > ?"
        if lane < Lane.TELEMETRY:
            sql += " AND lane < 2"  # the term that lets SQLite use the partial index events_urgent
        args: list[int] = [lane, after]
        if upto is not None:
            sql += " AND seq <= ?"
            args.append(upto)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        async with self._lock:
            rows = await self._db.execute_fetchall(sql, args)
        return [StoredEvent(seq, lane, body) for seq, body in rows]

    async def ack(self, store_id: str, ranges: Ranges) -> int:
        """The cloud committed these: delete them. Returns how many rows went. An ack for another
        store (a wiped gateway hearing its old session's acks) is ignored."""
        if store_id != self.store_id:
            log.info("ignoring ack for store %s (this store is %s)", store_id, self.store_id)
            return 0
        now = Clock.now_ms()
        clauses = _seq_clauses(ranges)
        # Two trips to SQLite's thread instead of one per statement, and no fsync of its own:
        # losing a deletion to a power cut only means those events go again, and the cloud stores
        # each once. The next FULL commit (an accepted event) makes it durable anyway.
        async with self._lock:
            n, freed = await self._measure(clauses)
            acked = self._counters["acked_total"] + n
            deletes = "".join(f"DELETE FROM events WHERE {clause};\n" for clause in clauses)
            try:
                await self._db.executescript(
                    "PRAGMA synchronous=NORMAL;\nBEGIN IMMEDIATE;\n"
                    + deletes
                    + f"INSERT OR REPLACE INTO meta (key, value) VALUES ('acked_total', '{acked}'),"
                    f" ('last_ack_ms', '{now}');\nCOMMIT;\nPRAGMA synchronous=FULL;"
                )
            except BaseException:
                await self._rollback()
                await self._db.execute("PRAGMA synchronous=FULL")
                raise
        self._release(freed)
        self._counters["acked_total"] = acked
        self.last_ack_ms = now
        return n

    async def reject(self, store_id: str, ranges: Ranges, reason: str) -> int:
        """The cloud will never take these: move them to the dead-letter table."""
        if store_id != self.store_id:
            return 0
        now = Clock.now_ms()
        clauses = _seq_clauses(ranges)
        async with self._lock:
            n, freed = await self._measure(clauses)
            rejected = self._counters["rejected_events"] + n
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for clause in clauses:
                    await self._db.execute(
                        "INSERT OR REPLACE INTO dead_letter (seq, lane, kind, body, reason, rejected_ms) "
                        f"SELECT seq, lane, kind, body, ?, ? FROM events WHERE {clause}",
                        (reason[:1000], now),
                    )
                    await self._db.execute(f"DELETE FROM events WHERE {clause}")
                await self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('rejected_events', ?)", (str(rejected),)
                )
                await self._db.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise
        self._release(freed)
        self._counters["rejected_events"] = rejected
        if n:
            log.warning("cloud rejected %d events (%s): moved to dead_letter", n, reason)
        return n

    async def _measure(self, clauses: list[str]) -> tuple[int, dict[Lane, int]]:
        """How many stored events the clauses cover, and their bytes by lane. Call under the lock."""
        n = 0
        freed: dict[Lane, int] = {}
        for clause in clauses:
            for lane, count, size in await self._db.execute_fetchall(
                f"SELECT lane, COUNT(*), COALESCE(SUM(size), 0) FROM events WHERE {clause} GROUP BY lane"
            ):
                freed[Lane(lane)] = freed.get(Lane(lane), 0) + size
                n += count
        return n, freed

    def _release(self, freed: dict[Lane, int]) -> None:
        for lane, size in freed.items():
            self._bytes[lane] -= size
        if freed and self._store_full:
            self._work.set()  # room may have come back: let the writer re-judge "store full"

    async def set_meta(self, items: dict[str, str]) -> None:
        """Small facts for ``gatehouse gateway status`` (uplink connection state and the like)."""
        async with self._lock:
            await self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", items.items()
            )

    # ---------------------------------------------------------------- status

    @property
    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    @property
    def store_full(self) -> bool:
        return self._store_full

    @property
    def backlog_bytes(self) -> int:
        return sum(self._bytes.values())

    async def stats(self) -> OutboxStats:
        async with self._lock:
            backlog_rows = await self._db.execute_fetchall("SELECT lane, COUNT(*) FROM events GROUP BY lane")
            dead_rows = await self._db.execute_fetchall("SELECT COUNT(*) FROM dead_letter")
        backlog = {lane.name.lower(): 0 for lane in Lane}
        for lane, n in backlog_rows:
            backlog[Lane(lane).name.lower()] = n
        dead = next(iter(dead_rows))[0]
        return OutboxStats(
            self.store_id,
            self._next_seq,
            backlog,
            self.backlog_bytes,
            self.max_bytes,
            dead,
            self.counters,
            self._store_full,
            self.last_ack_ms,
        )


def _insert_and_commit(
    conn: sqlite3.Connection, rows: list[tuple[int, int, str, int, bytes]], meta: list[tuple[str, str]]
) -> None:
    """One group commit without eviction, run on aiosqlite's thread with its raw connection: the
    events, the counters and ``next_seq`` in one ``synchronous=FULL`` transaction, or none of it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(_INSERT_EVENTS, rows)
        conn.executemany(_SET_META, meta)
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except Exception:  # pragma: no cover - the transaction may already be gone
            log.debug("rollback failed", exc_info=True)
        raise


def _seq_clauses(ranges: Ranges) -> list[str]:
    """SQL conditions covering ``ranges``, at most 200 ranges each (SQLite limits expression depth).
    The ranges are validated integers, so writing them into the SQL is safe."""
    return [
        " OR ".join(f"seq BETWEEN {int(a)} AND {int(b)}" for a, b in ranges[i : i + 200])
        for i in range(0, len(ranges), 200)
    ]


@dataclass
class _Eviction:
    count: int = 0
    freed: int = 0
    bytes_by_lane: dict[Lane, int] = field(default_factory=dict)
    report_rows: list[tuple[int, int, str, int, bytes]] = field(default_factory=list)
