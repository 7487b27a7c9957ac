"""The outbox against a real SQLite file: seqs, group commit, lanes, caps, acks and rejects."""

import asyncio
import sqlite3

import orjson
import pytest

from edge.clock import Clock
from edge.outbox import Outbox
from protocols.envelope import EventRecord
from protocols.events import Lane, NewEvent

CLOCK = Clock("yes", boot_id="boot-test")


def tele(n: int, size: int = 100) -> list[NewEvent]:
    return [NewEvent("telemetry.point", "meter-1", {"v": i, "pad": "x" * size}) for i in range(n)]


def alarm(source: str = "smoke-1") -> NewEvent:
    return NewEvent("smoke.alarm", source, {"zone": "b1"})


async def open_outbox(tmp_path, **kw) -> Outbox:
    return await Outbox.open(tmp_path / "outbox.sqlite3", CLOCK, **kw)


def rows(tmp_path) -> list[tuple[int, int, str, bytes]]:
    con = sqlite3.connect(tmp_path / "outbox.sqlite3")
    try:
        return con.execute("SELECT seq, lane, kind, body FROM events ORDER BY seq").fetchall()
    finally:
        con.close()


async def test_seq_is_never_reused_after_newest_rows_are_deleted(tmp_path):
    ob = await open_outbox(tmp_path)
    seqs = await ob.accept(tele(10))
    assert seqs == list(range(1, 11))
    store = ob.store_id
    assert await ob.ack(store, [(6, 10)]) == 5
    await ob.close()

    ob = await open_outbox(tmp_path)
    assert ob.store_id == store
    assert await ob.accept(tele(1)) == [11]
    await ob.close()


async def test_a_new_store_gets_a_new_store_id(tmp_path):
    a = await open_outbox(tmp_path / "a")
    b = await open_outbox(tmp_path / "b")
    assert a.store_id != b.store_id and len(a.store_id) == 32
    await a.close()
    await b.close()


async def test_concurrent_producers_share_group_commits_and_every_event_is_stored(tmp_path):
    ob = await open_outbox(tmp_path, commit_interval_ms=5)
    results = await asyncio.gather(*(ob.accept(tele(100, 10)) for _ in range(50)))
    all_seqs = sorted(s for r in results for s in r)
    assert all_seqs == list(range(1, 5001))
    await ob.close()
    assert len(rows(tmp_path)) == 5000


async def test_stored_body_is_the_wire_form_of_the_event(tmp_path):
    ob = await open_outbox(tmp_path)
    [seq] = await ob.accept([NewEvent("meter.reading", "meter-7", {"value": 12.5}, time_ms=1234)])
    await ob.close()
    body = rows(tmp_path)[0][3]
    rec = EventRecord.model_validate_json(body)
    assert (rec.seq, rec.kind, rec.lane, rec.time_ms, rec.boot_id, rec.clock_synced) == (
        seq,
        "meter.reading",
        Lane.TELEMETRY,
        1234,
        "boot-test",
        True,
    )
    assert rec.data == {"value": 12.5}


async def test_alarm_is_committed_at_once_while_telemetry_waits_for_its_group(tmp_path):
    # A commit interval of ten minutes: telemetry alone would wait; an alarm must not.
    ob = await open_outbox(tmp_path, commit_interval_ms=600_000, commit_max_events=10_000)
    slow = asyncio.ensure_future(ob.accept(tele(3)))
    await asyncio.sleep(0)
    seqs = await asyncio.wait_for(ob.accept([alarm()]), timeout=5)
    assert seqs == [4]
    # The alarm's commit took the waiting telemetry with it.
    assert await asyncio.wait_for(slow, timeout=5) == [1, 2, 3]
    await ob.close()


async def test_fetch_returns_one_lane_in_seq_order(tmp_path):
    ob = await open_outbox(tmp_path)
    await ob.accept([*tele(2), NewEvent("access.granted", "door-1", {}), alarm(), *tele(2)])
    assert [e.seq for e in await ob.fetch(Lane.TELEMETRY, 0, 10)] == [1, 2, 5, 6]
    assert [e.seq for e in await ob.fetch(Lane.SECURITY, 0, 10)] == [3]
    assert [e.seq for e in await ob.fetch(Lane.LIFE_SAFETY, 0, 10)] == [4]
    assert [e.seq for e in await ob.fetch(Lane.TELEMETRY, 2, 10, upto=5)] == [5]
    await ob.close()


async def test_full_store_evicts_oldest_telemetry_only_and_reports_exact_ranges(tmp_path):
    ob = await open_outbox(tmp_path, max_bytes=64 * 1024)
    kept = await ob.accept([NewEvent("access.denied", "door-1", {"card": "1"}), alarm()])
    accepted = []
    for _ in range(30):
        accepted += await ob.accept(tele(20, 200))
    stats = await ob.stats()
    assert stats.counters["evicted_events"] > 0
    assert ob.backlog_bytes <= ob.max_bytes
    await ob.close()

    stored = rows(tmp_path)
    seqs = {r[0] for r in stored}
    assert set(kept) <= seqs, "life-safety and access events are never evicted"
    reports = [orjson.loads(r[3]) for r in stored if r[2] == "gateway.evicted"]
    assert reports and all(r["lane"] == Lane.SECURITY for r in reports)
    evicted = {s for rep in reports for a, b in rep["data"]["ranges"] for s in range(a, b + 1)}
    # Exactly the accepted telemetry that is no longer stored, oldest first.
    assert evicted == set(accepted) - seqs
    assert max(evicted) < min(set(accepted) & seqs)
    assert sum(rep["data"]["count"] for rep in reports) == stats.counters["evicted_events"] == len(evicted)


