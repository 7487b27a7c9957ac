"""The gateway's credential store and the access decisions it makes from it, on site and offline.

The store is its own SQLite file (not the outbox): credentials, access levels (door groups with a
schedule), schedules and holidays, at one version of the cloud's access data (see
``protocols/access.py`` for the data and the delta rules). Two connections:

- the event loop's, which only reads: ``decide`` is synchronous and looks up one indexed row per
  card (levels, schedules and holidays are few and cached in memory);
- a worker thread's, which does every write, ``synchronous=FULL``: staging the parts of a delta
  and applying a complete delta in one transaction, and recording anti-passback passages and the
  "current" time handed over by the loop. The loop never waits for a lock or a disk flush.

While a delta is being applied the loop's connection holds a read transaction open, so decisions
keep seeing the previous version *with the caches of that version*; when the worker has committed,
the loop swaps the caches in and ends that read transaction in one step. No decision ever sees
credentials of one version and levels of another. Passages not written yet are kept in memory and
honoured by decisions meanwhile.

Decisions, first failing check wins: unknown, suspended, store_stale, clock_unsynced,
not_yet_valid / expired, wrong_door, outside_schedule, anti_passback, pin_required / wrong_pin.
A store never synced counts as stale; so does a store whose last contact lies in the future of
the gateway's clock (the clock went back): its age cannot be known. ``valid_until_ms`` is
exclusive (expired from that instant on), like the end of a schedule interval.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import TypeAdapter, ValidationError

from edge.schedules import is_open
from protocols.access import AccessDelta, AccessLevel, Credential, Decision, Interval, Schedule, pin_hash
from protocols.events import NewEvent

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS credentials (
    id TEXT PRIMARY KEY,
    card TEXT NOT NULL,                -- canonical decimal: no leading zeros
    facility INTEGER,                  -- NULL: any facility code
    holder TEXT NOT NULL,
    levels TEXT NOT NULL,              -- JSON array of level ids
    valid_from_ms INTEGER,
    valid_until_ms INTEGER,            -- exclusive: expired from this instant on
    pin_hash TEXT,
    suspended INTEGER NOT NULL,
    offline_ok INTEGER NOT NULL,
    clock_free INTEGER NOT NULL,
    first_person_in INTEGER NOT NULL,
    antipassback_exempt INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS credentials_card ON credentials (card);
CREATE TABLE IF NOT EXISTS levels (id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedules (id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holidays (date TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID;
-- The last direction each credential passed in each anti-passback area: the gateway's own state,
-- not the cloud's (a reset keeps it for the credentials that remain).
CREATE TABLE IF NOT EXISTS passback (
    credential TEXT NOT NULL,
    area TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (credential, area)
) WITHOUT ROWID;
-- Parts of a multi-part delta kept until all have come (they survive a restart).
CREATE TABLE IF NOT EXISTS staging (
    reset INTEGER NOT NULL,
    base INTEGER NOT NULL,
    version INTEGER NOT NULL,
    part INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    body BLOB NOT NULL,                -- the part without its credentials: zlib-compressed JSON
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (reset, base, version, part)
) WITHOUT ROWID;
-- Their credentials, as rows ready for ``credentials``.
CREATE TABLE IF NOT EXISTS staged_credentials (
    reset INTEGER NOT NULL,
    base INTEGER NOT NULL,
    version INTEGER NOT NULL,
    part INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    id TEXT NOT NULL,
    card TEXT NOT NULL,
    facility INTEGER,
    holder TEXT NOT NULL,
    levels TEXT NOT NULL,
    valid_from_ms INTEGER,
    valid_until_ms INTEGER,
    pin_hash TEXT,
    suspended INTEGER NOT NULL,
    offline_ok INTEGER NOT NULL,
    clock_free INTEGER NOT NULL,
    first_person_in INTEGER NOT NULL,
    antipassback_exempt INTEGER NOT NULL,
    PRIMARY KEY (reset, base, version, part, id)
) WITHOUT ROWID;
"""

_WAL_LIMIT = 8 * 1024 * 1024  # the WAL file is cut back to this when it restarts

