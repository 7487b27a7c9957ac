"""A site's access-control data: changing it (imports, schedules, holidays) and the deltas that
carry the changes to its gateways.

Versions: every change that changes something bumps the site's version once (one transaction) and
stamps the rows it touched with the new version; what it removes stays as a tombstone with that
version. So ``delta_for(site, base)`` is what has a version above ``base``: the live rows as
upserts and the tombstones as removals. A change that changes nothing (a file imported twice) leaves
the version alone, so the gateways are sent nothing.

Each change takes an optional ``audit`` hook, called in the change's transaction with what it did
(``Touched``): the caller writes the audit entry there, so the change and its entry commit together.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.access import repository as repo
from cloud.access.csvfile import (
    InvalidRows,
    ParsedCredentials,
    RowError,
    parse_credentials,
    parse_levels,
)
from cloud.db import SessionFactory
from cloud.kit.errors import Conflict, InvalidInput, NotFound
from protocols.access import (
    CREDENTIALS_PER_PART,
    AccessDelta,
    AccessLevel,
    Credential,
    Holiday,
    Schedule,
    pin_hash,
    split_delta,
)

log = logging.getLogger(__name__)

MAX_SITE_LENGTH = 200
_PIN_CHUNK = 256
# What the audit log is told of a change: at most this many keys per list (a 100,000-row import
# is counted, not listed), and each row before and after only when it touched at most DETAILED_ROWS.
MAX_AUDIT_KEYS = 1000
DETAILED_ROWS = 20


class UnknownSchedule(NotFound):
    code = "unknown_schedule"


class ScheduleInUse(Conflict):
    code = "schedule_in_use"


@dataclass(frozen=True, slots=True)
class Change:
    """What a change did. ``version`` is the site's version after it (unchanged if nothing was)."""

    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    version: int = 0

    @property
    def bumped(self) -> bool:
        return bool(self.added or self.changed or self.removed)


@dataclass(frozen=True, slots=True)
class Touched:
    """What a change did, key by key, for the audit log. ``rows_before``/``rows_after``: each
    touched row's values (a credential's PIN only as "none", "set" or "changed", never its hash),
    or None when the change touched more than ``DETAILED_ROWS``."""

    table: str  # "credentials", "levels", "schedules", "holidays"
    base: int  # the site's version before the change
    added: list[str]
    changed: list[str]
    removed: list[str]
    rows_before: dict[str, dict[str, Any]] | None
    rows_after: dict[str, dict[str, Any]] | None


# Called in the change's transaction: (session, what it did, row by row).
AuditHook = Callable[[AsyncSession, Change, Touched], Awaitable[None]]


def _pin_shown(before: str | None, after: str | None) -> str:
    if after is None:
        return "none"
    return "changed" if before is not None and before != after else "set"


def _shown(row: dict[str, Any], pin_before: str | None = None, *, after: bool = False) -> dict[str, Any]:
    """A row as the audit log may keep it: a PIN hash is a secret (a 4-digit PIN falls to 10,000
    guesses), so only whether there is one, and in ``after`` whether it changed."""
    if "pin_hash" not in row:
        return row
    shown = {k: v for k, v in row.items() if k != "pin_hash"}
    if after:
        shown["pin"] = _pin_shown(pin_before, row["pin_hash"])
    else:
        shown["pin"] = "none" if row["pin_hash"] is None else "set"
    return shown


def _touched(
    table: Table,
    base: int,
    plan: _Plan,
    removed: Sequence[Any],
    old: dict[Any, tuple[Any, ...]],
    rows: dict[Any, dict[str, Any]],
) -> Touched:
    values = repo.VALUES[table.name]
    keys = (*plan.added, *plan.changed, *removed)
    rows_before: dict[str, dict[str, Any]] | None = None
    rows_after: dict[str, dict[str, Any]] | None = None
    if len(keys) <= DETAILED_ROWS:
        rows_before, rows_after = {}, {}
        for k in keys:
            had = old.get(k)
            before = dict(zip(values, had[1:], strict=True)) if had is not None and not had[0] else None
            if before is not None:
                rows_before[str(k)] = _shown(before)
            if k in rows:
                pin_before = before.get("pin_hash") if before is not None else None
                rows_after[str(k)] = _shown(rows[k], pin_before, after=True)

    def listed(ks: Sequence[Any]) -> list[str]:
        return sorted(str(k) for k in ks)[:MAX_AUDIT_KEYS]

    return Touched(
        table.name.removeprefix("access_"),
        base,
        listed(plan.added),
        listed(plan.changed),
        listed(removed),
        rows_before,
        rows_after,
    )


