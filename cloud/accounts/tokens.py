"""API tokens for integrations and the technician app: scoped, optionally to some sites,
optionally expiring, revocable.

A token is ``ght_`` and 32 random bytes (base64url): shown once at creation, kept as its SHA-256
(``authn`` looks it up by that). Its scopes are permissions the creator holds, at sites where the
creator holds them: a token is never a way to more than one has.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.authn import token_hash
from cloud.accounts.delegation import require_delegable
from cloud.accounts.models import ApiToken
from cloud.accounts.permissions import Principal
from cloud.accounts.schemas import TokenIn
from cloud.accounts.tenancy import require_sites, target_company
from cloud.audit.chain import record
from cloud.db import SessionFactory
from cloud.kit.errors import InvalidInput, NotFound
from cloud.kit.pagination import decode_cursor, encode_cursor

TOKEN_PREFIX = "ght_"
PREFIX_SHOWN = 12  # "ght_" and 8 characters: enough to tell tokens apart in a list
DEFAULT_PAGE = 50
MAX_PAGE = 500


@dataclass(frozen=True)
class NewToken:
    row: ApiToken
    token: str  # the bearer token, for the creator's eyes only


@dataclass
class TokenPage:
    items: list[ApiToken]
    next_cursor: str | None


def new_token_value() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_token(
    sessions: SessionFactory, principal: Principal, draft: TokenIn, *, ip: str = ""
) -> NewToken:
    now = datetime.now(UTC)
    expires_at = draft.expires_at
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidInput("expires_at: give the time with its zone, e.g. 2030-01-01T00:00:00Z")
        if expires_at <= now:
            raise InvalidInput("expires_at: must be in the future")
    scopes = sorted(set(draft.scopes))
    site_ids = None if draft.site_ids is None else sorted(set(draft.site_ids))
    if site_ids is not None and not site_ids:
        raise InvalidInput("site_ids: give at least one site, or null for every site")
    async with sessions() as session, session.begin():
        company_id = await target_company(session, principal, draft.company_id)
        await require_sites(session, company_id, site_ids or [], field="site_ids")
        require_delegable(principal, scopes, site_ids, what="scopes")
        value = new_token_value()
        row = ApiToken(
            company_id=company_id,
            name=draft.name.strip(),
            token_hash=token_hash(value),
            prefix=value[:PREFIX_SHOWN],
            scopes=[s.value for s in scopes],
            site_ids=site_ids,
            created_by=principal.id if principal.kind == "user" else None,
            created_at=now,
            expires_at=expires_at,
        )
        session.add(row)
        await session.flush()
        await record(
            session,
            principal,
            "token.create",
            "api_token",
            row.id,
            company_id=company_id,
            after={
                "name": row.name,
                "prefix": row.prefix,
                "scopes": row.scopes,
                "site_ids": row.site_ids,
                "expires_at": row.expires_at,
            },
            ip=ip,
        )
        return NewToken(row, value)


async def list_tokens(
    session: AsyncSession, principal: Principal, *, cursor: str | None = None, limit: int = DEFAULT_PAGE
) -> TokenPage:
    """The company's tokens by id, revoked and expired ones too (they say when)."""
    stmt = select(ApiToken).where(principal.company_clause(ApiToken.company_id))
    if cursor:
        stmt = stmt.where(ApiToken.id > decode_cursor(cursor))
    rows = list((await session.scalars(stmt.order_by(ApiToken.id).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return TokenPage(rows, encode_cursor(rows[-1].id) if more and rows else None)


async def get_token(session: AsyncSession, principal: Principal, token_id: int) -> ApiToken:
    row = await session.get(ApiToken, token_id)
    if row is None or not (principal.is_platform or row.company_id == principal.company_id):
        raise NotFound(f"token {token_id}: no such token")
    return row


async def revoke_token(
    sessions: SessionFactory, principal: Principal, token_id: int, *, ip: str = ""
) -> ApiToken:
    """Revoke a token: refused from the next request on. Revoking twice changes nothing."""
    async with sessions() as session, session.begin():
        row = await get_token(session, principal, token_id)
        if row.revoked_at is not None:
            return row
        row.revoked_at = datetime.now(UTC)
        await record(
            session,
            principal,
            "token.revoke",
            "api_token",
            row.id,
            company_id=row.company_id,
            after={"name": row.name, "prefix": row.prefix, "revoked_at": row.revoked_at},
            ip=ip,
        )
        return row
