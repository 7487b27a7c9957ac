"""The console's gateway pages through the real app (httpx over ASGI), on SQLite and PostgreSQL:
the list and one gateway for a role that reads gateways, 403 without, 404 for another company's;
registering one shows its password and ready config once; rotating and revoking need their
confirmation step and the session's CSRF token."""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import select

from cloud.accounts.permissions import Role
from cloud.api import create_app
from cloud.audit.models import AuditEntry
from cloud.broker.passwords import verify_password
from cloud.config import CloudConfig
from cloud.models import Gateway
from cloud.property.models import Site
from cloud.registry import get_password_hash
from tests.cloud.browser import PLATFORM_TOKEN, SeededSite, StaffSession, seed_site, staff_session
from tests.cloud.conftest import Database
from tests.cloud.helpers import new_gateway_id


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=PLATFORM_TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console") as c:
        yield c


@pytest.fixture
async def site(db: Database) -> SeededSite:
    return await seed_site(db.sessions)


@pytest.fixture
async def admin(db: Database, site: SeededSite) -> StaffSession:
    return await staff_session(db.sessions, site.company_id, [(Role.COMPANY_ADMIN, None)])


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


async def post(
    client: httpx.AsyncClient, staff: StaffSession, path: str, fields: dict[str, Any] | None = None
) -> httpx.Response:
    data = {"csrf_token": staff.csrf_token, **(fields or {})}
    return await client.post(path, data=data, headers=staff.headers())


def issued(page: str) -> tuple[str, dict[str, Any], str]:
    """The password, the config (parsed) and the download link's config on a credentials page."""
    password = re.search(r'value="([^"]+)" id="gateway-password"', page)
    config = re.search(r'<textarea[^>]*id="gateway-config"[^>]*>(.*?)</textarea>', page, re.S)
    link = re.search(r'href="data:application/toml;charset=utf-8,([^"]+)"', page)
    assert password is not None and config is not None and link is not None
    return (
        html.unescape(password.group(1)),
        tomllib.loads(html.unescape(config.group(1))),
        unquote(html.unescape(link.group(1))),
    )


async def password_works(db: Database, gateway_id: str, password: str) -> bool:
    async with db.sessions() as session:
        stored = await get_password_hash(session, gateway_id)
    return stored is not None and verify_password(password, stored)


async def test_the_list_and_a_gateway_with_its_devices_and_latest_values(
    client: httpx.AsyncClient, db: Database, site: SeededSite
) -> None:
    technician = await staff_session(db.sessions, site.company_id, [(Role.TECHNICIAN, None)])
    r = await client.get("/gateways", headers=technician.headers())
    assert r.status_code == 200
    page = text_of(r.text)
    assert "Plant room A" in page and "在线" in page and "离线" in page and site.site_name in page
    assert "注册网关" not in page  # technicians read gateways, they do not register them
    r = await client.get("/gateways", params={"state": "offline"}, headers=technician.headers())
    assert site.offline_gateway_id in r.text and f'href="/gateways/{site.gateway_id}"' not in r.text
    r = await client.get(f"/gateways/{site.gateway_id}", headers=technician.headers())
    assert r.status_code == 200
    page = text_of(r.text)
    assert "meter1 modbus power 12.5 kW" in page
    assert "door-lobby door.opened" in page  # other latest states
    assert "时间按 Asia/Shanghai（UTC+08:00）显示" in page
    assert "更换凭证" not in page and "/rotate" not in r.text
    # Without gateways.read: 403; the rotate confirmation needs gateways.manage.
    finance = await staff_session(db.sessions, site.company_id, [(Role.FINANCE, None)])
    assert (await client.get("/gateways", headers=finance.headers())).status_code == 403
    assert (await client.get(f"/gateways/{site.gateway_id}", headers=finance.headers())).status_code == 403
    assert (
        await client.get(f"/gateways/{site.gateway_id}/rotate", headers=technician.headers())
    ).status_code == 403
    assert (await client.get("/gateways/new", headers=technician.headers())).status_code == 403


async def test_another_companys_gateway_is_404(
    client: httpx.AsyncClient, db: Database, admin: StaffSession
) -> None:
    other = await seed_site(db.sessions)
    for path in (
        f"/gateways/{other.gateway_id}",
        f"/gateways/{other.gateway_id}/rotate",
        f"/gateways/{other.gateway_id}/revoke",
    ):
        r = await client.get(path, headers=admin.headers())
        assert r.status_code == 404, path
    r = await post(client, admin, f"/gateways/{other.gateway_id}/revoke", {"confirm": "yes"})
    assert r.status_code == 404
    assert other.gateway_id not in (await client.get("/gateways", headers=admin.headers())).text
    async with db.sessions() as session:
        assert (await session.get_one(Gateway, other.gateway_id)).revoked_at is None