_CRED_COLUMNS = (
    "id, card, facility, holder, levels, valid_from_ms, valid_until_ms, pin_hash, "
    "suspended, offline_ok, clock_free, first_person_in, antipassback_exempt"
)
_FIND = (
    "SELECT id, facility, holder, levels, valid_from_ms, valid_until_ms, pin_hash, suspended, "
    "offline_ok, clock_free, first_person_in, antipassback_exempt FROM credentials WHERE card = ?"
)
_UPSERT_CRED = f"INSERT OR REPLACE INTO credentials ({_CRED_COLUMNS}) VALUES ({', '.join('?' * 13)})"
_STAGE_CREDENTIAL = (
    f"INSERT OR REPLACE INTO staged_credentials (reset, base, version, part, parts, {_CRED_COLUMNS}) "
    f"VALUES ({', '.join('?' * 18)})"
)
_STAGED_PARTS = "SELECT part, body FROM staging WHERE reset = ? AND base = ? AND version = ? ORDER BY part"
# In part order, so of an id sent twice the later part's stands.
_UNSTAGE_CREDENTIALS = (
    f"INSERT OR REPLACE INTO credentials ({_CRED_COLUMNS}) SELECT {_CRED_COLUMNS} FROM staged_credentials "
    "WHERE reset = ? AND base = ? AND version = ? ORDER BY part"
)


def canonical_card(card: str) -> str:
    """A card number as stored and looked up: decimal without leading zeros ("00123" is "123")."""
    stripped = card.lstrip("0")
    return stripped or ("0" if card else card)


# ------------------------------------------------------------------------------- requests, answers


@dataclass(frozen=True, slots=True)
class AccessRequest:
    card: str  # decimal card number as the reader decoded it
    facility: int | None
    door: str
    reader: str
    direction: Literal["in", "out"] | None = None  # for anti-passback
    area: str = ""  # anti-passback area; "" = none
    antipassback: Literal["off", "soft", "hard"] = "off"  # soft: grant but flag the violation
    keypad: bool = False  # the reader has a keypad: a credential with a PIN needs it
    pin: str | None = None


@dataclass(frozen=True, slots=True)
class AccessDecision:
    granted: bool
    # None when granted normally; ANTI_PASSBACK on a grant means a soft anti-passback violation.
    reason: Decision | None
    credential_id: str | None
    holder: str
    store_version: int
    store_age_s: float | None  # None: never synced
    first_person_in: bool  # the credential may open a first-person-in door
    antipassback_violation: bool = False  # soft anti-passback let it through

    def event(self, req: AccessRequest, time_ms: int | None = None) -> NewEvent:
        """``access.granted`` or ``access.denied``, its source the door."""
        return NewEvent(
            "access.granted" if self.granted else "access.denied",
            req.door,
            {
                "door": req.door,
                "reader": req.reader,
                "card": req.card,
                "facility": req.facility,
                "credential": self.credential_id,
                "holder": self.holder,
                "reason": None if self.reason is None else self.reason.value,
                "store_version": self.store_version,
                "store_age_s": None if self.store_age_s is None else round(self.store_age_s, 3),
                "first_person_in": self.first_person_in,
                "antipassback_violation": self.antipassback_violation,
                "direction": req.direction,
                "area": req.area,
            },
            time_ms=time_ms,
        )


@dataclass(frozen=True)
class ApplyOutcome:
    code: Literal["applied", "pending", "current", "version_mismatch"]
    version: int  # the store's version after this call
    detail: str = ""


# ------------------------------------------------------------------------------- cached data


@dataclass(frozen=True, slots=True)
class _Level:
    doors: frozenset[str]
    schedule: str  # "" = at all times


@dataclass(frozen=True, slots=True)
class _Schedule:
    intervals: tuple[Interval, ...]
    holiday: tuple[Interval, ...]


@dataclass(slots=True)
class _Snapshot:
    """What the loop keeps in memory of one version of the store."""

    version: int = 0
    current_at_ms: int | None = None
    levels: dict[str, _Level] = field(default_factory=dict)
    schedules: dict[str, _Schedule] = field(default_factory=dict)
    holidays: frozenset[date] = frozenset()
    credentials: int = 0


@dataclass(frozen=True, slots=True)
class _WorkerResult:
    outcome: ApplyOutcome
    snapshot: _Snapshot | None = None  # set when the store changed


