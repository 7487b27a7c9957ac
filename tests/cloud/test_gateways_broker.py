"""Provisioning at the broker, end to end: gateways registered, re-keyed and revoked through the
gateways service, checked on a real private Mosquitto (with the files the cloud writes, and with
the dynamic-security plugin) and on the embedded broker.

Each check is what a gateway would see: it signs in or is refused, reaches its own topics and not
another gateway's, and loses its live connection when its credentials are rotated or revoked.
"""

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from cloud.accounts.permissions import PLATFORM
from cloud.broker.authority import RegistryAuthority
from cloud.broker.dynsec import DynsecControl, gateway_role
from cloud.broker.embedded import EmbeddedBroker
from cloud.config import CloudConfig, parse_broker_url
from cloud.gateways.service import register_gateway, revoke_gateway_credentials, rotate_gateway_credentials
from cloud.models import Gateway
from cloud.registry import active_credentials, get_password_hash, sync_mosquitto_files
from tests.cloud.broker.mqtt_clients import TestClient
from tests.cloud.conftest import Database
from tests.cloud.helpers import new_gateway_id
from tests.support.mosquitto import MosquittoProcess, _broker_ids, make_broker_dir
from tests.support.ports import free_port
from tests.support.waits import until

CLOUD, CLOUD_PW = "gh-cloud", "cloud-secret-for-tests"
DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
OPERATOR = replace(PLATFORM, name="cli:test")
run = asyncio.to_thread


