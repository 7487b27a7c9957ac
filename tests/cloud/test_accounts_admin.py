"""Managing accounts on both databases: staff and their roles (with the limits on what one may
give), API tokens (scoped, revocable, expiring), residents' accounts and the resident portal's
separation from the staff API, and isolation between companies."""

import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from cloud.accounts import passwords
from cloud.accounts.authn import CSRF_HEADER, SESSION_COOKIE
from cloud.accounts.models import ApiToken, ResidentAccount
from cloud.accounts.permissions import ROLE_PERMISSIONS, Permission, Role
from cloud.api import create_app
from cloud.audit.chain import verify
from cloud.audit.models import AuditEntry
from cloud.config import CloudConfig
from cloud.property.models import Building, Floor, Occupancy, Person, Unit
from tests.cloud.conftest import Database
from tests.cloud.tenancy import Tenant, bearer, make_company, make_token, role_token

PLATFORM_TOKEN = "platform-token-0123456789abcdef"
PASSWORD = "Harbour-lights-42"
P = Permission


@pytest.fixture(autouse=True)
def quick_hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    passwords._dummy_hash.cache_clear()
    yield
    passwords._dummy_hash.cache_clear()


@pytest.fixture
def app_config(tmp_path: Path) -> CloudConfig:
    return CloudConfig(data_dir=str(tmp_path))


@pytest.fixture
async def api(db: Database, app_config: CloudConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(app_config, db.sessions, token=PLATFORM_TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://cloud.example"
    ) as c:
        yield c


@pytest.fixture
async def browser(db: Database, app_config: CloudConfig) -> AsyncIterator[httpx.AsyncClient]:
    """A second client with its own cookie jar (the API's ``api`` client sends bearer tokens)."""
    app = create_app(app_config, db.sessions, token=PLATFORM_TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://cloud.example"
    ) as c:
        yield c


def username() -> str:
    return f"staff-{secrets.token_hex(4)}"


async def add_user(
    api: httpx.AsyncClient, token: str, roles: list[dict[str, object]], password: str | None = PASSWORD
) -> dict[str, object]:
    body: dict[str, object] = {"username": username(), "display_name": "Li Wei", "roles": roles}
    if password is not None:
        body["password"] = password
    r = await api.post("/api/v1/users", json=body, headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


# --- staff ------------------------------------------------------------------------------------


async def test_staff_accounts_added_listed_changed_and_deactivated(
    api: httpx.AsyncClient, browser: httpx.AsyncClient, db: Database
) -> None:
    tenant = await make_company(db.sessions, sites=2)
    admin = await role_token(db.sessions, tenant.company_id, Role.COMPANY_ADMIN)
    # The company needs an administrator of its own before anyone else can be deactivated.
    await add_user(api, admin, [{"role": "company_admin"}])

    given_name = f"  Zhang.San.{secrets.token_hex(3)}@Harbour  "
    r = await api.post(
        "/api/v1/users",
        json={
            "username": given_name,
            "display_name": "张三",
            "email": "Zhang.San@Example.COM",
            "phone": "+86 138-0013-8000",
            "language": "en",
            "password": PASSWORD,
            "roles": [
                {"role": "security_guard", "site_id": tenant.site_ids[0]},
                {"role": "technician"},
            ],
        },
        headers=bearer(admin),
    )
    assert r.status_code == 201, r.text
    user = r.json()
    uid = user["id"]
    assert user["username"] == given_name.strip().lower()
    assert user["email"] == "zhang.san@example.com"
    assert user["phone"] == "+8613800138000"
    assert user["company_id"] == tenant.company_id
    assert user["has_password"] is True
    assert sorted((g["role"], g["site_id"]) for g in user["roles"]) == [
        ("security_guard", tenant.site_ids[0]),
        ("technician", None),
    ]
    assert "password_hash" not in user and "password" not in user

    again = await api.post(
        "/api/v1/users",
        json={"username": user["username"], "display_name": "Twin"},
        headers=bearer(admin),
    )
    assert again.status_code == 409
    assert again.json()["detail"].startswith("username:")

    # Paged by an opaque cursor.
    first = await api.get("/api/v1/users", params={"limit": 1}, headers=bearer(admin))
    assert first.status_code == 200
    assert len(first.json()["items"]) == 1 and first.json()["next_cursor"]
    rest = await api.get(
        "/api/v1/users", params={"limit": 10, "cursor": first.json()["next_cursor"]}, headers=bearer(admin)
    )
    assert rest.json()["next_cursor"] is None
    ids = [u["id"] for u in first.json()["items"] + rest.json()["items"]]
    assert uid in ids and len(ids) == 2
    bad = await api.get("/api/v1/users", params={"cursor": "forged"}, headers=bearer(admin))
    assert bad.status_code == 422

    r = await api.patch(
        f"/api/v1/users/{uid}", json={"display_name": "Zhang San", "language": "zh"}, headers=bearer(admin)
    )
    assert r.status_code == 200
    assert (r.json()["display_name"], r.json()["language"], r.json()["email"]) == (
        "Zhang San",
        "zh",
        "zhang.san@example.com",
    )
    r = await api.patch(f"/api/v1/users/{uid}", json={"email": "not an address"}, headers=bearer(admin))
    assert r.status_code == 422
    assert r.json()["detail"].startswith("email:")
    r = await api.patch(f"/api/v1/users/{uid}", json={"nickname": "x"}, headers=bearer(admin))
    assert r.status_code == 422
    # PostgreSQL text cannot hold a NUL: refused as input, not a server error.
    r = await api.patch(f"/api/v1/users/{uid}", json={"display_name": "Zhang\x00San"}, headers=bearer(admin))
    assert r.status_code == 422

    # Deactivated: the session in use ends, and signing in is refused.
    r = await browser.post("/api/v1/session", json={"username": user["username"], "password": PASSWORD})
    assert r.status_code == 200
    assert (await browser.get("/api/v1/me")).status_code == 200
    r = await api.post(f"/api/v1/users/{uid}/deactivate", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["active"] is False
    assert (await browser.get("/api/v1/me")).status_code == 401
    r = await browser.post("/api/v1/session", json={"username": user["username"], "password": PASSWORD})
    assert r.status_code == 401
    listed = await api.get("/api/v1/users", params={"active": "false"}, headers=bearer(admin))
    assert [u["id"] for u in listed.json()["items"]] == [uid]
    r = await api.post(f"/api/v1/users/{uid}/activate", headers=bearer(admin))
    assert r.json()["active"] is True

    # An administrator's reset: the new password works, the old does not.
    r = await api.put(f"/api/v1/users/{uid}/password", json={"password": "short"}, headers=bearer(admin))
    assert r.status_code == 422
    new = "Typhoon-season-2025"
    r = await api.put(f"/api/v1/users/{uid}/password", json={"password": new}, headers=bearer(admin))
    assert r.status_code == 200, r.text
    r = await browser.post("/api/v1/session", json={"username": user["username"], "password": new})
    assert r.status_code == 200

    async with db.sessions() as session:
        entries = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.company_id == tenant.company_id).order_by(AuditEntry.seq)
            )
        ).all()
        actions = [e.action for e in entries if e.target_id == str(uid)]
        assert actions == [
            "user.create",
            "user.update",
            "user.deactivate",
            "user.activate",
            "user.password.reset",
        ]
        assert (await verify(session, tenant.company_id)).ok