def _load_snapshot(db: sqlite3.Connection) -> _Snapshot:
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    levels = {}
    for lid, body in db.execute("SELECT id, body FROM levels").fetchall():
        lv = AccessLevel.model_validate_json(body)
        levels[lid] = _Level(frozenset(lv.doors), lv.schedule)
    schedules = {}
    for sid, body in db.execute("SELECT id, body FROM schedules").fetchall():
        s = Schedule.model_validate_json(body)
        schedules[sid] = _Schedule(tuple(s.intervals), tuple(s.holiday))
    holidays = frozenset(date.fromisoformat(d) for (d,) in db.execute("SELECT date FROM holidays").fetchall())
    (count,) = db.execute("SELECT COUNT(*) FROM credentials").fetchone()
    return _Snapshot(
        version=int(meta.get("version", 0)),
        current_at_ms=int(meta["current_at_ms"]) if "current_at_ms" in meta else None,
        levels=levels,
        schedules=schedules,
        holidays=holidays,
        credentials=int(count),
    )


def _connect(path: Path, synchronous: str, busy_ms: int, same_thread: bool = True) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=same_thread)
    try:
        db.execute("PRAGMA journal_mode=WAL").fetchall()
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute(f"PRAGMA busy_timeout={busy_ms}")
    except BaseException:
        db.close()
        raise
    return db


def _cred_row(c: Credential) -> tuple[Any, ...]:
    return (
        c.id,
        canonical_card(c.card),
        c.facility,
        c.holder,
        orjson.dumps(c.levels).decode(),
        c.valid_from_ms,
        c.valid_until_ms,
        c.pin_hash,
        int(c.suspended),
        int(c.offline_ok),
        int(c.clock_free),
        int(c.first_person_in),
        int(c.antipassback_exempt),
    )


# ------------------------------------------------------------------------------- the store