def check_site(site: str) -> None:
    if not site or len(site) > MAX_SITE_LENGTH:
        raise InvalidInput(f"site: 1 to {MAX_SITE_LENGTH} characters")


# -- writing


@dataclass(slots=True)
class _Plan:
    added: list[Any]
    changed: list[Any]
    unchanged: int


def _plan(old: dict[Any, tuple[Any, ...]], new: dict[Any, tuple[Any, ...]]) -> _Plan:
    """Which of ``new`` (key -> values) are added (absent or a tombstone), changed or unchanged."""
    plan = _Plan([], [], 0)
    for key, values in new.items():
        had = old.get(key)
        if had is None or had[0]:
            plan.added.append(key)
        elif tuple(had[1:]) != values:
            plan.changed.append(key)
        else:
            plan.unchanged += 1
    return plan


async def _apply(
    session: AsyncSession,
    table: Table,
    site: str,
    current: int,
    plan: _Plan,
    rows: dict[Any, dict[str, Any]],
    removed: Sequence[Any] = (),
    *,
    old: dict[Any, tuple[Any, ...]],
    audit: AuditHook | None,
) -> Change:
    """Write the plan at version current + 1 (and bump the site) if it changes anything; tell
    ``audit`` what was done (also when nothing was: an import is recorded all the same)."""
    if not (plan.added or plan.changed or removed):
        change = Change(unchanged=plan.unchanged, version=current)
        if audit is not None:
            await audit(session, change, _touched(table, current, plan, removed, old, rows))
        return change
    version = current + 1
    key = repo.key_of(table)
    await repo.upsert(
        session,
        table,
        [
            {**rows[k], "site": site, key: k, "version": version, "deleted": False}
            for k in (*plan.added, *plan.changed)
        ],
    )
    await repo.tombstone(session, table, site, removed, version)
    await repo.set_version(session, site, version)
    change = Change(len(plan.added), len(plan.changed), plan.unchanged, len(removed), version)
    if audit is not None:
        await audit(session, change, _touched(table, current, plan, removed, old, rows))
    return change


def _credential_values(c: Credential) -> dict[str, Any]:
    return {
        "card": c.card,
        "facility": c.facility,
        "holder": c.holder,
        "levels": list(c.levels),
        "valid_from_ms": c.valid_from_ms,
        "valid_until_ms": c.valid_until_ms,
        "pin_hash": c.pin_hash,
        "suspended": c.suspended,
        "offline_ok": c.offline_ok,
        "clock_free": c.clock_free,
        "first_person_in": c.first_person_in,
        "antipassback_exempt": c.antipassback_exempt,
    }


def _hash_chunk(items: list[tuple[str, str]]) -> list[str]:
    return [pin_hash(cid, pin) for cid, pin in items]


async def _with_pin_hashes(parsed: ParsedCredentials) -> list[Credential]:
    """The credentials with their PINs hashed. PBKDF2 costs ~2 ms a PIN and releases the GIL:
    the hashing runs on a thread per core, off the event loop."""
    if not parsed.pins:
        return parsed.credentials
    items = list(parsed.pins.items())
    chunks = [items[i : i + _PIN_CHUNK] for i in range(0, len(items), _PIN_CHUNK)]
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="pin-hash") as pool:
        results = await asyncio.gather(*(loop.run_in_executor(pool, _hash_chunk, c) for c in chunks))
    hashes = {
        cid: h
        for chunk, hs in zip(chunks, results, strict=True)
        for (cid, _), h in zip(chunk, hs, strict=True)
    }
    return [
        c.model_copy(update={"pin_hash": hashes[c.id]}) if c.id in hashes else c for c in parsed.credentials
    ]


