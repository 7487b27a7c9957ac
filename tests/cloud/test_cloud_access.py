"""A site's access data: CSV imports (all or nothing, row-by-row reports), versions, deltas, and
the pushes to the site's gateways (after a change, at a birth, after a version mismatch)."""

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloud.access import delta_for, import_credentials, import_levels, put_holidays, put_schedule
from cloud.access.csvfile import InvalidRows
from cloud.api import create_app
from cloud.config import CloudConfig
from cloud.db import SessionFactory
from cloud.ingest import Ingest
from cloud.models import AccessCredential, Gateway, GatewayCommand
from cloud.registry import add_gateway
from cloud.server import command_link
from protocols.access import AccessDelta, Holiday, Interval, Schedule, pin_hash
from protocols.envelope import Command, CommandResult, GatewayState, encode
from protocols.topics import Channel
from tests.cloud.conftest import Database
from tests.cloud.helpers import CommandGateway, StoreDouble, new_gateway_id, wait_for
from tests.support.mosquitto import MosquittoProcess

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CSV = {**AUTH, "Content-Type": "text/csv"}

LEVELS_CSV = "id,name,doors,schedule\nstaff,Staff,front;back,\nplant,Plant room,plant,\n"


def new_site() -> str:
    return f"site-{secrets.token_hex(4)}"


def credentials_csv(
    rows: list[dict[str, Any]], columns: tuple[str, ...] = ("id", "card", "holder", "levels")
) -> bytes:
    lines = [",".join(columns)]
    lines += [",".join(str(r.get(c, "")) for c in columns) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def people(n: int, first: int = 1, levels: str = "staff") -> list[dict[str, Any]]:
    return [
        {"id": f"c{i:06d}", "card": str(100_000 + i), "holder": f"Holder {i}", "levels": levels}
        for i in range(first, first + n)
    ]


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as c:
        yield c


async def test_import_bumps_the_version_only_when_something_changes(db: Database) -> None:
    site = new_site()
    levels = await import_levels(db.sessions, site, LEVELS_CSV.encode())
    assert (levels.added, levels.version) == (2, 1)
    first = await import_credentials(db.sessions, site, credentials_csv(people(5)))
    assert (first.added, first.changed, first.unchanged, first.removed, first.version) == (5, 0, 0, 0, 2)

    again = await import_credentials(db.sessions, site, credentials_csv(people(5)))
    assert (again.added, again.changed, again.unchanged, again.version) == (0, 0, 5, 2)
    assert (await import_levels(db.sessions, site, LEVELS_CSV.encode())).version == 2

    rows = people(6)
    rows[0]["holder"] = "Renamed"
    change = await import_credentials(db.sessions, site, credentials_csv(rows))
    assert (change.added, change.changed, change.unchanged, change.version) == (1, 1, 4, 3)

    # Only the rows that changed carry the new version: the delta from 2 holds just them.
    (delta,) = await _deltas(db, site, 2)
    assert (delta.base, delta.version, delta.reset) == (2, 3, False)
    assert sorted(c.id for c in delta.credentials) == ["c000001", "c000006"]
    assert delta.levels == [] and delta.holidays is None


async def _deltas(db: Database, site: str, base: int, **kw: Any) -> list[AccessDelta]:
    async with db.sessions() as session:
        return await delta_for(session, site, base, **kw)


async def test_every_column_is_read_and_pins_are_kept_only_as_hashes(db: Database) -> None:
    site = new_site()
    await import_levels(db.sessions, site, LEVELS_CSV.encode())
    data = (
        "ID, Card ,facility,holder,levels,valid_from,valid_until,pin,suspended,offline_ok,clock_free,"
        "first_person_in,antipassback_exempt\n"
        "guard,4242,17,Night Guard,staff; plant,2025-01-01,2025-12-31,123456,no,yes,1,TRUE,true\n"
        "temp,77,,Visitor,,2025-03-01T08:00+08:00,2025-03-01 18:00,,,,,,\n"
    ).encode("utf-8-sig")
    change = await import_credentials(db.sessions, site, data)
    assert change.added == 2
    (delta,) = await _deltas(db, site, 0)
    guard, temp = sorted(delta.credentials, key=lambda c: c.id)
    assert guard.id == "guard"
    assert (guard.card, guard.facility, guard.holder, guard.levels) == (
        "4242",
        17,
        "Night Guard",
        ["staff", "plant"],
    )
    assert guard.valid_from_ms == int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
    assert (
        guard.valid_until_ms == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000) - 1
    )  # the whole day
    assert guard.pin_hash == pin_hash("guard", "123456")
    assert (guard.suspended, guard.offline_ok, guard.clock_free, guard.first_person_in) == (
        False,
        True,
        True,
        True,
    )
    assert guard.antipassback_exempt
    assert temp.facility is None and temp.levels == [] and temp.pin_hash is None
    assert temp.valid_from_ms == int(datetime(2025, 3, 1, 0, 0, tzinfo=UTC).timestamp() * 1000)  # 08:00+08:00
    assert temp.valid_until_ms == int(datetime(2025, 3, 1, 18, 0, tzinfo=UTC).timestamp() * 1000)
    async with db.sessions() as session:
        stored = await session.scalar(
            select(AccessCredential).where(AccessCredential.site == site, AccessCredential.id == "guard")
        )
    assert stored is not None and "123456" not in repr(stored.__dict__)