async def test_register_a_gateway_and_see_its_password_and_config_once(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    r = await client.get("/gateways/new", headers=admin.headers())
    assert r.status_code == 200 and f'<option value="{site.site_id}"' in r.text
    gateway_id = new_gateway_id()
    fields = {"gateway_id": gateway_id, "site_id": str(site.site_id), "name": "Plant room C"}
    r = await client.post("/gateways/new", data=fields, headers=admin.headers())
    assert r.status_code == 403  # no CSRF token
    r = await post(client, admin, "/gateways/new", fields)
    assert r.status_code == 200
    assert f"网关 {gateway_id} 已注册" in text_of(r.text)
    password, config, download = issued(r.text)
    assert config["gateway_id"] == gateway_id and config["mqtt"]["password"] == password
    assert tomllib.loads(download) == config
    assert await password_works(db, gateway_id, password)
    # Never again: the gateway's page has no password on it.
    detail = await client.get(f"/gateways/{gateway_id}", headers=admin.headers())
    assert detail.status_code == 200 and password not in detail.text
    async with db.sessions() as session:
        gateway = await session.get_one(Gateway, gateway_id)
        assert (gateway.site_id, gateway.company_id, gateway.name) == (
            site.site_id,
            site.company_id,
            "Plant room C",
        )
        audit = await session.scalar(
            select(AuditEntry).where(
                AuditEntry.action == "gateway.create", AuditEntry.target_id == gateway_id
            )
        )
        assert audit is not None and password not in str(audit.after)
    # The id again: 409, on the form.
    r = await post(client, admin, "/gateways/new", fields)
    assert r.status_code == 409 and 'value="Plant room C"' in r.text
    # A bad id and no site: 422, on the form.
    r = await post(client, admin, "/gateways/new", {"gateway_id": "bad id!", "site_id": str(site.site_id)})
    assert r.status_code == 422
    r = await post(client, admin, "/gateways/new", {"gateway_id": new_gateway_id(), "site_id": ""})
    assert r.status_code == 422 and "site_id" in text_of(r.text)


async def test_rotate_and_revoke_after_confirming(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    gateway_id = new_gateway_id()
    r = await post(client, admin, "/gateways/new", {"gateway_id": gateway_id, "site_id": str(site.site_id)})
    old_password, _config, _ = issued(r.text)

    page = await client.get(f"/gateways/{gateway_id}", headers=admin.headers())
    assert f'href="/gateways/{gateway_id}/rotate"' in page.text
    confirm = await client.get(f"/gateways/{gateway_id}/rotate", headers=admin.headers())
    assert confirm.status_code == 200 and "旧密码立即失效" in text_of(confirm.text)
    assert 'name="confirm" value="yes"' in confirm.text
    # Posted without the confirmation: back to it, nothing changed.
    r = await post(client, admin, f"/gateways/{gateway_id}/rotate")
    assert r.status_code == 303 and r.headers["location"] == f"/gateways/{gateway_id}/rotate"
    assert await password_works(db, gateway_id, old_password)
    r = await client.post(f"/gateways/{gateway_id}/rotate", data={"confirm": "yes"}, headers=admin.headers())
    assert r.status_code == 403  # no CSRF token
    r = await post(client, admin, f"/gateways/{gateway_id}/rotate", {"confirm": "yes"})
    assert r.status_code == 200 and f"{gateway_id} 的新凭证" in text_of(r.text)
    new_password, config, _ = issued(r.text)
    assert new_password != old_password and config["mqtt"]["password"] == new_password
    assert await password_works(db, gateway_id, new_password)
    assert not await password_works(db, gateway_id, old_password)

    r = await post(client, admin, f"/gateways/{gateway_id}/revoke")
    assert r.status_code == 303 and r.headers["location"] == f"/gateways/{gateway_id}/revoke"
    r = await post(client, admin, f"/gateways/{gateway_id}/revoke", {"confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == f"/gateways/{gateway_id}"
    async with db.sessions() as session:
        assert (await session.get_one(Gateway, gateway_id)).revoked_at is not None
        actions = set(
            (await session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == gateway_id))).all()
        )
    assert {"gateway.create", "gateway.credentials.rotate", "gateway.credentials.revoke"} <= actions
    page = text_of((await client.get(f"/gateways/{gateway_id}", headers=admin.headers())).text)
    assert "已吊销" in page


async def test_a_site_limited_manager_manages_only_its_sites_gateways(
    client: httpx.AsyncClient, db: Database
) -> None:
    seeded = await seed_site(db.sessions, sites=2)
    async with db.sessions() as session:
        second = await session.scalar(
            select(Site.id).where(Site.company_id == seeded.company_id, Site.id != seeded.site_id)
        )
    limited = await staff_session(db.sessions, seeded.company_id, [(Role.COMPANY_ADMIN, second)])
    assert (await client.get(f"/gateways/{seeded.gateway_id}", headers=limited.headers())).status_code == 403
    r = await post(client, limited, f"/gateways/{seeded.gateway_id}/revoke", {"confirm": "yes"})
    assert r.status_code == 403
    # Registering at a site outside its own: refused on the form, and that site is not offered.
    r = await client.get("/gateways/new", headers=limited.headers())
    assert f'<option value="{seeded.site_id}"' not in r.text
    r = await post(
        client, limited, "/gateways/new", {"gateway_id": new_gateway_id(), "site_id": str(seeded.site_id)}
    )
    assert r.status_code == 403
    listed = await client.get("/gateways", headers=limited.headers())
    assert seeded.gateway_id not in listed.text
