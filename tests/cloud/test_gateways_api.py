"""``/api/v1/gateways``: registering at a site, rotating and revoking credentials, listing and
reading gateways, all tenant-scoped; real HTTP through the ASGI app, real databases."""

import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select, update

from cloud.accounts.permissions import Role
from cloud.api import create_app
from cloud.audit.models import AuditEntry
from cloud.broker.passwords import verify_password
from cloud.config import CloudConfig
from cloud.models import Gateway, GatewayDevice, GatewayPoint, LatestValue
from cloud.registry import get_password_hash
from tests.cloud.conftest import Database
from tests.cloud.helpers import new_gateway_id
from tests.cloud.tenancy import Tenant, bearer, make_company, role_token

PLATFORM_TOKEN = "platform-token-0123456789"
PLATFORM = bearer(PLATFORM_TOKEN)


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=PLATFORM_TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as c:
        yield c


async def admin(db: Database, tenant: Tenant, site_ids: list[int] | None = None) -> dict[str, str]:
    return bearer(await role_token(db.sessions, tenant.company_id, Role.COMPANY_ADMIN, site_ids))


async def register(
    client: httpx.AsyncClient, headers: dict[str, str], site_id: int | None, name: str = ""
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": new_gateway_id(), "name": name}
    if site_id is not None:
        body["site_id"] = site_id
    r = await client.post("/api/v1/gateways", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def stored_hash(db: Database, gateway_id: str) -> str | None:
    async with db.sessions() as session:
        return await get_password_hash(session, gateway_id)


async def audit_of(db: Database, gateway_id: str) -> list[AuditEntry]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(AuditEntry)
            .where(AuditEntry.target_type == "gateway", AuditEntry.target_id == gateway_id)
            .order_by(AuditEntry.id)
        )
        return list(rows.all())


async def test_registering_at_a_site_issues_credentials_once(client: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_company(db.sessions, sites=2)
    headers = await admin(db, tenant)
    body = await register(client, headers, tenant.site_ids[1], name="T1 plant room")

    gateway, password = body["gateway"], body["password"]
    assert gateway["company_id"] == tenant.company_id
    assert gateway["site_id"] == tenant.site_ids[1]
    assert gateway["site"] == tenant.site_codes[1]  # the site's code: the access module's key
    assert gateway["name"] == "T1 plant room"
    assert gateway["revoked_at"] is None
    assert "password_hash" not in gateway
    stored = await stored_hash(db, gateway["id"])
    assert stored is not None and verify_password(password, stored)
    config = tomllib.loads(body["config_toml"])
    assert config["gateway_id"] == gateway["id"]
    assert config["mqtt"]["password"] == password
    assert body["broker"]["applied"] is True  # the embedded broker asks the registry at sign-in

    (entry,) = await audit_of(db, gateway["id"])
    assert entry.action == "gateway.create"
    assert entry.company_id == tenant.company_id and entry.site_id == tenant.site_ids[1]
    assert entry.actor.startswith("token:")
    assert password not in orjson.dumps([entry.before, entry.after]).decode()


async def test_who_may_register_where(client: httpx.AsyncClient, db: Database) -> None:
    tenant, other = await make_company(db.sessions, sites=2), await make_company(db.sessions)
    s1, s2 = tenant.site_ids
    url = "/api/v1/gateways"
    technician = bearer(await role_token(db.sessions, tenant.company_id, Role.TECHNICIAN))
    manager = bearer(await role_token(db.sessions, tenant.company_id, Role.PROPERTY_MANAGER))
    site_admin = await admin(db, tenant, [s1])

    def body(site_id: int | None = s1, **more: Any) -> dict[str, Any]:
        return {"id": new_gateway_id(), **({"site_id": site_id} if site_id is not None else {}), **more}

    assert (await client.post(url, json=body(), headers=technician)).status_code == 403
    assert (await client.post(url, json=body(), headers=manager)).status_code == 403  # no gateways.manage
    r = await client.post(url, json=body(s2), headers=site_admin)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert (await client.post(url, json=body(s1), headers=site_admin)).status_code == 201
    r = await client.post(url, json=body(other.site_ids[0]), headers=site_admin)
    assert r.status_code == 404  # another company's site does not exist for it
    r = await client.post(url, json=body(None), headers=site_admin)
    assert r.status_code == 422 and "site_id" in r.json()["detail"]
    assert (await client.post(url, json=body(987_654_321), headers=site_admin)).status_code == 404
    assert (await client.post(url, json=body(s1, id="bad/id"), headers=site_admin)).status_code == 422
    r = await client.post(url, json=body(s1, mqtt_url="http://nope"), headers=site_admin)
    assert r.status_code == 422
    taken = body(s1)
    assert (await client.post(url, json=taken, headers=site_admin)).status_code == 201
    r = await client.post(url, json=taken, headers=site_admin)
    assert r.status_code == 409 and r.json()["code"] == "gateway_exists"


async def test_listing_is_tenant_scoped_filtered_and_paged(client: httpx.AsyncClient, db: Database) -> None:
    tenant, other = await make_company(db.sessions, sites=2), await make_company(db.sessions)
    headers = await admin(db, tenant)
    s1, s2 = tenant.site_ids
    mine = [(await register(client, headers, site))["gateway"]["id"] for site in (s1, s1, s2)]
    theirs = (await register(client, await admin(db, other), other.site_ids[0]))["gateway"]["id"]
    async with db.sessions() as session, session.begin():
        await session.execute(update(Gateway).where(Gateway.id == mine[1]).values(online=True))

    async def ids(headers: dict[str, str], **params: Any) -> list[str]:
        out, cursor = [], None
        while True:
            r = await client.get(
                "/api/v1/gateways", params={**params, "limit": 2, "cursor": cursor}, headers=headers
            )
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["items"]) <= 2
            out += [g["id"] for g in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return out

    assert await ids(headers) == sorted(mine)
    assert await ids(headers, site_id=s2) == [mine[2]]
    assert await ids(headers, online=True) == [mine[1]]
    assert await ids(headers, site_id=other.site_ids[0]) == []
    technician_at_s1 = bearer(await role_token(db.sessions, tenant.company_id, Role.TECHNICIAN, [s1]))
    assert await ids(technician_at_s1) == sorted(mine[:2])
    everything = await ids(PLATFORM)
    assert set(mine) | {theirs} <= set(everything)

    r = await client.get("/api/v1/gateways", params={"cursor": "not-a-cursor"}, headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    finance = bearer(await role_token(db.sessions, tenant.company_id, Role.FINANCE))
    assert (await client.get("/api/v1/gateways", headers=finance)).status_code == 403


async def test_another_companys_gateway_is_not_found(client: httpx.AsyncClient, db: Database) -> None:
    tenant, other = await make_company(db.sessions), await make_company(db.sessions)
    theirs = (await register(client, await admin(db, other), other.site_ids[0]))["gateway"]["id"]
    headers = await admin(db, tenant)
    for method, path in (
        ("GET", f"/api/v1/gateways/{theirs}"),
        ("POST", f"/api/v1/gateways/{theirs}/credentials"),
        ("DELETE", f"/api/v1/gateways/{theirs}/credentials"),
    ):
        r = await client.request(method, path, headers=headers)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["code"] == "not_found"
    assert await stored_hash(db, theirs) is not None  # untouched


async def test_a_gateway_at_another_site_is_forbidden_not_hidden(
    client: httpx.AsyncClient, db: Database
) -> None:
    tenant = await make_company(db.sessions, sites=2)
    gw = (await register(client, await admin(db, tenant), tenant.site_ids[1]))["gateway"]["id"]
    at_s1 = await admin(db, tenant, [tenant.site_ids[0]])
    assert (await client.get(f"/api/v1/gateways/{gw}", headers=at_s1)).status_code == 403
    assert (await client.post(f"/api/v1/gateways/{gw}/credentials", headers=at_s1)).status_code == 403
    reader = bearer(await role_token(db.sessions, tenant.company_id, Role.SECURITY_GUARD))
    assert (await client.get(f"/api/v1/gateways/{gw}", headers=reader)).status_code == 200
    assert (await client.delete(f"/api/v1/gateways/{gw}/credentials", headers=reader)).status_code == 403


async def test_rotate_then_revoke_then_reinstate(client: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_company(db.sessions)
    headers = await admin(db, tenant)
    first = await register(client, headers, tenant.site_ids[0])
    gw = first["gateway"]["id"]

    r = await client.post(f"/api/v1/gateways/{gw}/credentials", headers=headers)
    assert r.status_code == 200, r.text
    rotated = r.json()
    stored = await stored_hash(db, gw)
    assert stored is not None
    assert verify_password(rotated["password"], stored)
    assert not verify_password(first["password"], stored)
    assert rotated["gateway"]["credentials_rotated_at"] is not None
    assert tomllib.loads(rotated["config_toml"])["mqtt"]["password"] == rotated["password"]

    r = await client.delete(f"/api/v1/gateways/{gw}/credentials", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["gateway"]["revoked_at"] is not None
    assert await stored_hash(db, gw) is None  # nothing signs in with it
    r = await client.get(f"/api/v1/gateways/{gw}", headers=headers)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None  # the row and its history stay
    # Revoking again tells the broker again, and records nothing new.
    assert (await client.delete(f"/api/v1/gateways/{gw}/credentials", headers=headers)).status_code == 200

    r = await client.post(f"/api/v1/gateways/{gw}/credentials", headers=headers)
    assert r.status_code == 200
    reinstated = r.json()
    assert reinstated["gateway"]["revoked_at"] is None
    stored = await stored_hash(db, gw)
    assert stored is not None and verify_password(reinstated["password"], stored)

    entries = await audit_of(db, gw)
    assert [e.action for e in entries] == [
        "gateway.create",
        "gateway.credentials.rotate",
        "gateway.credentials.revoke",
        "gateway.credentials.rotate",
    ]
    recorded = orjson.dumps([[e.before, e.after] for e in entries]).decode()
    for secret in (first["password"], rotated["password"], reinstated["password"], "$7$"):
        assert secret not in recorded


async def test_the_platform_may_register_without_a_site(client: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_company(db.sessions)
    body = await register(client, PLATFORM, None)
    gw = body["gateway"]["id"]
    assert body["gateway"]["company_id"] is None and body["gateway"]["site_id"] is None
    assert (await client.get(f"/api/v1/gateways/{gw}", headers=PLATFORM)).status_code == 200
    assert (await client.get(f"/api/v1/gateways/{gw}", headers=await admin(db, tenant))).status_code == 404
    (entry,) = await audit_of(db, gw)
    assert entry.company_id == 0 and entry.actor == "platform"  # the platform's own chain
    # ...and at a company's site: the entry goes to that company's chain.
    at_site = await register(client, PLATFORM, tenant.site_ids[0])
    assert at_site["gateway"]["company_id"] == tenant.company_id
    (entry,) = await audit_of(db, at_site["gateway"]["id"])
    assert entry.company_id == tenant.company_id


async def test_one_gateway_with_its_devices_points_and_latest_values(
    client: httpx.AsyncClient, db: Database
) -> None:
    tenant = await make_company(db.sessions)
    headers = await admin(db, tenant)
    gw = (await register(client, headers, tenant.site_ids[0]))["gateway"]["id"]
    now = datetime.now(UTC)
    async with db.sessions() as session, session.begin():
        session.add(
            GatewayDevice(gateway_id=gw, device="ahu-1", protocol="bacnet", description="AHU", updated_at=now)
        )
        session.add(
            GatewayPoint(gateway_id=gw, source="ahu-1/supply", device="ahu-1", unit="degC", updated_at=now)
        )
        session.add(
            LatestValue(
                gateway_id=gw,
                source="ahu-1/supply",
                kind="telemetry.point",
                event_id=42,
                reported_time=now,
                data={"value": 16.5, "unit": "degC"},
            )
        )
    r = await client.get(f"/api/v1/gateways/{gw}", headers=headers)
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["id"] == gw and detail["last_seen"] is None
    assert [(d["device"], d["protocol"]) for d in detail["devices"]] == [("ahu-1", "bacnet")]
    assert [(p["source"], p["unit"]) for p in detail["points"]] == [("ahu-1/supply", "degC")]
    (value,) = detail["latest_values"]
    assert value["event_id"] == 42 and value["data"] == {"value": 16.5, "unit": "degC"}
    assert (await client.get("/api/v1/gateways/no-such-gw", headers=headers)).status_code == 404
