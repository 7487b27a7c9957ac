import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud.broker.passwords import verify_password
from cloud.config import CloudConfig
from cloud.kit.errors import NotFound
from cloud.models import Gateway
from cloud.registry import (
    GatewayExists,
    InvalidGatewayId,
    Seen,
    StateApplied,
    active_credentials,
    add_gateway,
    apply_state,
    count_online,
    get_password_hash,
    list_gateways,
    mark_seen,
    revoke_credentials,
    rotate_credentials,
    sync_mosquitto_files,
)
from protocols.envelope import GatewayState
from tests.cloud.conftest import Database
from tests.cloud.helpers import new_gateway_id
from tests.cloud.tenancy import make_company


async def test_add_gateway_keeps_only_a_mosquitto_hash(db: Database) -> None:
    gw = new_gateway_id()
    async with db.sessions() as session, session.begin():
        password = await add_gateway(session, gw, "Harbour View, block B")
    assert len(password) >= 32
    async with db.sessions() as session:
        stored = await get_password_hash(session, gw)
        gateways = {g.id: g for g in await list_gateways(session)}
    assert stored is not None and stored.startswith("$7$")
    assert password not in stored
    assert verify_password(password, stored)
    assert gateways[gw].site == "Harbour View, block B"
    assert gateways[gw].online is False
    assert gateways[gw].created_at.tzinfo is not None


async def test_duplicate_gateway_is_refused(db: Database) -> None:
    gw = new_gateway_id()
    async with db.sessions() as session, session.begin():
        await add_gateway(session, gw)
    async with db.sessions() as session, session.begin():
        with pytest.raises(GatewayExists, match="already registered") as e:
            await add_gateway(session, gw)
    assert e.value.status_code == 409


@pytest.mark.parametrize("bad", ["", "gw/1", "gw+1", "-gw", "gw 1", "g" * 65, "gw#"])
async def test_invalid_gateway_id_is_refused(db: Database, bad: str) -> None:
    async with db.sessions() as session:
        with pytest.raises(InvalidGatewayId) as e:
            await add_gateway(session, bad)
    assert e.value.status_code == 422


async def test_unknown_username_has_no_hash(db: Database) -> None:
    async with db.sessions() as session:
        assert await get_password_hash(session, new_gateway_id()) is None
        assert await get_password_hash(session, "not/valid") is None


async def test_state_and_seen_update_the_row(db: Database) -> None:
    gw = new_gateway_id()
    async with db.sessions() as session, session.begin():
        await add_gateway(session, gw)
    birth = GatewayState(
        gateway_id=gw,
        online=True,
        version="1.2.0",
        config_version="c7",
        boot_id="boot-1",
        clock_synced=True,
        store_id="ab" * 16,
        time_ms=1_700_000_000_000,
    )
    seen_at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with db.sessions() as session, session.begin():
        applied = await apply_state(session, gw, birth)
        assert applied.known and applied.birth
        assert await count_online(session) >= 1
        await mark_seen(session, {gw: Seen(seen_at, 40)})
        await mark_seen(session, {gw: Seen(seen_at, 2)})
    # The death (the MQTT will) says less; what it leaves empty is kept.
    # The retained birth delivered again (a reconnecting cloud) is no new birth.
    async with db.sessions() as session, session.begin():
        assert await apply_state(session, gw, birth) == StateApplied(known=True, birth=False)
    async with db.sessions() as session, session.begin():
        assert await apply_state(session, gw, GatewayState(gateway_id=gw, online=False)) == StateApplied(
            known=True, birth=False
        )
        assert not (await apply_state(session, new_gateway_id(), birth)).known
    async with db.sessions() as session:
        row = await session.get(Gateway, gw)
    assert row is not None
    assert (row.online, row.version, row.config_version, row.boot_id, row.store_id) == (
        False,
        "1.2.0",
        "c7",
        "boot-1",
        "ab" * 16,
    )
    assert row.state_time == datetime.fromtimestamp(1_700_000_000, UTC)
    assert row.last_seen_at == seen_at
    assert row.event_count == 42
    async with db.sessions() as session, session.begin():
        assert (await apply_state(session, gw, birth)).birth  # online again after the death


