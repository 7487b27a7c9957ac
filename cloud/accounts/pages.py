"""The console's users-and-roles pages: the staff (``/users``), adding a member of staff
(``/users/new``), one member (``/users/{id}``: profile, roles for every site or one, password,
unlock, second factor, deactivate) and the company's departments (``/users/departments``). API
tokens (``token_pages``) and one's own account (``account_pages``) are included here too.

The accounts service does every check: another company's user is 404, and nobody manages someone
who holds more than they do, nor gives a role they could not hold (``delegation``): such a refusal
is shown on the form it came from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Form, Path, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts import account_pages, token_pages, users
from cloud.accounts.labels import role_labels
from cloud.accounts.permissions import Authorize, Forbidden, Permission, Principal, Role
from cloud.accounts.schemas import RoleIn, UserIn, UserPatch
from cloud.console.formkit import FORM_MISTAKES, NO_MISTAKE, Mistake, client_ip, done, optional, render_form
from cloud.console.i18n import LANGUAGE_NAMES, N_, language_of
from cloud.console.nav import register_nav
from cloud.console.templating import page_router
from cloud.db import SessionFactory
from cloud.kit.errors import InvalidInput
from cloud.kit.web import SessionDep
from cloud.property import service as property_service
from cloud.property.models import Department, Site
from cloud.property.schemas import DepartmentIn

P = Permission
router = page_router()

register_nav("users", N_("Users and roles"), "/users", permission=P.USERS_READ, order=90)

UsersRead = Annotated[Principal, Depends(Authorize(P.USERS_READ))]
UsersManage = Annotated[Principal, Depends(Authorize(P.USERS_MANAGE))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Short = Annotated[str, Form(max_length=200)]
Secret = Annotated[str, Form(max_length=1000)]

LIST_ALL = property_service.MAX_PAGE
# A refusal by delegation (a role one cannot give) is the form's mistake too.
MISTAKES = (*FORM_MISTAKES, Forbidden)


def _sessions(request: Request) -> SessionFactory:
    """The accounts service opens its own transactions (a change and its audit entry commit together)."""
    sessions: SessionFactory = request.app.state.sessions
    return sessions


async def _sites(
    session: AsyncSession, principal: Principal, company_id: int | None = None
) -> dict[int, str]:
    """The company's sites by id (a grant names one): the principal's company, or ``company_id``
    for the platform looking at a user."""
    stmt = select(Site.id, Site.name).where(principal.company_clause(Site.company_id))
    if company_id is not None:
        stmt = stmt.where(Site.company_id == company_id)
    rows = await session.execute(stmt.order_by(Site.name, Site.id).limit(LIST_ALL))
    return {r.id: r.name for r in rows}


async def _departments(
    session: AsyncSession, principal: Principal, company_id: int | None = None
) -> list[Department]:
    page = await property_service.list_departments(session, principal, company_id=company_id, limit=LIST_ALL)
    return sorted(page.items, key=lambda d: d.name)


def _context(request: Request, principal: Principal, **more: Any) -> dict[str, Any]:
    lang = language_of(request, principal)
    return {
        "role_names": role_labels(lang),
        "language_names": LANGUAGE_NAMES,
        "can_manage": principal.can(P.USERS_MANAGE),
        "now": datetime.now(UTC),
        **more,
    }


def _grant_of(role: str, site_id: str) -> RoleIn:
    return RoleIn(role=role, site_id=optional(site_id))  # type: ignore[arg-type]


# -- the staff


@router.get("/users")
async def users_page(
    request: Request,
    session: SessionDep,
    principal: UsersRead,
    inactive: Annotated[bool, Query(description="show deactivated accounts too")] = False,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    page = await users.list_users(session, principal, cursor=cursor, active=None if inactive else True)
    context = _context(
        request,
        principal,
        members=page.items,
        next_cursor=page.next_cursor,
        params={"inactive": "true" if inactive else ""},
        inactive=inactive,
        sites=await _sites(session, principal),
        departments={d.id: d.name for d in await _departments(session, principal)},
    )
    return render_form(request, principal, "accounts/users.html", context)


@router.get("/users/new")
async def new_user_page(request: Request, session: SessionDep, principal: UsersManage) -> Response:
    return await _new_user_view(request, session, principal)


async def _new_user_view(
    request: Request, session: AsyncSession, principal: Principal, mistake: Mistake = NO_MISTAKE
) -> Response:
    context = _context(
        request,
        principal,
        site_options=list((await _sites(session, principal)).items()),
        department_options=[(d.id, d.name) for d in await _departments(session, principal)],
    )
    return render_form(request, principal, "accounts/new_user.html", context, mistake)


@router.post("/users/new")
async def add_user(
    request: Request,
    session: SessionDep,
    principal: UsersManage,
    username: Short = "",
    display_name: Short = "",
    email: Short = "",
    phone: Short = "",
    department_id: Short = "",
    language: Short = "zh",
    password: Secret = "",
    role: Short = "",
    site_id: Short = "",
) -> Response:
    # The password is not sent back to the form.
    form = {
        "username": username,
        "display_name": display_name,
        "email": email,
        "phone": phone,
        "department_id": department_id,
        "language": language,
        "role": role,
        "site_id": site_id,
    }
    try:
        draft = UserIn(
            username=username,
            display_name=display_name,
            email=email,
            phone=phone,
            department_id=optional(department_id),  # type: ignore[arg-type]
            language=language,  # type: ignore[arg-type]
            password=password or None,
            roles=[_grant_of(role, site_id)] if role else [],
        )
        member = await users.create_user(_sessions(request), principal, draft, ip=client_ip(request))
    except MISTAKES as e:
        return await _new_user_view(request, session, principal, Mistake.of(e, form))
    url = f"/users/{member.user.id}"
    return done(request, principal, url, N_("%(name)s added."), name=member.user.display_name)


# -- departments (before /users/{id}: "departments" is no user id)


@router.get("/users/departments")
async def departments_page(request: Request, session: SessionDep, principal: UsersRead) -> Response:
    return await _departments_view(request, session, principal)


async def _departments_view(
    request: Request, session: AsyncSession, principal: Principal, mistake: Mistake = NO_MISTAKE
) -> Response:
    departments = await _departments(session, principal)
    context = _context(
        request,
        principal,
        departments=departments,
        names={d.id: d.name for d in departments},
        # Departments are the company's: changed by who manages users at every site.
        can_add=principal.can(P.USERS_MANAGE) and principal.sites(P.USERS_MANAGE) is None,
    )
    return render_form(request, principal, "accounts/departments.html", context, mistake)


@router.post("/users/departments")
async def add_department(
    request: Request, session: SessionDep, principal: UsersManage, name: Short = "", parent_id: Short = ""
) -> Response:
    form = {"name": name, "parent_id": parent_id}
    try:
        data = DepartmentIn(name=name, parent_id=optional(parent_id))  # type: ignore[arg-type]
        department = await property_service.create_department(session, principal, data, ip=client_ip(request))
        await session.commit()
    except MISTAKES as e:
        await session.rollback()
        return await _departments_view(request, session, principal, Mistake.of(e, form))
    return done(
        request, principal, "/users/departments", N_("Department %(name)s added."), name=department.name
    )


# -- one member of staff


@router.get("/users/{user_id}")
async def user_page(request: Request, session: SessionDep, principal: UsersRead, user_id: Id) -> Response:
    return await _user_view(request, session, principal, user_id)


async def _user_view(
    request: Request, session: AsyncSession, principal: Principal, user_id: int, mistake: Mistake = NO_MISTAKE
) -> Response:
    member = await users.get_user(session, principal, user_id)
    company_id = member.user.company_id
    sites = await _sites(session, principal, company_id)
    departments = await _departments(session, principal, company_id)
    context = _context(
        request,
        principal,
        member=member,
        user=member.user,
        sites=sites,
        site_options=list(sites.items()),
        departments={d.id: d.name for d in departments},
        department_options=[(d.id, d.name) for d in departments],
        role_options=[(r.value, role_labels(language_of(request, principal))[r.value]) for r in Role],
        is_self=principal.kind == "user" and principal.id == member.user.id,
    )
    return render_form(request, principal, "accounts/user.html", context, mistake)


@router.post("/users/{user_id}")
async def edit_user(
    request: Request,
    session: SessionDep,
    principal: UsersManage,
    user_id: Id,
    display_name: Short = "",
    email: Short = "",
    phone: Short = "",
    department_id: Short = "",
    language: Short = "",
) -> Response:
    form = {
        "display_name": display_name,
        "email": email,
        "phone": phone,
        "department_id": department_id,
        "language": language,
    }
    try:
        patch = UserPatch(
            display_name=display_name or None,
            email=email,
            phone=phone,
            department_id=optional(department_id),  # type: ignore[arg-type]
            language=language or None,  # type: ignore[arg-type]
        )
        member = await users.update_user(_sessions(request), principal, user_id, patch, ip=client_ip(request))
    except MISTAKES as e:
        return await _user_view(request, session, principal, user_id, Mistake.of(e, form, "profile"))
    return done(request, principal, f"/users/{user_id}", N_("%(name)s saved."), name=member.user.display_name)


@router.post("/users/{user_id}/roles")
async def grant_role(
    request: Request,
    session: SessionDep,
    principal: UsersManage,
    user_id: Id,
    role: Short = "",
    site_id: Short = "",
) -> Response:
    form = {"role": role, "site_id": site_id}
    try:
        grant = _grant_of(role, site_id)
        await users.grant_role(_sessions(request), principal, user_id, grant, ip=client_ip(request))
    except MISTAKES as e:
        return await _user_view(request, session, principal, user_id, Mistake.of(e, form, "role"))
    return done(request, principal, f"/users/{user_id}", N_("Role granted."))


@router.post("/users/{user_id}/roles/{grant_id}/revoke")
async def revoke_role(
    request: Request, session: SessionDep, principal: UsersManage, user_id: Id, grant_id: Id
) -> Response:
    try:
        await users.revoke_role(_sessions(request), principal, user_id, grant_id, ip=client_ip(request))
    except MISTAKES as e:
        return await _user_view(request, session, principal, user_id, Mistake.of(e, {}, "role"))
    return done(request, principal, f"/users/{user_id}", N_("Role revoked."))


@router.post("/users/{user_id}/password")
async def reset_password(
    request: Request,
    session: SessionDep,
    principal: UsersManage,
    user_id: Id,
    password: Secret = "",
    repeat: Secret = "",
) -> Response:
    try:
        if password != repeat:
            raise InvalidInput("repeat: the two passwords differ")
        await users.reset_password(_sessions(request), principal, user_id, password, ip=client_ip(request))
    except MISTAKES as e:
        return await _user_view(request, session, principal, user_id, Mistake.of(e, {}, "password"))
    return done(request, principal, f"/users/{user_id}", N_("Password set. The user's sessions have ended."))


async def _state_change(
    request: Request, session: AsyncSession, principal: Principal, user_id: int, action: Any, message: str
) -> Response:
    """One of the buttons (unlock, deactivate, reactivate, second factor off): do it, or show why
    not on the page."""
    try:
        await action(_sessions(request), principal, user_id, ip=client_ip(request))
    except MISTAKES as e:
        return await _user_view(request, session, principal, user_id, Mistake.of(e, {}, "state"))
    return done(request, principal, f"/users/{user_id}", message)


@router.post("/users/{user_id}/unlock")
async def unlock_user(request: Request, session: SessionDep, principal: UsersManage, user_id: Id) -> Response:
    return await _state_change(request, session, principal, user_id, users.unlock_user, N_("Unlocked."))


@router.post("/users/{user_id}/deactivate")
async def deactivate_user(
    request: Request, session: SessionDep, principal: UsersManage, user_id: Id
) -> Response:
    async def deactivate(sessions: SessionFactory, who: Principal, target: int, *, ip: str) -> Any:
        return await users.set_active(sessions, who, target, False, ip=ip)

    return await _state_change(
        request,
        session,
        principal,
        user_id,
        deactivate,
        N_("Deactivated: the account can no longer sign in."),
    )


@router.post("/users/{user_id}/activate")
async def activate_user(
    request: Request, session: SessionDep, principal: UsersManage, user_id: Id
) -> Response:
    async def activate(sessions: SessionFactory, who: Principal, target: int, *, ip: str) -> Any:
        return await users.set_active(sessions, who, target, True, ip=ip)

    return await _state_change(request, session, principal, user_id, activate, N_("Reactivated."))


@router.post("/users/{user_id}/totp/reset")
async def reset_totp(request: Request, session: SessionDep, principal: UsersManage, user_id: Id) -> Response:
    return await _state_change(
        request,
        session,
        principal,
        user_id,
        users.reset_totp,
        N_("Two-step sign-in turned off for this user."),
    )


for module in (token_pages, account_pages):
    router.include_router(module.router)