class CredentialStore:
    """Open with ``CredentialStore.open(path)`` on the event loop's thread; ``close()`` when done
    (after any ``apply`` has returned)."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._snap = _load_snapshot(db)
        # The loop never writes: passages (by credential and area) and the "current" time go to
        # the worker thread, and until it has written them decisions read them from here.
        self._passages: dict[tuple[str, str], tuple[str, int]] = {}
        self._current_unsaved = False
        self._writing = False  # one write of those at a time
        self._applying = False
        self._marked_while_applying = False
        self._apply_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="access-store")
        self._writer: sqlite3.Connection | None = None  # made and used only in the worker thread
        self._tasks: set[asyncio.Task[ApplyOutcome]] = set()
        self._closed = False

    @classmethod
    def open(cls, path: Path) -> CredentialStore:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The loop's connection only reads (after creating the schema); WAL readers do not wait
        # for writers, so a long busy timeout would only ever hide a stuck foreign process.
        db = _connect(path, "NORMAL", 50)
        try:
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?), ('version', '0')",
                (SCHEMA_VERSION,),
            )
            return cls(db, path)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        """Write what is still held in memory, then close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        passages = dict(self._passages)
        current = self._snap.current_at_ms if self._current_unsaved else None

        def finish() -> None:
            try:
                if passages or current is not None:
                    self._write_state(passages, current)
            except Exception:
                log.exception("access store: passages not written at close")
            if self._writer is not None:
                self._writer.close()  # the last connection: its checkpoint runs here, not on the loop
                self._writer = None

        self._db.close()
        self._executor.submit(finish).result()
        self._executor.shutdown(wait=True)

    # ---------------------------------------------------------------- state

    @property
    def version(self) -> int:
        return self._snap.version

    @property
    def current_at_ms(self) -> int | None:
        """When the store was last known to be the cloud's current version (UTC ms)."""
        return self._snap.current_at_ms

    def age_s(self, now_ms: int) -> float | None:
        """Seconds since the store was last known current; None if never. Negative when the
        gateway's clock is behind the time of that contact (decisions treat that as stale)."""
        at = self._snap.current_at_ms
        return None if at is None else (now_ms - at) / 1000

    def holidays(self) -> frozenset[date]:
        """The site's holidays at the store's version (door unlock and arming schedules use them too)."""
        return self._snap.holidays

    def mark_current(self, now_ms: int) -> None:
        """The cloud said this version is current: the staleness limit runs from ``now_ms``."""
        self._snap.current_at_ms = now_ms
        self._current_unsaved = True
        self._marked_while_applying = self._applying
        self._schedule_write()

    def stats(self) -> dict[str, Any]:
        pending = self._db.execute(
            "SELECT reset, base, version, parts, COUNT(*) FROM staging GROUP BY reset, base, version, parts"
        ).fetchall()
        s = self._snap
        return {
            "credentials": s.credentials,
            "levels": len(s.levels),
            "schedules": len(s.schedules),
            "holidays": len(s.holidays),
            "version": s.version,
            "current_at_ms": s.current_at_ms,
            "pending_parts": sum(r[4] for r in pending),
            "pending": [
                {"reset": bool(r[0]), "base": r[1], "version": r[2], "parts": r[3], "have": r[4]}
                for r in pending
            ],
            "applying": self._applying,
        }

    # ---------------------------------------------------------------- decisions

    def decide(
        self,
        req: AccessRequest,
        *,
        now_ms: int,
        clock_synced: bool,
        stale_after_s: float,
        tz: tzinfo,
    ) -> AccessDecision:
        """Grant or deny ``req`` from the store; records the passage on a grant (anti-passback)."""
        snap = self._snap
        age = self.age_s(now_ms)
        row = self._find(req.card, req.facility)
        if row is None:
            return AccessDecision(False, Decision.UNKNOWN, None, "", snap.version, age, False)
        (
            cid,
            _facility,
            holder,
            levels_json,
            valid_from,
            valid_until,
            stored_pin,
            suspended,
            offline_ok,
            clock_free,
            first_in,
            exempt,
        ) = row
        first_in = bool(first_in)

        def deny(reason: Decision, apb: bool = False) -> AccessDecision:
            return AccessDecision(False, reason, cid, holder, snap.version, age, first_in, apb)

        if suspended:
            return deny(Decision.SUSPENDED)
        if (age is None or age < 0 or age > stale_after_s) and not offline_ok:
            return deny(Decision.STORE_STALE)
        trusted_clock = clock_synced
        if not clock_synced and not clock_free:
            return deny(Decision.CLOCK_UNSYNCED)
        if trusted_clock:
            if valid_from is not None and now_ms < valid_from:
                return deny(Decision.NOT_YET_VALID)
            if valid_until is not None and now_ms >= valid_until:
                return deny(Decision.EXPIRED)
        holding = [
            lv for lid in orjson.loads(levels_json) if (lv := snap.levels.get(lid)) and req.door in lv.doors
        ]
        if not holding:
            return deny(Decision.WRONG_DOOR)
        if trusted_clock and not self._any_open(holding, snap, now_ms, tz):
            return deny(Decision.OUTSIDE_SCHEDULE)
        violation = False
        tracked = bool(req.area and req.direction and not exempt)
        if tracked and req.antipassback != "off":
            violation = self._last_direction(cid, req.area) == req.direction
            if violation and req.antipassback == "hard":
                return deny(Decision.ANTI_PASSBACK, True)
        if stored_pin and req.keypad:
            if req.pin is None:
                return deny(Decision.PIN_REQUIRED, violation)
            if not _pin_matches(cid, req.pin, stored_pin):
                return deny(Decision.WRONG_PIN, violation)
        if tracked:
            # Also where this door does not enforce anti-passback (an exit reader set to "off"):
            # the area's enforcing doors need to know the holder left.
            assert req.direction is not None
            self._record_passage(cid, req.area, req.direction, now_ms)
        return AccessDecision(
            True,
            Decision.ANTI_PASSBACK if violation else None,
            cid,
            holder,
            snap.version,
            age,
            first_in,
            violation,
        )

    def _find(self, card: str, facility: int | None) -> tuple[Any, ...] | None:
        rows = self._db.execute(_FIND, (canonical_card(card),)).fetchall()
        best = None
        for r in rows:
            if r[1] is None:
                if best is None or (best[1] is None and r[0] < best[0]):
                    best = r
            elif r[1] == facility and (best is None or best[1] is None or r[0] < best[0]):
                best = r
        return best

    @staticmethod
    def _any_open(holding: Sequence[_Level], snap: _Snapshot, now_ms: int, tz: tzinfo) -> bool:
        local: datetime | None = None
        for lv in holding:
            if not lv.schedule:
                return True
            sched = snap.schedules.get(lv.schedule)
            if sched is None:  # a level naming a schedule the store lacks is closed, never open
                continue
            if local is None:
                local = datetime.fromtimestamp(now_ms / 1000, tz)
            if is_open(sched.intervals, sched.holiday, snap.holidays, local):
                return True
        return False

    # ---------------------------------------------------------------- anti-passback

    def _last_direction(self, credential: str, area: str) -> str | None:
        pending = self._passages.get((credential, area))
        if pending is not None:
            return pending[0]
        row = self._db.execute(
            "SELECT direction FROM passback WHERE credential = ? AND area = ?", (credential, area)
        ).fetchall()
        return row[0][0] if row else None

    def _record_passage(self, credential: str, area: str, direction: str, now_ms: int) -> None:
        self._passages[(credential, area)] = (direction, now_ms)
        self._schedule_write()

    def passages(self, credential: str) -> dict[str, str]:
        """The last direction of ``credential`` in each area it was seen in."""
        out = dict(
            self._db.execute(
                "SELECT area, direction FROM passback WHERE credential = ?", (credential,)
            ).fetchall()
        )
        out.update({a: d for (c, a), (d, _) in self._passages.items() if c == credential})
        return out

    def _schedule_write(self) -> None:
        """Hand the passages and the "current" time held in memory to the worker thread, behind
        any apply in progress. One such write at a time; what comes meanwhile goes in the next."""
        if self._writing or self._closed or not (self._passages or self._current_unsaved):
            return
        passages = dict(self._passages)
        current = self._snap.current_at_ms if self._current_unsaved else None
        self._current_unsaved = False
        self._writing = True
        fut = self._executor.submit(self._write_state, passages, current)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used without an event loop (a tool, a test): wait for it
            fut.exception()
            self._written(fut, passages, current)
            return

        def done(f: Future[None]) -> None:
            try:
                loop.call_soon_threadsafe(self._written, f, passages, current)
            except RuntimeError:  # the loop is gone; close() writes what is left
                pass

        fut.add_done_callback(done)

    def _written(
        self, fut: Future[None], passages: dict[tuple[str, str], tuple[str, int]], current: int | None
    ) -> None:
        self._writing = False
        exc = fut.exception()
        if exc is not None:
            # Kept in memory (decisions still honour them) and tried again with the next passage.
            log.error("access store: passages not written: %s", exc)
            if current is not None:
                self._current_unsaved = True
            return
        for key, value in passages.items():
            if self._passages.get(key) == value:
                del self._passages[key]
        self._schedule_write()

    def _write_state(self, passages: dict[tuple[str, str], tuple[str, int]], current: int | None) -> None:
        db = self._writer_db()
        db.execute("BEGIN IMMEDIATE")
        try:
            # A passage of a credential removed meanwhile is not kept.
            db.executemany(
                "INSERT OR REPLACE INTO passback (credential, area, direction, at_ms) "
                "SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM credentials WHERE id = ?1)",
                [(c, a, d, t) for (c, a), (d, t) in passages.items()],
            )
            if current is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('current_at_ms', ?)", (str(current),)
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # ---------------------------------------------------------------- sync

    async def apply(self, delta: AccessDelta, *, now_ms: int) -> ApplyOutcome:
        """Take one delta (or part of one) from the cloud. The writing happens in a worker thread;
        cancelling the caller does not stop an apply that has begun (it completes, and the
        store's caches follow it)."""
        task = asyncio.ensure_future(self._apply(delta, now_ms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def apply_json(self, body: bytes | str, *, now_ms: int) -> ApplyOutcome:
        """``apply`` for a delta still in its JSON form (the ``access.sync`` command's arguments),
        parsed with ``parse_delta`` in the worker thread. Raises pydantic's ``ValidationError``
        when ``body`` is not an AccessDelta."""
        loop = asyncio.get_running_loop()
        delta = await loop.run_in_executor(self._executor, parse_delta, body)
        return await self.apply(delta, now_ms=now_ms)

    async def _apply(self, delta: AccessDelta, now_ms: int) -> ApplyOutcome:
        async with self._apply_lock:
            have = self._snap.version
            if not delta.reset:
                if delta.empty:
                    if delta.base == delta.version == have:
                        self.mark_current(now_ms)
                        return ApplyOutcome("current", have)
                    return ApplyOutcome(
                        "version_mismatch", have, f"have {have}, got {delta.base}->{delta.version}"
                    )
                if delta.base < have and delta.version <= have:
                    return ApplyOutcome("current", have, f"already past {delta.version}")
                if delta.base != have:
                    return ApplyOutcome("version_mismatch", have, f"have {have}, got base {delta.base}")
            loop = asyncio.get_running_loop()
            # Pin the loop's view to the version it has cached until the caches are swapped.
            self._db.execute("BEGIN")
            self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchall()
            self._applying = True
            self._marked_while_applying = False
            try:
                result = await loop.run_in_executor(self._executor, self._apply_in_worker, delta, now_ms)
                if result.snapshot is not None:
                    if self._marked_while_applying:  # that mark_current came later: it stands
                        result.snapshot.current_at_ms = self._snap.current_at_ms
                    self._snap = result.snapshot
            finally:
                self._db.execute("COMMIT")
                self._applying = False
            # Checkpoint now that no snapshot of the loop holds the WAL, or back-to-back applies
            # (the 50 parts of a reset) would only ever grow it.
            await loop.run_in_executor(self._executor, self._checkpoint)
            return result.outcome

    def _checkpoint(self) -> None:
        try:
            self._writer_db().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as e:
            log.warning("access store: checkpoint failed: %s", e)

    def _writer_db(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = _connect(self.path, "FULL", 10_000, same_thread=False)
            self._writer.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}").fetchall()
        return self._writer

    def _apply_in_worker(self, delta: AccessDelta, now_ms: int) -> _WorkerResult:
        db = self._writer_db()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = self._stage_or_apply(db, delta, now_ms)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            if delta.parts > 1:
                # A set of parts that cannot be applied is dropped, so a resend starts clean.
                self._drop_staged(db, delta)
            raise
        return result

    def _drop_staged(self, db: sqlite3.Connection, delta: AccessDelta) -> None:
        try:
            for table in ("staging", "staged_credentials"):
                db.execute(
                    f"DELETE FROM {table} WHERE reset = ? AND base = ? AND version = ?",
                    (int(delta.reset), delta.base, delta.version),
                )
        except sqlite3.Error:
            log.exception("access store: could not drop the staged parts of %s", delta.version)

    def _stage_or_apply(self, db: sqlite3.Connection, delta: AccessDelta, now_ms: int) -> _WorkerResult:
        version = int(db.execute("SELECT value FROM meta WHERE key = 'version'").fetchall()[0][0])
        if delta.parts == 1:
            _write(db, delta.reset, [delta])
            db.executemany(_UPSERT_CRED, _yielding(_cred_row(c) for c in delta.credentials))
        else:
            key = (int(delta.reset), delta.base, delta.version)
            have = self._stage(db, key, delta, now_ms)
            if have < delta.parts:
                return _WorkerResult(ApplyOutcome("pending", version, f"have {have} of {delta.parts} parts"))
            # All parts are here: the small rest of each part is parsed, the credentials (the
            # bulk) go from staging to the store in SQLite alone, without holding the GIL.
            parts = []
            for part, body in db.execute(_STAGED_PARTS, key).fetchall():
                parts.append(delta if part == delta.part else _unpack(body))
            _write(db, delta.reset, parts)
            db.execute(_UNSTAGE_CREDENTIALS, key)
        new = delta.version
        db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(new),))
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('current_at_ms', ?)", (str(now_ms),))
        # Keep only parts that may still apply: deltas from this version on, newer resets.
        for table in ("staging", "staged_credentials"):
            db.execute(
                f"DELETE FROM {table} WHERE NOT ((reset = 0 AND base >= ?1) OR (reset = 1 AND version > ?1))",
                (new,),
            )
        if delta.reset:
            db.execute("DELETE FROM passback WHERE credential NOT IN (SELECT id FROM credentials)")
        snap = _load_snapshot(db)
        detail = f"{delta.parts} part(s), {snap.credentials} credentials in the store"
        return _WorkerResult(ApplyOutcome("applied", new, detail), snap)

    @staticmethod
    def _stage(db: sqlite3.Connection, key: tuple[int, int, int], delta: AccessDelta, now_ms: int) -> int:
        """Keep one part aside (again, if it was sent before); how many of its delta's parts are here."""
        # Parts of another split of the same change (a different ``parts``) are stale.
        for table in ("staging", "staged_credentials"):
            db.execute(
                f"DELETE FROM {table} WHERE reset = ? AND base = ? AND version = ? "
                "AND (parts != ? OR part = ?)",
                (*key, delta.parts, delta.part),
            )
        rest = delta.model_copy(update={"credentials": []})
        db.execute(
            "INSERT INTO staging (reset, base, version, part, parts, body, received_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*key, delta.part, delta.parts, _pack(rest), now_ms),
        )
        head = (*key, delta.part, delta.parts)
        db.executemany(_STAGE_CREDENTIAL, _yielding(head + _cred_row(c) for c in delta.credentials))
        (have,) = db.execute(
            "SELECT COUNT(*) FROM staging WHERE reset = ? AND base = ? AND version = ?", key
        ).fetchone()
        return int(have)