class Clients:
    """Test clients on one broker port, closed at the end of the test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.made: list[TestClient] = []
        self._n = 0

    def new(self, user: str | None, password: str | None, client_id: str | None = None) -> TestClient:
        self._n += 1
        client = TestClient(self.port, client_id or f"{user or 'anon'}-{self._n}", user, password)
        self.made.append(client)
        return client

    async def connected(self, user: str, password: str, client_id: str | None = None) -> TestClient:
        client = self.new(user, password, client_id)
        rc = await run(client.connect)
        assert not rc.is_failure, f"{user}: {rc}"
        return client

    async def refused(self, user: str | None, password: str | None) -> bool:
        return bool((await run(self.new(user, password).connect)).is_failure)

    async def admitted_soon(self, user: str, password: str, within: float = 10.0) -> TestClient:
        """Signed in, retrying while the broker has not taken the change yet (a reload is handled in
        its main loop, a moment after the signal)."""
        found: list[TestClient] = []

        async def attempt() -> bool:
            client = self.new(user, password)
            if (await run(client.connect)).is_failure:
                return False
            found.append(client)
            return True

        await until(attempt, f"{user} admitted", within=within, interval=0.1)
        return found[0]

    def close(self) -> None:
        for client in self.made:
            client.close()


async def isolation_holds(clients: Clients, a: TestClient, a_id: str, b_id: str, cloud: TestClient) -> None:
    """Gateway ``a`` publishes and subscribes on its own topics only; the cloud reaches both."""
    assert not (await run(cloud.subscribe, "gh/v1/+/events")).is_failure
    await run(a.publish, f"gh/v1/{a_id}/events", b"own")
    assert (await run(cloud.wait_for_payload, b"own")).topic == f"gh/v1/{a_id}/events"
    # MQTT 3.1.1: a denied publish is PUBACKed and dropped; the marker after it proves it was handled.
    await run(a.publish, f"gh/v1/{b_id}/events", b"forged")
    await run(a.publish, f"gh/v1/{a_id}/events", b"marker")
    await run(cloud.wait_for_payload, b"marker")
    assert b"forged" not in cloud.payloads()

    assert not (await run(a.subscribe, f"gh/v1/{a_id}/cmd")).is_failure
    await run(a.subscribe, f"gh/v1/{b_id}/cmd")  # refused, or granted and never delivered
    await run(a.subscribe, "gh/v1/+/cmd")
    await run(cloud.publish, f"gh/v1/{b_id}/cmd", b"for-b")
    await run(cloud.publish, f"gh/v1/{a_id}/cmd", b"for-a")
    assert (await run(a.wait_for_payload, b"for-a")).topic == f"gh/v1/{a_id}/cmd"
    assert b"for-b" not in a.payloads()


async def stored_hash(db: Database, gateway_id: str) -> str | None:
    async with db.sessions() as session:
        return await get_password_hash(session, gateway_id)


# -- Mosquitto with the password and ACL files the cloud writes


@pytest.fixture
def broker_dir() -> Iterator[str]:
    path = make_broker_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_files_isolate_gateways_and_a_reload_closes_old_credentials(
    db: Database, broker_dir: str, tmp_path: Path
) -> None:
    passwd, acl = os.path.join(broker_dir, "passwd"), os.path.join(broker_dir, "acl")
    broker = MosquittoProcess(password_file=passwd, acl_file=acl)
    config = CloudConfig.model_validate(
        {
            "data_dir": str(tmp_path),
            "mqtt": {"url": broker.url, "username": CLOUD, "password": CLOUD_PW},
            "mosquitto": {"password_file": passwd, "acl_file": acl, "pid_file": broker.pid_file},
        }
    )
    async with db.sessions() as session:
        assert await sync_mosquitto_files(session, config)  # the files Mosquitto starts from
    broker.start()
    clients = Clients(broker.port)
    try:
        a_id, b_id = new_gateway_id(), new_gateway_id()
        a = await register_gateway(db.sessions, config, OPERATOR, a_id)
        b = await register_gateway(db.sessions, config, OPERATOR, b_id)
        assert a.broker.applied and b.broker.applied, (a.broker, b.broker)
        gw_a = await clients.admitted_soon(a_id, a.password)
        gw_b = await clients.admitted_soon(b_id, b.password)
        cloud = await clients.connected(CLOUD, CLOUD_PW)
        await isolation_holds(clients, gw_a, a_id, b_id, cloud)

        rotated = await rotate_gateway_credentials(db.sessions, config, OPERATOR, a_id)
        assert rotated.broker.applied, rotated.broker
        await until(lambda: not gw_a.connected, "gateway A's old connection closed by the reload")
        assert await clients.refused(a_id, a.password)
        await clients.admitted_soon(a_id, rotated.password)

        revoked = await revoke_gateway_credentials(db.sessions, config, OPERATOR, b_id)
        assert revoked.broker.applied, revoked.broker
        await until(lambda: not gw_b.connected, "gateway B's connection closed by the reload")
        assert await clients.refused(b_id, b.password)
        assert cloud.connected  # the cloud's own session carries on
        assert b_id not in await run(Path(passwd).read_text)
    finally:
        clients.close()
        broker.close()


# -- Mosquitto with the dynamic-security plugin


@pytest.fixture
def dynsec_broker(broker_dir: str) -> Iterator[MosquittoProcess]:
    if not os.path.exists(DYNSEC_PLUGIN) or shutil.which("mosquitto_ctrl") is None:
        pytest.skip("Mosquitto's dynamic-security plugin is not installed")
    state = os.path.join(broker_dir, "dynamic-security.json")
    # The cloud's user is the plugin's admin, as config/mosquitto/README.md sets it up.
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", state, CLOUD, CLOUD_PW], check=True, capture_output=True
    )
    ids = _broker_ids()
    if ids is not None:
        os.chown(state, *ids)
    broker = MosquittoProcess(
        extra_conf=f"allow_anonymous false\nplugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {state}\n"
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def dynsec_config(broker: MosquittoProcess, tmp_path: Path) -> CloudConfig:
    return CloudConfig.model_validate(
        {
            "data_dir": str(tmp_path),
            "mqtt": {"url": broker.url, "username": CLOUD, "password": CLOUD_PW},
            "mosquitto": {"dynsec": True},
        }
    )


async def test_dynamic_security_creates_rekeys_and_deletes_clients(
    db: Database, dynsec_broker: MosquittoProcess, tmp_path: Path
) -> None:
    config = dynsec_config(dynsec_broker, tmp_path)
    clients = Clients(dynsec_broker.port)
    try:
        async with db.sessions() as session:
            assert await sync_mosquitto_files(session, config)  # the cloud's role, at start
        a_id, b_id = new_gateway_id(), new_gateway_id()
        a = await register_gateway(db.sessions, config, OPERATOR, a_id)
        b = await register_gateway(db.sessions, config, OPERATOR, b_id)
        assert a.broker.applied and b.broker.applied, (a.broker, b.broker)
        gw_a = await clients.connected(a_id, a.password)  # the plugin has it the moment it answers
        gw_b = await clients.connected(b_id, b.password)
        assert await clients.refused(a_id, "wrong")
        assert await clients.refused(None, None)  # anonymous
        cloud = await clients.connected(CLOUD, CLOUD_PW)
        await isolation_holds(clients, gw_a, a_id, b_id, cloud)
        assert not (await run(cloud.subscribe, "$share/ingest/gh/v1/+/alarms")).is_failure

        rotated = await rotate_gateway_credentials(db.sessions, config, OPERATOR, a_id)
        assert rotated.broker.applied, rotated.broker
        await until(lambda: not gw_a.connected, "gateway A kicked by setClientPassword")
        assert await clients.refused(a_id, a.password)
        await clients.connected(a_id, rotated.password)

        revoked = await revoke_gateway_credentials(db.sessions, config, OPERATOR, b_id)
        assert revoked.broker.applied, revoked.broker
        await until(lambda: not gw_b.connected, "gateway B kicked by deleteClient")
        assert await clients.refused(b_id, b.password)
        assert cloud.connected

        # A gateway revoked while the plugin was not told (say the broker was down): the next
        # start's reconcile deletes its client, and names the gateways the plugin lacks.
        control = DynsecControl(parse_broker_url(dynsec_broker.url), CLOUD, CLOUD_PW)
        async with db.sessions() as session, session.begin():
            await session.execute(
                update(Gateway)
                .where(Gateway.id == a_id)
                .values(password_hash="", revoked_at=datetime.now(UTC))
            )
        missing_id = new_gateway_id()
        await register_gateway(db.sessions, CloudConfig(data_dir=str(tmp_path)), OPERATOR, missing_id)
        assert a_id in await control.gateway_clients()
        async with db.sessions() as session:
            assert await sync_mosquitto_files(session, config)
        assert a_id not in await control.gateway_clients()
        async with db.sessions() as session:
            assert missing_id in await control.reconcile(await active_credentials(session))
        role = await control.run([{"command": "getRole", "rolename": gateway_role(b_id)}])
        assert role[0].get("error")  # the revoked gateway's role went with it
    finally:
        clients.close()


async def test_dynamic_security_unreachable_is_said_not_raised(db: Database, tmp_path: Path) -> None:
    config = CloudConfig.model_validate(
        {
            "data_dir": str(tmp_path),
            "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}", "username": CLOUD, "password": CLOUD_PW},
            "mosquitto": {"dynsec": True},
        }
    )
    gw = new_gateway_id()
    issued = await register_gateway(db.sessions, config, OPERATOR, gw)
    assert not issued.broker.applied
    assert "cannot reach Mosquitto" in issued.broker.detail and "rotate" in issued.broker.detail
    assert await stored_hash(db, gw) is not None  # the registry has it all the same
    async with db.sessions() as session:
        assert not await sync_mosquitto_files(session, config)  # logged; the cloud starts anyway


def test_dynsec_and_files_are_one_or_the_other() -> None:
    with pytest.raises(ValueError, match="dynsec replaces"):
        CloudConfig.model_validate({"mosquitto": {"dynsec": True, "password_file": "/etc/x"}})


# -- the embedded broker


async def test_embedded_broker_closes_rotated_and_revoked_connections(db: Database, tmp_path: Path) -> None:
    async def lookup(username: str) -> str | None:
        async with db.sessions() as session:
            return await get_password_hash(session, username)

    port = free_port()
    config = CloudConfig.model_validate(
        {"data_dir": str(tmp_path), "mqtt": {"embedded_port": port, "username": CLOUD, "password": CLOUD_PW}}
    )
    broker = EmbeddedBroker(
        "127.0.0.1", port, RegistryAuthority(lookup, CLOUD, CLOUD_PW), recheck_every_s=0.2
    )
    await broker.start()
    clients = Clients(port)
    try:
        a_id, b_id, c_id = new_gateway_id(), new_gateway_id(), new_gateway_id()
        a = await register_gateway(db.sessions, config, OPERATOR, a_id)
        b = await register_gateway(db.sessions, config, OPERATOR, b_id)
        c = await register_gateway(db.sessions, config, OPERATOR, c_id)
        gw_a = await clients.connected(a_id, a.password)
        gw_b = await clients.connected(b_id, b.password)
        gw_c = await clients.connected(c_id, c.password)
        cloud = await clients.connected(CLOUD, CLOUD_PW)

        # Through this process: told at once.
        rotated = await rotate_gateway_credentials(db.sessions, config, OPERATOR, a_id)
        assert rotated.broker.applied and "1 connection" in rotated.broker.detail, rotated.broker
        await until(lambda: not gw_a.connected, "gateway A's old connection closed")
        assert await clients.refused(a_id, a.password)
        await clients.connected(a_id, rotated.password)
        revoked = await revoke_gateway_credentials(db.sessions, config, OPERATOR, b_id)
        assert revoked.broker.applied, revoked.broker
        await until(lambda: not gw_b.connected, "gateway B's connection closed")
        assert await clients.refused(b_id, b.password)

        # By another process (the CLI writes the database): the periodic check finds it.
        async with db.sessions() as session, session.begin():
            await session.execute(update(Gateway).where(Gateway.id == c_id).values(password_hash=""))
        await until(lambda: not gw_c.connected, "gateway C's connection closed by the periodic check")
        assert cloud.connected
    finally:
        clients.close()
        await broker.stop()