async def test_the_last_administrator_stays(api: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_company(db.sessions)
    root = await role_token(db.sessions, tenant.company_id, Role.COMPANY_ADMIN)
    admin = await add_user(api, root, [{"role": "company_admin"}])
    (grant,) = admin["roles"]  # type: ignore[misc]
    r = await api.post(f"/api/v1/users/{admin['id']}/deactivate", headers=bearer(root))
    assert r.status_code == 409
    assert "last administrator" in r.json()["detail"]
    r = await api.delete(f"/api/v1/users/{admin['id']}/roles/{grant['id']}", headers=bearer(root))
    assert r.status_code == 409
    # With a second one, the first can go.
    await add_user(api, root, [{"role": "company_admin"}])
    r = await api.delete(f"/api/v1/users/{admin['id']}/roles/{grant['id']}", headers=bearer(root))
    assert r.status_code == 200, r.text
    assert r.json()["roles"] == []


async def test_nobody_gives_more_than_they_hold(api: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_company(db.sessions, sites=2)
    site1, site2 = tenant.site_ids
    root = await role_token(db.sessions, tenant.company_id, Role.COMPANY_ADMIN)
    target = await add_user(api, root, [], password=None)
    other_admin = await add_user(api, root, [{"role": "company_admin"}])
    # A manager of site 1 who may manage accounts (there).
    manager = await make_token(
        db.sessions,
        tenant.company_id,
        ROLE_PERMISSIONS[Role.PROPERTY_MANAGER] | {P.USERS_MANAGE},
        site_ids=[site1],
    )
    grant = f"/api/v1/users/{target['id']}/roles"

    r = await api.post(grant, json={"role": "security_guard", "site_id": site1}, headers=bearer(manager))
    assert r.status_code == 201, r.text
    for role, site, reason in [
        ("security_guard", site2, "at site(s) " + str(site2)),
        ("security_guard", None, "at every site"),
        ("company_admin", site1, "tokens.manage"),
        ("finance", site1, "finance.write"),
    ]:
        r = await api.post(grant, json={"role": role, "site_id": site}, headers=bearer(manager))
        assert r.status_code == 403, (role, site)
        assert r.json()["code"] == "forbidden"
        assert reason in r.json()["detail"], r.json()["detail"]
    r = await api.post(grant, json={"role": "security_guard", "site_id": site1}, headers=bearer(manager))
    assert r.status_code == 409  # held already

    # Another company's site is no site at all.
    foreign = await make_company(db.sessions)
    r = await api.post(
        grant, json={"role": "technician", "site_id": foreign.site_ids[0]}, headers=bearer(root)
    )
    assert r.status_code == 404

    # Nor does the manager take over someone who holds more: no reset, no deactivation, no role taken.
    admin_grant = other_admin["roles"][0]["id"]  # type: ignore[index]
    for method, path, body in [
        ("PUT", f"/api/v1/users/{other_admin['id']}/password", {"password": "Taken-over-12345"}),
        ("POST", f"/api/v1/users/{other_admin['id']}/deactivate", None),
        ("PATCH", f"/api/v1/users/{other_admin['id']}", {"email": "mine@example.com"}),
        ("DELETE", f"/api/v1/users/{other_admin['id']}/roles/{admin_grant}", None),
    ]:
        r = await api.request(method, path, json=body, headers=bearer(manager))
        assert r.status_code == 403, (method, path, r.text)

    # A user made with roles is held to the same rule.
    r = await api.post(
        "/api/v1/users",
        json={"username": username(), "display_name": "X", "roles": [{"role": "company_admin"}]},
        headers=bearer(manager),
    )
    assert r.status_code == 403

    # And without users.manage nothing changes at all; with users.read, reading does.
    reader = await role_token(db.sessions, tenant.company_id, Role.PROPERTY_MANAGER)
    assert (await api.get("/api/v1/users", headers=bearer(reader))).status_code == 200
    r = await api.post(grant, json={"role": "technician"}, headers=bearer(reader))
    assert r.status_code == 403
    tech = await role_token(db.sessions, tenant.company_id, Role.TECHNICIAN)
    assert (await api.get("/api/v1/users", headers=bearer(tech))).status_code == 403


async def test_companies_do_not_see_each_others_accounts(api: httpx.AsyncClient, db: Database) -> None:
    a, b = await make_company(db.sessions), await make_company(db.sessions)
    admin_a = await role_token(db.sessions, a.company_id, Role.COMPANY_ADMIN)
    admin_b = await role_token(db.sessions, b.company_id, Role.COMPANY_ADMIN)
    user_a = await add_user(api, admin_a, [{"role": "technician"}])
    made = await api.post(
        "/api/v1/tokens", json={"name": "bms", "scopes": ["events.read"]}, headers=bearer(admin_a)
    )
    token_a = made.json()["id"]

    listed = await api.get("/api/v1/users", headers=bearer(admin_b))
    assert user_a["id"] not in [u["id"] for u in listed.json()["items"]]
    uid = user_a["id"]
    for method, path, body in [
        ("GET", f"/api/v1/users/{uid}", None),
        ("PATCH", f"/api/v1/users/{uid}", {"display_name": "Mine"}),
        ("PUT", f"/api/v1/users/{uid}/password", {"password": "Taken-over-12345"}),
        ("POST", f"/api/v1/users/{uid}/deactivate", None),
        ("POST", f"/api/v1/users/{uid}/unlock", None),
        ("POST", f"/api/v1/users/{uid}/roles", {"role": "technician"}),
        ("GET", f"/api/v1/tokens/{token_a}", None),
        ("DELETE", f"/api/v1/tokens/{token_a}", None),
    ]:
        r = await api.request(method, path, json=body, headers=bearer(admin_b))
        assert r.status_code == 404, (method, path, r.text)
    tokens_b = await api.get("/api/v1/tokens", headers=bearer(admin_b))
    assert token_a not in [t["id"] for t in tokens_b.json()["items"]]
    # Nor make accounts in the other company.
    r = await api.post(
        "/api/v1/users",
        json={"company_id": a.company_id, "username": username(), "display_name": "Spy"},
        headers=bearer(admin_b),
    )
    assert r.status_code == 404
    # The platform operator sees both, and must say which company a new account is for.
    r = await api.get(f"/api/v1/users/{uid}", headers=bearer(PLATFORM_TOKEN))
    assert r.status_code == 200
    r = await api.post(
        "/api/v1/users", json={"username": username(), "display_name": "X"}, headers=bearer(PLATFORM_TOKEN)
    )
    assert r.status_code == 422
    assert r.json()["detail"].startswith("company_id:")


# --- API tokens -------------------------------------------------------------------------------


async def test_tokens_are_scoped_shown_once_and_revocable(api: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_company(db.sessions, sites=2)
    admin = await role_token(db.sessions, tenant.company_id, Role.COMPANY_ADMIN)
    r = await api.post(
        "/api/v1/tokens",
        json={
            "name": "Technician app",
            "scopes": ["users.read", "events.read"],
            "site_ids": [tenant.site_ids[0]],
        },
        headers=bearer(admin),
    )
    assert r.status_code == 201, r.text
    made = r.json()
    token = made["token"]
    assert token.startswith("ght_") and len(token) >= 4 + 43
    assert made["prefix"] == token[:12]
    assert made["scopes"] == ["events.read", "users.read"]
    assert made["site_ids"] == [tenant.site_ids[0]]

    # What it holds works; what it does not is 403.
    assert (await api.get("/api/v1/users", headers=bearer(token))).status_code == 200
    r = await api.get("/api/v1/tokens", headers=bearer(token))
    assert r.status_code == 403
    assert "tokens.manage" in r.json()["detail"]
    me = await api.get("/api/v1/me", headers=bearer(token))
    assert me.json()["kind"] == "token"
    assert me.json()["permissions"] == {
        "events.read": [tenant.site_ids[0]],
        "users.read": [tenant.site_ids[0]],
    }

    listed = await api.get("/api/v1/tokens", headers=bearer(admin))
    (shown,) = [t for t in listed.json()["items"] if t["id"] == made["id"]]
    assert "token" not in shown and "token_hash" not in shown
    assert shown["last_used_at"] is not None
    assert shown["revoked_at"] is None

    r = await api.delete(f"/api/v1/tokens/{made['id']}", headers=bearer(admin))
    assert r.status_code == 200
    assert r.json()["revoked_at"] is not None
    r = await api.get("/api/v1/users", headers=bearer(token))
    assert r.status_code == 401
    assert (await api.delete(f"/api/v1/tokens/{made['id']}", headers=bearer(admin))).status_code == 200

    async with db.sessions() as session:
        entries = (
            await session.scalars(
                select(AuditEntry).where(
                    AuditEntry.target_type == "api_token", AuditEntry.target_id == str(made["id"])
                )
            )
        ).all()
        assert [e.action for e in entries] == ["token.create", "token.revoke"]
        assert all(token not in str(e.after) for e in entries)


async def test_an_expired_token_is_refused(api: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_company(db.sessions)
    admin = await role_token(db.sessions, tenant.company_id, Role.COMPANY_ADMIN)
    r = await api.post(
        "/api/v1/tokens",
        json={"name": "short", "scopes": ["users.read"], "expires_at": "2020-01-01T00:00:00Z"},
        headers=bearer(admin),
    )
    assert r.status_code == 422
    assert r.json()["detail"].startswith("expires_at:")
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    r = await api.post(
        "/api/v1/tokens",
        json={"name": "short", "scopes": ["users.read"], "expires_at": later},
        headers=bearer(admin),
    )
    assert r.status_code == 201
    token = r.json()["token"]
    assert (await api.get("/api/v1/users", headers=bearer(token))).status_code == 200
    async with db.sessions() as session:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.id == r.json()["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    assert (await api.get("/api/v1/users", headers=bearer(token))).status_code == 401


async def test_a_token_carries_no_more_than_its_creator(api: httpx.AsyncClient, db: Database) -> None:
    tenant = await make_company(db.sessions, sites=2)
    site1, site2 = tenant.site_ids
    creator = await make_token(
        db.sessions, tenant.company_id, {P.TOKENS_MANAGE, P.EVENTS_READ}, site_ids=[site1]
    )
    cases = [
        ({"scopes": ["events.read"], "site_ids": [site1]}, 201),
        ({"scopes": ["events.read"]}, 403),  # every site: more than site 1
        ({"scopes": ["events.read"], "site_ids": [site2]}, 403),
        ({"scopes": ["doors.control"], "site_ids": [site1]}, 403),
        ({"scopes": ["no.such.permission"], "site_ids": [site1]}, 422),
        ({"scopes": [], "site_ids": [site1]}, 422),
        ({"scopes": ["events.read"], "site_ids": [(await make_company(db.sessions)).site_ids[0]]}, 404),
    ]
    for body, status in cases:
        r = await api.post("/api/v1/tokens", json={"name": "n", **body}, headers=bearer(creator))
        assert r.status_code == status, (body, r.text)


# --- residents --------------------------------------------------------------------------------


async def make_resident_person(db: Database, tenant: Tenant, phone: str) -> tuple[int, int]:
    """A person living in a new unit of the tenant's first site: (person id, unit id)."""
    now = datetime.now(UTC)
    async with db.sessions() as session:
        building = Building(
            company_id=tenant.company_id, site_id=tenant.site_ids[0], code="T1", name="Tower 1"
        )
        session.add(building)
        await session.flush()
        floor = Floor(company_id=tenant.company_id, building_id=building.id, level=12, name="12F")
        session.add(floor)
        await session.flush()
        unit = Unit(
            company_id=tenant.company_id,
            site_id=tenant.site_ids[0],
            building_id=building.id,
            floor_id=floor.id,
            number="1203",
            floor_area_m2=89,
            created_at=now,
        )
        person = Person(company_id=tenant.company_id, name="王芳", phone=phone, created_at=now)
        session.add_all([unit, person])
        await session.flush()
        session.add_all(
            [
                Occupancy(
                    company_id=tenant.company_id,
                    unit_id=unit.id,
                    person_id=person.id,
                    role="owner",
                    start_date=date(2020, 1, 1),
                    primary=True,
                ),
                # A tenancy that ended is not shown.
                Occupancy(
                    company_id=tenant.company_id,
                    unit_id=unit.id,
                    person_id=person.id,
                    role="tenant",
                    start_date=date(2018, 1, 1),
                    end_date=date(2019, 12, 31),
                ),
            ]
        )
        await session.commit()
        return person.id, unit.id


def new_phone() -> str:
    return f"+86 139 {secrets.randbelow(10**4):04d} {secrets.randbelow(10**4):04d}"


async def test_a_resident_signs_in_with_the_set_up_code_then_the_password(
    api: httpx.AsyncClient, browser: httpx.AsyncClient, db: Database
) -> None:
    tenant = await make_company(db.sessions)
    admin = await role_token(db.sessions, tenant.company_id, Role.COMPANY_ADMIN)
    phone = new_phone()
    person_id, unit_id = await make_resident_person(db, tenant, phone)
    digits = phone.replace(" ", "")

    r = await api.post("/api/v1/residents", json={"person_id": person_id}, headers=bearer(admin))
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["login"] == digits
    assert made["has_password"] is False
    code = made["setup_code"]
    assert code and len(code.replace("-", "")) == 10
    r = await api.post("/api/v1/residents", json={"person_id": person_id}, headers=bearer(admin))
    assert r.status_code == 409

    new = "Balcony-plants-7"
    # The code alone is not enough: a password must be chosen with it.
    r = await browser.post("/api/v1/resident/session", json={"login": phone, "code": code})
    assert r.status_code == 422
    r = await browser.post(
        "/api/v1/resident/session",
        json={"login": phone.replace("+86 ", "+86-"), "code": code.lower(), "new_password": new},
    )
    assert r.status_code == 200, r.text
    assert r.json()["resident"]["id"] == made["id"]
    assert "httponly" in r.headers["set-cookie"].lower()
    csrf = {CSRF_HEADER: r.json()["csrf_token"]}

    me = await browser.get("/api/v1/resident/me")
    assert me.status_code == 200, me.text
    assert me.json()["person"] == {"id": person_id, "name": "王芳", "phone": phone, "email": ""}
    assert me.json()["units"] == [
        {
            "unit_id": unit_id,
            "number": "1203",
            "building": "Tower 1",
            "site": f"{tenant.site_codes[0].split('-site')[0]} site 1",
            "site_code": tenant.site_codes[0],
            "role": "owner",
            "primary": True,
        }
    ]
    # A resident has no business on the staff API...
    r = await browser.get("/api/v1/me")
    assert r.status_code == 403
    assert (await browser.get("/api/v1/users")).status_code == 403
    # ... and staff none on the portal.
    assert (await api.get("/api/v1/resident/me", headers=bearer(admin))).status_code == 403
    assert (await api.get("/api/v1/resident/me", headers=bearer(PLATFORM_TOKEN))).status_code == 403

    # The code was spent; the password is what works now.
    browser.cookies.clear()
    r = await browser.post(
        "/api/v1/resident/session", json={"login": digits, "code": code, "new_password": new}
    )
    assert r.status_code == 401
    r = await browser.post("/api/v1/resident/session", json={"login": digits, "password": new})
    assert r.status_code == 200
    csrf = {CSRF_HEADER: r.json()["csrf_token"]}
    r = await browser.put(
        "/api/v1/resident/me/password", json={"old_password": new, "new_password": "Kitchen-window-8"}
    )
    assert r.status_code == 403  # CSRF
    r = await browser.put(
        "/api/v1/resident/me/password",
        json={"old_password": new, "new_password": "Kitchen-window-8"},
        headers=csrf,
    )
    assert r.status_code == 204, r.text
    r = await browser.delete("/api/v1/resident/session", headers=csrf)
    assert r.status_code == 204
    assert (await browser.get("/api/v1/resident/me")).status_code == 401

    async with db.sessions() as session:
        stored = await session.scalar(select(ResidentAccount).where(ResidentAccount.id == made["id"]))
        assert stored is not None and stored.setup_code_hash is None
        entries = (
            await session.scalars(select(AuditEntry).where(AuditEntry.company_id == tenant.company_id))
        ).all()
        assert all(code not in str(e.after) and new not in str(e.after) for e in entries)


async def test_residents_are_locked_out_like_staff(
    api: httpx.AsyncClient, browser: httpx.AsyncClient, db: Database
) -> None:
    tenant = await make_company(db.sessions)
    admin = await role_token(db.sessions, tenant.company_id, Role.COMPANY_ADMIN)
    person_id, _ = await make_resident_person(db, tenant, new_phone())
    email = f"wang.{secrets.token_hex(3)}@Example.com"
    r = await api.post(
        "/api/v1/residents",
        json={"person_id": person_id, "login": email, "password": PASSWORD},
        headers=bearer(admin),
    )
    assert r.status_code == 201, r.text
    assert r.json()["login"] == email.lower()
    assert r.json()["setup_code"] is None
    rid = r.json()["id"]

    wrong = {"login": email, "password": "wrong password 4"}
    for _ in range(4):
        r = await browser.post("/api/v1/resident/session", json=wrong)
        assert r.status_code == 401
        assert r.json()["code"] == "bad_credentials"
    assert (await browser.post("/api/v1/resident/session", json=wrong)).status_code == 423
    right = {"login": email, "password": PASSWORD}
    assert (await browser.post("/api/v1/resident/session", json=right)).status_code == 423
    r = await api.post(f"/api/v1/residents/{rid}/unlock", headers=bearer(admin))
    assert r.status_code == 200
    r = await browser.post("/api/v1/resident/session", json=right)
    assert r.status_code == 200
    assert SESSION_COOKIE in browser.cookies

    # Deactivated: the session ends and sign-in is refused.
    r = await api.post(f"/api/v1/residents/{rid}/deactivate", headers=bearer(admin))
    assert r.json()["active"] is False
    assert (await browser.get("/api/v1/resident/me")).status_code == 401
    assert (await browser.post("/api/v1/resident/session", json=right)).status_code == 401

    # Another company sees none of it.
    other = await role_token(db.sessions, (await make_company(db.sessions)).company_id, Role.COMPANY_ADMIN)
    assert (await api.get(f"/api/v1/residents/{rid}", headers=bearer(other))).status_code == 404
    r = await api.post("/api/v1/residents", json={"person_id": person_id}, headers=bearer(other))
    assert r.status_code == 404
    listed = await api.get("/api/v1/residents", headers=bearer(other))
    assert listed.json()["items"] == []
    listed = await api.get("/api/v1/residents", params={"person_id": person_id}, headers=bearer(admin))
    assert [a["id"] for a in listed.json()["items"]] == [rid]