async def test_bad_file_is_a_row_by_row_report_and_nothing_is_stored(
    db: Database, client: httpx.AsyncClient
) -> None:
    site = new_site()
    r = await client.post(f"/api/v1/sites/{site}/access/levels/import", content=LEVELS_CSV, headers=CSV)
    assert r.status_code == 200 and r.json()["version"] == 1
    columns = ("id", "card", "levels", "valid_from", "valid_until", "pin", "suspended", "facility")
    rows = [
        {"id": "ok-1", "card": "1", "levels": "staff"},
        {"id": "bad-card", "card": "12ab"},
        {"id": "ok-1", "card": "3"},  # the id again
        {"id": "bad-level", "card": "4", "levels": "staff;vip"},
        {"id": "bad-dates", "card": "5", "valid_from": "2025-02-01", "valid_until": "2025-01-01"},
        {"id": "bad-time", "card": "6", "valid_from": "tomorrow"},
        {"id": "bad-pin", "card": "7", "pin": "12"},
        {"id": "bad-flag", "card": "8", "suspended": "maybe"},
        {"id": "bad-facility", "card": "9", "facility": "-3"},
        {"id": "", "card": "10"},
    ]
    r = await client.post(
        f"/api/v1/sites/{site}/access/credentials/import", content=credentials_csv(rows, columns), headers=CSV
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_rows"
    found = {(e["row"], e["column"]) for e in body["errors"]}
    assert found == {
        (3, "card"),
        (4, "id"),
        (6, "valid_until"),
        (7, "valid_from"),
        (8, "pin"),
        (9, "suspended"),
        (10, "facility"),
        (11, "id"),
    }
    assert body["error_count"] == 8
    assert any("row 2" in e["message"] for e in body["errors"] if e["row"] == 4)
    # The unknown level is found once the rows themselves are right.
    rows = [rows[0], rows[3]]
    r = await client.post(
        f"/api/v1/sites/{site}/access/credentials/import", content=credentials_csv(rows, columns), headers=CSV
    )
    assert r.status_code == 422
    assert [(e["row"], e["column"]) for e in r.json()["errors"]] == [(3, "levels")]
    assert "'vip'" in r.json()["errors"][0]["message"]

    r = await client.get(f"/api/v1/sites/{site}/access", headers=AUTH)
    assert r.json() == {
        "site": site,
        "version": 1,
        "schedules": 0,
        "levels": 2,
        "holidays": 0,
        "credentials": 0,
    }


@pytest.mark.parametrize(
    ("data", "mentions"),
    [
        (b"", "empty"),
        (b"id,card,colour\n1,2,red\n", "colour"),
        (b"id,holder\n1,x\n", "missing column"),
        (b"id,card\n1,2,3\n", "cells"),
        (b"id,card\n1,\xff\n", "UTF-8"),
        (b"id,card,card\n1,2,3\n", "twice"),
    ],
)
async def test_unreadable_files_say_why(client: httpx.AsyncClient, data: bytes, mentions: str) -> None:
    r = await client.post(f"/api/v1/sites/{new_site()}/access/credentials/import", content=data, headers=CSV)
    assert r.status_code == 422
    assert mentions in r.text


async def test_card_numbers_must_tell_credentials_apart(db: Database) -> None:
    site = new_site()
    await import_levels(db.sessions, site, LEVELS_CSV.encode())
    cols = ("id", "card", "facility")
    await import_credentials(
        db.sessions, site, credentials_csv([{"id": "a", "card": "5", "facility": 1}], cols)
    )
    # Same card, another facility code: fine. Same card and facility as "a": refused. Any facility: refused.
    rows = [{"id": "b", "card": "5", "facility": 2}, {"id": "c", "card": "5", "facility": 1}]
    with pytest.raises(InvalidRows) as e:
        await import_credentials(db.sessions, site, credentials_csv(rows, cols))
    assert [(x.row, x.column) for x in e.value.errors] == [(3, "card")]
    assert "'a'" in e.value.errors[0].message
    assert (await import_credentials(db.sessions, site, credentials_csv(rows[:1], cols))).added == 1
    with pytest.raises(InvalidRows):
        await import_credentials(db.sessions, site, credentials_csv([{"id": "d", "card": "5"}], cols))
    # Replacing "a" by "c" in one file is no conflict: "a" goes.
    change = await import_credentials(
        db.sessions, site, credentials_csv([rows[0], rows[1]], cols), replace=True
    )
    assert (change.added, change.unchanged, change.removed) == (1, 1, 1)


async def test_replace_mode_tombstones_and_deltas_name_the_removals(
    db: Database, client: httpx.AsyncClient
) -> None:
    site = new_site()
    await import_levels(db.sessions, site, LEVELS_CSV.encode())
    await import_credentials(db.sessions, site, credentials_csv(people(4)))  # version 2
    r = await client.post(
        f"/api/v1/sites/{site}/access/credentials/import",
        params={"mode": "replace"},
        content=credentials_csv(people(2, first=3)),
        headers=CSV,
    )
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("added", "changed", "unchanged", "removed", "version")} == {
        "added": 0,
        "changed": 0,
        "unchanged": 2,
        "removed": 2,
        "version": 3,
    }
    (delta,) = await _deltas(db, site, 2)
    assert (delta.credentials, sorted(delta.removed_credentials)) == ([], ["c000001", "c000002"])
    (reset,) = await _deltas(db, site, 0)
    assert reset.reset and sorted(c.id for c in reset.credentials) == ["c000003", "c000004"]
    assert reset.removed_credentials == []
    # A file with no rows would remove everything: refused.
    with pytest.raises(InvalidRows) as empty:
        await import_credentials(db.sessions, site, b"id,card\n", replace=True)
    assert "remove them all" in empty.value.errors[0].message
    # A removed credential imported again is added again.
    change = await import_credentials(db.sessions, site, credentials_csv(people(1)))
    assert (change.added, change.version) == (1, 4)
    # Merge mode leaves the rest alone; a level still held cannot be replaced away.
    with pytest.raises(InvalidRows) as e:
        await import_levels(db.sessions, site, b"id,doors\nplant,plant\n", replace=True)
    assert "'staff'" in e.value.errors[0].message and e.value.errors[0].row is None