async def test_mosquitto_files_are_written_and_mosquitto_signalled(db: Database, tmp_path: Path) -> None:
    gw = new_gateway_id()
    async with db.sessions() as session, session.begin():
        await add_gateway(session, gw)
    # Stands in for Mosquitto: `sleep` dies of the SIGHUP that would make Mosquitto reload.
    stand_in = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        (tmp_path / "mosquitto.pid").write_text(f"{stand_in.pid}\n")
        config = CloudConfig.model_validate(
            {
                "data_dir": str(tmp_path / "data"),
                "mqtt": {"username": "cloud-user", "password": "cloud-secret"},
                "mosquitto": {
                    "password_file": str(tmp_path / "passwd"),
                    "acl_file": str(tmp_path / "acl"),
                    "pid_file": str(tmp_path / "mosquitto.pid"),
                },
            }
        )
        async with db.sessions() as session:
            assert await sync_mosquitto_files(session, config)
        assert await asyncio.wait_for(stand_in.wait(), 10) == -signal.SIGHUP
    finally:
        if stand_in.returncode is None:
            stand_in.kill()
            await stand_in.wait()
    users = dict(line.split(":", 1) for line in (tmp_path / "passwd").read_text().splitlines())
    assert gw in users
    assert verify_password("cloud-secret", users["cloud-user"])
    assert "user cloud-user" in (tmp_path / "acl").read_text()


async def test_no_mosquitto_files_configured_is_a_no_op(db: Database, tmp_path: Path) -> None:
    async with db.sessions() as session:
        assert not await sync_mosquitto_files(session, CloudConfig(data_dir=str(tmp_path)))


async def test_a_gateway_belongs_to_the_site_it_is_added_at(db: Database) -> None:
    tenant = await make_company(db.sessions, sites=2)
    by_id, by_code, by_name = new_gateway_id(), new_gateway_id(), new_gateway_id()
    async with db.sessions() as session, session.begin():
        await add_gateway(session, by_id, tenant.site_ids[1], name="Tower B")
        await add_gateway(session, by_code, tenant.site_codes[0])
        await add_gateway(session, by_name, "Not a site code")
        with pytest.raises(NotFound):
            await add_gateway(session, new_gateway_id(), 987_654_321)
    async with db.sessions() as session:
        rows = {g.id: g for g in await list_gateways(session)}
    assert (rows[by_id].company_id, rows[by_id].site_id, rows[by_id].site, rows[by_id].name) == (
        tenant.company_id,
        tenant.site_ids[1],
        tenant.site_codes[1],
        "Tower B",
    )
    assert (rows[by_code].site_id, rows[by_code].site) == (tenant.site_ids[0], tenant.site_codes[0])
    assert (rows[by_name].company_id, rows[by_name].site_id, rows[by_name].site) == (
        None,
        None,
        "Not a site code",
    )


async def test_revoked_gateways_have_no_hash_and_leave_the_password_file(
    db: Database, tmp_path: Path
) -> None:
    kept, revoked = new_gateway_id(), new_gateway_id()
    async with db.sessions() as session, session.begin():
        await add_gateway(session, kept)
        await add_gateway(session, revoked)
        row = await session.get(Gateway, revoked)
        assert row is not None
        assert await revoke_credentials(session, row)
        assert not await revoke_credentials(session, row)  # once
    async with db.sessions() as session:
        assert await get_password_hash(session, revoked) is None
        active = await active_credentials(session)
        assert kept in active and revoked not in active
        config = CloudConfig.model_validate(
            {
                "data_dir": str(tmp_path / "data"),
                "mqtt": {"username": "cloud-user", "password": "cloud-secret"},
                "mosquitto": {"password_file": str(tmp_path / "passwd")},
            }
        )
        assert await sync_mosquitto_files(session, config)
    users = (tmp_path / "passwd").read_text()
    assert f"{kept}:" in users and revoked not in users
    async with db.sessions() as session, session.begin():
        row = await session.get(Gateway, revoked)
        assert row is not None
        password = await rotate_credentials(session, row)  # reinstated
    async with db.sessions() as session:
        stored = await get_password_hash(session, revoked)
    assert stored is not None and verify_password(password, stored)
