"""``gatehouse cloud company add`` and ``gatehouse cloud user add``: the operator's bootstrap,
run in-process against a SQLite cloud, then used to sign in through the API."""

import argparse
import asyncio
import io
from pathlib import Path

import httpx
import pytest

from cloud.api import create_app
from cloud.cli import add_commands
from cloud.config import database_url, load_cloud_config
from cloud.db import create_engine, session_factory

PASSWORD = "Harbour-lights-42"


def cli(*argv: str) -> int:
    p = argparse.ArgumentParser(prog="gatehouse cloud")
    add_commands(p.add_subparsers(dest="subcommand", required=True))
    args = p.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("GATEHOUSE_DATA_DIR", raising=False)
    monkeypatch.delenv("GATEHOUSE_DATABASE_URL", raising=False)
    path = tmp_path / "cloud.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return str(path)


def sign_in(config_file: str, username: str, password: str) -> dict[str, object]:
    async def attempt() -> dict[str, object]:
        config = load_cloud_config(config_file)
        engine = create_engine(database_url(config))
        try:
            app = create_app(config, session_factory(engine))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="https://cloud.example") as c:
                r = await c.post("/api/v1/session", json={"username": username, "password": password})
                if r.status_code != 200:
                    return {"status": r.status_code}
                me = await c.get("/api/v1/me")
                return {"status": 200, "me": me.json()}
        finally:
            await engine.dispose()

    return asyncio.run(attempt())


def test_the_operator_bootstraps_a_company_and_its_administrator(
    config_file: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("company", "add", "harbour", "Harbour Property", "--config", config_file) == 0
    assert "company harbour registered" in capsys.readouterr().out
    assert cli("company", "add", "harbour", "Again", "--config", config_file) == 1
    assert "already exists" in capsys.readouterr().err

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    status = cli(
        "user", "add", "--company", "harbour", "--username", "Li.Wei", "--role", "company_admin",
        "--display-name", "李伟", "--password-stdin", "--config", config_file,
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert "user li.wei added to harbour" in capsys.readouterr().out

    signed = sign_in(config_file, "li.wei", PASSWORD)
    assert signed["status"] == 200
    me = signed["me"]
    assert isinstance(me, dict)
    assert me["name"] == "李伟"
    assert me["company"]["code"] == "harbour"
    assert [(g["role"], g["site_id"]) for g in me["roles"]] == [("company_admin", None)]


def test_user_add_refuses_what_it_cannot_do(
    config_file: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("company", "add", "lakeside", "Lakeside", "--config", config_file) == 0
    capsys.readouterr()

    def add(*extra: str, stdin: str = PASSWORD + "\n") -> tuple[int, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        status = cli("user", "add", "--password-stdin", "--config", config_file, *extra)
        return status, capsys.readouterr().err

    status, err = add("--company", "nowhere", "--username", "a.b", "--role", "finance")
    assert status == 1 and "--company" in err
    status, err = add("--company", "lakeside", "--username", "a.b", "--role", "finance", "--site", "nope")
    assert status == 1 and "--site" in err
    status, err = add("--company", "lakeside", "--username", "a.b", "--role", "finance", stdin="short\n")
    assert status == 2 and "at least 10" in err
    status, err = add("--company", "lakeside", "--username", "a.b", "--role", "finance", stdin="")
    assert status == 2 and "no password" in err
    status, err = add("--company", "lakeside", "--username", "not valid!", "--role", "finance")
    assert status == 2 and "--username" in err
    assert sign_in(config_file, "a.b", PASSWORD)["status"] == 401