def _card_conflicts(holders: Iterable[tuple[str, str, int | None]], rows: dict[str, int]) -> list[RowError]:
    """Two live credentials a reader could not tell apart: the same card number with the same
    facility code, or with either matching any facility code. Reported on the file's rows."""
    by_card: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
    for cid, card, facility in holders:
        by_card[card].append((cid, facility))
    errors = []
    for card, group in by_card.items():
        if len(group) < 2:
            continue
        for i, (cid, facility) in enumerate(group):
            if cid not in rows:
                continue
            for j, (other, other_facility) in enumerate(group):
                if i != j and (facility is None or other_facility is None or facility == other_facility):
                    errors.append(RowError(rows[cid], "card", f"card {card} is also credential {other!r}'s"))
                    break
    return errors


async def import_credentials(
    sessions: SessionFactory,
    site: str,
    data: bytes,
    *,
    replace: bool = False,
    audit: AuditHook | None = None,
) -> Change:
    """Import a credentials CSV (see cloud/access/csvfile.py) into ``site``: all of it or nothing.
    With ``replace``, the site's credentials missing from the file are removed. Raises InvalidRows."""
    check_site(site)
    parsed = await asyncio.to_thread(parse_credentials, data)
    if replace and not parsed.credentials:
        raise InvalidRows([RowError(None, None, "no credentials in the file: replace would remove them all")])
    credentials = await _with_pin_hashes(parsed)
    rows = {c.id: _credential_values(c) for c in credentials}
    new = {cid: tuple(values[v] for v in repo.CREDENTIAL_VALUES) for cid, values in rows.items()}
    async with sessions() as session, session.begin():
        current = await repo.lock_site(session, site)
        levels = await repo.live_keys(session, repo.LEVELS, site)
        errors = [
            RowError(parsed.rows[c.id], "levels", f"no level {level!r} at site {site!r}")
            for c in credentials
            for level in c.levels
            if level not in levels
        ]
        old = await repo.existing(session, repo.CREDENTIALS, site, repo.CREDENTIAL_VALUES)
        removed = [k for k, had in old.items() if replace and not had[0] and k not in rows]
        gone = set(removed)
        holders = [
            (k, had[1], had[2]) for k, had in old.items() if not had[0] and k not in rows and k not in gone
        ]
        holders += [(c.id, c.card, c.facility) for c in credentials]
        errors += _card_conflicts(holders, parsed.rows)
        if errors:
            raise InvalidRows(errors)
        change = await _apply(
            session, repo.CREDENTIALS, site, current, _plan(old, new), rows, removed, old=old, audit=audit
        )
    log.info("site %r: credentials imported: %s", site, change)
    return change


async def import_levels(
    sessions: SessionFactory,
    site: str,
    data: bytes,
    *,
    replace: bool = False,
    audit: AuditHook | None = None,
) -> Change:
    """Import an access-levels CSV into ``site``: all of it or nothing. With ``replace``, levels
    missing from the file are removed (refused while a credential still holds one)."""
    check_site(site)
    parsed = await asyncio.to_thread(parse_levels, data)
    if replace and not parsed.levels:
        raise InvalidRows([RowError(None, None, "no levels in the file: replace would remove them all")])
    rows = {
        lv.id: {"name": lv.name, "doors": list(lv.doors), "schedule": lv.schedule} for lv in parsed.levels
    }
    new = {lid: tuple(values[v] for v in repo.LEVEL_VALUES) for lid, values in rows.items()}
    async with sessions() as session, session.begin():
        current = await repo.lock_site(session, site)
        schedules = await repo.live_keys(session, repo.SCHEDULES, site)
        errors = [
            RowError(parsed.rows[lv.id], "schedule", f"no schedule {lv.schedule!r} at site {site!r}")
            for lv in parsed.levels
            if lv.schedule and lv.schedule not in schedules
        ]
        old = await repo.existing(session, repo.LEVELS, site, repo.LEVEL_VALUES)
        removed = [k for k, had in old.items() if replace and not had[0] and k not in rows]
        if removed:
            errors += await _levels_still_held(session, site, set(removed))
        if errors:
            raise InvalidRows(errors)
        change = await _apply(
            session, repo.LEVELS, site, current, _plan(old, new), rows, removed, old=old, audit=audit
        )
    log.info("site %r: access levels imported: %s", site, change)
    return change


