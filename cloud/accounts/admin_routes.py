"""Managing accounts: staff and their roles (``users.read`` / ``users.manage``), API tokens
(``tokens.manage``) and residents' accounts (``users.read`` / ``users.manage``). Every change is
audited; another company's account answers 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from cloud.accounts import residents, tokens, users
from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.accounts.schemas import (
    PasswordSetIn,
    ResidentCreatedOut,
    ResidentIn,
    ResidentOut,
    ResidentPageOut,
    RoleIn,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
    TokenPageOut,
    UserIn,
    UserOut,
    UserPageOut,
    UserPatch,
)
from cloud.accounts.session_routes import client_ip
from cloud.accounts.views import resident_out, token_out, user_out
from cloud.kit.web import SessionDep

router = APIRouter(tags=["accounts"])

UsersRead = Annotated[Principal, Depends(Authorize(Permission.USERS_READ))]
UsersManage = Annotated[Principal, Depends(Authorize(Permission.USERS_MANAGE))]
TokensManage = Annotated[Principal, Depends(Authorize(Permission.TOKENS_MANAGE))]

Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Cursor = Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page")]
Limit = Annotated[int, Query(ge=1, le=users.MAX_PAGE)]


# --- staff ------------------------------------------------------------------------------------


@router.get("/users", summary="List staff accounts")
async def get_users(
    session: SessionDep,
    principal: UsersRead,
    active: Annotated[bool | None, Query(description="Only active (true) or deactivated (false)")] = None,
    cursor: Cursor = None,
    limit: Limit = users.DEFAULT_PAGE,
) -> UserPageOut:
    page = await users.list_users(session, principal, cursor=cursor, limit=limit, active=active)
    return UserPageOut(items=[user_out(m) for m in page.items], next_cursor=page.next_cursor)


@router.post("/users", status_code=201, summary="Add a staff account (with roles)")
async def post_user(request: Request, principal: UsersManage, body: UserIn) -> UserOut:
    member = await users.create_user(request.app.state.sessions, principal, body, ip=client_ip(request))
    return user_out(member)


@router.get("/users/{user_id}", summary="One staff account")
async def get_one_user(session: SessionDep, principal: UsersRead, user_id: Id) -> UserOut:
    return user_out(await users.get_user(session, principal, user_id))


@router.patch("/users/{user_id}", summary="Change a staff account's profile (the fields given)")
async def patch_user(request: Request, principal: UsersManage, user_id: Id, body: UserPatch) -> UserOut:
    member = await users.update_user(
        request.app.state.sessions, principal, user_id, body, ip=client_ip(request)
    )
    return user_out(member)


@router.post("/users/{user_id}/deactivate", summary="Deactivate: no more sign-in; sessions end")
async def post_deactivate_user(request: Request, principal: UsersManage, user_id: Id) -> UserOut:
    member = await users.set_active(
        request.app.state.sessions, principal, user_id, False, ip=client_ip(request)
    )
    return user_out(member)


@router.post("/users/{user_id}/activate", summary="Reactivate a deactivated account")
async def post_activate_user(request: Request, principal: UsersManage, user_id: Id) -> UserOut:
    member = await users.set_active(
        request.app.state.sessions, principal, user_id, True, ip=client_ip(request)
    )
    return user_out(member)


@router.put("/users/{user_id}/password", summary="Set a user's password (their sessions end)")
async def put_user_password(
    request: Request, principal: UsersManage, user_id: Id, body: PasswordSetIn
) -> UserOut:
    member = await users.reset_password(
        request.app.state.sessions, principal, user_id, body.password, ip=client_ip(request)
    )
    return user_out(member)


@router.post("/users/{user_id}/unlock", summary="Lift a lockout after failed sign-ins")
async def post_unlock_user(request: Request, principal: UsersManage, user_id: Id) -> UserOut:
    member = await users.unlock_user(request.app.state.sessions, principal, user_id, ip=client_ip(request))
    return user_out(member)


@router.delete("/users/{user_id}/totp", summary="Turn a user's two-factor sign-in off (a lost phone)")
async def delete_user_totp(request: Request, principal: UsersManage, user_id: Id) -> UserOut:
    member = await users.reset_totp(request.app.state.sessions, principal, user_id, ip=client_ip(request))
    return user_out(member)


@router.post(
    "/users/{user_id}/roles",
    status_code=201,
    summary="Grant a role, for every site or one (only what you hold yourself there)",
)
async def post_user_role(request: Request, principal: UsersManage, user_id: Id, body: RoleIn) -> UserOut:
    member = await users.grant_role(
        request.app.state.sessions, principal, user_id, body, ip=client_ip(request)
    )
    return user_out(member)


@router.delete("/users/{user_id}/roles/{grant_id}", summary="Revoke a role grant")
async def delete_user_role(request: Request, principal: UsersManage, user_id: Id, grant_id: Id) -> UserOut:
    member = await users.revoke_role(
        request.app.state.sessions, principal, user_id, grant_id, ip=client_ip(request)
    )
    return user_out(member)


# --- API tokens -------------------------------------------------------------------------------


@router.get("/tokens", summary="List API tokens (revoked and expired ones too)")
async def get_tokens(
    session: SessionDep, principal: TokensManage, cursor: Cursor = None, limit: Limit = tokens.DEFAULT_PAGE
) -> TokenPageOut:
    page = await tokens.list_tokens(session, principal, cursor=cursor, limit=limit)
    return TokenPageOut(items=[token_out(t) for t in page.items], next_cursor=page.next_cursor)


@router.post(
    "/tokens",
    status_code=201,
    summary="Create an API token (shown once); scopes and sites within your own",
)
async def post_token(request: Request, principal: TokensManage, body: TokenIn) -> TokenCreatedOut:
    made = await tokens.create_token(request.app.state.sessions, principal, body, ip=client_ip(request))
    return TokenCreatedOut(**token_out(made.row).model_dump(), token=made.token)


@router.get("/tokens/{token_id}", summary="One API token")
async def get_one_token(session: SessionDep, principal: TokensManage, token_id: Id) -> TokenOut:
    return token_out(await tokens.get_token(session, principal, token_id))


@router.delete("/tokens/{token_id}", summary="Revoke an API token (it is refused from now on)")
async def delete_token(request: Request, principal: TokensManage, token_id: Id) -> TokenOut:
    row = await tokens.revoke_token(request.app.state.sessions, principal, token_id, ip=client_ip(request))
    return token_out(row)


# --- residents' accounts ----------------------------------------------------------------------


@router.get("/residents", summary="List residents' portal accounts")
async def get_residents(
    session: SessionDep,
    principal: UsersRead,
    person_id: Annotated[int | None, Query(ge=1, description="Only this person's")] = None,
    cursor: Cursor = None,
    limit: Limit = residents.DEFAULT_PAGE,
) -> ResidentPageOut:
    page = await residents.list_residents(session, principal, person_id=person_id, cursor=cursor, limit=limit)
    return ResidentPageOut(items=[resident_out(a) for a in page.items], next_cursor=page.next_cursor)


@router.post(
    "/residents",
    status_code=201,
    summary="Give a person a portal account (a password, or a one-time set-up code shown once)",
)
async def post_resident(request: Request, principal: UsersManage, body: ResidentIn) -> ResidentCreatedOut:
    made = await residents.create_resident(request.app.state.sessions, principal, body, ip=client_ip(request))
    return ResidentCreatedOut(**resident_out(made.account).model_dump(), setup_code=made.setup_code)


@router.get("/residents/{resident_id}", summary="One resident's portal account")
async def get_one_resident(session: SessionDep, principal: UsersRead, resident_id: Id) -> ResidentOut:
    return resident_out(await residents.get_resident(session, principal, resident_id))


@router.post("/residents/{resident_id}/setup-code", summary="A new one-time set-up code (shown once)")
async def post_resident_code(request: Request, principal: UsersManage, resident_id: Id) -> ResidentCreatedOut:
    made = await residents.renew_setup_code(
        request.app.state.sessions, principal, resident_id, ip=client_ip(request)
    )
    return ResidentCreatedOut(**resident_out(made.account).model_dump(), setup_code=made.setup_code)


@router.post("/residents/{resident_id}/deactivate", summary="Deactivate a resident's account")
async def post_deactivate_resident(request: Request, principal: UsersManage, resident_id: Id) -> ResidentOut:
    account = await residents.set_resident_active(
        request.app.state.sessions, principal, resident_id, False, ip=client_ip(request)
    )
    return resident_out(account)


@router.post("/residents/{resident_id}/activate", summary="Reactivate a resident's account")
async def post_activate_resident(request: Request, principal: UsersManage, resident_id: Id) -> ResidentOut:
    account = await residents.set_resident_active(
        request.app.state.sessions, principal, resident_id, True, ip=client_ip(request)
    )
    return resident_out(account)


@router.post("/residents/{resident_id}/unlock", summary="Lift a resident's lockout")
async def post_unlock_resident(request: Request, principal: UsersManage, resident_id: Id) -> ResidentOut:
    account = await residents.unlock_resident(
        request.app.state.sessions, principal, resident_id, ip=client_ip(request)
    )
    return resident_out(account)
