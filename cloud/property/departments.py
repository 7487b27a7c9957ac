"""The company's departments (工程部, 客服部, 保安部…), in a tree: where staff sit in the organisation.

They are the company's, not a site's: reading needs USERS_READ, changing USERS_MANAGE for every site.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import User
from cloud.accounts.permissions import Permission, Principal
from cloud.kit.errors import Conflict, InvalidInput
from cloud.property.models import Department
from cloud.property.schemas import DepartmentIn, DepartmentPatch, patch_fields
from cloud.property.scope import (
    DEFAULT_PAGE,
    Page,
    apply,
    audit,
    company_for,
    delete,
    flush,
    load,
    page,
    refuse_if_used,
    require_everywhere,
    snapshot,
)

P = Permission
MAX_DEPTH = 32


async def list_departments(
    session: AsyncSession,
    principal: Principal,
    *,
    company_id: int | None = None,
    parent_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[Department]:
    principal.require(P.USERS_READ)
    stmt = select(Department).where(principal.company_clause(Department.company_id))
    if company_id is not None:
        stmt = stmt.where(Department.company_id == company_id)
    if parent_id is not None:
        stmt = stmt.where(Department.parent_id == parent_id)
    return await page(session, stmt, Department, cursor, limit)


async def get_department(session: AsyncSession, principal: Principal, department_id: int) -> Department:
    principal.require(P.USERS_READ)
    return await load(session, principal, Department, department_id, "department")


async def _name_free(
    session: AsyncSession, company_id: int, name: str, department_id: int | None = None
) -> None:
    stmt = select(Department.id).where(Department.company_id == company_id, Department.name == name)
    if department_id is not None:
        stmt = stmt.where(Department.id != department_id)
    if await session.scalar(stmt) is not None:
        raise Conflict(f"name: the company already has a department {name!r}")


async def _check_parent(
    session: AsyncSession, principal: Principal, company_id: int, parent_id: int, department_id: int | None
) -> None:
    """The parent must be the company's, and not the department itself or one below it."""
    parent = await load(session, principal, Department, parent_id, "department")
    if parent.company_id != company_id:
        raise InvalidInput(f"parent_id: department {parent_id} is of another company")
    cursor: Department | None = parent
    for _ in range(MAX_DEPTH):
        if cursor is None:
            return
        if department_id is not None and cursor.id == department_id:
            raise InvalidInput(f"parent_id: department {parent_id} is this department or one below it")
        cursor = await session.get(Department, cursor.parent_id) if cursor.parent_id is not None else None
    raise InvalidInput(f"parent_id: departments nest at most {MAX_DEPTH} deep")


async def create_department(
    session: AsyncSession, principal: Principal, data: DepartmentIn, *, ip: str = ""
) -> Department:
    require_everywhere(principal, P.USERS_MANAGE, "changing departments")
    company_id = await company_for(session, principal, data.company_id)
    await _name_free(session, company_id, data.name)
    if data.parent_id is not None:
        await _check_parent(session, principal, company_id, data.parent_id, None)
    department = Department(company_id=company_id, name=data.name, parent_id=data.parent_id)
    session.add(department)
    await flush(session, f"name: the company already has a department {data.name!r}")
    await audit(
        session, principal, "department.create", department, company_id=company_id, site_id=None,
        after=snapshot(department), ip=ip,
    )  # fmt: skip
    return department


async def update_department(
    session: AsyncSession, principal: Principal, department_id: int, patch: DepartmentPatch, *, ip: str = ""
) -> Department:
    department = await load(session, principal, Department, department_id, "department")
    require_everywhere(principal, P.USERS_MANAGE, "changing departments")
    fields = patch_fields(patch)
    if fields.get("name") is not None:
        await _name_free(session, department.company_id, fields["name"], department.id)
    if fields.get("parent_id") is not None:
        await _check_parent(session, principal, department.company_id, fields["parent_id"], department.id)
    before = snapshot(department)
    if apply(department, fields, required=("name",)):
        await flush(session, "name: the company already has a department with that name")
        await audit(
            session, principal, "department.update", department, company_id=department.company_id,
            site_id=None, before=before, after=snapshot(department), ip=ip,
        )  # fmt: skip
    return department


async def delete_department(
    session: AsyncSession, principal: Principal, department_id: int, *, ip: str = ""
) -> None:
    department = await load(session, principal, Department, department_id, "department")
    require_everywhere(principal, P.USERS_MANAGE, "changing departments")
    what = f"department {department.name!r}"
    await refuse_if_used(
        session,
        what,
        [
            ("staff", select(User.id).where(User.department_id == department.id)),
            ("departments below it", select(Department.id).where(Department.parent_id == department.id)),
        ],
    )
    await audit(
        session, principal, "department.delete", department, company_id=department.company_id, site_id=None,
        before=snapshot(department), ip=ip,
    )  # fmt: skip
    await delete(session, department, what)