async def test_store_full_of_unevictable_events_refuses_telemetry_but_takes_alarms(tmp_path):
    ob = await open_outbox(tmp_path, max_bytes=64 * 1024)
    access = [NewEvent("access.granted", "door-1", {"pad": "y" * 300}) for _ in range(10)]
    while not ob.store_full:
        await ob.accept(access)
        await ob.accept(tele(1))  # the first accept past the cap raises the fault
    assert await ob.accept(tele(5)) == []
    assert ob.counters["refused_telemetry"] >= 5
    assert len(await ob.accept([alarm()])) == 1
    # Acks free room: the fault clears and telemetry is taken again.
    await ob.ack(ob.store_id, [(1, 10**9)])
    await ob.accept(tele(1))  # the writer re-judges "full" on its next commit
    assert len(await ob.accept(tele(1))) == 1
    await ob.close()
    kinds = [(r[2], orjson.loads(r[3])["data"].get("full")) for r in rows(tmp_path)]
    assert ("gateway.store_full", False) in kinds


async def test_reject_moves_events_to_dead_letter(tmp_path):
    ob = await open_outbox(tmp_path)
    await ob.accept(tele(5))
    assert await ob.reject(ob.store_id, [(2, 3)], "cloud: gateway unknown") == 2
    assert await ob.reject("f" * 32, [(4, 4)], "other store") == 0
    st = await ob.stats()
    assert st.dead_letters == 2 and st.counters["rejected_events"] == 2
    assert st.backlog["telemetry"] == 3
    await ob.close()


async def test_ack_for_another_store_is_ignored(tmp_path):
    ob = await open_outbox(tmp_path)
    await ob.accept(tele(3))
    assert await ob.ack("0" * 32, [(1, 3)]) == 0
    assert (await ob.stats()).backlog["telemetry"] == 3
    await ob.close()


async def test_counters_and_byte_accounting_survive_reopen(tmp_path):
    ob = await open_outbox(tmp_path)
    await ob.accept(tele(10))
    await ob.ack(ob.store_id, [(1, 4)])
    before = (ob.counters, ob.backlog_bytes)
    await ob.close()
    ob = await open_outbox(tmp_path)
    assert (ob.counters, ob.backlog_bytes) == before
    assert ob.last_ack_ms is not None
    await ob.close()


async def test_accept_after_close_raises(tmp_path):
    from edge.outbox import OutboxClosed

    ob = await open_outbox(tmp_path)
    await ob.close()
    with pytest.raises(OutboxClosed):
        await ob.accept(tele(1))


async def test_acks_leave_the_store_at_synchronous_full(tmp_path):
    # Deletions on ack skip their own fsync; accepted events must never lose theirs.
    ob = await open_outbox(tmp_path)
    await ob.accept(tele(5))
    assert await ob.ack(ob.store_id, [(1, 2), (4, 4)]) == 3
    [(level,)] = await ob._db.execute_fetchall("PRAGMA synchronous")
    assert level == 2  # FULL
    assert [e.seq for e in await ob.fetch(Lane.TELEMETRY, 0, 10)] == [3, 5]
    await ob.close()


def meta(tmp_path) -> dict[str, str]:
    con = sqlite3.connect(tmp_path / "outbox.sqlite3")
    try:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()


@pytest.mark.parametrize("evicting", [False, True])
async def test_a_failed_commit_leaves_disk_and_memory_as_they_were(tmp_path, evicting):
    ob = await open_outbox(tmp_path, max_bytes=64 * 1024)
    await ob.accept([alarm()])
    while ob.backlog_bytes < (50 if evicting else 10) * 1024:
        await ob.accept(tele(5, 200))
    disk_before, meta_before = rows(tmp_path), meta(tmp_path)
    memory_before = (ob.counters, ob.backlog_bytes, ob.store_full)
    # The counters are the last statement of a commit: failing there must undo its inserts and deletes.
    con = sqlite3.connect(tmp_path / "outbox.sqlite3")
    con.execute(
        "CREATE TRIGGER fail_commit BEFORE INSERT ON meta WHEN NEW.key = 'accepted_total'"
        " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    con.commit()
    with pytest.raises(sqlite3.IntegrityError, match="disk says no"):
        await ob.accept(tele(40, 200))  # ~15 KB: over the cap only when the store is nearly full
    assert (rows(tmp_path), meta(tmp_path)) == (disk_before, meta_before)
    assert (ob.counters, ob.backlog_bytes, ob.store_full) == memory_before
    con.execute("DROP TRIGGER fail_commit")
    con.commit()
    con.close()
    # Not left inside a transaction; the failed group's seqs are never handed out again.
    seqs = await ob.accept(tele(1))
    assert len(seqs) == 1 and seqs[0] > max(r[0] for r in disk_before) + 40
    assert ob.counters["evicted_events"] == 0
    await ob.close()
