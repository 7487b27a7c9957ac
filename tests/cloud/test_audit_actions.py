"""Commands and access changes under the permission check and in the audit log: who may send which
command to which gateway (door commands need doors.control, others gateways.command, at the
gateway's site; another company's gateway is 404), who may read or change a site's access data,
and what the audit log keeps of each (never a secret: no PIN hash, no gateway config)."""

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from cloud.accounts.permissions import Permission, Role
from cloud.api import create_app
from cloud.audit.chain import verify
from cloud.audit.models import AuditEntry
from cloud.config import CloudConfig
from cloud.db import SessionFactory
from cloud.models import AccessCredential, Gateway, GatewayCommand
from tests.cloud.conftest import Database
from tests.cloud.helpers import new_gateway_id
from tests.cloud.tenancy import Tenant, bearer, make_company, make_token, role_token
from tests.cloud.test_cloud_access import LEVELS_CSV, credentials_csv, people
from tests.cloud.test_cloud_cli import cli
from tests.cloud.test_cloud_commands import cloud, cloud_config
from tests.support.mosquitto import MosquittoProcess

TOKEN = "test-token-0123456789"
PLATFORM = bearer(TOKEN)


async def place(sessions: SessionFactory, tenant: Tenant | None, site: int = 0) -> str:
    """A registered gateway at the tenant's ``site``-th site (None: no company, no site)."""
    from cloud.registry import add_gateway

    gw = new_gateway_id()
    async with sessions() as session, session.begin():
        await add_gateway(session, gw, tenant.site_codes[site] if tenant else "")
        if tenant is not None:
            await session.execute(
                update(Gateway)
                .where(Gateway.id == gw)
                .values(company_id=tenant.company_id, site_id=tenant.site_ids[site])
            )
    return gw


async def audit_of(sessions: SessionFactory, **where: Any) -> list[AuditEntry]:
    async with sessions() as session:
        stmt = select(AuditEntry).order_by(AuditEntry.id)
        for column, value in where.items():
            stmt = stmt.where(getattr(AuditEntry, column) == value)
        return list((await session.scalars(stmt)).all())


async def commands_of(sessions: SessionFactory, gw: str) -> list[GatewayCommand]:
    async with sessions() as session:
        return list(
            (await session.scalars(select(GatewayCommand).where(GatewayCommand.gateway_id == gw))).all()
        )


# -- commands