async def test_delta_for_is_incremental_reset_or_current(db: Database) -> None:
    site = new_site()
    assert await _deltas(db, site, 0) == []  # no access data: nothing to send
    await put_schedule(
        db.sessions,
        site,
        Schedule(id="office", intervals=[Interval(days=[0, 1, 2, 3, 4], start="07:00", end="19:00")]),
    )
    await import_levels(db.sessions, site, b"id,doors,schedule\nstaff,front,office\n")
    await put_holidays(db.sessions, site, [Holiday(date=date(2025, 12, 25), name="Christmas")])
    await import_credentials(db.sessions, site, credentials_csv(people(4500)))  # version 4

    (current,) = await _deltas(db, site, 4)
    assert (current.base, current.version, current.reset, current.empty) == (4, 4, False, True)

    parts = await _deltas(db, site, 0)
    assert [(p.part, p.parts, p.reset, p.version) for p in parts] == [
        (1, 3, True, 4),
        (2, 3, True, 4),
        (3, 3, True, 4),
    ]
    assert [len(p.credentials) for p in parts] == [2000, 2000, 500]
    first = parts[0]
    assert [s.id for s in first.schedules] == ["office"] and [lv.id for lv in first.levels] == ["staff"]
    assert first.holidays == [Holiday(date=date(2025, 12, 25), name="Christmas")]
    assert parts[1].holidays is None and parts[1].levels == []

    (since_holidays,) = await _deltas(db, site, 3, per_part=10_000)
    assert (since_holidays.base, len(since_holidays.credentials), since_holidays.holidays) == (3, 4500, None)
    (since_levels,) = await _deltas(db, site, 2, per_part=10_000)
    assert since_levels.holidays is not None and since_levels.schedules == []

    ahead = await _deltas(db, site, 99)  # a store from a future the cloud does not know: reset
    assert ahead[0].reset and ahead[0].version == 4
    # Holidays replaced: the delta carries the whole new list.
    await put_holidays(db.sessions, site, [Holiday(date=date(2026, 1, 1))])
    (h,) = await _deltas(db, site, 4)
    assert h.holidays == [Holiday(date=date(2026, 1, 1))] and h.credentials == []