def _write(db: sqlite3.Connection, reset: bool, parts: Sequence[AccessDelta]) -> None:
    """All but the credentials of ``parts`` (one delta) into the open transaction: removals
    first, then upserts, so an id both removed and sent ends up as sent."""

    def each(attr: str) -> Iterable[Any]:
        for p in parts:
            yield from getattr(p, attr)

    if reset:
        for table in ("credentials", "levels", "schedules", "holidays"):
            db.execute(f"DELETE FROM {table}")
    else:
        removed = [(i,) for i in each("removed_credentials")]
        db.executemany("DELETE FROM credentials WHERE id = ?", removed)
        db.executemany("DELETE FROM passback WHERE credential = ?", removed)
        db.executemany("DELETE FROM levels WHERE id = ?", [(i,) for i in each("removed_levels")])
        db.executemany("DELETE FROM schedules WHERE id = ?", [(i,) for i in each("removed_schedules")])
    db.executemany(
        "INSERT OR REPLACE INTO schedules (id, body) VALUES (?, ?)",
        [(s.id, s.model_dump_json()) for s in each("schedules")],
    )
    db.executemany(
        "INSERT OR REPLACE INTO levels (id, body) VALUES (?, ?)",
        [(lv.id, lv.model_dump_json()) for lv in each("levels")],
    )
    holidays = None
    for p in parts:
        if p.holidays is not None:
            holidays = p.holidays
    if holidays is not None:
        db.execute("DELETE FROM holidays")
        db.executemany(
            "INSERT OR REPLACE INTO holidays (date, name) VALUES (?, ?)",
            [(h.date.isoformat(), h.name) for h in holidays],
        )


