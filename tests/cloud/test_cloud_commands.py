"""Commands to gateways through the API and the CLI: a private Mosquitto, a stand-in gateway that
answers on ``cmd/result``, ingest recording the answers, real databases."""

import asyncio
import contextlib
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloud.api import create_app
from cloud.config import CloudConfig
from cloud.db import SessionFactory, create_engine, session_factory
from cloud.ingest import Ingest
from cloud.models import GatewayCommand
from cloud.mqtt_link import MqttLink
from cloud.registry import add_gateway
from cloud.server import command_link
from protocols.commands import ResultCode
from protocols.envelope import Command, CommandResult, encode
from protocols.topics import Channel
from tests.cloud.conftest import Database
from tests.cloud.helpers import CommandGateway, done, metric, new_gateway_id, wait_for
from tests.cloud.test_cloud_cli import cli
from tests.support.mosquitto import MosquittoProcess

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def cloud_config(broker: MosquittoProcess, tmp_path: Path) -> CloudConfig:
    return CloudConfig.model_validate(
        {
            "data_dir": str(tmp_path),
            "api": {"token_owner": "alice"},
            "mqtt": {
                "url": broker.url,
                "password": "not-checked-by-this-broker",
                "client_id": f"ingest-{secrets.token_hex(4)}",
            },
        }
    )