async def _levels_still_held(session: AsyncSession, site: str, levels: set[str]) -> list[RowError]:
    held: dict[str, list[str]] = defaultdict(list)
    table = repo.CREDENTIALS
    result = await session.execute(
        select(table.c.id, table.c.levels).where(table.c.site == site, table.c.deleted.is_(False))
    )
    for cid, holds in result:
        for level in set(holds) & levels:
            held[level].append(cid)
    return [
        RowError(
            None,
            "id",
            f"level {level!r} is not in the file, but {len(ids)} credential(s) hold it "
            f"(e.g. {', '.join(repr(i) for i in sorted(ids)[:3])})",
        )
        for level, ids in sorted(held.items())
    ]


async def put_schedule(
    sessions: SessionFactory, site: str, schedule: Schedule, *, audit: AuditHook | None = None
) -> Change:
    """Add or replace one schedule."""
    check_site(site)
    values = {
        "name": schedule.name,
        "intervals": [i.model_dump(mode="json") for i in schedule.intervals],
        "holiday": [i.model_dump(mode="json") for i in schedule.holiday],
    }
    new = {schedule.id: tuple(values[v] for v in repo.SCHEDULE_VALUES)}
    async with sessions() as session, session.begin():
        current = await repo.lock_site(session, site)
        old = await repo.existing(session, repo.SCHEDULES, site, repo.SCHEDULE_VALUES)
        return await _apply(
            session,
            repo.SCHEDULES,
            site,
            current,
            _plan(old, new),
            {schedule.id: values},
            old=old,
            audit=audit,
        )


async def delete_schedule(
    sessions: SessionFactory, site: str, schedule_id: str, *, audit: AuditHook | None = None
) -> Change:
    """Remove a schedule; refused (409) while a level uses it."""
    check_site(site)
    async with sessions() as session, session.begin():
        current = await repo.lock_site(session, site)
        if schedule_id not in await repo.live_keys(session, repo.SCHEDULES, site):
            raise UnknownSchedule(f"site {site!r} has no schedule {schedule_id!r}")
        table = repo.LEVELS
        users = (
            await session.scalars(
                select(table.c.id).where(
                    table.c.site == site, table.c.deleted.is_(False), table.c.schedule == schedule_id
                )
            )
        ).all()
        if users:
            names = ", ".join(repr(u) for u in sorted(users)[:5])
            raise ScheduleInUse(f"schedule {schedule_id!r} is used by level(s) {names}")
        old = await repo.existing(session, repo.SCHEDULES, site, repo.SCHEDULE_VALUES)
        return await _apply(
            session, repo.SCHEDULES, site, current, _Plan([], [], 0), {}, [schedule_id], old=old, audit=audit
        )


async def put_holidays(
    sessions: SessionFactory, site: str, holidays: Sequence[Holiday], *, audit: AuditHook | None = None
) -> Change:
    """Replace the site's holidays with ``holidays``."""
    check_site(site)
    seen: dict[Any, int] = {}
    for i, h in enumerate(holidays):
        if h.date in seen:
            raise InvalidInput(f"holidays[{i}].date: {h.date} is also holidays[{seen[h.date]}]")
        seen[h.date] = i
    rows = {h.date: {"name": h.name} for h in holidays}
    new = {d: (values["name"],) for d, values in rows.items()}
    async with sessions() as session, session.begin():
        current = await repo.lock_site(session, site)
        old = await repo.existing(session, repo.HOLIDAYS, site, repo.HOLIDAY_VALUES)
        removed = [d for d, had in old.items() if not had[0] and d not in rows]
        return await _apply(
            session, repo.HOLIDAYS, site, current, _plan(old, new), rows, removed, old=old, audit=audit
        )


