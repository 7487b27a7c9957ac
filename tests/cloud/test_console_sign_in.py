"""The console's sign-in pages: the form, the password, the second step, signing out, and the
checks around them (the form's own token, a safe ``next``, CSRF on sign-out)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pyotp
import pytest
from sqlalchemy import update

from cloud.accounts.authn import SESSION_COOKIE
from cloud.accounts.models import User
from cloud.accounts.passwords import hash_password
from cloud.accounts.permissions import Role
from cloud.api import create_app
from cloud.config import CloudConfig
from cloud.console.sign_in import LOGIN_COOKIE, safe_next
from tests.cloud.browser import PLATFORM_TOKEN, seed_site, staff_session
from tests.cloud.conftest import Database

PASSWORD = "correct horse battery 42"


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=PLATFORM_TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://console") as c:
        yield c


@pytest.fixture
async def username(db: Database) -> str:
    seeded = await seed_site(db.sessions)
    staff = await staff_session(
        db.sessions,
        seeded.company_id,
        [(Role.COMPANY_ADMIN, None)],
        password_hash=await hash_password(PASSWORD),
    )
    return staff.username


def set_cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    found = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            found[name] = cookie
    return found


async def open_form(client: httpx.AsyncClient, next_url: str = "/") -> tuple[str, str]:
    """GET /login: the form's token and the matching cookie's value."""
    r = await client.get("/login", params={"next": next_url})
    assert r.status_code == 200
    match = re.search(r'name="login_token" value="([^"]+)"', r.text)
    assert match is not None
    cookie = set_cookies(r)[LOGIN_COOKIE][LOGIN_COOKIE]
    assert cookie["httponly"] and cookie["path"] == "/login"
    return match.group(1), cookie.value


async def post_login(
    client: httpx.AsyncClient, username: str, password: str, next_url: str = "/"
) -> httpx.Response:
    token, cookie = await open_form(client, next_url)
    client.cookies.clear()
    return await client.post(
        "/login",
        data={"username": username, "password": password, "login_token": token, "next": next_url},
        headers={"Cookie": f"{LOGIN_COOKIE}={cookie}"},
    )


async def test_the_sign_in_page_is_chinese_by_default(client: httpx.AsyncClient) -> None:
    r = await client.get("/login")
    assert r.status_code == 200
    assert "登录" in r.text and "用户名" in r.text and "密码" in r.text
    r = await client.get("/login", headers={"Cookie": "lang=en"})
    assert "Sign in" in r.text and "Username" in r.text


async def test_signing_in_sets_a_secure_session_cookie_and_goes_on(
    client: httpx.AsyncClient, username: str
) -> None:
    r = await post_login(client, username, PASSWORD, next_url="/events?kind=door.")
    assert r.status_code == 303
    assert r.headers["location"] == "/events?kind=door."
    session = set_cookies(r)[SESSION_COOKIE][SESSION_COOKIE]
    assert session["httponly"] and session["secure"] and session["samesite"].lower() == "lax"
    assert session["path"] == "/" and int(session["max-age"]) > 3600
    client.cookies.clear()
    r = await client.get("/", headers={"Cookie": f"{SESSION_COOKIE}={session.value}"})
    assert r.status_code == 200
    assert username in r.text
    # Signed in already: the sign-in page sends you on.
    r = await client.get("/login?next=/events", headers={"Cookie": f"{SESSION_COOKIE}={session.value}"})
    assert r.status_code == 303 and r.headers["location"] == "/events"


async def test_a_wrong_password_says_so_without_saying_which_part(
    client: httpx.AsyncClient, username: str
) -> None:
    for name in (username, "nobody-here"):
        r = await post_login(client, name, "not the password")
        assert r.status_code == 401
        assert "用户名或密码错误" in r.text
        assert SESSION_COOKIE not in set_cookies(r)


async def test_repeated_failures_lock_the_account(client: httpx.AsyncClient, username: str) -> None:
    for _ in range(5):
        await post_login(client, username, "wrong again")
    r = await post_login(client, username, PASSWORD)
    assert r.status_code == 423
    assert "账号已暂时锁定" in r.text


async def test_the_form_must_come_from_this_site(client: httpx.AsyncClient, username: str) -> None:
    token, _cookie = await open_form(client)
    client.cookies.clear()
    # Another site's form posts without our cookie (or with a token of its own making).
    r = await client.post(
        "/login", data={"username": username, "password": PASSWORD, "login_token": token, "next": "/"}
    )
    assert r.status_code == 403
    assert SESSION_COOKIE not in set_cookies(r)


def test_next_is_a_path_of_this_site_only() -> None:
    assert safe_next("/sites/3?x=1") == "/sites/3?x=1"
    for bad in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", ""):
        assert safe_next(bad) == "/"


async def test_sign_in_with_a_second_factor(client: httpx.AsyncClient, db: Database, username: str) -> None:
    secret = pyotp.random_base32()
    async with db.sessions() as session:
        await session.execute(
            update(User).where(User.username == username).values(totp_secret=secret, totp_enabled=True)
        )
        await session.commit()
    r = await post_login(client, username, PASSWORD, next_url="/events")
    assert r.status_code == 200
    assert "第二步验证" in r.text
    pending = set_cookies(r)[SESSION_COOKIE][SESSION_COOKIE].value
    csrf = re.search(r'name="login_token" value="([^"]+)"', r.text)
    assert csrf is not None
    # The half-signed-in session opens nothing.
    client.cookies.clear()
    r = await client.get("/", headers={"Cookie": f"{SESSION_COOKIE}={pending}"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    form = {"login_token": csrf.group(1), "next": "/events"}
    r = await client.post(
        "/login/totp", data={**form, "code": "000000"}, headers={"Cookie": f"{SESSION_COOKIE}={pending}"}
    )
    assert r.status_code == 401 and "验证码错误" in r.text
    code = pyotp.TOTP(secret).at(datetime.now(UTC))
    r = await client.post(
        "/login/totp", data={**form, "code": code}, headers={"Cookie": f"{SESSION_COOKIE}={pending}"}
    )
    assert r.status_code == 303 and r.headers["location"] == "/events"
    full = set_cookies(r)[SESSION_COOKIE][SESSION_COOKIE].value
    assert full != pending
    client.cookies.clear()
    assert (await client.get("/", headers={"Cookie": f"{SESSION_COOKIE}={full}"})).status_code == 200
    # Straight to the second step's address: back to the start.
    r = await client.get("/login/totp")
    assert r.status_code == 303 and r.headers["location"] == "/login"


async def test_signing_out_needs_the_pages_token_and_ends_the_session(
    client: httpx.AsyncClient, db: Database
) -> None:
    seeded = await seed_site(db.sessions)
    staff = await staff_session(db.sessions, seeded.company_id, [(Role.TECHNICIAN, None)])
    page = await client.get("/", headers=staff.headers())
    assert f'name="csrf_token" value="{staff.csrf_token}"' in page.text
    r = await client.post("/logout", data={"csrf_token": "forged"}, headers=staff.headers())
    assert r.status_code == 403
    assert (await client.get("/", headers=staff.headers())).status_code == 200
    r = await client.post("/logout", data={"csrf_token": staff.csrf_token}, headers=staff.headers())
    assert r.status_code == 303 and r.headers["location"] == "/login"
    cookies = set_cookies(r)
    assert cookies[SESSION_COOKIE][SESSION_COOKIE]["max-age"] == "0"
    assert (await client.get("/", headers=staff.headers())).status_code == 303
    # The sign-in page then says that it worked, once.
    flash = cookies["gh_flash"]["gh_flash"].value
    r = await client.get("/login", headers={"Cookie": f"gh_flash={flash}"})
    assert "您已退出登录" in r.text
    assert set_cookies(r)["gh_flash"]["gh_flash"]["max-age"] == "0"
