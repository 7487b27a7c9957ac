#!/usr/bin/env python3
"""The gateway's credential store (edge/access.py): decision latency with 100,000 credentials and
the time to sync a 10,000-credential delta; prints ONE JSON line.

    .venv/bin/python bench/access_store.py            # 100,000 decisions, three delta syncs
    .venv/bin/python bench/access_store.py --quick    # 10,000 decisions, one sync; seconds

A real store file (SQLite, WAL) in a temporary directory, built the way a gateway gets it: a reset
delta of 100,000 credentials split into parts of 2,000 (``split_delta``) and applied part by part.
Ten schedules, 40 levels over 200 doors, a holiday; each credential holds one to three levels.

- decision_ms_p50 / _p99 / _max: ``CredentialStore.decide`` alone, one call at a time on the event
  loop's thread: 90% cards in the store at a door their levels hold (so the schedule is evaluated),
  5% unknown cards, 5% wrong doors; no anti-passback, no PIN.
- decision_ms_p99_antipassback: the same with an anti-passback area, so every grant also writes
  the passage (handed to the worker thread: the loop itself never writes).
- pin_check_ms: one PIN check (``pin_hash``: PBKDF2, 10,000 rounds) — paid only by a PIN entry.
- credential_delta_sync_s: a delta changing 10,000 credentials (and removing 100), split into 5
  parts of 2,000, applied into the 100k store: from the first part's ``apply`` to the last one's
  answer "applied" (median of the runs). Parsing the parts is given apart:
  credential_delta_parse_s (``edge.access.parse_delta``, all 5 parts);
  credential_delta_sync_json_s is the whole path from the JSON parts (``apply_json``).
- loop_max_stall_ms_during_sync: the longest gap between two wake-ups of a task on the event loop
  that sleeps 1 ms at a time (so 1 ms is the floor), over all the syncs, JSON ones included;
  decision_ms_p99_during_sync: the decisions that task made meanwhile (the worker thread competes
  for the GIL).
- store_build_s: the 100k reset delta, all 50 parts.

``bench/local.py`` imports ``build_store``, ``time_decisions`` and ``time_delta_sync`` (or simply
``figures(quick)``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.access import AccessRequest, CredentialStore, parse_delta  # noqa: E402
from protocols.access import (  # noqa: E402
    AccessDelta,
    AccessLevel,
    Credential,
    Holiday,
    Interval,
    Schedule,
    pin_hash,
    split_delta,
)

CREDENTIALS = 100_000
CHANGED = 10_000
TZ = ZoneInfo("Asia/Shanghai")
# A Monday, 10:00 in Shanghai: the office schedules are open.
NOW_MS = int(datetime(2025, 9, 29, 10, tzinfo=TZ).timestamp() * 1000)
SCHEDULES = 10
LEVELS = 40
DOORS = 200
FIRST_CARD = 1_000_000


def _schedules() -> list[Schedule]:
    out = []
    for i in range(SCHEDULES):
        out.append(
            Schedule(
                id=f"s{i}",
                intervals=[
                    Interval(days=[0, 1, 2, 3, 4], start=f"{6 + i % 3:02d}:00", end="20:00"),
                    Interval(days=[5, 6], start="22:00", end="06:00"),
                ],
                holiday=[Interval(start="10:00", end="12:00")],
            )
        )
    return out


def _levels() -> list[AccessLevel]:
    # Level i: five doors; every fourth level at all times, the others on a schedule.
    return [
        AccessLevel(
            id=f"l{i}",
            doors=[f"d{(i * 5 + k) % DOORS}" for k in range(5)],
            schedule="" if i % 4 == 0 else f"s{i % SCHEDULES}",
        )
        for i in range(LEVELS)
    ]


def credential(i: int, holder: str = "") -> Credential:
    return Credential(
        id=f"c{i}",
        card=str(FIRST_CARD + i),
        facility=i % 256,
        holder=holder or f"Holder {i}",
        levels=[f"l{(i + k * 7) % LEVELS}" for k in range(1 + i % 3)],
        valid_until_ms=NOW_MS + 365 * 86_400_000,
        offline_ok=i % 50 == 0,
    )


def reset_delta(n: int = CREDENTIALS, version: int = 1) -> AccessDelta:
    return AccessDelta(
        base=0,
        version=version,
        reset=True,
        schedules=_schedules(),
        levels=_levels(),
        holidays=[Holiday(date=date(2025, 10, 1), name="National Day")],
        credentials=[credential(i) for i in range(n)],
    )


def change_delta(base: int, n: int = CREDENTIALS, changed: int = CHANGED, seed: int = 0) -> AccessDelta:
    """``changed`` credentials updated (holder renamed) and 100 removed, from ``base``."""
    rng = random.Random(seed)
    picked = rng.sample(range(n), changed + 100)
    return AccessDelta(
        base=base,
        version=base + 1,
        credentials=[credential(i, holder=f"Holder {i} v{base + 1}") for i in picked[:changed]],
        removed_credentials=[f"c{i}" for i in picked[changed:]],
    )


async def build_store(path: Path, n: int = CREDENTIALS) -> tuple[CredentialStore, float]:
    """A store at version 1 holding ``n`` credentials, built from a reset delta in parts; and
    the seconds that took."""
    store = CredentialStore.open(path)
    parts = split_delta(reset_delta(n))
    t0 = time.perf_counter()
    for p in parts:
        out = await store.apply(p, now_ms=NOW_MS - 60_000)
    assert out.code == "applied", out
    return store, time.perf_counter() - t0


def _requests(count: int, n: int, seed: int, area: str = "") -> list[AccessRequest]:
    rng = random.Random(seed)
    levels = {lv.id: lv.doors for lv in _levels()}
    out = []
    for k in range(count):
        i = rng.randrange(n)
        c = credential(i)
        roll = rng.random()
        facility: int | None
        if roll < 0.05:
            card, facility, door = str(FIRST_CARD + n + rng.randrange(10**6)), 0, "d0"
        elif roll < 0.10:
            held = {d for lid in c.levels for d in levels[lid]}
            card, facility = c.card, c.facility
            door = next(f"d{j}" for j in range(DOORS) if f"d{j}" not in held)
        else:
            card, facility, door = c.card, c.facility, rng.choice(levels[rng.choice(c.levels)])
        if area:
            out.append(AccessRequest(card, facility, door, "r", "in" if k % 2 else "out", area, "hard"))
        else:
            out.append(AccessRequest(card, facility, door, "r"))
    return out


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


def time_decisions(
    store: CredentialStore, count: int = 10_000, *, area: str = "", seed: int = 1
) -> dict[str, float]:
    """``count`` decisions one at a time: {"p50", "p99", "max"} in ms, and "granted" (a share)."""
    reqs = _requests(count, store.stats()["credentials"], seed, area)
    times = []
    granted = 0
    clock = time.perf_counter
    for r in reqs:
        t0 = clock()
        d = store.decide(r, now_ms=NOW_MS, clock_synced=True, stale_after_s=86_400, tz=TZ)
        times.append(clock() - t0)
        granted += d.granted
    return {
        "p50": _ms(times, 0.5),
        "p99": _ms(times, 0.99),
        "max": _ms(times, 1.0),
        "granted": granted / count,
    }


async def time_delta_sync(
    store: CredentialStore, *, changed: int = CHANGED, seed: int = 0, from_json: bool = False
) -> dict[str, float]:
    """Apply a ``changed``-credential delta in parts of 2,000 onto ``store``'s version, while a
    task on the loop wakes every 1 ms and makes a decision each time. ``from_json``: the parts go
    in as the JSON they travel as (``apply_json``, parsing included) instead of as AccessDelta.

    Returns sync_s (first apply to the answer "applied"), parse_s (``parse_delta`` of the parts,
    timed apart), loop_max_stall_ms, decision_ms_p99_during_sync, parts, ticks."""
    n = store.stats()["credentials"]
    wire = [p.model_dump_json().encode() for p in split_delta(change_delta(store.version, n, changed, seed))]
    t0 = time.perf_counter()
    parts = [parse_delta(w) for w in wire]
    parse_s = time.perf_counter() - t0
    count = len(parts)
    if from_json:
        # Only what a gateway would hold: a full garbage collection (which holds the GIL, whatever
        # thread triggers it) then walks the heap of a gateway, not of this benchmark.
        del parts
    gc.collect()

    reqs = _requests(1000, n, seed + 1)
    stalls: list[float] = []
    decisions: list[float] = []
    done = asyncio.Event()

    async def other_work() -> None:
        k = 0
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stalls.append(now - last)
            r = reqs[k % len(reqs)]
            k += 1
            store.decide(r, now_ms=NOW_MS, clock_synced=True, stale_after_s=86_400, tz=TZ)
            decisions.append(time.perf_counter() - now)
            last = time.perf_counter()

    ticker = asyncio.create_task(other_work())
    await asyncio.sleep(0.01)
    stalls.clear()
    decisions.clear()
    start = time.perf_counter()
    if from_json:
        for w in wire:
            out = await store.apply_json(w, now_ms=NOW_MS - 30_000)
    else:
        for p in parts:
            out = await store.apply(p, now_ms=NOW_MS - 30_000)
    sync_s = time.perf_counter() - start
    done.set()
    await ticker
    assert out.code == "applied", out
    return {
        "sync_s": sync_s,
        "parse_s": parse_s,
        "parts": count,
        "loop_max_stall_ms": round(1000 * max(stalls, default=0.0), 2),
        "decision_ms_p99_during_sync": _ms(decisions, 0.99) if decisions else float("nan"),
        "ticks": len(stalls),
    }


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir())


def time_pin_check(rounds: int = 20) -> float:
    t0 = time.perf_counter()
    for _ in range(rounds):
        pin_hash("c1", "246810")
    return 1000 * (time.perf_counter() - t0) / rounds


async def _figures(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gh-access-") as d:
        store, build_s = await build_store(Path(d) / "access.sqlite3")
        try:
            out["store_build_s"] = round(build_s, 2)
            dec = time_decisions(store, 10_000 if quick else 100_000)
            out["decision_ms_p50"] = dec["p50"]
            out["decision_ms_p99"] = dec["p99"]
            out["decision_ms_max"] = dec["max"]
            out["decision_granted_share"] = round(dec["granted"], 3)
            apb = time_decisions(store, 2_000 if quick else 20_000, area="lobby", seed=2)
            out["decision_ms_p99_antipassback"] = apb["p99"]
            out["pin_check_ms"] = round(time_pin_check(), 2)
            k = 1 if quick else 3
            runs = [await time_delta_sync(store, seed=i) for i in range(k)]
            json_runs = [await time_delta_sync(store, seed=100 + i, from_json=True) for i in range(k)]
            out["credential_delta_sync_s"] = round(statistics.median(r["sync_s"] for r in runs), 3)
            out["credential_delta_sync_s_max"] = round(max(r["sync_s"] for r in runs), 3)
            out["credential_delta_sync_json_s"] = round(statistics.median(r["sync_s"] for r in json_runs), 3)
            out["credential_delta_parse_s"] = round(statistics.median(r["parse_s"] for r in runs), 3)
            both = runs + json_runs
            out["loop_max_stall_ms_during_sync"] = max(r["loop_max_stall_ms"] for r in both)
            out["decision_ms_p99_during_sync"] = max(r["decision_ms_p99_during_sync"] for r in both)
            out["credential_delta_changed"] = CHANGED
            out["credential_delta_parts"] = runs[0]["parts"]
            out["credentials"] = CREDENTIALS
            out["store_bytes"] = _dir_bytes(Path(d))
        finally:
            store.close()
    return out


def figures(quick: bool) -> dict[str, Any]:
    return asyncio.run(_figures(quick))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer decisions, one sync: seconds")
    args = ap.parse_args()
    t0 = time.monotonic()
    out: dict[str, Any] = {"quick": args.quick, "cores": len(os.sched_getaffinity(0))}
    out.update(figures(args.quick))
    out["bench_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
