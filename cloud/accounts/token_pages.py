"""The console's API tokens page (``/tokens``): the company's tokens (revoked and expired ones too),
creating one with some scopes, for every site or some, optionally expiring — its value shown this
once — and revoking one.

Tokens are for integrations and the technician app; the accounts service (``tokens``) keeps a
token's scopes within what its creator holds, at the creator's sites.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import Depends, Form, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts import tokens
from cloud.accounts.labels import permission_labels
from cloud.accounts.permissions import Authorize, Forbidden, Permission, Principal
from cloud.accounts.schemas import TokenIn
from cloud.accounts.tokens import NewToken
from cloud.console import visibility
from cloud.console.formkit import FORM_MISTAKES, NO_MISTAKE, Mistake, client_ip, done, parse_date, render_form
from cloud.console.i18n import N_, language_of
from cloud.console.nav import register_nav
from cloud.console.templating import page_router
from cloud.kit.web import SessionDep

P = Permission
router = page_router()

register_nav("tokens", N_("API tokens"), "/tokens", permission=P.TOKENS_MANAGE, order=95)

TokensManage = Annotated[Principal, Depends(Authorize(P.TOKENS_MANAGE))]
MISTAKES = (*FORM_MISTAKES, Forbidden)


async def _tokens_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    cursor: str | None = None,
    mistake: Mistake = NO_MISTAKE,
    created: NewToken | None = None,
) -> Response:
    page = await tokens.list_tokens(session, principal, cursor=cursor)
    sites = await visibility.visible_sites(session, principal, P.TOKENS_MANAGE)
    held = list(Permission) if principal.is_platform else [p for p in Permission if p in principal.grants]
    context: dict[str, Any] = {
        "tokens": page.items,
        "next_cursor": page.next_cursor,
        "created": created,
        "site_names": {s.id: s.name for s in sites},
        "site_options": [(s.id, s.name) for s in sites],
        "scope_options": [p.value for p in held],
        "scope_names": permission_labels(language_of(request, principal)),
        "tz": await visibility.company_zone(session, principal),
        "now": datetime.now(UTC),
    }
    return render_form(request, principal, "accounts/tokens.html", context, mistake)


@router.get("/tokens")
async def tokens_page(
    request: Request,
    session: SessionDep,
    principal: TokensManage,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    return await _tokens_view(request, session, principal, cursor)


@router.post("/tokens")
async def create_token(
    request: Request,
    session: SessionDep,
    principal: TokensManage,
    name: Annotated[str, Form(max_length=200)] = "",
    scopes: Annotated[list[str], Form(max_length=len(Permission))] = [],  # noqa: B006 (FastAPI copies it)
    site_ids: Annotated[list[str], Form(max_length=500)] = [],  # noqa: B006
    expires_on: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Create a token and show its value on the answer itself (never stored, never shown again)."""
    form: dict[str, Any] = {"name": name, "scopes": scopes, "site_ids": site_ids, "expires_on": expires_on}
    try:
        last_day = parse_date(expires_on, "expires_on", required=False)
        expires_at = None
        if last_day is not None:
            # Good through the last day, in the company's zone.
            tz = await visibility.company_zone(session, principal)
            expires_at = datetime.combine(last_day + timedelta(days=1), time(), tz).astimezone(UTC)
        draft = TokenIn(
            name=name,
            scopes=scopes,  # type: ignore[arg-type]
            site_ids=[int(s) for s in site_ids if s.isdigit()] or None,
            expires_at=expires_at,
        )
        made = await tokens.create_token(request.app.state.sessions, principal, draft, ip=client_ip(request))
    except MISTAKES as e:
        return await _tokens_view(request, session, principal, None, Mistake.of(e, form))
    return await _tokens_view(request, session, principal, None, created=made)


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(
    request: Request, principal: TokensManage, token_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> Response:
    row = await tokens.revoke_token(request.app.state.sessions, principal, token_id, ip=client_ip(request))
    return done(request, principal, "/tokens", N_("Token %(name)s revoked."), name=row.name)
