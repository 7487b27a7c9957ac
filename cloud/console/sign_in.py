"""The sign-in pages: ``/login`` (username and password), the second step (a TOTP code, when the
user enrolled one), ``/logout``, and ``/language`` (the Chinese / English switch).

The accounts service (``cloud.accounts.service``) does the checking, the lockout and the
sessions; these pages only carry its answers to and from the browser.

The sign-in form carries a token that must match a cookie set with the form (double submit): a
login CSRF, another site posting its own username and password here, would otherwise sign the
victim in as the attacker. The second step's form carries the pending session's own CSRF token,
which the service checks.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Form, Query, Request
from starlette.responses import RedirectResponse, Response

from cloud.accounts import service as accounts
from cloud.accounts.authn import SESSION_COOKIE, optional_principal
from cloud.accounts.cookies import clear_session_cookie, set_session_cookie
from cloud.accounts.lockout import AccountLocked, WrongCode
from cloud.accounts.permissions import Forbidden
from cloud.config import CloudConfig
from cloud.console.flash import flash
from cloud.console.i18n import LANG_COOKIE, LANGUAGES, language_of, translate
from cloud.console.templating import error_page, page_router, render
from cloud.kit.errors import Unauthorized

router = page_router()

LOGIN_COOKIE = "gh_login"
LOGIN_COOKIE_AGE_S = 3600
LANG_COOKIE_AGE_S = 365 * 24 * 3600
MAX_USERNAME = 200
MAX_PASSWORD = 1000


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (never ``//evil.example``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _client(request: Request) -> tuple[str, str]:
    ip = request.client.host if request.client else ""
    return ip, request.headers.get("user-agent", "")


def _config(request: Request) -> CloudConfig:
    config: CloudConfig = request.app.state.config
    return config


def _set_session_cookie(response: Response, request: Request, signed: accounts.SignedIn) -> None:
    set_session_cookie(response, signed.cookie, signed.expires_at, _config(request).console)


def _clear_session_cookie(response: Response, request: Request) -> None:
    clear_session_cookie(response, _config(request).console)


def _login_form(
    request: Request, *, next_url: str, username: str = "", error: str = "", status_code: int = 200
) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        {"login_token": token, "next": next_url, "username": username, "error": error},
        principal=None,
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=LOGIN_COOKIE_AGE_S, path="/login", httponly=True, samesite="lax"
    )
    return response


def _totp_form(
    request: Request, *, csrf_token: str, next_url: str, error: str = "", status_code: int = 200
) -> Response:
    return render(
        request,
        "login_totp.html",
        {"login_token": csrf_token, "next": next_url, "error": error},
        principal=None,
        status_code=status_code,
    )


@router.get("/login")
async def login_page(request: Request, next: Annotated[str, Query(max_length=2000)] = "/") -> Response:
    if await optional_principal(request) is not None:
        return RedirectResponse(safe_next(next), 303)
    return _login_form(request, next_url=safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=MAX_USERNAME)] = "",
    password: Annotated[str, Form(max_length=MAX_PASSWORD)] = "",
    login_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    lang = language_of(request, None)
    next_url = safe_next(next)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), login_token.encode()):
        return _login_form(
            request,
            next_url=next_url,
            username=username,
            error=translate(lang, "The sign-in form had expired. Please sign in again."),
            status_code=403,
        )
    if not username.strip() or not password:
        return _login_form(
            request,
            next_url=next_url,
            username=username,
            error=translate(lang, "Enter your username and password."),
            status_code=422,
        )
    ip, agent = _client(request)
    try:
        signed = await accounts.sign_in(
            request.app.state.sessions, _config(request).console, username, password, ip=ip, user_agent=agent
        )
    except AccountLocked:
        return _login_form(
            request,
            next_url=next_url,
            username=username,
            error=translate(
                lang,
                "Too many failed attempts: this account is locked for a while. "
                "Try again later or ask an administrator to unlock it.",
            ),
            status_code=423,
        )
    except Unauthorized:
        return _login_form(
            request,
            next_url=next_url,
            username=username,
            error=translate(lang, "Wrong username or password."),
            status_code=401,
        )
    if signed.second_factor_required:
        response = _totp_form(request, csrf_token=signed.csrf_token, next_url=next_url)
    else:
        response = RedirectResponse(next_url, 303)
    _set_session_cookie(response, request, signed)
    response.delete_cookie(LOGIN_COOKIE, path="/login", httponly=True, samesite="lax")
    return response


@router.get("/login/totp")
async def totp_page() -> Response:
    # The second step's form is the answer to the password's POST (it carries the pending
    # session's CSRF token); reached any other way, start again.
    return RedirectResponse("/login", 303)


@router.post("/login/totp")
async def login_totp(
    request: Request,
    code: Annotated[str, Form(max_length=20)] = "",
    login_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    lang = language_of(request, None)
    next_url = safe_next(next)
    ip, agent = _client(request)
    try:
        signed = await accounts.finish_totp(
            request.app.state.sessions,
            _config(request).console,
            request.cookies.get(SESSION_COOKIE, ""),
            code,
            csrf_token=login_token,
            ip=ip,
            user_agent=agent,
        )
    except WrongCode:
        return _totp_form(
            request,
            csrf_token=login_token,
            next_url=next_url,
            error=translate(lang, "Wrong or already used code. Enter the code your app shows now."),
            status_code=401,
        )
    except AccountLocked:
        response = _login_form(
            request,
            next_url=next_url,
            error=translate(
                lang,
                "Too many failed attempts: this account is locked for a while. "
                "Try again later or ask an administrator to unlock it.",
            ),
            status_code=423,
        )
        _clear_session_cookie(response, request)
        return response
    except (Unauthorized, Forbidden):
        response = RedirectResponse(f"/login?next={quote(next_url)}", 303)
        flash(response, request, translate(lang, "The sign-in timed out. Please sign in again."), "warning")
        _clear_session_cookie(response, request)
        return response
    response = RedirectResponse(next_url, 303)
    _set_session_cookie(response, request, signed)
    return response


@router.post("/logout")
async def logout(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    lang = language_of(request, None)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    try:
        await accounts.sign_out(request.app.state.sessions, cookie, csrf_token=csrf_token)
    except Forbidden:
        # A form from another site, or one older than the session: the session stays.
        return error_page(
            request, 403, translate(lang, "This page was out of date. Reload it and sign out again.")
        )
    response = RedirectResponse("/login", 303)
    _clear_session_cookie(response, request)
    flash(response, request, translate(lang, "You have signed out."), "info")
    return response


@router.get("/language")
async def switch_language(request: Request, to: Annotated[str, Query(max_length=8)] = "zh") -> Response:
    """Show the console in ``to`` from now on (a cookie: it outlasts the session, and works on
    the sign-in page too), then go back to the page the switch was clicked on."""
    referer = urlsplit(request.headers.get("referer", ""))
    back = "/"
    if referer.netloc == request.url.netloc and referer.path.startswith("/") and referer.path != "/language":
        back = safe_next(referer.path + (f"?{referer.query}" if referer.query else ""))
    response = RedirectResponse(back, 303)
    if to in LANGUAGES:
        response.set_cookie(LANG_COOKIE, to, max_age=LANG_COOKIE_AGE_S, path="/", samesite="lax")
    return response
