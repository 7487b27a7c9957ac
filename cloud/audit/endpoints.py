"""The audit API under /api/v1: the company's audit log, filtered and paged newest first, and a
check of its hash chain.

Both need ``audit.read``. A company principal sees its own company's entries, and a principal
whose ``audit.read`` is limited to some sites only the entries of those sites (not the
company-wide ones, such as a role granted); the platform sees every chain, the platform's own
(company 0) included, or one with ``company_id``.
"""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.audit.chain import verify
from cloud.audit.models import AuditEntry
from cloud.kit.errors import NotFound
from cloud.kit.pagination import decode_cursor, encode_cursor
from cloud.kit.web import SessionDep

router = APIRouter(tags=["audit"])

Auditor = Annotated[Principal, Depends(Authorize(Permission.AUDIT_READ))]

MAX_PAGE = 500
DEFAULT_PAGE = 100
MAX_ID = 2**63 - 1
# Text filters: bounded, and no NUL (PostgreSQL text cannot hold one: it would be a server error).
NO_NUL = r"^[^\x00]*$"
MAX_TEXT = 200


class AuditEntryOut(BaseModel):
    id: int
    company_id: int = Field(description="The chain: the company's id, 0 for the platform's own actions")
    seq: int = Field(description="The entry's place in its chain: 1, 2, 3...")
    at: datetime
    actor: str = Field(description='"user:12", "token:3", "platform"...')
    actor_name: str = Field(description="As the actor was called when it acted")
    action: str
    target_type: str
    target_id: str
    site_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ip: str
    prev_hash: str
    hash: str


class AuditPageOut(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


class ProblemOut(BaseModel):
    company_id: int
    seq: int | None = Field(description="The entry concerned (or where the chain breaks)")
    reason: str


class VerificationOut(BaseModel):
    ok: bool = Field(description="True when every chain checked is unbroken")
    entries: int
    chains: int
    problems: list[ProblemOut]


def _chain(principal: Principal, company_id: int | None) -> int | None:
    """The one chain to look at: the principal's company's; the platform's pick (None: all)."""
    if principal.is_platform:
        return company_id
    if company_id is not None and company_id != principal.company_id:
        raise NotFound(f"company_id: no company {company_id}")
    return principal.company_id


@router.get(
    "/audit",
    summary="The audit log, newest first",
    description="Who changed what and when: money, contracts, people, users, roles and tokens, "
    "gateway credentials, access data, every command to a gateway (remote unlocks included) and "
    "every alarm acknowledged or silenced, with the values before and after. Filters combine.",
)
async def get_audit(
    session: SessionDep,
    principal: Auditor,
    action: Annotated[
        str | None,
        Query(
            max_length=MAX_TEXT,
            pattern=NO_NUL,
            description="Actions starting with this, e.g. door. or access.",
        ),
    ] = None,
    target_type: Annotated[
        str | None, Query(max_length=MAX_TEXT, pattern=NO_NUL, description="e.g. door, gateway, unit")
    ] = None,
    target_id: Annotated[str | None, Query(max_length=MAX_TEXT, pattern=NO_NUL)] = None,
    actor: Annotated[
        str | None, Query(max_length=MAX_TEXT, pattern=NO_NUL, description='e.g. "user:12", "platform"')
    ] = None,
    since: Annotated[datetime | None, Query(description="ISO-8601; at or after this (no zone: UTC)")] = None,
    until: Annotated[datetime | None, Query(description="ISO-8601; before this (no zone: UTC)")] = None,
    company_id: Annotated[
        int | None,
        Query(ge=0, le=MAX_ID, description="The platform only: one company's chain (0: the platform's)"),
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=64, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> AuditPageOut:
    stmt = select(AuditEntry)
    chain = _chain(principal, company_id)
    if chain is not None:
        stmt = stmt.where(AuditEntry.company_id == chain)
    stmt = stmt.where(principal.site_clause(Permission.AUDIT_READ, AuditEntry.site_id))
    if action:
        stmt = stmt.where(AuditEntry.action.startswith(action, autoescape=True))
    if target_type is not None:
        stmt = stmt.where(AuditEntry.target_type == target_type)
    if target_id is not None:
        stmt = stmt.where(AuditEntry.target_id == target_id)
    if actor is not None:
        stmt = stmt.where(AuditEntry.actor == actor)
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= _utc(since))
    if until is not None:
        stmt = stmt.where(AuditEntry.at < _utc(until))
    if cursor:
        stmt = stmt.where(AuditEntry.id < decode_cursor(cursor))
    rows = (await session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPageOut(
        items=[AuditEntryOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )


@router.get(
    "/audit/verify",
    summary="Check the audit log's hash chain",
    description="Walks the company's chain (the platform: every chain, or one with company_id) and "
    "reports each entry changed after it was written, each gap, and a tail removed. ok is true when "
    "there is no problem.",
)
async def get_audit_verify(
    session: SessionDep,
    principal: Auditor,
    company_id: Annotated[
        int | None,
        Query(ge=0, le=MAX_ID, description="The platform only: one company's chain (0: the platform's)"),
    ] = None,
) -> VerificationOut:
    result = await verify(session, _chain(principal, company_id))
    return VerificationOut(
        ok=result.ok,
        entries=result.entries,
        chains=result.chains,
        problems=[ProblemOut(company_id=p.company_id, seq=p.seq, reason=p.reason) for p in result.problems],
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
