"""Signing in to the console's API on both databases: passwords, the session cookie and its
CSRF token, lockout, the TOTP second factor, session expiry and sign-out, one's own password."""

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import func, select, update

from cloud.accounts import passwords, service
from cloud.accounts.authn import CSRF_HEADER, SESSION_COOKIE
from cloud.accounts.models import SignInSession, User
from cloud.accounts.permissions import Permission, Role
from cloud.api import create_app
from cloud.audit.chain import verify
from cloud.audit.models import AuditEntry
from cloud.config import CloudConfig, ConsoleConfig
from cloud.kit.errors import InvalidInput
from tests.cloud.conftest import Database
from tests.cloud.tenancy import bearer, make_company, make_user

PLATFORM_TOKEN = "platform-token-0123456789abcdef"
PASSWORD = "Harbour-lights-42"
BASE_URL = "https://cloud.example"


@pytest.fixture(autouse=True)
def quick_hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """argon2 at its lightest: the tests check the flows, not the hash's cost (one test below
    checks that real parameters are used and old hashes upgraded)."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    passwords._dummy_hash.cache_clear()
    yield
    passwords._dummy_hash.cache_clear()


@dataclass
class Cloud:
    db: Database
    app: FastAPI

    def client(self) -> httpx.AsyncClient:
        """A browser of its own: its own cookie jar."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE_URL)


def make_cloud(db: Database, tmp_path: Path, **console: object) -> Cloud:
    config = CloudConfig(data_dir=str(tmp_path), console=ConsoleConfig.model_validate(console))
    return Cloud(db, create_app(config, db.sessions, token=PLATFORM_TOKEN))


@pytest.fixture
def cloud(db: Database, tmp_path: Path) -> Cloud:
    return make_cloud(db, tmp_path)


@pytest.fixture
async def browser(cloud: Cloud) -> AsyncIterator[httpx.AsyncClient]:
    async with cloud.client() as c:
        yield c


async def new_staff(
    db: Database,
    roles: tuple[tuple[Role, int | None], ...] = ((Role.COMPANY_ADMIN, None),),
    company_id: int | None = None,
    password: str = PASSWORD,
) -> User:
    if company_id is None:
        company_id = (await make_company(db.sessions)).company_id
    async with db.sessions() as session:
        user = await make_user(
            session,
            company_id,
            f"staff-{secrets.token_hex(4)}",
            roles,
            password_hash=await passwords.hash_password(password),
        )
        await session.commit()
    return user


