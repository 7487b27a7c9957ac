"""The console's users-and-roles, departments, API tokens and own-account pages through the real app
(httpx over ASGI), on SQLite and PostgreSQL: who sees them (403 without the permission, 404 for
another company's user), the forms (CSRF token required), and what the accounts service refuses
(a role one cannot give) shown on the form."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cloud.accounts.models import ApiToken, RoleGrant, User
from cloud.accounts.passwords import hash_password, verify_password
from cloud.accounts.permissions import Role
from cloud.accounts.totp import code_at
from cloud.api import create_app
from cloud.audit.models import AuditEntry
from cloud.config import CloudConfig
from cloud.property.models import Department
from tests.cloud.browser import PLATFORM_TOKEN, SeededSite, StaffSession, seed_site, staff_session
from tests.cloud.conftest import Database
from tests.cloud.tenancy import bearer

PASSWORD = "harbour-view-2026!"


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


def alert_of(page: str) -> str:
    found = re.search(r'<p class="flash flash-error" role="alert">(.*?)</p>', page, re.S)
    return html.unescape(found.group(1)) if found else ""


async def post(
    client: httpx.AsyncClient, staff: StaffSession, path: str, fields: dict[str, Any] | None = None
) -> httpx.Response:
    data = {"csrf_token": staff.csrf_token, **(fields or {})}
    return await client.post(path, data=data, headers=staff.headers())


async def user_named(db: Database, username: str) -> User:
    async with db.sessions() as session:
        user = await session.scalar(select(User).where(User.username == username))
        assert user is not None
        return user


async def grants_of(db: Database, user_id: int) -> list[tuple[str, int | None]]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(RoleGrant.role, RoleGrant.site_id)
            .where(RoleGrant.user_id == user_id)
            .order_by(RoleGrant.id)
        )
        return [(r.role, r.site_id) for r in rows]


# --- who sees what ---------------------------------------------------------------------------


async def test_the_pages_render_for_the_company_admin(
    client: httpx.AsyncClient, site: SeededSite, admin: StaffSession
) -> None:
    for path, words in {
        "/users": ["用户与角色", admin.username, "公司管理员 · 全部项目", "添加员工"],
        "/users/new": ["添加员工", "用户名", "角色"],
        "/users/departments": ["部门", "添加部门"],
        f"/users/{admin.user_id}": [admin.username, "角色", "授予", "设置密码"],
        "/tokens": ["API 令牌", "创建令牌", "查看物业资料"],
        "/account": ["我的账号", admin.username, "修改我的密码", "两步登录"],
    }.items():
        r = await client.get(path, headers=admin.headers())
        assert r.status_code == 200, (path, r.text[:300])
        page = text_of(r.text)
        for w in words:
            assert w in page, (path, w)
    # One's own account cannot be deactivated from its page.
    r = await client.get(f"/users/{admin.user_id}", headers=admin.headers())
    assert f"/users/{admin.user_id}/deactivate" not in r.text


async def test_roles_without_the_permission_get_403_and_everyone_has_an_account_page(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    manager = await staff_session(db.sessions, site.company_id, [(Role.PROPERTY_MANAGER, None)])
    guard = await staff_session(db.sessions, site.company_id, [(Role.SECURITY_GUARD, site.site_id)])
    # A property manager reads users (no forms to change them) but manages neither users nor tokens.
    r = await client.get(f"/users/{admin.user_id}", headers=manager.headers())
    assert r.status_code == 200 and 'action="/users/' not in r.text
    for path in ("/users/new", "/tokens"):
        assert (await client.get(path, headers=manager.headers())).status_code == 403, path
    assert (await post(client, manager, "/users/new", {"username": "x"})).status_code == 403
    for path in ("/users", "/users/departments", f"/users/{admin.user_id}", "/tokens"):
        assert (await client.get(path, headers=guard.headers())).status_code == 403, path
    r = await client.get("/account", headers=guard.headers())
    assert r.status_code == 200 and "保安 · " in text_of(r.text)
    # An API token is no person: its account page has nothing to change, and says so.
    token = bearer(PLATFORM_TOKEN)
    r = await client.get("/account", headers=token)
    assert r.status_code == 200 and "这不是个人账号" in text_of(r.text)


async def test_another_companys_user_is_404(
    client: httpx.AsyncClient, db: Database, admin: StaffSession
) -> None:
    other = await seed_site(db.sessions)
    theirs = await staff_session(
        db.sessions, other.company_id, [(Role.COMPANY_ADMIN, None)], username="their-admin"
    )
    r = await client.get(f"/users/{theirs.user_id}", headers=admin.headers())
    assert r.status_code == 404 and "their-admin" not in r.text
    for path in (
        f"/users/{theirs.user_id}/password",
        f"/users/{theirs.user_id}/deactivate",
        f"/users/{theirs.user_id}/roles",
    ):
        r = await post(client, admin, path, {"password": "x" * 12, "repeat": "x" * 12, "role": "technician"})
        assert r.status_code == 404, path
    assert "their-admin" not in (await client.get("/users", headers=admin.headers())).text
    assert (await user_named(db, "their-admin")).active


# --- staff -----------------------------------------------------------------------------------


async def test_a_form_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, db: Database, admin: StaffSession
) -> None:
    r = await client.post(
        "/users/new", data={"username": "sneaky", "display_name": "S"}, headers=admin.headers()
    )
    assert r.status_code == 403
    r = await client.post("/tokens", data={"name": "sneaky", "scopes": "sites.read"}, headers=admin.headers())
    assert r.status_code == 403
    async with db.sessions() as session:
        assert await session.scalar(select(User.id).where(User.username == "sneaky")) is None
        assert await session.scalar(select(ApiToken.id).where(ApiToken.name == "sneaky")) is None


async def test_add_a_member_of_staff_grant_and_revoke_roles_and_manage_the_account(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    fields = {
        "username": "Zhang.Wei",
        "display_name": "张伟",
        "email": "zhang@example.com",
        "phone": "13900001111",
        "language": "zh",
        "password": PASSWORD,
        "role": "security_guard",
        "site_id": str(site.site_id),
    }
    r = await post(client, admin, "/users/new", fields)
    assert r.status_code == 303, alert_of(r.text)
    user = await user_named(db, "zhang.wei")
    assert r.headers["location"] == f"/users/{user.id}"
    assert user.password_hash and (await verify_password(user.password_hash, PASSWORD)).ok
    assert await grants_of(db, user.id) == [("security_guard", site.site_id)]
    # A taken username: 409, on the form, what was typed kept (not the password).
    r = await post(client, admin, "/users/new", fields)
    assert r.status_code == 409 and "is taken" in alert_of(r.text)
    assert 'value="张伟"' in r.text and PASSWORD not in r.text

    r = await post(client, admin, f"/users/{user.id}/roles", {"role": "technician", "site_id": ""})
    assert r.status_code == 303
    assert await grants_of(db, user.id) == [("security_guard", site.site_id), ("technician", None)]
    async with db.sessions() as session:
        grant_id = await session.scalar(
            select(RoleGrant.id).where(RoleGrant.user_id == user.id, RoleGrant.role == "technician")
        )
    r = await post(client, admin, f"/users/{user.id}/roles/{grant_id}/revoke")
    assert r.status_code == 303
    assert await grants_of(db, user.id) == [("security_guard", site.site_id)]

    r = await post(
        client,
        admin,
        f"/users/{user.id}",
        {"display_name": "张伟 (夜班)", "email": "", "phone": "", "department_id": "", "language": "en"},
    )
    assert r.status_code == 303
    changed = await user_named(db, "zhang.wei")
    assert (changed.display_name, changed.language) == ("张伟 (夜班)", "en")

    r = await post(client, admin, f"/users/{user.id}/password", {"password": "short", "repeat": "short"})
    assert r.status_code == 422 and "password" in alert_of(r.text)
    r = await post(
        client, admin, f"/users/{user.id}/password", {"password": PASSWORD + "x", "repeat": "other-one-2026!"}
    )
    assert r.status_code == 422 and "differ" in alert_of(r.text)
    r = await post(
        client, admin, f"/users/{user.id}/password", {"password": PASSWORD + "x", "repeat": PASSWORD + "x"}
    )
    assert r.status_code == 303

    async with db.sessions() as session:
        locked = await session.get_one(User, user.id)
        locked.failed_logins, locked.locked_until = 5, datetime.now(UTC) + timedelta(minutes=10)
        await session.commit()
    page = text_of((await client.get(f"/users/{user.id}", headers=admin.headers())).text)
    assert "已锁定" in page
    assert (await post(client, admin, f"/users/{user.id}/unlock")).status_code == 303
    assert (await user_named(db, "zhang.wei")).locked_until is None

    assert (await post(client, admin, f"/users/{user.id}/deactivate")).status_code == 303
    assert not (await user_named(db, "zhang.wei")).active
    listed = (await client.get("/users", headers=admin.headers())).text
    assert "zhang.wei" not in listed
    assert "zhang.wei" in (await client.get("/users?inactive=true", headers=admin.headers())).text
    assert (await post(client, admin, f"/users/{user.id}/activate")).status_code == 303
    assert (await user_named(db, "zhang.wei")).active

    async with db.sessions() as session:
        actions = set(
            (
                await session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == str(user.id)))
            ).all()
        )
    assert {
        "user.create",
        "user.role.grant",
        "user.role.revoke",
        "user.update",
        "user.password.reset",
    } <= actions
    assert {"user.unlock", "user.deactivate", "user.activate"} <= actions


async def test_what_the_service_refuses_is_shown_on_the_form(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    # The last administrator cannot be deactivated, nor lose the role.
    other_admin = await staff_session(db.sessions, site.company_id, [(Role.COMPANY_ADMIN, None)])
    r = await post(client, other_admin, f"/users/{admin.user_id}/deactivate")
    assert r.status_code == 303  # two administrators: fine
    r = await post(client, admin, f"/users/{other_admin.user_id}/deactivate")
    # The first is deactivated now: the session of a deactivated user is refused (to sign-in).
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    async with db.sessions() as session:
        grant = await session.scalar(select(RoleGrant).where(RoleGrant.user_id == other_admin.user_id))
    assert grant is not None
    r = await post(client, other_admin, f"/users/{other_admin.user_id}/roles/{grant.id}/revoke")
    assert r.status_code == 409 and "last administrator" in alert_of(r.text)
    # A site-limited user manager cannot give a role for every site.
    limited = await staff_session(db.sessions, site.company_id, [(Role.COMPANY_ADMIN, site.site_id)])
    r = await post(
        client, limited, f"/users/{other_admin.user_id}/roles", {"role": "technician", "site_id": ""}
    )
    assert r.status_code == 403
    assert "you cannot give what you do not hold" in alert_of(r.text)


async def test_departments(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    assert (await post(client, admin, "/users/departments", {"name": "工程部"})).status_code == 303
    async with db.sessions() as session:
        parent = await session.scalar(select(Department).where(Department.name == "工程部"))
    assert parent is not None
    r = await post(client, admin, "/users/departments", {"name": "电梯组", "parent_id": str(parent.id)})
    assert r.status_code == 303
    r = await post(client, admin, "/users/departments", {"name": "工程部"})
    assert r.status_code == 409 and "already has a department" in alert_of(r.text)
    page = text_of((await client.get("/users/departments", headers=admin.headers())).text)
    assert "电梯组 工程部" in page
    # A member of staff placed in one shows it in the list.
    async with db.sessions() as session:
        await session.execute(
            User.__table__.update().where(User.id == admin.user_id).values(department_id=parent.id)
        )
        await session.commit()
    assert "工程部" in text_of((await client.get("/users", headers=admin.headers())).text)


# --- API tokens ------------------------------------------------------------------------------


async def test_create_a_token_shown_once_use_it_and_revoke_it(
    client: httpx.AsyncClient, db: Database, site: SeededSite, admin: StaffSession
) -> None:
    fields = {
        "name": "technician app",
        "scopes": ["sites.read", "gateways.read"],
        "site_ids": [str(site.site_id)],
        "expires_on": "",
    }
    r = await client.post("/tokens", data={"csrf_token": admin.csrf_token, **fields}, headers=admin.headers())
    assert r.status_code == 200
    value = re.search(r'value="(ght_[^"]+)" id="token-value"', r.text)
    assert value is not None
    token = value.group(1)
    assert "只显示这一次" in text_of(r.text)
    # It works as a bearer token, limited to what it was given.
    assert (await client.get(f"/api/v1/sites/{site.site_id}", headers=bearer(token))).status_code == 200
    assert (await client.get("/api/v1/people", headers=bearer(token))).status_code == 403
    # The list shows its prefix only, never the whole token again.
    listed = await client.get("/tokens", headers=admin.headers())
    assert token not in listed.text and token[:12] in listed.text
    async with db.sessions() as session:
        row = await session.scalar(select(ApiToken).where(ApiToken.name == "technician app"))
        assert (
            row is not None
            and row.site_ids == [site.site_id]
            and row.scopes == ["gateways.read", "sites.read"]
        )
    assert (await post(client, admin, f"/tokens/{row.id}/revoke")).status_code == 303
    assert (await client.get(f"/api/v1/sites/{site.site_id}", headers=bearer(token))).status_code == 401
    # No scope: refused on the form; an expiry day: stored as the end of that day.
    r = await post(client, admin, "/tokens", {"name": "empty"})
    assert r.status_code == 422 and "scopes" in alert_of(r.text)
    r = await client.post(
        "/tokens",
        data={
            "csrf_token": admin.csrf_token,
            "name": "till 2031",
            "scopes": "events.read",
            "expires_on": "2031-01-31",
        },
        headers=admin.headers(),
    )
    assert r.status_code == 200
    async with db.sessions() as session:
        expiring = await session.scalar(select(ApiToken).where(ApiToken.name == "till 2031"))
    assert expiring is not None and expiring.expires_at == datetime(
        2031, 1, 31, 16, tzinfo=UTC
    )  # Shanghai midnight


async def test_a_token_cannot_have_more_than_its_creator(
    client: httpx.AsyncClient, db: Database, site: SeededSite
) -> None:
    # Only company administrators manage tokens; one limited to a site cannot make an every-site token.
    limited = await staff_session(db.sessions, site.company_id, [(Role.COMPANY_ADMIN, site.site_id)])
    r = await post(client, limited, "/tokens", {"name": "wide", "scopes": "sites.read"})
    assert r.status_code == 403 and "you cannot give" in alert_of(r.text)
    async with db.sessions() as session:
        assert (
            await session.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.name == "wide"))
            == 0
        )


# --- one's own account -----------------------------------------------------------------------


async def test_change_my_language_and_password(
    client: httpx.AsyncClient, db: Database, site: SeededSite
) -> None:
    me = await staff_session(
        db.sessions, site.company_id, [(Role.TECHNICIAN, None)], password_hash=await hash_password(PASSWORD)
    )
    r = await post(client, me, "/account/language", {"language": "en"})
    assert r.status_code == 303 and r.cookies.get("lang") == "en"
    assert (await user_named(db, me.username)).language == "en"
    page = await client.get("/account", headers=me.headers(lang="en"))
    assert "Change my password" in page.text

    r = await post(
        client,
        me,
        "/account/password",
        {
            "old_password": "wrong-password-1",
            "new_password": "new-harbour-2027!",
            "repeat": "new-harbour-2027!",
        },
    )
    assert r.status_code == 422 and "not your password" in alert_of(r.text)
    r = await post(
        client,
        me,
        "/account/password",
        {"old_password": PASSWORD, "new_password": "new-harbour-2027!", "repeat": "typo"},
    )
    assert r.status_code == 422 and "differ" in alert_of(r.text)
    r = await post(
        client,
        me,
        "/account/password",
        {"old_password": PASSWORD, "new_password": "new-harbour-2027!", "repeat": "new-harbour-2027!"},
    )
    assert r.status_code == 303
    stored = (await user_named(db, me.username)).password_hash
    assert stored and (await verify_password(stored, "new-harbour-2027!")).ok


async def test_turn_two_step_sign_in_on_and_off(
    client: httpx.AsyncClient, db: Database, site: SeededSite
) -> None:
    me = await staff_session(db.sessions, site.company_id, [(Role.FINANCE, None)])
    assert (await post(client, me, "/account/totp")).status_code == 303
    page = await client.get("/account", headers=me.headers())
    secret = re.search(
        r'id="totp-secret" value="([A-Z2-7]+)"|value="([A-Z2-7]{32})" id="totp-secret"', page.text
    )
    uri = re.search(r'value="(otpauth://[^"]+)"', page.text)
    assert secret is not None and uri is not None
    secret_value = secret.group(1) or secret.group(2)
    assert f"secret={secret_value}" in html.unescape(uri.group(1))
    r = await post(client, me, "/account/totp/confirm", {"code": "000000"})
    assert r.status_code == 422 and "wrong or already used" in alert_of(r.text)
    assert not (await user_named(db, me.username)).totp_enabled
    now = datetime.now(UTC)
    r = await post(client, me, "/account/totp/confirm", {"code": code_at(secret_value, now)})
    assert r.status_code == 303
    assert (await user_named(db, me.username)).totp_enabled
    assert "登录时需要输入身份验证器应用中的验证码" in text_of(
        (await client.get("/account", headers=me.headers())).text
    )
    r = await post(
        client, me, "/account/totp/disable", {"code": code_at(secret_value, now + timedelta(seconds=30))}
    )
    assert r.status_code == 303
    assert not (await user_named(db, me.username)).totp_enabled