def _yield_gil() -> None:
    """Let the event loop's thread have the GIL now rather than at the next forced switch (5 ms):
    the worker's Python work (parsing parts, building rows) comes in slices of about 1 ms."""
    time.sleep(0)


def _yielding(rows: Iterable[tuple[Any, ...]], every: int = 500) -> Iterator[tuple[Any, ...]]:
    for i, row in enumerate(rows):
        if i % every == every - 1:
            _yield_gil()
        yield row


_CREDENTIAL_LIST: TypeAdapter[list[Credential]] = TypeAdapter(list[Credential])


def parse_delta(body: bytes | str, chunk: int = 200) -> AccessDelta:
    """``AccessDelta.model_validate_json(body)``, its credentials validated ``chunk`` at a time
    with the GIL let go in between. Validating a part of 2,000 credentials in one call holds the
    GIL for about 5 ms here (several times that on a Raspberry Pi), and the event loop, even when
    this runs in another thread, waits that long."""
    try:
        raw = orjson.loads(body)
        creds = raw.pop("credentials", []) if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or not isinstance(creds, list):
            raise ValueError("not a delta")
        checked: list[Credential] = []
        for i in range(0, len(creds), chunk):
            checked.extend(_CREDENTIAL_LIST.validate_python(creds[i : i + chunk]))
            _yield_gil()
        return AccessDelta.model_validate({**raw, "credentials": checked})
    except (ValueError, ValidationError):
        # The same data once more, in one piece: the error then names the place in ``body``.
        return AccessDelta.model_validate_json(body)


def _pack(delta: AccessDelta) -> bytes:
    # Staged parts are deleted once applied: compressed, they leave less free space in the file.
    return zlib.compress(delta.model_dump_json(exclude_defaults=True).encode(), 1)


def _unpack(body: bytes) -> AccessDelta:
    return AccessDelta.model_validate_json(zlib.decompress(body))


def _pin_matches(credential_id: str, pin: str, stored: str) -> bool:
    try:
        entered = pin_hash(credential_id, pin)
    except ValueError:  # not 4 to 12 digits: cannot be the PIN
        return False
    return hmac.compare_digest(entered, stored)