@dataclass(frozen=True, slots=True)
class Summary:
    site: str
    version: int
    schedules: int
    levels: int
    holidays: int
    credentials: int


async def summary(session: AsyncSession, site: str) -> Summary:
    check_site(site)
    return Summary(
        site,
        await repo.site_version(session, site),
        await repo.live_count(session, repo.SCHEDULES, site),
        await repo.live_count(session, repo.LEVELS, site),
        await repo.live_count(session, repo.HOLIDAYS, site),
        await repo.live_count(session, repo.CREDENTIALS, site),
    )


# -- deltas


async def build_delta(session: AsyncSession, site: str, base: int) -> AccessDelta | None:
    """What a store at version ``base`` lacks, as one (unsplit) delta: the changes since ``base``;
    a reset with everything live if ``base`` is 0 or not a version of this site (ahead of it); an
    empty delta from and to the current version ("you are current") if ``base`` is current.
    None if the site never had access data (there is no version to send)."""
    for _attempt in range(5):
        current = await repo.site_version(session, site)
        if current == 0:
            return None
        if base == current:
            return AccessDelta(base=current, version=current)
        reset = base <= 0 or base > current
        since = 0 if reset else base
        schedules = await repo.changed_since(session, repo.SCHEDULES, site, since, current, live_only=reset)
        levels = await repo.changed_since(session, repo.LEVELS, site, since, current, live_only=reset)
        credentials = await repo.changed_since(
            session, repo.CREDENTIALS, site, since, current, live_only=reset
        )
        holiday_changes = await repo.changed_since(
            session, repo.HOLIDAYS, site, since, current, live_only=reset
        )
        holidays = None
        if reset or holiday_changes:
            holidays = await repo.changed_since(session, repo.HOLIDAYS, site, 0, current, live_only=True)
        # Several reads: they make one version's picture only if no change committed meanwhile.
        if await repo.site_version(session, site) == current:
            break
    return AccessDelta(
        base=0 if reset else base,
        version=current,
        reset=reset,
        schedules=[
            Schedule.model_validate(
                {"id": r.id, "name": r.name, "intervals": r.intervals, "holiday": r.holiday}
            )
            for r in schedules
            if not r.deleted
        ],
        levels=[
            AccessLevel(id=r.id, name=r.name, doors=r.doors, schedule=r.schedule)
            for r in levels
            if not r.deleted
        ],
        holidays=None if holidays is None else [Holiday(date=r.date, name=r.name) for r in holidays],
        # Stored rows were checked on the way in: built without checking them again (100,000 of them).
        credentials=[
            Credential.model_construct(
                id=r.id,
                card=r.card,
                facility=r.facility,
                holder=r.holder,
                levels=list(r.levels),
                valid_from_ms=r.valid_from_ms,
                valid_until_ms=r.valid_until_ms,
                pin_hash=r.pin_hash,
                suspended=r.suspended,
                offline_ok=r.offline_ok,
                clock_free=r.clock_free,
                first_person_in=r.first_person_in,
                antipassback_exempt=r.antipassback_exempt,
            )
            for r in credentials
            if not r.deleted
        ],
        removed_credentials=[r.id for r in credentials if r.deleted],
        removed_levels=[r.id for r in levels if r.deleted],
        removed_schedules=[r.id for r in schedules if r.deleted],
    )


async def delta_for(
    session: AsyncSession, site: str, base: int, *, per_part: int = CREDENTIALS_PER_PART
) -> list[AccessDelta]:
    """``build_delta`` in parts of at most ``per_part`` credentials (``split_delta``); [] if the
    site has no access data."""
    delta = await build_delta(session, site, base)
    return [] if delta is None else split_delta(delta, per_part)
