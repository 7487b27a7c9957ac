"""What every property service does before and after its work: find an object within the
principal's company (another company's answers NotFound, as if it did not exist), check the
principal's permission at the object's site, page a list by id, record the change in the audit log,
and turn a constraint the database caught into a Conflict.

The services flush and never commit: the caller (an API route, a console page) commits, so a
change and its audit entry are one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.inspection import inspect

from cloud.accounts.permissions import Forbidden, Permission, Principal
from cloud.audit.chain import record
from cloud.kit.errors import Conflict, InvalidInput, NotFound
from cloud.kit.pagination import decode_cursor, encode_cursor
from cloud.models import Base
from cloud.property.models import Company, Site

M = TypeVar("M", bound=Base)
T = TypeVar("T")

DEFAULT_PAGE = 50
MAX_PAGE = 500


class InUse(Conflict):
    """A delete refused: other rows still refer to this one."""

    code = "in_use"


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


async def load(session: AsyncSession, principal: Principal, model: type[M], object_id: int, what: str) -> M:
    """The row of ``model`` with this id in the principal's company; NotFound otherwise."""
    company_id = model.company_id if model is not Company else model.id  # type: ignore[attr-defined]
    stmt: Select[M] = select(model).where(
        model.id == object_id,  # type: ignore[attr-defined]
        principal.company_clause(company_id),
    )
    row = await session.scalar(stmt)
    if row is None:
        raise NotFound(f"{what} {object_id}: no such {what}")
    return row


async def site_for(session: AsyncSession, principal: Principal, site_id: int, permission: Permission) -> Site:
    """The site, if it is the principal's company's (NotFound) and ``permission`` holds there (Forbidden)."""
    site = await load(session, principal, Site, site_id, "site")
    principal.require(permission, site.id)
    return site


def require_everywhere(principal: Principal, permission: Permission, what: str) -> None:
    """Forbidden unless ``permission`` holds for every site of the company: what is not one site's
    (a new site, the company's departments) is not for a principal limited to some sites."""
    principal.require(permission)
    if principal.sites(permission) is not None:
        raise Forbidden(f"{principal.name}: {what} needs {permission.value} for every site, not only some")


async def company_for(session: AsyncSession, principal: Principal, company_id: int | None) -> int:
    """The company a new row belongs to: the principal's own; the platform must name one."""
    if principal.is_platform:
        if company_id is None:
            raise InvalidInput("company_id: the platform token must say which company")
        await load(session, principal, Company, company_id, "company")
        return company_id
    assert principal.company_id is not None
    if company_id is not None and company_id != principal.company_id:
        raise NotFound(f"company {company_id}: no such company")
    return principal.company_id


async def page(
    session: AsyncSession, stmt: Select[M], model: type[M], cursor: str | None, limit: int
) -> Page[M]:
    """One page of ``stmt`` in id order, from after the cursor's id."""
    id_column = model.id  # type: ignore[attr-defined]
    if cursor is not None:
        stmt = stmt.where(id_column > decode_cursor(cursor))
    limit = max(1, min(limit, MAX_PAGE))
    rows = list((await session.scalars(stmt.order_by(id_column).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more else None)  # type: ignore[attr-defined]


def snapshot(row: Base) -> dict[str, Any]:
    """The row's columns, for the audit log's before and after."""
    return {c.key: getattr(row, c.key) for c in inspect(type(row)).column_attrs}


def apply(row: Base, fields: Mapping[str, Any], required: Iterable[str] = ()) -> bool:
    """Set ``fields`` on ``row``; InvalidInput for a null in a ``required`` field. True if anything
    changed."""
    for name in required:
        if name in fields and fields[name] is None:
            raise InvalidInput(f"{name}: cannot be null")
    changed = False
    for name, value in fields.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


async def audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    row: Base,
    *,
    company_id: int,
    site_id: int | None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    ip: str = "",
) -> None:
    await record(
        session,
        principal,
        action,
        row.__tablename__,
        row.id,  # type: ignore[attr-defined]
        company_id=company_id,
        site_id=site_id,
        before=before,
        after=after,
        ip=ip,
    )


async def flush(session: AsyncSession, conflict: str) -> None:
    """Flush; a constraint the database caught (a race past our own checks) is a Conflict."""
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise Conflict(conflict) from None


async def refuse_if_used(session: AsyncSession, what: str, uses: Iterable[tuple[str, Select[Any]]]) -> None:
    """InUse naming the first kind of row that still refers to the one being deleted."""
    for label, stmt in uses:
        if await session.scalar(stmt.limit(1)) is not None:
            raise InUse(f"{what} is still referred to by {label}: remove or move those first")


async def delete(session: AsyncSession, row: Base, what: str) -> None:
    """Delete and flush; a reference we did not check (a newer module's table) is InUse too."""
    await session.delete(row)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise InUse(f"{what} is still referred to by other records") from None
