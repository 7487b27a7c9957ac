"""``gatehouse cloud gateway add/list/rotate/revoke``, in-process on a SQLite database."""

import asyncio
import tomllib
from pathlib import Path

import pytest
from sqlalchemy import select

from cloud.audit.models import AuditEntry
from cloud.broker.passwords import verify_password
from cloud.config import database_url, load_cloud_config
from cloud.db import create_engine, session_factory
from cloud.models import Gateway
from cloud.schema import prepare_database
from tests.cloud.helpers import new_gateway_id
from tests.cloud.tenancy import Tenant, make_company
from tests.cloud.test_cloud_cli import cli, stored_hash


def write_config(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "cloud.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n{extra}')
    return str(path)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("GATEHOUSE_DATA_DIR", raising=False)
    monkeypatch.delenv("GATEHOUSE_DATABASE_URL", raising=False)
    return write_config(tmp_path)


def company(config_file: str) -> Tenant:
    async def make() -> Tenant:
        engine = create_engine(database_url(load_cloud_config(config_file)))
        try:
            await prepare_database(engine)
            return await make_company(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(make())


def gateway_row(config_file: str, gateway_id: str) -> tuple[Gateway | None, list[AuditEntry]]:
    async def read() -> tuple[Gateway | None, list[AuditEntry]]:
        engine = create_engine(database_url(load_cloud_config(config_file)))
        try:
            async with session_factory(engine)() as session:
                entries = await session.scalars(
                    select(AuditEntry).where(AuditEntry.target_id == gateway_id).order_by(AuditEntry.id)
                )
                return await session.get(Gateway, gateway_id), list(entries.all())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_add_at_a_site_by_code_then_rotate_and_revoke(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = company(config_file)
    gw = new_gateway_id()
    assert (
        cli(
            "gateway",
            "add",
            gw,
            "--site",
            tenant.site_codes[0],
            "--name",
            "B1 plant",
            "--config",
            config_file,
        )
        == 0
    )
    added = tomllib.loads(capsys.readouterr().out)
    row, _ = gateway_row(config_file, gw)
    assert row is not None
    assert (row.company_id, row.site_id, row.site, row.name) == (
        tenant.company_id,
        tenant.site_ids[0],
        tenant.site_codes[0],
        "B1 plant",
    )

    assert cli("gateway", "rotate", gw, "--config", config_file) == 0
    rotated = tomllib.loads(capsys.readouterr().out)
    assert rotated["gateway_id"] == gw
    stored = stored_hash(config_file, gw)
    assert stored is not None
    assert verify_password(rotated["mqtt"]["password"], stored)
    assert not verify_password(added["mqtt"]["password"], stored)

    assert cli("gateway", "revoke", gw, "--config", config_file) == 0
    assert "revoked" in capsys.readouterr().out
    assert stored_hash(config_file, gw) is None
    assert cli("gateway", "list", "--config", config_file) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(gw))
    assert "revoked" in line

    row, entries = gateway_row(config_file, gw)
    assert row is not None and row.revoked_at is not None
    assert [e.action for e in entries] == [
        "gateway.create",
        "gateway.credentials.rotate",
        "gateway.credentials.revoke",
    ]
    assert {e.company_id for e in entries} == {tenant.company_id}
    assert all(e.actor == "platform" and e.actor_name.startswith("cli") for e in entries)


def test_a_site_code_no_site_has_is_kept_as_a_name(
    config_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = new_gateway_id()
    assert cli("gateway", "add", gw, "--site", "Lakeside 3", "--config", config_file) == 0
    assert "no site has the code 'Lakeside 3'" in capsys.readouterr().err
    row, _ = gateway_row(config_file, gw)
    assert row is not None and row.site == "Lakeside 3" and row.company_id is None


def test_rotate_writes_a_private_file_and_unknown_gateways_fail(
    config_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = new_gateway_id()
    assert cli("gateway", "add", gw, "--config", config_file) == 0
    capsys.readouterr()
    out = tmp_path / "rotated.toml"
    url = "mqtts://broker.example.com:8883"
    assert cli("gateway", "rotate", gw, "--config", config_file, "--output", str(out), "--mqtt-url", url) == 0
    doc = tomllib.loads(out.read_text())
    assert doc["mqtt"]["url"] == url
    assert "credentials rotated" in out.read_text()
    missing = new_gateway_id()
    assert (
        cli("gateway", "rotate", missing, "--config", config_file, "--output", str(tmp_path / "x.toml")) == 1
    )
    assert not (tmp_path / "x.toml").exists()
    assert cli("gateway", "revoke", missing, "--config", config_file) == 1
    assert "no such gateway" in capsys.readouterr().err


def test_revoke_says_when_the_broker_is_not_the_clouds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write_config(tmp_path, '[mqtt]\nurl = "mqtt://127.0.0.1:1"\n')
    gw = new_gateway_id()
    assert cli("gateway", "add", gw, "--config", config_file) == 0
    assert "broker not updated" in capsys.readouterr().err  # a warning; the config is printed
    assert cli("gateway", "revoke", gw, "--config", config_file) == 1
    assert "not managed by the cloud" in capsys.readouterr().err
    assert stored_hash(config_file, gw) is None  # revoked in the registry all the same