@contextlib.asynccontextmanager
async def cloud(
    config: CloudConfig, sessions: SessionFactory, *, ingest: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its command link, and ingest recording the answers."""
    link = command_link(config)
    link.start()
    worker = Ingest(config, sessions) if ingest else None
    task = asyncio.create_task(worker.run()) if worker is not None else None
    try:
        await asyncio.wait_for(link.subscribed.wait(), 15)
        if worker is not None:
            await asyncio.wait_for(worker.wait_ready(), 15)
        app = create_app(config, sessions, token=TOKEN, publisher=link)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as c:
            yield c
    finally:
        if worker is not None and task is not None:
            worker.stop()
            await asyncio.wait_for(task, 15)
        await link.stop()


async def register(sessions: SessionFactory, *gateway_ids: str, site: str = "") -> None:
    async with sessions() as session, session.begin():
        for gw in gateway_ids:
            await add_gateway(session, gw, site)


@contextlib.asynccontextmanager
async def stand_in(
    broker: MosquittoProcess, gateway_id: str, answer: Any = done
) -> AsyncIterator[CommandGateway]:
    gateway = await CommandGateway(broker.port, gateway_id, answer).connect()
    try:
        yield gateway
    finally:
        gateway.close()


async def test_command_is_sent_answered_and_recorded(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw = new_gateway_id()
    await register(db.sessions, gw)

    def unlock(command: Command) -> CommandResult:
        return CommandResult(id=command.id, ok=True, detail="unlocked", data={"door": "front"}, done_ms=1)

    async with (
        cloud(cloud_config(broker, tmp_path), db.sessions) as client,
        stand_in(broker, gw, unlock) as gateway,
    ):
        before_ms = int(time.time() * 1000)
        r = await client.post(
            f"/api/v1/gateways/{gw}/commands",
            json={"name": "door.unlock", "args": {"door": "front", "seconds": 5}, "wait_s": 10},
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "done"
        assert (body["result_code"], body["result_detail"], body["result_data"]) == (
            "done",
            "unlocked",
            {"door": "front"},
        )
        assert body["requested_by"] == "alice"
        assert body["args"] == {"door": "front", "seconds": 5.0}

        (sent,) = gateway.snapshot()
        assert sent.id == body["id"] and len(sent.id) == 32
        assert (sent.name, sent.args, sent.by) == ("door.unlock", {"door": "front", "seconds": 5.0}, "alice")
        assert before_ms <= sent.issued_ms <= sent.expires_ms - 60_000 + 1000
        assert sent.expires_ms - sent.issued_ms == 60_000

        r = await client.get(f"/api/v1/gateways/{gw}/commands/{body['id']}", headers=AUTH)
        assert r.status_code == 200 and r.json()["status"] == "done"
        assert r.json()["result_at"] is not None


async def test_command_nobody_answers_is_202_then_expired(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw = new_gateway_id()
    await register(db.sessions, gw)
    async with (
        cloud(cloud_config(broker, tmp_path), db.sessions) as client,
        stand_in(broker, gw, None) as gateway,
    ):
        r = await client.post(
            f"/api/v1/gateways/{gw}/commands",
            json={"name": "intrusion.arm", "args": {"zone": "z1"}, "wait_s": 0.2, "expires_in_s": 1},
            headers=AUTH,
        )
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "sent"
        (sent,) = await gateway.wait_commands(1)
        assert sent.expires_ms - sent.issued_ms == 1000
        url = f"/api/v1/gateways/{gw}/commands/{sent.id}"

        async def expired() -> bool:
            return (await client.get(url, headers=AUTH)).json()["status"] == "expired"

        await wait_for(expired, what="the unanswered command to show as expired")


async def test_refusals_and_failures_are_recorded_with_their_code(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw = new_gateway_id()
    await register(db.sessions, gw)
    codes = {
        "z-unauth": (ResultCode.UNAUTHORISED, "refused"),
        "z-fail": (ResultCode.FAILED, "failed"),
        "z-late": (ResultCode.EXPIRED, "expired"),
    }

    def answer(command: Command) -> CommandResult:
        code, _ = codes[str(command.args["zone"])]
        return CommandResult(id=command.id, ok=False, code=code, detail=f"no: {code}")

    async with cloud(cloud_config(broker, tmp_path), db.sessions) as client, stand_in(broker, gw, answer):
        for zone, (code, status) in codes.items():
            r = await client.post(
                f"/api/v1/gateways/{gw}/commands",
                json={"name": "intrusion.disarm", "args": {"zone": zone}, "wait_s": 10},
                headers=AUTH,
            )
            assert r.status_code == 200, r.text
            assert (r.json()["status"], r.json()["result_code"]) == (status, code)

        r = await client.get(f"/api/v1/gateways/{gw}/commands", params={"limit": 2}, headers=AUTH)
        page = r.json()
        assert [c["args"]["zone"] for c in page["items"]] == ["z-late", "z-fail"]  # newest first
        r = await client.get(
            f"/api/v1/gateways/{gw}/commands",
            params={"limit": 2, "cursor": page["next_cursor"]},
            headers=AUTH,
        )
        assert [c["args"]["zone"] for c in r.json()["items"]] == ["z-unauth"]
        assert r.json()["next_cursor"] is None


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        ({"name": "door.unlock", "args": {}}, 422, "args.door"),
        ({"name": "door.unlock", "args": {"door": "front", "seconds": -1}}, 422, "args.seconds"),
        ({"name": "door.unlock", "args": {"door": "front", "colour": "red"}}, 422, "args.colour"),
        ({"name": "self.destruct", "args": {}}, 422, "unknown command"),
        ({"name": "ping", "expires_in_s": 86_401}, 422, "expires_in_s"),
        ({"name": "ping", "wait_s": 31}, 422, "wait_s"),
    ],
)
async def test_bad_commands_are_422_naming_the_field(
    db: Database, tmp_path: Path, body: dict[str, Any], status: int, mentions: str
) -> None:
    gw = new_gateway_id()
    await register(db.sessions, gw)
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as client:
        r = await client.post(f"/api/v1/gateways/{gw}/commands", json=body, headers=AUTH)
    assert r.status_code == status, r.text
    assert mentions in r.text
    async with db.sessions() as session:
        assert (
            await session.scalars(select(GatewayCommand).where(GatewayCommand.gateway_id == gw))
        ).all() == []


async def test_unknown_gateway_is_404_and_no_broker_is_503(db: Database, tmp_path: Path) -> None:
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=TOKEN)  # no command link
    gw = new_gateway_id()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as client:
        for path in (f"/api/v1/gateways/{gw}/commands", f"/api/v1/gateways/{gw}/commands/abc"):
            r = await client.get(path, headers=AUTH)
            assert r.status_code == 404, path
        r = await client.post(f"/api/v1/gateways/{gw}/commands", json={"name": "ping"}, headers=AUTH)
        assert r.status_code == 404 and r.json()["code"] == "unknown_gateway"
        await register(db.sessions, gw)
        r = await client.post(f"/api/v1/gateways/{gw}/commands", json={"name": "ping"}, headers=AUTH)
        assert r.status_code == 503 and r.json()["code"] == "broker_unavailable"
        r = await client.post(f"/api/v1/gateways/{gw}/commands", json={"name": "ping"})
        assert r.status_code == 401


async def test_answers_to_commands_never_sent_are_ignored(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    gw, other = new_gateway_id(), new_gateway_id()
    await register(db.sessions, gw, other)
    async with (
        cloud(cloud_config(broker, tmp_path), db.sessions) as client,
        stand_in(broker, gw, None) as gateway,
        stand_in(broker, other, None) as intruder,
    ):
        r = await client.post(
            f"/api/v1/gateways/{gw}/commands", json={"name": "ping", "wait_s": 0}, headers=AUTH
        )
        command_id = r.json()["id"]
        await gateway.wait_commands(1)
        # Another gateway answering our command, and an answer to an id nobody sent: both ignored.
        intruder.publish(Channel.CMD_RESULT, encode(CommandResult(id=command_id, ok=True)))
        intruder.publish(Channel.CMD_RESULT, encode(CommandResult(id="f" * 32, ok=True)))
        gateway.publish(Channel.CMD_RESULT, encode(CommandResult(id="e" * 32, ok=True)))
        gateway.publish(Channel.CMD_RESULT, b"not a result")
        # Then the real answer, which is recorded: the ones before it were dealt with by then.
        gateway.publish(Channel.CMD_RESULT, encode(CommandResult(id=command_id, ok=False, code="refused")))
        url = f"/api/v1/gateways/{gw}/commands/{command_id}"

        async def answered() -> bool:
            return (await client.get(url, headers=AUTH)).json()["status"] != "sent"

        await wait_for(answered, what="the answer recorded")
        assert (await client.get(url, headers=AUTH)).json()["status"] == "refused"


async def test_answer_waits_out_a_locked_database(
    sqlite_url: str, broker: MosquittoProcess, tmp_path: Path
) -> None:
    engine = create_engine(sqlite_url, sqlite_busy_timeout_ms=50)
    sessions = session_factory(engine)
    gw = new_gateway_id()
    await register(sessions, gw)
    blocker = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
    errors_before = metric("gatehouse_ingest_db_errors_total")
    try:
        config = cloud_config(broker, tmp_path)
        async with cloud(config, sessions) as client, stand_in(broker, gw, None) as gateway:
            r = await client.post(
                f"/api/v1/gateways/{gw}/commands", json={"name": "ping", "wait_s": 0}, headers=AUTH
            )
            (sent,) = await gateway.wait_commands(1)
            blocker.execute("BEGIN EXCLUSIVE")
            gateway.publish(Channel.CMD_RESULT, encode(done(sent)))
            await wait_for(
                lambda: metric("gatehouse_ingest_db_errors_total") >= errors_before + 2,
                what="ingest to fail on the locked database",
            )
            blocker.execute("ROLLBACK")
            url = f"/api/v1/gateways/{gw}/commands/{r.json()['id']}"

            async def answered() -> bool:
                return (await client.get(url, headers=AUTH)).json()["status"] == "done"

            await wait_for(answered, what="the answer recorded once the database is free")
    finally:
        blocker.close()
        await engine.dispose()


# -- the CLI


@pytest.fixture
def cli_config(broker: MosquittoProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("GATEHOUSE_DATA_DIR", raising=False)
    monkeypatch.delenv("GATEHOUSE_DATABASE_URL", raising=False)
    path = tmp_path / "cloud.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[mqtt]\nurl = "{broker.url}"\npassword = "x"\n'
        f'client_id = "cli-test-{secrets.token_hex(3)}"\n'
    )
    return str(path)


def test_cli_command_prints_the_answer(
    cli_config: str, broker: MosquittoProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = new_gateway_id()
    assert cli("gateway", "add", gw, "--config", cli_config) == 0
    capsys.readouterr()

    def answer(command: Command) -> CommandResult:
        if command.args.get("zone") == "vault":
            return CommandResult(id=command.id, ok=False, code=ResultCode.REFUSED, detail="zone not ready")
        return CommandResult(id=command.id, ok=True, detail="released", data={"doors": 3})

    gateway = CommandGateway(broker.port, gw, answer).connect_sync()
    try:
        # No ingest runs: the CLI hears the answer itself and records it.
        status = cli(
            "gateway",
            "command",
            gw,
            "fire.reset",
            "--arg",
            "zone=east",
            "--by",
            "bob",
            "--config",
            cli_config,
        )
        out = capsys.readouterr().out
        assert status == 0, out
        assert f"{gw} fire.reset: done" in out and "released" in out and '"doors":3' in out
        (sent,) = gateway.snapshot()
        assert (sent.args, sent.by) == ({"zone": "east"}, "bob")

        assert (
            cli(
                "gateway",
                "command",
                gw,
                "fire.reset",
                "--args-json",
                '{"zone": "vault"}',
                "--config",
                cli_config,
            )
            == 1
        )
        out = capsys.readouterr().out
        assert "refused" in out and "zone not ready" in out
        assert gateway.snapshot()[1].by.startswith("cli")

        # Numbers are read as the command needs them; --json prints the record.
        assert (
            cli(
                "gateway",
                "command",
                gw,
                "door.unlock",
                "--arg",
                "door=d1",
                "--arg",
                "seconds=2.5",
                "--json",
                "--config",
                cli_config,
            )
            == 0
        )
        assert '"status":"done"' in capsys.readouterr().out
        assert gateway.snapshot()[2].args == {"door": "d1", "seconds": 2.5}
    finally:
        gateway.close()


def test_cli_command_without_answer_or_with_bad_args(
    cli_config: str, broker: MosquittoProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = new_gateway_id()
    assert cli("gateway", "add", gw, "--config", cli_config) == 0
    capsys.readouterr()
    assert cli("gateway", "command", gw, "door.unlock", "--config", cli_config) == 2
    assert "args.door" in capsys.readouterr().err
    assert cli("gateway", "command", gw, "door.unlock", "--arg", "door", "--config", cli_config) == 2
    assert cli("gateway", "command", gw, "no.such", "--config", cli_config) == 2
    assert cli("gateway", "command", gw, "ping", "--expires", "0", "--config", cli_config) == 2
    assert "--expires" in capsys.readouterr().err
    assert cli("gateway", "command", new_gateway_id(), "ping", "--config", cli_config) == 1
    assert "not registered" in capsys.readouterr().err

    gateway = CommandGateway(broker.port, gw, None).connect_sync()
    try:
        assert cli("gateway", "command", gw, "ping", "--wait", "0.3", "--config", cli_config) == 1
        assert "no answer within 0.3 s" in capsys.readouterr().out
    finally:
        gateway.close()


def test_cli_command_link_is_a_publisher_of_its_own(tmp_path: Path) -> None:
    config = CloudConfig.model_validate({"data_dir": str(tmp_path), "mqtt": {"url": "mqtt://127.0.0.1:1"}})
    a, b = command_link(config), command_link(config, "cli")
    assert isinstance(a, MqttLink)
    assert a.where != b.where and "gatehouse-ingest-api-" in a.where and "gatehouse-ingest-cli-" in b.where
