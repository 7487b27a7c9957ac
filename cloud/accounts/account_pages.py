"""One's own account (``/account``): who one is (company, roles), the console's language, changing
one's password, and two-step sign-in with an authenticator app (enrol: the secret and its
``otpauth://`` URI shown as text, then a code to turn it on; a code to turn it off).

The self-service functions (``selfservice``) do the checking; an API token or the platform, which
have no password, see who they are and nothing to change.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts import selfservice, users
from cloud.accounts.labels import role_labels
from cloud.accounts.lockout import AccountLocked
from cloud.accounts.permissions import Authorize, Principal
from cloud.accounts.schemas import UserPatch
from cloud.accounts.totp import provisioning_uri
from cloud.config import ConsoleConfig
from cloud.console.formkit import FORM_MISTAKES, NO_MISTAKE, Mistake, client_ip, done, render_form
from cloud.console.i18n import LANG_COOKIE, LANGUAGE_NAMES, LANGUAGES, N_, language_of
from cloud.console.nav import register_nav
from cloud.console.templating import page_router
from cloud.kit.errors import InvalidInput
from cloud.kit.web import SessionDep
from cloud.property.models import Site

router = page_router()

register_nav("account", N_("My account"), "/account", order=99)

Staff = Annotated[Principal, Depends(Authorize(None))]
Secret = Annotated[str, Form(max_length=1000)]
Code = Annotated[str, Form(max_length=20)]
# A wrong current password or code counts toward the lockout: the lock is the form's answer too.
MISTAKES = (*FORM_MISTAKES, AccountLocked)
LANG_COOKIE_AGE_S = 365 * 24 * 3600


def _policy(request: Request) -> ConsoleConfig:
    policy: ConsoleConfig = request.app.state.config.console
    return policy


async def _account_view(
    request: Request, session: AsyncSession, principal: Principal, mistake: Mistake = NO_MISTAKE
) -> Response:
    me = await selfservice.whoami(session, principal)
    site_ids = sorted({g.site_id for g in me.roles if g.site_id is not None})
    sites: dict[int, str] = {}
    if site_ids:
        rows = await session.execute(select(Site.id, Site.name).where(Site.id.in_(site_ids)))
        sites = {r.id: r.name for r in rows}
    # An enrolment begun and not yet confirmed: its secret is the user's own, shown until used.
    pending = None
    if me.user is not None and me.user.totp_secret and not me.user.totp_enabled:
        pending = {
            "secret": me.user.totp_secret,
            "uri": provisioning_uri(me.user.totp_secret, me.user.username),
        }
    context = {
        "me": me,
        "user": me.user,
        "sites": sites,
        "role_names": role_labels(language_of(request, principal)),
        "language_options": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        "current_language": language_of(request, principal),
        "pending": pending,
    }
    return render_form(request, principal, "accounts/account.html", context, mistake)


@router.get("/account")
async def account_page(request: Request, session: SessionDep, principal: Staff) -> Response:
    return await _account_view(request, session, principal)


@router.post("/account/language")
async def set_language(
    request: Request, session: SessionDep, principal: Staff, language: Annotated[str, Form(max_length=8)] = ""
) -> Response:
    """The console's language from now on: the account's (a user's), and this browser's cookie,
    which the console reads first."""
    if language not in LANGUAGES:
        mistake = Mistake(f"language: one of {', '.join(LANGUAGES)}", {"language": language}, "language", 422)
        return await _account_view(request, session, principal, mistake)
    if principal.kind == "user" and principal.id is not None:
        patch = UserPatch(language=language)  # type: ignore[arg-type]
        await users.update_user(
            request.app.state.sessions, principal, principal.id, patch, ip=client_ip(request)
        )
    response = done(request, principal, "/account", N_("Language saved."))
    response.set_cookie(LANG_COOKIE, language, max_age=LANG_COOKIE_AGE_S, path="/", samesite="lax")
    return response


@router.post("/account/password")
async def change_password(
    request: Request,
    session: SessionDep,
    principal: Staff,
    old_password: Secret = "",
    new_password: Secret = "",
    repeat: Secret = "",
) -> Response:
    try:
        if new_password != repeat:
            raise InvalidInput("repeat: the two new passwords differ")
        await selfservice.change_password(
            request.app.state.sessions,
            _policy(request),
            principal,
            old_password,
            new_password,
            ip=client_ip(request),
        )
    except MISTAKES as e:
        return await _account_view(request, session, principal, Mistake.of(e, {}, "password"))
    return done(request, principal, "/account", N_("Password changed. Your other sessions have ended."))


@router.post("/account/totp")
async def begin_totp(request: Request, session: SessionDep, principal: Staff) -> Response:
    """A new secret for the authenticator app; the account page then shows it, and the form for
    the code that turns two-step sign-in on."""
    try:
        await selfservice.begin_totp(request.app.state.sessions, principal)
    except MISTAKES as e:
        return await _account_view(request, session, principal, Mistake.of(e, {}, "totp"))
    return done(
        request,
        principal,
        "/account#totp",
        N_("Add the account to your authenticator app, then enter its code."),
    )


@router.post("/account/totp/confirm")
async def confirm_totp(request: Request, session: SessionDep, principal: Staff, code: Code = "") -> Response:
    try:
        await selfservice.confirm_totp(
            request.app.state.sessions, _policy(request), principal, code, ip=client_ip(request)
        )
    except MISTAKES as e:
        return await _account_view(request, session, principal, Mistake.of(e, {}, "totp"))
    return done(request, principal, "/account", N_("Two-step sign-in is on."))


@router.post("/account/totp/disable")
async def disable_totp(request: Request, session: SessionDep, principal: Staff, code: Code = "") -> Response:
    try:
        await selfservice.disable_totp(
            request.app.state.sessions, _policy(request), principal, code, ip=client_ip(request)
        )
    except MISTAKES as e:
        return await _account_view(request, session, principal, Mistake.of(e, {}, "totp"))
    return done(request, principal, "/account", N_("Two-step sign-in is off."))
