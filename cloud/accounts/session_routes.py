"""Signing in and out, one's own account, and the resident portal's sign-in:

- ``POST /session`` (public): username and password; sets the ``gh_session`` cookie and answers
  the CSRF token; with TOTP on, ``second_factor_required`` and then ``POST /session/totp``;
- ``DELETE /session``: sign out (a cookie session must echo its CSRF token);
- ``/me``: who am I, my password, my second factor;
- ``/resident/session`` and ``/resident/me``: the same for residents.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from cloud.accounts import selfservice, service
from cloud.accounts.authn import CSRF_HEADER, SESSION_COOKIE
from cloud.accounts.cookies import clear_session_cookie, set_session_cookie
from cloud.accounts.lockout import AccountLocked
from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.accounts.residents import resident_profile
from cloud.accounts.schemas import (
    CompanyOut,
    MeOut,
    PasswordChangeIn,
    ResidentMeOut,
    ResidentPersonOut,
    ResidentSessionOut,
    ResidentSignInIn,
    ResidentUnitOut,
    RoleGrantOut,
    SessionOut,
    SignedInUserOut,
    SignInIn,
    TotpCodeIn,
    TotpEnrolmentOut,
    TotpStateOut,
)
from cloud.accounts.views import resident_out
from cloud.config import ConsoleConfig
from cloud.kit.web import SessionDep

router = APIRouter(tags=["accounts"])

Staff = Annotated[Principal, Depends(Authorize(None))]
Resident = Annotated[Principal, Depends(Authorize(None, residents=True))]

_SIGN_IN_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"description": "Wrong username or password (or code)"},
    423: {"description": "Locked after repeated failures; the detail says until when"},
}


def policy(request: Request) -> ConsoleConfig:
    return request.app.state.config.console  # type: ignore[no-any-return]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _user_agent(request: Request) -> str:
    return request.headers.get("user-agent", "")


def _session_out(signed: service.SignedIn) -> SessionOut:
    assert signed.user is not None
    return SessionOut(
        csrf_token=signed.csrf_token,
        user=SignedInUserOut.model_validate(signed.user),
        second_factor_required=signed.second_factor_required,
        expires_at=signed.expires_at,
    )


@router.post(
    "/session",
    summary="Sign in with username and password (sets the gh_session cookie)",
    responses=_SIGN_IN_ERRORS,
)
async def post_session(request: Request, response: Response, body: SignInIn) -> SessionOut:
    signed = await service.sign_in(
        request.app.state.sessions,
        policy(request),
        body.username,
        body.password,
        ip=client_ip(request),
        user_agent=_user_agent(request),
        replacing=request.cookies.get(SESSION_COOKIE),
    )
    set_session_cookie(response, signed.cookie, signed.expires_at, policy(request))
    return _session_out(signed)


@router.post(
    "/session/totp",
    summary="Finish signing in with the code from the authenticator app (a new cookie)",
    description=f"Needs the cookie of the pending sign-in and its CSRF token in {CSRF_HEADER}.",
    responses=_SIGN_IN_ERRORS,
    response_model=SessionOut,
)
async def post_session_totp(request: Request, response: Response, body: TotpCodeIn) -> SessionOut | Response:
    try:
        signed = await service.finish_totp(
            request.app.state.sessions,
            policy(request),
            request.cookies.get(SESSION_COOKIE, ""),
            body.code,
            csrf_token=request.headers.get(CSRF_HEADER, ""),
            ip=client_ip(request),
            user_agent=_user_agent(request),
        )
    except AccountLocked as e:
        # The pending session is gone with the lock: the browser should forget it as well.
        locked = JSONResponse(e.payload(), e.status_code)
        clear_session_cookie(locked, policy(request))
        return locked
    set_session_cookie(response, signed.cookie, signed.expires_at, policy(request))
    return _session_out(signed)


@router.delete("/session", status_code=204, summary="Sign out (the session ends; the cookie is cleared)")
async def delete_session(request: Request) -> Response:
    await service.sign_out(
        request.app.state.sessions,
        request.cookies.get(SESSION_COOKIE, ""),
        csrf_token=request.headers.get(CSRF_HEADER, ""),
    )
    done = Response(status_code=204)
    clear_session_cookie(done, policy(request))
    return done


@router.get("/me", summary="Who am I: account, company, roles and permissions")
async def get_me(session: SessionDep, principal: Staff) -> MeOut:
    me = await selfservice.whoami(session, principal)
    assert principal.kind != "resident"
    return MeOut(
        kind=principal.kind,
        id=principal.id,
        name=principal.name,
        username=me.user.username if me.user else None,
        email=me.user.email if me.user else None,
        language=principal.language,
        company=CompanyOut.model_validate(me.company) if me.company else None,
        roles=[RoleGrantOut.model_validate(g) for g in me.roles],
        permissions=_permissions(principal),
        totp_enabled=bool(me.user and me.user.totp_enabled),
        csrf_token=principal.csrf_token,
    )


def _permissions(principal: Principal) -> dict[Permission, list[int] | None]:
    held = list(Permission) if principal.is_platform else sorted(principal.grants)
    shown: dict[Permission, list[int] | None] = {}
    for permission in held:
        scope = principal.sites(permission)
        shown[permission] = None if scope is None else sorted(scope)
    return shown


@router.put("/me/password", status_code=204, summary="Change my password (give the current one)")
async def put_my_password(request: Request, principal: Staff, body: PasswordChangeIn) -> Response:
    await selfservice.change_password(
        request.app.state.sessions,
        policy(request),
        principal,
        body.old_password,
        body.new_password,
        ip=client_ip(request),
    )
    return Response(status_code=204)


@router.post("/me/totp", summary="Start enrolling an authenticator app: a new secret, not yet on")
async def post_my_totp(request: Request, principal: Staff) -> TotpEnrolmentOut:
    enrolment = await selfservice.begin_totp(request.app.state.sessions, principal)
    return TotpEnrolmentOut(secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri)


@router.post("/me/totp/confirm", summary="Turn two-factor sign-in on with a code from the new secret")
async def post_my_totp_confirm(request: Request, principal: Staff, body: TotpCodeIn) -> TotpStateOut:
    await selfservice.confirm_totp(
        request.app.state.sessions, policy(request), principal, body.code, ip=client_ip(request)
    )
    return TotpStateOut(totp_enabled=True)


@router.post("/me/totp/disable", summary="Turn two-factor sign-in off (needs a current code)")
async def post_my_totp_disable(request: Request, principal: Staff, body: TotpCodeIn) -> TotpStateOut:
    await selfservice.disable_totp(
        request.app.state.sessions, policy(request), principal, body.code, ip=client_ip(request)
    )
    return TotpStateOut(totp_enabled=False)


# --- the resident portal ----------------------------------------------------------------------


@router.post(
    "/resident/session",
    summary="A resident signs in by phone or email: with the password, or the set-up code once",
    responses=_SIGN_IN_ERRORS,
)
async def post_resident_session(
    request: Request, response: Response, body: ResidentSignInIn
) -> ResidentSessionOut:
    signed = await service.resident_sign_in(
        request.app.state.sessions,
        policy(request),
        body.login,
        password=body.password,
        setup_code=body.code,
        new_password=body.new_password,
        ip=client_ip(request),
        user_agent=_user_agent(request),
        replacing=request.cookies.get(SESSION_COOKIE),
    )
    assert signed.resident is not None
    set_session_cookie(response, signed.cookie, signed.expires_at, policy(request))
    return ResidentSessionOut(
        csrf_token=signed.csrf_token, resident=resident_out(signed.resident), expires_at=signed.expires_at
    )


@router.delete("/resident/session", status_code=204, summary="A resident signs out")
async def delete_resident_session(request: Request) -> Response:
    return await delete_session(request)


@router.get("/resident/me", summary="The signed-in resident: their person and their units")
async def get_resident_me(session: SessionDep, principal: Resident) -> ResidentMeOut:
    found = await resident_profile(session, principal)
    return ResidentMeOut(
        resident=resident_out(found.account),
        person=ResidentPersonOut(
            id=found.person.id, name=found.person.name, phone=found.person.phone, email=found.person.email
        ),
        units=[ResidentUnitOut(**asdict(u)) for u in found.units],
        csrf_token=principal.csrf_token,
    )


@router.put("/resident/me/password", status_code=204, summary="A resident changes their password")
async def put_resident_password(request: Request, principal: Resident, body: PasswordChangeIn) -> Response:
    await selfservice.change_resident_password(
        request.app.state.sessions,
        policy(request),
        principal,
        body.old_password,
        body.new_password,
        ip=client_ip(request),
    )
    return Response(status_code=204)
