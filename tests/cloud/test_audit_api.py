"""The audit API (``GET /api/v1/audit``, ``/audit/verify``) and ``gatehouse cloud audit verify``:
each company reads its own log only, a site-limited auditor only its sites' entries, filters and
cursor paging newest first; verification reports a tampered entry."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from cloud.accounts.permissions import PLATFORM, Principal, Role
from cloud.api import create_app
from cloud.audit.chain import record
from cloud.audit.models import AuditEntry
from cloud.config import CloudConfig, database_url, load_cloud_config
from cloud.db import SessionFactory, create_engine, session_factory
from tests.cloud.conftest import Database
from tests.cloud.tenancy import Tenant, bearer, make_company, role_token
from tests.cloud.test_audit_chain import guard_lifted
from tests.cloud.test_cloud_cli import cli

TOKEN = "test-token-0123456789"


def user(tenant: Tenant, uid: int, name: str) -> Principal:
    return Principal(kind="user", id=uid, name=name, company_id=tenant.company_id)


async def write(sessions: SessionFactory, principal: Principal, action: str, target: str, **kw: Any) -> None:
    async with sessions() as session, session.begin():
        await record(session, principal, action, target.split(":")[0], target.split(":")[1], **kw)


async def seed(sessions: SessionFactory, x: Tenant, y: Tenant) -> None:
    """X: two entries at site 1, one at site 2, one company-wide; Y: one; the platform: one."""
    li, zhang = user(x, 1, "Li Na"), user(x, 2, "Zhang Wei")
    a, b = x.site_ids
    await write(sessions, li, "door.unlock", "door:gw-a/front", site_id=a, after={"seconds": 5})
    await write(sessions, zhang, "access.credentials.import", "access.credentials:x-site1", site_id=a)
    await write(sessions, li, "door.unlock", "door:gw-b/back", site_id=b)
    await write(sessions, li, "user.role.grant", "user:2", before={"roles": []}, after={"roles": ["finance"]})
    await write(sessions, user(y, 9, "Y staff"), "door.unlock", "door:gw-y/front", site_id=y.site_ids[0])
    await write(sessions, PLATFORM, "company.create", f"company:{x.company_id}")


@pytest.fixture
async def world(db: Database, tmp_path: Path) -> dict[str, Any]:
    x = await make_company(db.sessions, sites=2)
    y = await make_company(db.sessions)
    await seed(db.sessions, x, y)
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=TOKEN)
    return {"x": x, "y": y, "app": app, "db": db}


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("GATEHOUSE_DATA_DIR", raising=False)
    monkeypatch.delenv("GATEHOUSE_DATABASE_URL", raising=False)
    path = tmp_path / "cloud.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return str(path)


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud")


async def test_a_company_reads_its_own_log_newest_first(world: dict[str, Any]) -> None:
    x, y, db = world["x"], world["y"], world["db"]
    admin = bearer(await role_token(db.sessions, x.company_id, Role.COMPANY_ADMIN))
    async with client(world["app"]) as c:
        r = await c.get("/api/v1/audit", headers=admin)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [i["action"] for i in items] == [
            "user.role.grant",
            "door.unlock",
            "access.credentials.import",
            "door.unlock",
        ]
        assert {i["company_id"] for i in items} == {x.company_id}
        assert items[0]["before"] == {"roles": []} and items[0]["actor"] == "user:1"
        assert items[-1]["seq"] == 1 and items[-1]["after"] == {"seconds": 5}
        assert r.json()["next_cursor"] is None

        # Paging: two at a time, the cursor handed back as it was given.
        seen, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await c.get("/api/v1/audit", params=params, headers=admin)).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [i["id"] for i in items]

        async def ids(**params: Any) -> list[str]:
            r = await c.get("/api/v1/audit", params=params, headers=admin)
            assert r.status_code == 200, r.text
            return [f"{i['target_type']}:{i['target_id']}" for i in r.json()["items"]]

        assert await ids(action="door.") == ["door:gw-b/back", "door:gw-a/front"]
        assert await ids(action="door.unlock", target_type="door", target_id="gw-a/front") == [
            "door:gw-a/front"
        ]
        assert await ids(actor="user:2") == ["access.credentials:x-site1"]
        assert await ids(action="%") == []  # a prefix, not a pattern
        now = datetime.now(UTC)
        assert len(await ids(since=(now - timedelta(minutes=5)).isoformat())) == 4
        assert await ids(until=(now - timedelta(minutes=5)).isoformat()) == []
        assert await ids(since=(now + timedelta(minutes=5)).replace(tzinfo=None).isoformat()) == []

        # Another company's chain is not there to ask for.
        r = await c.get("/api/v1/audit", params={"company_id": y.company_id}, headers=admin)
        assert r.status_code == 404
        r = await c.get("/api/v1/audit", params={"cursor": "not-a-cursor"}, headers=admin)
        assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"


async def test_who_may_read_the_log(world: dict[str, Any]) -> None:
    x, y, db = world["x"], world["y"], world["db"]
    site_a = bearer(await role_token(db.sessions, x.company_id, Role.FINANCE, [x.site_ids[0]]))
    agent = bearer(await role_token(db.sessions, x.company_id, Role.SERVICE_AGENT))
    other = bearer(await role_token(db.sessions, y.company_id, Role.PROPERTY_MANAGER))
    async with client(world["app"]) as c:
        # Limited to site 1: that site's entries, not site 2's nor the company-wide ones.
        r = await c.get("/api/v1/audit", headers=site_a)
        assert [i["target_id"] for i in r.json()["items"]] == ["x-site1", "gw-a/front"]
        assert (await c.get("/api/v1/audit", headers=agent)).status_code == 403
        assert (await c.get("/api/v1/audit/verify", headers=agent)).status_code == 403
        assert (await c.get("/api/v1/audit")).status_code == 401
        r = await c.get("/api/v1/audit", headers=other)
        assert [i["target_id"] for i in r.json()["items"]] == ["gw-y/front"]

        # The platform reads every chain, or one.
        r = await c.get("/api/v1/audit", headers=bearer(TOKEN), params={"limit": 500})
        chains = {i["company_id"] for i in r.json()["items"]}
        assert {0, x.company_id, y.company_id} <= chains
        r = await c.get("/api/v1/audit", headers=bearer(TOKEN), params={"company_id": y.company_id})
        assert [i["target_id"] for i in r.json()["items"]] == ["gw-y/front"]


async def test_verify_reports_a_tampered_entry_of_the_company_only(world: dict[str, Any]) -> None:
    x, y, db = world["x"], world["y"], world["db"]
    x_admin = bearer(await role_token(db.sessions, x.company_id, Role.COMPANY_ADMIN))
    y_admin = bearer(await role_token(db.sessions, y.company_id, Role.COMPANY_ADMIN))
    async with client(world["app"]) as c:
        r = await c.get("/api/v1/audit/verify", headers=x_admin)
        assert r.json() == {"ok": True, "entries": 4, "chains": 1, "problems": []}

        async with guard_lifted(db), db.sessions() as session, session.begin():
            await session.execute(
                update(AuditEntry)
                .where(AuditEntry.company_id == x.company_id, AuditEntry.seq == 1)
                .values(after={"seconds": 3600})
            )
        r = await c.get("/api/v1/audit/verify", headers=x_admin)
        assert r.json()["ok"] is False
        assert r.json()["problems"] == [
            {"company_id": x.company_id, "seq": 1, "reason": "was changed after it was written"}
        ]
        assert (await c.get("/api/v1/audit/verify", headers=y_admin)).json()["ok"] is True
        r = await c.get("/api/v1/audit/verify", headers=bearer(TOKEN), params={"company_id": y.company_id})
        assert r.json()["ok"] is True and r.json()["chains"] == 1


def test_cli_verify(config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("migrate", "--config", config_file) == 0
    url = database_url(load_cloud_config(config_file))

    async def setup() -> tuple[Tenant, Tenant]:
        engine = create_engine(url)
        try:
            sessions = session_factory(engine)
            x = await make_company(sessions, "harbour", sites=2)
            y = await make_company(sessions, "hillside")
            await seed(sessions, x, y)
            return x, y
        finally:
            await engine.dispose()

    async def tamper(company_id: int, seq: int) -> None:
        engine = create_engine(url)
        try:
            db = Database("sqlite", url, engine, session_factory(engine))
            async with guard_lifted(db), db.sessions() as session, session.begin():
                await session.execute(
                    update(AuditEntry)
                    .where(AuditEntry.company_id == company_id, AuditEntry.seq == seq)
                    .values(actor_name="someone else")
                )
        finally:
            await engine.dispose()

    x, _ = asyncio.run(setup())
    capsys.readouterr()
    assert cli("audit", "verify", "--config", config_file) == 0
    assert "audit log intact: 6 entries in 3 chain(s)" in capsys.readouterr().out
    assert cli("audit", "verify", "--company", "harbour", "--config", config_file) == 0
    assert "4 entries in 1 chain(s)" in capsys.readouterr().out

    asyncio.run(tamper(x.company_id, 2))
    assert cli("audit", "verify", "--config", config_file) == 1
    out = capsys.readouterr().out
    assert f"company harbour (id {x.company_id}), entry 2: was changed after it was written" in out
    assert "audit log BROKEN: 1 problem(s)" in out
    assert cli("audit", "verify", "--company", "hillside", "--config", config_file) == 0
    assert cli("audit", "verify", "--company", "platform", "--config", config_file) == 0
    capsys.readouterr()
    assert cli("audit", "verify", "--company", "nowhere", "--config", config_file) == 2
    assert "no company 'nowhere'" in capsys.readouterr().err
