"""``gatehouse cloud ...``: the commands in-process, and ``serve`` as the real process it is."""

import argparse
import asyncio
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.broker.passwords import verify_password
from cloud.cli import add_commands
from cloud.config import load_cloud_config
from cloud.db import create_engine, session_factory
from cloud.registry import get_password_hash
from protocols.envelope import Ack, EventBatch, decode, encode
from protocols.topics import Channel, topic
from tests.cloud.helpers import make_events, new_gateway_id, new_store_id
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gatehouse cloud")
    add_commands(p.add_subparsers(dest="subcommand", required=True))
    return p


def cli(*argv: str) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("GATEHOUSE_DATA_DIR", raising=False)
    monkeypatch.delenv("GATEHOUSE_DATABASE_URL", raising=False)
    path = tmp_path / "cloud.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return str(path)


def stored_hash(config_file: str, gateway_id: str) -> str | None:
    async def read() -> str | None:
        from cloud.config import database_url

        engine = create_engine(database_url(load_cloud_config(config_file)))
        try:
            async with session_factory(engine)() as session:
                return await get_password_hash(session, gateway_id)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_every_command_says_what_it_does() -> None:
    def walk(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for name, sub in action.choices.items():
                    assert helps.get(name), f"{name} has no help"
                    assert sub.description, f"{name} has no description"
                    yield sub
                    yield from walk(sub)

    names = {p.prog.split(" ", 2)[-1] for p in walk(parser())}
    assert {"serve", "ingest", "migrate", "gateway", "gateway add", "gateway list"} <= names


def test_gateway_add_prints_a_ready_gateway_config(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = new_gateway_id()
    assert cli("gateway", "add", gw, "--site", "Lakeside 3", "--config", config_file) == 0
    out = capsys.readouterr().out
    doc = tomllib.loads(out)
    assert doc["gateway_id"] == gw
    assert doc["data_dir"] == f"./var/gateway/{gw}"
    assert doc["mqtt"]["url"] == "mqtt://127.0.0.1:18830"
    assert doc["mqtt"]["ca_file"] == ""
    stored = stored_hash(config_file, gw)
    assert stored is not None and verify_password(doc["mqtt"]["password"], stored)

    assert cli("gateway", "list", "--config", config_file) == 0
    listing = capsys.readouterr().out
    assert gw in listing and "Lakeside 3" in listing


def test_gateway_add_writes_a_private_file(config_file: str, tmp_path: Path) -> None:
    gw, out = new_gateway_id(), tmp_path / "gw.toml"
    url = "mqtts://broker.example.com:8883"
    assert cli("gateway", "add", gw, "--config", config_file, "--output", str(out), "--mqtt-url", url) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert tomllib.loads(out.read_text())["mqtt"]["url"] == url


def test_gateway_add_never_overwrites_and_then_registers_nothing(
    config_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, out = new_gateway_id(), tmp_path / "existing.toml"
    out.write_text("keep me")
    assert cli("gateway", "add", gw, "--config", config_file, "--output", str(out)) == 2
    assert "not overwriting" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert cli("gateway", "add", gw, "--config", config_file) == 0  # the id is still free


def test_gateway_add_refuses_duplicates_and_bad_ids(
    config_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = new_gateway_id()
    assert cli("gateway", "add", gw, "--config", config_file) == 0
    capsys.readouterr()
    out = tmp_path / "second.toml"
    assert cli("gateway", "add", gw, "--config", config_file, "--output", str(out)) == 1
    assert "already registered" in capsys.readouterr().err
    assert not out.exists()  # the file opened for it is removed again
    assert cli("gateway", "add", "bad/id", "--config", config_file) == 1
    assert "gateway id 'bad/id'" in capsys.readouterr().err


def test_migrate(config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("migrate", "--config", config_file) == 0
    assert "up to date" in capsys.readouterr().out


def test_config_error_is_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[api]\nport = 0\n")
    assert cli("migrate", "--config", str(bad)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{bad}: api.port: ")


def test_ingest_alone_needs_an_external_broker(config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("ingest", "--config", config_file) == 2
    assert "mqtt.url" in capsys.readouterr().err


def _spawn(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gatehouse", *argv],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_healthy(proc: subprocess.Popen[str], port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"serve exited with {proc.returncode}:\n{proc.stdout.read() if proc.stdout else ''}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"serve not healthy on port {port} within {timeout} s")


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"serve did not stop on SIGTERM:\n{out}") from None
    return proc.returncode, out


def test_serve_api_only_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "cloud.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[api]\nport = {port}\n')
    proc = _spawn("cloud", "serve", "--no-ingest", "--config", str(config))
    try:
        _wait_healthy(proc, port)
        token = (tmp_path / "data" / "api-token").read_text().strip()
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/gateways", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/gateways").status_code == 401
    finally:
        status, out = _stop(proc)
    assert status == 0, out
    assert "cloud stopped" in out


def test_serve_with_embedded_broker_takes_a_gateway_added_at_run_time(tmp_path: Path) -> None:
    api_port, mqtt_port = free_port(), free_port()
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[api]\nport = {api_port}\n[mqtt]\nembedded_port = {mqtt_port}\n'
    )
    proc = _spawn("cloud", "serve", "--config", str(config))
    try:
        _wait_healthy(proc, api_port)
        gw = new_gateway_id()
        added = subprocess.run(
            [sys.executable, "-m", "gatehouse", "cloud", "gateway", "add", gw, "--config", str(config)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr
        gateway_config = tomllib.loads(added.stdout)
        assert gateway_config["mqtt"]["url"] == f"mqtt://127.0.0.1:{mqtt_port}"

        store = new_store_id()
        acks: list[Ack] = []
        subscribed, acked = threading.Event(), threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gw, protocol=mqtt.MQTTv311)
        client.username_pw_set(gw, gateway_config["mqtt"]["password"])
        client.on_connect = lambda c, *_: c.subscribe(topic(gw, Channel.ACK), qos=1)
        client.on_subscribe = lambda *_: subscribed.set()

        def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
            acks.append(decode(bytes(message.payload)))
            acked.set()

        client.on_message = on_message
        client.connect("127.0.0.1", mqtt_port)
        client.loop_start()
        try:
            assert subscribed.wait(15), "the gateway was not admitted to its ack topic"
            batch = EventBatch(gateway_id=gw, store_id=store, events=make_events(1, 4))
            client.publish(topic(gw, Channel.EVENTS), encode(batch), qos=1).wait_for_publish(10)
            assert acked.wait(15), "no ack through the embedded broker"
            assert acks == [Ack(store_id=store, ranges=[(1, 4)])]
        finally:
            client.disconnect()
            client.loop_stop()
    finally:
        status, out = _stop(proc)
    assert status == 0, out
    assert "embedded MQTT broker" in out


def test_serve_sends_commands_through_its_own_link(tmp_path: Path) -> None:
    """The API's command link and ingest's answers, in the real process with the embedded broker."""
    from protocols.envelope import Command, CommandResult
    from tests.cloud.helpers import CommandGateway

    api_port, mqtt_port = free_port(), free_port()
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[api]\nport = {api_port}\ntoken_owner = "ops"\n'
        f"[mqtt]\nembedded_port = {mqtt_port}\n"
    )
    proc = _spawn("cloud", "serve", "--config", str(config))
    try:
        _wait_healthy(proc, api_port)
        gw = new_gateway_id()
        added = subprocess.run(
            [sys.executable, "-m", "gatehouse", "cloud", "gateway", "add", gw, "--config", str(config)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr
        password = tomllib.loads(added.stdout)["mqtt"]["password"]

        def answer(command: Command) -> CommandResult:
            return CommandResult(id=command.id, ok=True, detail=f"pong for {command.by}")

        gateway = CommandGateway(mqtt_port, gw, answer, username=gw, password=password).connect_sync()
        try:
            token = (tmp_path / "data" / "api-token").read_text().strip()
            r = httpx.post(
                f"http://127.0.0.1:{api_port}/api/v1/gateways/{gw}/commands",
                json={"name": "ping", "wait_s": 10},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            assert (r.json()["status"], r.json()["result_detail"]) == ("done", "pong for ops")
        finally:
            gateway.close()
    finally:
        status, out = _stop(proc)
    assert status == 0, out
    assert "api-commands: connected" in out