async def sign_in(c: httpx.AsyncClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Sign in; the CSRF header the session's changes need."""
    r = await c.post("/api/v1/session", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    assert r.json()["second_factor_required"] is False
    return {CSRF_HEADER: r.json()["csrf_token"]}


def set_cookie(r: httpx.Response) -> dict[str, str]:
    """The attributes of the response's gh_session Set-Cookie (names lower-cased; flags as '')."""
    (header,) = [h for h in r.headers.get_list("set-cookie") if h.startswith(f"{SESSION_COOKIE}=")]
    first, *attributes = [part.strip() for part in header.split(";")]
    found = {"value": first.split("=", 1)[1]}
    for attribute in attributes:
        name, _, value = attribute.partition("=")
        found[name.lower()] = value
    return found


def wrong_code(secret: str) -> str:
    """A 6-digit code that is surely not one the secret makes around now (not left to chance)."""
    now = datetime.now(UTC)
    near = {pyotp.TOTP(secret).at(now + timedelta(seconds=30 * k)) for k in range(-3, 4)}
    return next(c for c in (f"{d}" * 6 for d in range(10)) if c not in near)


# --- signing in -------------------------------------------------------------------------------


async def test_sign_in_sets_a_secure_cookie_and_answers_the_csrf_token(
    browser: httpx.AsyncClient, db: Database
) -> None:
    user = await new_staff(db)
    r = await browser.post("/api/v1/session", json={"username": user.username.upper(), "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"] == {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "language": "zh",
    }
    assert body["second_factor_required"] is False
    assert len(body["csrf_token"]) >= 32
    cookie = set_cookie(r)
    assert "httponly" in cookie
    assert "secure" in cookie
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    assert abs(int(cookie["max-age"]) - 12 * 3600) <= 5
    assert cookie["value"] != body["csrf_token"]

    me = await browser.get("/api/v1/me")
    assert me.status_code == 200, me.text
    assert me.json()["kind"] == "user"
    assert me.json()["id"] == user.id
    assert me.json()["username"] == user.username
    assert me.json()["company"]["id"] == user.company_id
    assert [g["role"] for g in me.json()["roles"]] == ["company_admin"]
    assert me.json()["permissions"]["users.manage"] is None
    assert me.json()["csrf_token"] == body["csrf_token"]

    async with db.sessions() as session:
        stored = await session.get(User, user.id)
        assert stored is not None and stored.last_login_at is not None
        # The table keeps the cookie's hash, never the cookie.
        rows = (await session.scalars(select(SignInSession).where(SignInSession.user_id == user.id))).all()
        assert [len(s.token_hash) for s in rows] == [64]
        assert cookie["value"] not in {s.token_hash for s in rows}


async def test_cookie_settings_come_from_the_console_config(db: Database, tmp_path: Path) -> None:
    cloud = make_cloud(db, tmp_path, secure_cookies=False, session_hours=2)
    user = await new_staff(db)
    async with cloud.client() as c:
        r = await c.post("/api/v1/session", json={"username": user.username, "password": PASSWORD})
    assert r.status_code == 200
    cookie = set_cookie(r)
    assert "secure" not in cookie
    assert "httponly" in cookie
    assert abs(int(cookie["max-age"]) - 2 * 3600) <= 5
    expires = datetime.fromisoformat(r.json()["expires_at"])
    assert timedelta(hours=2) - timedelta(minutes=1) < expires - datetime.now(UTC) <= timedelta(hours=2)


async def test_wrong_password_and_unknown_user_get_the_same_answer(
    browser: httpx.AsyncClient, db: Database
) -> None:
    user = await new_staff(db)
    wrong = await browser.post("/api/v1/session", json={"username": user.username, "password": "nope" * 3})
    unknown = await browser.post("/api/v1/session", json={"username": "nobody-here", "password": PASSWORD})
    for r in (wrong, unknown):
        assert r.status_code == 401
        assert r.json() == {"detail": "wrong username or password", "code": "bad_credentials"}
        assert SESSION_COOKIE not in r.cookies
    assert (await browser.get("/api/v1/me")).status_code == 401


async def test_an_unknown_name_costs_a_hash_too(
    browser: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown or impossible names are checked against a dummy hash: the time of the answer does
    not tell which usernames exist. Names no account can have never reach the database."""
    spent: list[str] = []
    real = service.dummy_verify

    async def counting(password: str) -> None:
        spent.append(password)
        await real(password)

    monkeypatch.setattr(service, "dummy_verify", counting)
    for name in ("nobody-at-all", "bad\x00name", "x" * 120):
        r = await browser.post("/api/v1/session", json={"username": name, "password": PASSWORD})
        assert r.status_code == 401, name
        assert r.json()["code"] == "bad_credentials"
    assert spent == [PASSWORD] * 3


async def test_deactivated_or_passwordless_users_cannot_sign_in(
    browser: httpx.AsyncClient, db: Database
) -> None:
    gone = await new_staff(db)
    async with db.sessions() as session:
        await session.execute(update(User).where(User.id == gone.id).values(active=False))
        await session.commit()
        paper = await make_user(session, gone.company_id, f"paper-{secrets.token_hex(3)}")
        await session.commit()
    for name in (gone.username, paper.username):
        r = await browser.post("/api/v1/session", json={"username": name, "password": PASSWORD})
        assert r.status_code == 401
        assert r.json()["code"] == "bad_credentials"


async def test_a_new_sign_in_replaces_the_session_the_browser_had(
    browser: httpx.AsyncClient, db: Database, cloud: Cloud
) -> None:
    user = await new_staff(db)
    await sign_in(browser, user.username)
    first = browser.cookies[SESSION_COOKIE]
    await sign_in(browser, user.username)
    second = browser.cookies[SESSION_COOKIE]
    assert first != second
    async with cloud.client() as other:
        other.cookies.set(SESSION_COOKIE, first)
        assert (await other.get("/api/v1/me")).status_code == 401
    assert (await browser.get("/api/v1/me")).status_code == 200


# --- CSRF -------------------------------------------------------------------------------------


async def test_changes_on_a_cookie_session_need_the_csrf_token(
    browser: httpx.AsyncClient, db: Database
) -> None:
    user = await new_staff(db)
    csrf = await sign_in(browser, user.username)
    body = {"display_name": "Renamed"}

    r = await browser.patch(f"/api/v1/users/{user.id}", json=body)
    assert r.status_code == 403
    assert r.json()["code"] == "csrf_failed"
    r = await browser.patch(f"/api/v1/users/{user.id}", json=body, headers={CSRF_HEADER: "forged"})
    assert r.status_code == 403
    r = await browser.patch(f"/api/v1/users/{user.id}", json=body, headers=csrf)
    assert r.status_code == 200, r.text
    assert r.json()["display_name"] == "Renamed"
    # Reads need no token.
    assert (await browser.get(f"/api/v1/users/{user.id}")).status_code == 200

    # A form post carries it as a field instead of a header.
    r = await browser.post("/api/v1/me/totp", data={"csrf_token": "forged"})
    assert r.status_code == 403
    r = await browser.post("/api/v1/me/totp", data={"csrf_token": csrf[CSRF_HEADER]})
    assert r.status_code == 200, r.text


# --- lockout ----------------------------------------------------------------------------------


async def test_five_failures_lock_the_account_and_an_admin_unlocks_it(
    browser: httpx.AsyncClient, db: Database
) -> None:
    user = await new_staff(db)
    attempt = {"username": user.username, "password": "wrong password 1"}
    for _ in range(4):
        assert (await browser.post("/api/v1/session", json=attempt)).status_code == 401
    r = await browser.post("/api/v1/session", json=attempt)
    assert r.status_code == 423
    assert r.json()["code"] == "account_locked"
    assert "locked until" in r.json()["detail"]
    # Locked: the right password gets the same answer as a wrong one.
    right = await browser.post("/api/v1/session", json={"username": user.username, "password": PASSWORD})
    again = await browser.post("/api/v1/session", json=attempt)
    assert right.status_code == again.status_code == 423
    assert right.json() == again.json()
    assert SESSION_COOKIE not in right.cookies

    async with db.sessions() as session:
        entries = (
            await session.scalars(
                select(AuditEntry).where(
                    AuditEntry.action == "user.lock", AuditEntry.target_id == str(user.id)
                )
            )
        ).all()
        assert len(entries) == 1
        assert entries[0].actor == "system:sign-in"
        assert entries[0].after is not None and entries[0].after["failures"] == 5

    r = await browser.post(f"/api/v1/users/{user.id}/unlock", headers=bearer(PLATFORM_TOKEN))
    assert r.status_code == 200, r.text
    assert r.json()["locked_until"] is None
    await sign_in(browser, user.username)
    async with db.sessions() as session:
        assert (await verify(session, user.company_id)).ok


async def test_a_lock_runs_out_and_a_success_resets_the_count(
    browser: httpx.AsyncClient, db: Database
) -> None:
    user = await new_staff(db)
    wrong = {"username": user.username, "password": "wrong password 2"}
    for _ in range(4):
        assert (await browser.post("/api/v1/session", json=wrong)).status_code == 401
    await sign_in(browser, user.username)
    for _ in range(4):
        assert (await browser.post("/api/v1/session", json=wrong)).status_code == 401
    assert (await browser.post("/api/v1/session", json=wrong)).status_code == 423

    async with db.sessions() as session:
        await session.execute(
            update(User)
            .where(User.id == user.id)
            .values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    await sign_in(browser, user.username)
    async with db.sessions() as session:
        stored = await session.get(User, user.id)
        assert stored is not None and stored.failed_logins == 0 and stored.locked_until is None


async def test_lockout_settings_come_from_the_console_config(db: Database, tmp_path: Path) -> None:
    cloud = make_cloud(db, tmp_path, lockout_failures=2, lockout_minutes=90)
    user = await new_staff(db)
    async with cloud.client() as c:
        wrong = {"username": user.username, "password": "wrong password 3"}
        assert (await c.post("/api/v1/session", json=wrong)).status_code == 401
        assert (await c.post("/api/v1/session", json=wrong)).status_code == 423
    async with db.sessions() as session:
        stored = await session.get(User, user.id)
        assert stored is not None and stored.locked_until is not None
        assert stored.locked_until - datetime.now(UTC) > timedelta(minutes=85)


# --- TOTP -------------------------------------------------------------------------------------


async def test_totp_enrolment_two_step_sign_in_and_replay(
    browser: httpx.AsyncClient, db: Database, cloud: Cloud
) -> None:
    user = await new_staff(db)
    csrf = await sign_in(browser, user.username)

    r = await browser.post("/api/v1/me/totp", headers=csrf)
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    assert r.json()["otpauth_uri"].startswith("otpauth://totp/Gatehouse:")
    totp = pyotp.TOTP(secret)
    # Not on until confirmed: a sign-in now needs no code.
    assert (await browser.get("/api/v1/me")).json()["totp_enabled"] is False
    r = await browser.post("/api/v1/me/totp/confirm", json={"code": wrong_code(secret)}, headers=csrf)
    assert r.status_code == 422
    assert r.json()["code"] == "wrong_code"
    # Codes are spent in increasing time steps: each one of the window, each used once.
    earlier = totp.at(datetime.now(UTC) - timedelta(seconds=30))
    r = await browser.post("/api/v1/me/totp/confirm", json={"code": earlier}, headers=csrf)
    assert r.status_code == 200, r.text
    assert (await browser.get("/api/v1/me")).json()["totp_enabled"] is True

    # Signing in: the password gives a pending session that can do nothing but give the code.
    async with cloud.client() as phone:
        r = await phone.post("/api/v1/session", json={"username": user.username, "password": PASSWORD})
        assert r.status_code == 200
        assert r.json()["second_factor_required"] is True
        pending_cookie = phone.cookies[SESSION_COOKIE]
        pending_csrf = {CSRF_HEADER: r.json()["csrf_token"]}
        me = await phone.get("/api/v1/me")
        assert me.status_code == 401
        assert "code" in me.json()["detail"]

        r = await phone.post("/api/v1/session/totp", json={"code": wrong_code(secret)}, headers=pending_csrf)
        assert r.status_code == 401
        assert r.json()["code"] == "wrong_code"
        code = totp.at(datetime.now(UTC))
        r = await phone.post("/api/v1/session/totp", json={"code": code}, headers={CSRF_HEADER: "forged"})
        assert r.status_code == 403
        r = await phone.post(
            "/api/v1/session/totp", json={"code": f"{code[:3]} {code[3:]}"}, headers=pending_csrf
        )
        assert r.status_code == 200, r.text
        assert r.json()["second_factor_required"] is False
        assert phone.cookies[SESSION_COOKIE] != pending_cookie  # a fresh session, not the pending one
        assert (await phone.get("/api/v1/me")).status_code == 200

        # The same code again, on a new sign-in: refused, however right it was.
        r = await phone.post("/api/v1/session", json={"username": user.username, "password": PASSWORD})
        replay = await phone.post(
            "/api/v1/session/totp", json={"code": code}, headers={CSRF_HEADER: r.json()["csrf_token"]}
        )
        assert replay.status_code == 401
        assert replay.json()["code"] == "wrong_code"

    # Turning it off needs a (new) code too.
    r = await browser.post("/api/v1/me/totp/disable", json={"code": code}, headers=csrf)
    assert r.status_code == 422
    later = totp.at(datetime.now(UTC) + timedelta(seconds=30))
    r = await browser.post("/api/v1/me/totp/disable", json={"code": later}, headers=csrf)
    assert r.status_code == 200, r.text
    await sign_in(browser, user.username)

    async with db.sessions() as session:
        actions = (
            await session.scalars(
                select(AuditEntry.action).where(AuditEntry.target_id == str(user.id)).order_by(AuditEntry.seq)
            )
        ).all()
        assert "user.totp.enable" in actions and "user.totp.disable" in actions
        stored = await session.get(User, user.id)
        assert stored is not None and stored.totp_secret is None


async def test_wrong_codes_count_toward_the_lockout(browser: httpx.AsyncClient, db: Database) -> None:
    user = await new_staff(db)
    secret = pyotp.random_base32()
    async with db.sessions() as session:
        await session.execute(
            update(User).where(User.id == user.id).values(totp_secret=secret, totp_enabled=True)
        )
        await session.commit()
    for _ in range(2):
        # Giving the password again does not start the count over.
        r = await browser.post("/api/v1/session", json={"username": user.username, "password": PASSWORD})
        csrf = {CSRF_HEADER: r.json()["csrf_token"]}
        for _ in range(2):
            r = await browser.post("/api/v1/session/totp", json={"code": wrong_code(secret)}, headers=csrf)
            assert r.status_code == 401
    r = await browser.post("/api/v1/session/totp", json={"code": wrong_code(secret)}, headers=csrf)
    assert r.status_code == 423
    # The pending session ended with the lock, and the browser is told to forget it.
    assert set_cookie(r)["max-age"] == "0"
    browser.cookies.clear()
    r = await browser.post("/api/v1/session", json={"username": user.username, "password": PASSWORD})
    assert r.status_code == 423


async def test_an_administrator_turns_a_lost_second_factor_off(
    browser: httpx.AsyncClient, db: Database
) -> None:
    user = await new_staff(db, roles=((Role.TECHNICIAN, None),))
    async with db.sessions() as session:
        await session.execute(
            update(User)
            .where(User.id == user.id)
            .values(totp_secret=pyotp.random_base32(), totp_enabled=True)
        )
        await session.commit()
    r = await browser.delete(f"/api/v1/users/{user.id}/totp", headers=bearer(PLATFORM_TOKEN))
    assert r.status_code == 200, r.text
    assert r.json()["totp_enabled"] is False
    await sign_in(browser, user.username)


# --- sessions ---------------------------------------------------------------------------------


async def test_an_expired_session_is_refused_and_swept(
    browser: httpx.AsyncClient, db: Database, cloud: Cloud
) -> None:
    user = await new_staff(db)
    await sign_in(browser, user.username)
    async with db.sessions() as session:
        await session.execute(
            update(SignInSession)
            .where(SignInSession.user_id == user.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    r = await browser.get("/api/v1/me")
    assert r.status_code == 401
    assert "sign in again" in r.json()["detail"]

    async with cloud.client() as other:
        await sign_in(other, user.username)
    async with db.sessions() as session:
        left = await session.scalar(
            select(func.count())
            .select_from(SignInSession)
            .where(SignInSession.expires_at <= datetime.now(UTC))
        )
        assert left == 0


async def test_sign_out_ends_the_session(browser: httpx.AsyncClient, db: Database, cloud: Cloud) -> None:
    user = await new_staff(db)
    csrf = await sign_in(browser, user.username)
    cookie = browser.cookies[SESSION_COOKIE]
    r = await browser.delete("/api/v1/session")
    assert r.status_code == 403  # another site must not sign people out either
    r = await browser.delete("/api/v1/session", headers=csrf)
    assert r.status_code == 204
    assert set_cookie(r)["max-age"] == "0"
    async with cloud.client() as other:
        other.cookies.set(SESSION_COOKIE, cookie)
        assert (await other.get("/api/v1/me")).status_code == 401
    # Signing out without a session is no error.
    async with cloud.client() as other:
        assert (await other.delete("/api/v1/session")).status_code == 204


# --- one's own account ------------------------------------------------------------------------


async def test_changing_ones_password(browser: httpx.AsyncClient, db: Database, cloud: Cloud) -> None:
    user = await new_staff(db, roles=((Role.SECURITY_GUARD, None),))
    csrf = await sign_in(browser, user.username)
    async with cloud.client() as laptop:
        await sign_in(laptop, user.username)
        new = "Quiet-harbour-99"
        r = await browser.put(
            "/api/v1/me/password", json={"old_password": "not it at all", "new_password": new}, headers=csrf
        )
        assert r.status_code == 422
        assert r.json()["code"] == "wrong_password"
        r = await browser.put(
            "/api/v1/me/password", json={"old_password": PASSWORD, "new_password": "short"}, headers=csrf
        )
        assert r.status_code == 422
        assert "new_password" in r.json()["detail"]
        r = await browser.put(
            "/api/v1/me/password", json={"old_password": PASSWORD, "new_password": new}, headers=csrf
        )
        assert r.status_code == 204, r.text
        # This session goes on; the others ended with the old password.
        assert (await browser.get("/api/v1/me")).status_code == 200
        assert (await laptop.get("/api/v1/me")).status_code == 401
    async with cloud.client() as other:
        await sign_in(other, user.username, new)
        r = await other.post("/api/v1/session", json={"username": user.username, "password": PASSWORD})
        assert r.status_code == 401


async def test_me_for_tokens_and_the_platform(browser: httpx.AsyncClient, db: Database) -> None:
    r = await browser.get("/api/v1/me", headers=bearer(PLATFORM_TOKEN))
    assert r.status_code == 200
    assert r.json()["kind"] == "platform"
    assert r.json()["company"] is None
    assert set(r.json()["permissions"]) == {p.value for p in Permission}
    # Neither has a password or a second factor of its own.
    r = await browser.post("/api/v1/me/totp", headers=bearer(PLATFORM_TOKEN))
    assert r.status_code == 409
    assert r.json()["code"] == "not_a_user"


# --- passwords --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "complaint"),
    [
        ("Short-1", "at least 10"),
        ("aaaaaaaaaaaa", "too few different"),
        ("abcdefghijk", "mix at least two kinds"),
        ("1234567890123", "mix at least two kinds"),
        (" leading-space-1", "spaces"),
        ("li.wei-2024!", "username"),
    ],
)
def test_the_password_policy_explains_itself(password: str, complaint: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        passwords.check_policy(password, field="new_password", username="li.wei")
    assert str(caught.value).startswith("new_password: ")
    assert complaint in str(caught.value)


@pytest.mark.parametrize(
    "password", ["Harbour-lights-42", "correct horse battery staple", "港湾物业管理密码2024年"]
)
def test_the_password_policy_accepts_sensible_passwords(password: str) -> None:
    passwords.check_policy(password, username="li.wei")


async def test_hashes_are_argon2id_and_old_parameters_are_upgraded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher())  # the real parameters
    stored = await passwords.hash_password(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert await passwords.verify_password(stored, PASSWORD) == passwords.Checked(True)
    assert (await passwords.verify_password(stored, PASSWORD + "x")).ok is False
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    checked = await passwords.verify_password(weak, PASSWORD)
    assert checked.ok and checked.rehashed is not None
    assert PasswordHasher().check_needs_rehash(checked.rehashed) is False