async def test_schedules_and_holidays_through_the_api(db: Database, client: httpx.AsyncClient) -> None:
    site = new_site()
    body = {
        "name": "Office hours",
        "intervals": [{"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "18:00"}],
    }
    r = await client.put(f"/api/v1/sites/{site}/access/schedules/office", json=body, headers=AUTH)
    assert r.status_code == 200 and (r.json()["added"], r.json()["version"]) == (1, 1)
    r = await client.put(f"/api/v1/sites/{site}/access/schedules/office", json=body, headers=AUTH)
    assert (r.json()["unchanged"], r.json()["version"]) == (1, 1)
    r = await client.put(
        f"/api/v1/sites/{site}/access/schedules/office",
        json={**body, "intervals": [{"start": "25:00"}]},
        headers=AUTH,
    )
    assert r.status_code == 422 and "start" in r.text
    r = await client.put(
        f"/api/v1/sites/{site}/access/schedules/office", json={**body, "id": "other"}, headers=AUTH
    )
    assert r.status_code == 422
    r = await client.post(
        f"/api/v1/sites/{site}/access/levels/import",
        content="id,doors,schedule\nstaff,front,office\nx,y,nope\n",
        headers=CSV,
    )
    assert r.status_code == 422 and r.json()["errors"] == [
        {"row": 3, "column": "schedule", "message": f"no schedule 'nope' at site {site!r}"}
    ]
    r = await client.post(
        f"/api/v1/sites/{site}/access/levels/import",
        content="id,doors,schedule\nstaff,front,office\n",
        headers=CSV,
    )
    assert r.json()["version"] == 2
    r = await client.delete(f"/api/v1/sites/{site}/access/schedules/office", headers=AUTH)
    assert r.status_code == 409 and "staff" in r.text
    r = await client.delete(f"/api/v1/sites/{site}/access/schedules/nope", headers=AUTH)
    assert r.status_code == 404

    holidays = [{"date": "2025-10-01", "name": "National Day"}, {"date": "2025-10-02"}]
    r = await client.put(f"/api/v1/sites/{site}/access/holidays", json=holidays, headers=AUTH)
    assert (r.json()["added"], r.json()["version"]) == (2, 3)
    r = await client.put(f"/api/v1/sites/{site}/access/holidays", json=holidays[:1], headers=AUTH)
    assert (r.json()["unchanged"], r.json()["removed"], r.json()["version"]) == (1, 1, 4)
    r = await client.put(f"/api/v1/sites/{site}/access/holidays", json=holidays[:1] * 2, headers=AUTH)
    assert r.status_code == 422 and "holidays[1].date" in r.text
    r = await client.get(f"/api/v1/sites/{site}/access", headers=AUTH)
    assert r.json()["holidays"] == 1 and r.json()["schedules"] == 1


async def test_ten_thousand_credentials_import_in_reasonable_time(db: Database) -> None:
    site = new_site()
    await import_levels(db.sessions, site, LEVELS_CSV.encode())
    rows = people(10_000)
    for r in rows[::1000]:
        r["pin"] = "2468"  # a few PINs: each costs a PBKDF2 run
    columns = ("id", "card", "holder", "levels", "pin")
    started = time.perf_counter()
    change = await import_credentials(db.sessions, site, credentials_csv(rows, columns))
    took = time.perf_counter() - started
    assert (change.added, change.version) == (10_000, 2)
    assert took < 20, f"10,000 credentials took {took:.1f} s"

    for r in rows[:100]:
        r["holder"] += " (moved)"
    started = time.perf_counter()
    change = await import_credentials(db.sessions, site, credentials_csv(rows[:5000], columns), replace=True)
    assert (change.changed, change.unchanged, change.removed, change.version) == (100, 4900, 5000, 3)
    assert time.perf_counter() - started < 20
    parts = await _deltas(db, site, 2)
    assert sum(len(p.credentials) for p in parts) == 100 and len(parts[0].removed_credentials) == 5000


# -- pushes: a private broker, ingest, a stand-in gateway


@contextlib.asynccontextmanager
async def cloud(
    broker: MosquittoProcess, tmp_path: Path, sessions: SessionFactory
) -> AsyncIterator[httpx.AsyncClient]:
    config = CloudConfig.model_validate(
        {
            "data_dir": str(tmp_path),
            "api": {"token_owner": "importer"},
            "mqtt": {"url": broker.url, "password": "x", "client_id": f"ingest-{secrets.token_hex(4)}"},
        }
    )
    link = command_link(config)
    link.start()
    ingest = Ingest(config, sessions)
    task = asyncio.create_task(ingest.run())
    try:
        await asyncio.wait_for(link.subscribed.wait(), 15)
        await asyncio.wait_for(ingest.wait_ready(), 15)
        app = create_app(config, sessions, token=TOKEN, publisher=link)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as c:
            yield c
    finally:
        ingest.stop()
        await asyncio.wait_for(task, 15)
        await link.stop()


def syncs(gateway: CommandGateway) -> list[AccessDelta]:
    return [AccessDelta.model_validate(c.args) for c in gateway.snapshot() if c.name == "access.sync"]


def birth(gw: str, access_version: int, boot: str = "boot-1") -> bytes:
    return encode(
        GatewayState(
            gateway_id=gw,
            online=True,
            boot_id=boot,
            time_ms=int(time.time() * 1000),
            access_version=access_version,
        )
    )


async def gateway_row(db: Database, gw: str) -> Gateway:
    async with db.sessions() as session:
        row = await session.get(Gateway, gw)
        assert row is not None
        return row


async def test_birth_gets_what_the_gateway_lacks(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    site, gw = new_site(), new_gateway_id()
    async with db.sessions() as session, session.begin():
        await add_gateway(session, gw, site)
    await import_levels(db.sessions, site, LEVELS_CSV.encode())  # 1
    await import_credentials(db.sessions, site, credentials_csv(people(2500)))  # 2

    applied: list[int] = []

    def apply(command: Command) -> CommandResult:
        delta = AccessDelta.model_validate(command.args)
        if delta.part < delta.parts:
            return CommandResult(id=command.id, ok=False, code="pending")
        applied.append(delta.version)
        return CommandResult(id=command.id, ok=True, data={"version": delta.version})

    async with cloud(broker, tmp_path, db.sessions):
        gateway = await CommandGateway(broker.port, gw, apply).connect()
        try:
            gateway.publish(Channel.STATE, birth(gw, 1))  # it has the levels only
            await gateway.wait_commands(2)
            parts = syncs(gateway)
            assert [(p.base, p.version, p.reset, p.part, p.parts) for p in parts] == [
                (1, 2, False, 1, 2),
                (1, 2, False, 2, 2),
            ]
            assert sum(len(p.credentials) for p in parts) == 2500
            sent = gateway.snapshot()[0]
            assert sent.by == "cloud" and sent.expires_ms - sent.issued_ms == 600_000

            async def recorded() -> bool:
                return (await gateway_row(db, gw)).access_version == 2

            await wait_for(recorded, what="the gateway's access version recorded from its answer")
            async with db.sessions() as session:
                rows = (
                    await session.scalars(
                        select(GatewayCommand)
                        .where(GatewayCommand.gateway_id == gw)
                        .order_by(GatewayCommand.seq)
                    )
                ).all()
            assert [r.status for r in rows] == ["pending", "done"]
            assert rows[0].args["credentials"] == 2000 and rows[0].args["parts"] == 2  # counts, not the data

            # Re-announced while connected (as a gateway does after applying a delta), at the
            # current version: nothing. A new connection at the current version: the empty
            # "you are current" delta, and nothing before it.
            gateway.publish(Channel.STATE, birth(gw, 2))
            gateway.publish(Channel.STATE, encode(GatewayState(gateway_id=gw, online=False)))
            gateway.publish(Channel.STATE, birth(gw, 2, boot="boot-2"))
            await gateway.wait_commands(3)
            assert syncs(gateway)[2] == AccessDelta(base=2, version=2)

            # Re-announced behind the site with nothing on its way (it lost a delta, say): it
            # gets what it lacks.
            await import_credentials(db.sessions, site, credentials_csv(people(2501)))  # 3, not pushed
            gateway.publish(Channel.STATE, birth(gw, 2, boot="boot-2"))
            await gateway.wait_commands(4)
            lacking = syncs(gateway)[3]
            assert (lacking.base, lacking.version, [c.id for c in lacking.credentials]) == (2, 3, ["c002501"])
            await wait_for(lambda: applied[-1] == 3, what="the delta applied")
            gateway.publish(Channel.STATE, birth(gw, 3, boot="boot-2"))
            await asyncio.sleep(0.5)  # nothing more must come: give it the chance to be wrong
            assert len(gateway.snapshot()) == 4
        finally:
            gateway.close()


async def test_import_is_pushed_to_online_gateways_and_a_mismatch_gets_what_is_missing(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    site, gw, offline = new_site(), new_gateway_id(), new_gateway_id()
    async with db.sessions() as session, session.begin():
        await add_gateway(session, gw, site)
        await add_gateway(session, offline, site)
    await import_levels(db.sessions, site, LEVELS_CSV.encode())  # 1
    store = StoreDouble(1)

    async def import_people(n: int) -> dict[str, Any]:
        r = await client.post(
            f"/api/v1/sites/{site}/access/credentials/import", content=credentials_csv(people(n)), headers=CSV
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async with cloud(broker, tmp_path, db.sessions) as client:
        gateway = await CommandGateway(broker.port, gw, store).connect()
        try:
            gateway.publish(Channel.STATE, birth(gw, 1))
            await gateway.wait_commands(1)
            assert syncs(gateway)[0] == AccessDelta(base=1, version=1)

            body = await import_people(3)
            assert body["pushed_to"] == [gw]  # the offline one catches up at its birth
            await gateway.wait_commands(2)
            delta = syncs(gateway)[1]
            assert (delta.base, delta.version, len(delta.credentials)) == (1, 2, 3)
            assert gateway.snapshot()[1].by == "importer"
            await wait_for(lambda: store.version == 2, what="the gateway to apply the delta")

            # The gateway's store went back to version 1 (restored from a backup, say): the next
            # delta does not fit it, and it gets one from 1 instead.
            store.version = 1
            assert (await import_people(4))["version"] == 3
            await gateway.wait_commands(4)
            mismatched, again = syncs(gateway)[2:4]
            assert (mismatched.base, mismatched.version) == (2, 3)
            assert (again.base, again.version, again.reset, len(again.credentials)) == (1, 3, False, 4)
            await wait_for(lambda: store.version == 3, what="the delta from 1 applied")

            # The store is lost altogether: a reset.
            store.version = 0
            assert (await import_people(5))["version"] == 4
            await gateway.wait_commands(6)
            reset = syncs(gateway)[5]
            assert (
                reset.reset and reset.version == 4 and len(reset.credentials) == 5 and len(reset.levels) == 2
            )
            await wait_for(lambda: store.version == 4, what="the reset applied")

            async def statuses() -> list[str]:
                async with db.sessions() as session:
                    rows = await session.scalars(
                        select(GatewayCommand.status)
                        .where(GatewayCommand.gateway_id == gw)
                        .order_by(GatewayCommand.seq)
                    )
                    return list(rows.all())

            await wait_for(lambda: _all_answered(statuses), what="every sync answered")
            assert await statuses() == ["done", "done", "refused", "done", "refused", "done"]

            async def recorded() -> bool:
                return (await gateway_row(db, gw)).access_version == 4

            await wait_for(recorded, what="the gateway's access version recorded")
            assert not (await gateway_row(db, offline)).online
            async with db.sessions() as session:
                assert (
                    await session.scalars(select(GatewayCommand).where(GatewayCommand.gateway_id == offline))
                ).all() == []
        finally:
            gateway.close()


async def _all_answered(statuses: Any) -> bool:
    return "sent" not in await statuses()