async def test_who_may_send_which_command_and_each_is_audited(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    x = await make_company(db.sessions, sites=2)
    y = await make_company(db.sessions)
    gw_a, gw_b, gw_y, gw_none = (
        await place(db.sessions, x, 0),
        await place(db.sessions, x, 1),
        await place(db.sessions, y, 0),
        await place(db.sessions, None),
    )
    guard = bearer(await role_token(db.sessions, x.company_id, Role.SECURITY_GUARD, [x.site_ids[0]]))
    manager = bearer(await role_token(db.sessions, x.company_id, Role.PROPERTY_MANAGER))
    technician = bearer(await role_token(db.sessions, x.company_id, Role.TECHNICIAN))
    finance = bearer(await role_token(db.sessions, x.company_id, Role.FINANCE))
    unlock = {"name": "door.unlock", "args": {"door": "front"}, "wait_s": 0}
    ping = {"name": "ping", "wait_s": 0}

    async with cloud(cloud_config(broker, tmp_path), db.sessions, ingest=False) as c:

        async def post(gw: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
            return await c.post(f"/api/v1/gateways/{gw}/commands", json=body, headers=headers)

        # The guard of site A unlocks A's door: sent, named as the token, audited at site A.
        r = await post(gw_a, unlock, guard)
        assert r.status_code == 202, r.text
        assert r.json()["requested_by"] == "token security_guard"
        (entry,) = await audit_of(db.sessions, action="door.unlock", target_id=f"{gw_a}/front")
        assert (entry.company_id, entry.site_id, entry.target_type) == (x.company_id, x.site_ids[0], "door")
        assert entry.actor.startswith("token:") and entry.actor_name == "token security_guard"
        assert entry.after == {
            "command_id": r.json()["id"],
            "gateway_id": gw_a,
            "name": "door.unlock",
            "args": {"door": "front"},
            "expires_at": entry.after["expires_at"] if entry.after else None,
        }
        assert entry.ip  # the client's address, as the ASGI transport gives it

        # ...but may not ping (gateways.command), and does not see site B's or Y's gateways.
        r = await post(gw_a, ping, guard)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        for gw in (gw_b, gw_y, gw_none):
            r = await post(gw, unlock, guard)
            assert r.status_code == 404 and r.json()["code"] == "unknown_gateway", gw
            assert (await c.get(f"/api/v1/gateways/{gw}/commands", headers=guard)).status_code == 404
        assert (await c.get(f"/api/v1/gateways/{gw_a}/commands", headers=guard)).status_code == 200

        # A technician reads commands but sends none; finance does neither.
        assert (await post(gw_a, ping, technician)).status_code == 403
        r = await c.get(f"/api/v1/gateways/{gw_a}/commands", headers=technician)
        assert r.status_code == 200 and len(r.json()["items"]) == 1
        assert (await c.get(f"/api/v1/gateways/{gw_a}/commands", headers=finance)).status_code == 403
        assert (await post(gw_a, unlock, finance)).status_code == 403

        # The manager of every site arms site B's zone; a config.apply keeps no TOML in the log.
        r = await post(gw_b, {"name": "intrusion.arm", "args": {"zone": "z1"}, "wait_s": 0}, manager)
        assert r.status_code == 202, r.text
        toml = 'gateway_id = "x"\n[mqtt]\npassword = "s3cret-broker-password"\n'
        r = await post(
            gw_b, {"name": "config.apply", "args": {"toml": toml, "version": "v2"}, "wait_s": 0}, manager
        )
        assert r.status_code == 202, r.text
        arm, apply = await audit_of(db.sessions, target_id=gw_b)
        assert (arm.action, arm.target_type, arm.site_id) == (
            "gateway.command.intrusion.arm",
            "gateway",
            x.site_ids[1],
        )
        assert apply.action == "gateway.command.config.apply"
        assert apply.after is not None and apply.after["args"]["version"] == "v2"
        assert "toml" not in apply.after["args"] and apply.after["args"]["toml_bytes"] == len(toml)
        assert "s3cret" not in json.dumps(apply.after)
        # A gateway of no company: the manager does not see it; the platform does.
        assert (await post(gw_none, ping, manager)).status_code == 404
        assert (await post(gw_y, ping, manager)).status_code == 404

        # The platform may do anything, named as the configured owner of its token.
        r = await post(gw_y, unlock, PLATFORM)
        assert r.status_code == 202 and r.json()["requested_by"] == "alice"
        (entry,) = await audit_of(db.sessions, target_id=f"{gw_y}/front")
        assert (entry.company_id, entry.actor, entry.actor_name) == (y.company_id, "platform", "alice")
        r = await post(gw_none, ping, PLATFORM)
        assert r.status_code == 202
        (entry,) = await audit_of(db.sessions, target_id=gw_none)
        assert entry.company_id == 0 and entry.site_id is None

    # Refused commands left neither a command nor an audit entry behind.
    assert [cmd.name for cmd in await commands_of(db.sessions, gw_a)] == ["door.unlock"]
    assert len(await commands_of(db.sessions, gw_y)) == 1
    async with db.sessions() as session:
        for chain in (x.company_id, y.company_id):
            assert (await verify(session, chain)).ok


async def test_a_token_scoped_to_doors_alone_may_unlock(
    db: Database, broker: MosquittoProcess, tmp_path: Path
) -> None:
    x = await make_company(db.sessions)
    gw = await place(db.sessions, x)
    doors = bearer(await make_token(db.sessions, x.company_id, [Permission.DOORS_CONTROL], name="intercom"))
    async with cloud(cloud_config(broker, tmp_path), db.sessions, ingest=False) as c:
        r = await c.post(
            f"/api/v1/gateways/{gw}/commands",
            json={"name": "door.unlock", "args": {"door": "d1"}},
            headers=doors,
        )
        assert r.status_code in (200, 202), r.text
        r = await c.post(f"/api/v1/gateways/{gw}/commands", json={"name": "ping"}, headers=doors)
        assert r.status_code == 403
        # Reading the commands back is gateways.read, which this token lacks.
        assert (await c.get(f"/api/v1/gateways/{gw}/commands", headers=doors)).status_code == 403


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


def test_cli_commands_are_audited_as_the_operator(
    cli_config: str, broker: MosquittoProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from cloud.config import database_url, load_cloud_config
    from cloud.db import create_engine, session_factory

    gw = new_gateway_id()
    assert cli("gateway", "add", gw, "--config", cli_config) == 0
    assert (
        cli(
            "gateway",
            "command",
            gw,
            "door.unlock",
            "--arg",
            "door=d1",
            "--wait",
            "0",
            "--by",
            "bob",
            "--config",
            cli_config,
        )
        == 1
    )  # nobody answers
    capsys.readouterr()

    async def entries() -> list[AuditEntry]:
        engine = create_engine(database_url(load_cloud_config(cli_config)))
        try:
            return await audit_of(session_factory(engine), target_id=f"{gw}/d1")
        finally:
            await engine.dispose()

    (entry,) = asyncio.run(entries())
    assert (entry.action, entry.actor, entry.actor_name, entry.company_id) == (
        "door.unlock",
        "platform",
        "bob",
        0,
    )


# -- access


@pytest.fixture
async def access_app(db: Database, tmp_path: Path) -> Any:
    return create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=TOKEN)


def http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud")


def csv(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Content-Type": "text/csv"}


SCHEDULE = {
    "name": "Office hours",
    "intervals": [{"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "18:00"}],
}


async def test_access_changes_are_checked_and_audited(db: Database, access_app: Any) -> None:
    x = await make_company(db.sessions, sites=2)
    y = await make_company(db.sessions)
    a, b = x.site_codes
    admin = bearer(await role_token(db.sessions, x.company_id, Role.COMPANY_ADMIN))
    async with http(access_app) as c:
        r = await c.put(f"/api/v1/sites/{a}/access/schedules/office", json=SCHEDULE, headers=admin)
        assert r.status_code == 200, r.text
        (entry,) = await audit_of(db.sessions, action="access.schedule.put", target_id=f"{a}/office")
        assert (entry.company_id, entry.site_id, entry.target_type) == (
            x.company_id,
            x.site_ids[0],
            "access.schedule",
        )
        assert entry.before == {"version": 0, "rows": {}}
        assert entry.after is not None
        assert (entry.after["version"], entry.after["added"], entry.after["added_keys"]) == (1, 1, ["office"])
        assert entry.after["rows"]["office"]["name"] == "Office hours"

        r = await c.post(f"/api/v1/sites/{a}/access/levels/import", content=LEVELS_CSV, headers=csv(admin))
        assert r.status_code == 200, r.text
        data = credentials_csv(
            [{"id": "guard", "card": "501", "holder": "Guard", "levels": "staff", "pin": "4821"}],
            ("id", "card", "holder", "levels", "pin"),
        )
        r = await c.post(f"/api/v1/sites/{a}/access/credentials/import", content=data, headers=csv(admin))
        assert r.status_code == 200, r.text
        data = data.replace(b"4821", b"9090")
        r = await c.post(f"/api/v1/sites/{a}/access/credentials/import", content=data, headers=csv(admin))
        assert r.json()["changed"] == 1
        first, second = await audit_of(db.sessions, action="access.credentials.import")
        assert first.after is not None and second.after is not None and second.before is not None
        assert first.after["rows"]["guard"]["pin"] == "set"
        assert second.before["rows"]["guard"]["pin"] == "set"
        assert second.after["rows"]["guard"]["pin"] == "changed"
        assert second.after["changed_keys"] == ["guard"] and second.after["mode"] == "merge"
        async with db.sessions() as session:
            stored = await session.scalar(
                select(AccessCredential.pin_hash).where(AccessCredential.id == "guard")
            )
        assert stored and all(stored not in json.dumps([e.before, e.after]) for e in (first, second))
        assert "pin_hash" not in json.dumps([first.after, second.before, second.after])

        # A big import is counted and keyed, not copied row by row.
        r = await c.post(
            f"/api/v1/sites/{a}/access/credentials/import",
            params={"mode": "replace"},
            content=credentials_csv(people(30)),
            headers=csv(admin),
        )
        assert r.status_code == 200, r.text
        big = (await audit_of(db.sessions, action="access.credentials.import"))[-1]
        assert big.after is not None and "rows" not in big.after
        assert (big.after["added"], big.after["removed"], big.after["removed_keys"]) == (30, 1, ["guard"])
        assert len(big.after["added_keys"]) == 30 and big.after["mode"] == "replace"

        r = await c.put(
            f"/api/v1/sites/{a}/access/holidays",
            json=[{"date": "2026-10-01", "name": "National Day"}],
            headers=admin,
        )
        assert r.status_code == 200
        (hol,) = await audit_of(db.sessions, action="access.holidays.put")
        assert hol.after is not None and hol.after["rows"] == {"2026-10-01": {"name": "National Day"}}

        r = await c.delete(f"/api/v1/sites/{b}/access/schedules/nope", headers=admin)
        assert r.status_code == 404
        await c.put(f"/api/v1/sites/{b}/access/schedules/night", json=SCHEDULE, headers=admin)
        r = await c.delete(f"/api/v1/sites/{b}/access/schedules/night", headers=admin)
        assert r.status_code == 200 and r.json()["removed"] == 1
        (gone,) = await audit_of(db.sessions, action="access.schedule.delete")
        assert gone.before is not None and gone.before["rows"]["night"]["name"] == "Office hours"
        assert gone.after is not None and gone.after["removed_keys"] == ["night"] and gone.after["rows"] == {}

        # Another company's site does not exist for X; Y's data is untouched.
        y_site = y.site_codes[0]
        assert (await c.get(f"/api/v1/sites/{y_site}/access", headers=admin)).status_code == 404
        r = await c.put(f"/api/v1/sites/{y_site}/access/schedules/office", json=SCHEDULE, headers=admin)
        assert r.status_code == 404 and r.json()["code"] == "unknown_site"
        r = await c.get(f"/api/v1/sites/{y_site}/access", headers=PLATFORM)
        assert r.json()["version"] == 0
        # An unknown code: 404 for a company, allowed for the platform (data kept by code alone).
        loose = f"loose-{secrets.token_hex(3)}"
        assert (await c.get(f"/api/v1/sites/{loose}/access", headers=admin)).status_code == 404
        r = await c.put(f"/api/v1/sites/{loose}/access/schedules/office", json=SCHEDULE, headers=PLATFORM)
        assert r.status_code == 200
        (loose_entry,) = await audit_of(db.sessions, target_id=f"{loose}/office")
        assert (loose_entry.company_id, loose_entry.site_id, loose_entry.actor) == (0, None, "platform")

    async with db.sessions() as session:
        assert (await verify(session, x.company_id)).ok


async def test_who_may_read_or_change_access(db: Database, access_app: Any) -> None:
    x = await make_company(db.sessions, sites=2)
    a, b = x.site_codes
    guard = bearer(await role_token(db.sessions, x.company_id, Role.SECURITY_GUARD, [x.site_ids[0]]))
    manager_a = bearer(await role_token(db.sessions, x.company_id, Role.PROPERTY_MANAGER, [x.site_ids[0]]))
    finance = bearer(await role_token(db.sessions, x.company_id, Role.FINANCE))
    async with http(access_app) as c:
        assert (await c.get(f"/api/v1/sites/{a}/access", headers=guard)).status_code == 200
        assert (await c.get(f"/api/v1/sites/{b}/access", headers=guard)).status_code == 403
        r = await c.put(f"/api/v1/sites/{a}/access/schedules/office", json=SCHEDULE, headers=guard)
        assert r.status_code == 403
        r = await c.post(f"/api/v1/sites/{a}/access/levels/import", content=LEVELS_CSV, headers=csv(guard))
        assert r.status_code == 403
        assert (await c.get(f"/api/v1/sites/{a}/access", headers=finance)).status_code == 403
        r = await c.put(f"/api/v1/sites/{a}/access/schedules/office", json=SCHEDULE, headers=manager_a)
        assert r.status_code == 200
        r = await c.put(f"/api/v1/sites/{b}/access/schedules/office", json=SCHEDULE, headers=manager_a)
        assert r.status_code == 403
        assert (await c.get(f"/api/v1/sites/{a}/access")).status_code == 401
    assert [e.actor_name for e in await audit_of(db.sessions, company_id=x.company_id)] == [
        "token property_manager"
    ]
