"""Staff accounts: add, change, deactivate, reset passwords, unlock, grant and revoke roles.

Reads take the request's database session; changes open their own transaction (as the access
service does) so that the change and its audit entry commit together, whoever calls them (the
API or the console). Another company's user is answered 404, and every change obeys delegation:
nobody manages someone who holds more than they do, nor gives a role they could not hold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts import logins
from cloud.accounts.delegation import require_outranks, require_role_delegable
from cloud.accounts.models import RoleGrant, User
from cloud.accounts.passwords import check_policy, hash_password
from cloud.accounts.permissions import Principal, Role
from cloud.accounts.schemas import RoleIn, UserIn, UserPatch
from cloud.accounts.sessions import end_user_sessions
from cloud.accounts.tenancy import require_sites, target_company
from cloud.audit.chain import record
from cloud.db import SessionFactory
from cloud.kit.errors import Conflict, InvalidInput, NotFound
from cloud.kit.pagination import decode_cursor, encode_cursor
from cloud.property.models import Department

DEFAULT_PAGE = 50
MAX_PAGE = 500
# The profile fields shown in the audit log (never a hash or a secret).
_PROFILE = ("username", "display_name", "email", "phone", "department_id", "language", "active")


@dataclass
class StaffMember:
    user: User
    roles: list[RoleGrant] = field(default_factory=list)

    def role_pairs(self) -> list[tuple[Role, int | None]]:
        return [(Role(g.role), g.site_id) for g in self.roles]


@dataclass
class StaffPage:
    items: list[StaffMember]
    next_cursor: str | None


def _now() -> datetime:
    return datetime.now(UTC)


def profile(user: User) -> dict[str, Any]:
    return {name: getattr(user, name) for name in _PROFILE}


# --- reading ----------------------------------------------------------------------------------


async def list_users(
    session: AsyncSession,
    principal: Principal,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
    active: bool | None = None,
) -> StaffPage:
    """The principal's company's staff by id (the platform: every company's)."""
    stmt = select(User).where(principal.company_clause(User.company_id))
    if active is not None:
        stmt = stmt.where(User.active.is_(active))
    if cursor:
        stmt = stmt.where(User.id > decode_cursor(cursor))
    users = list((await session.scalars(stmt.order_by(User.id).limit(limit + 1))).all())
    more = len(users) > limit
    users = users[:limit]
    roles = await _roles_of(session, [u.id for u in users])
    return StaffPage(
        [StaffMember(u, roles.get(u.id, [])) for u in users],
        encode_cursor(users[-1].id) if more and users else None,
    )


async def get_user(session: AsyncSession, principal: Principal, user_id: int) -> StaffMember:
    user = await _user(session, principal, user_id)
    return StaffMember(user, (await _roles_of(session, [user.id])).get(user.id, []))


async def _roles_of(session: AsyncSession, user_ids: Sequence[int]) -> dict[int, list[RoleGrant]]:
    found: dict[int, list[RoleGrant]] = defaultdict(list)
    if user_ids:
        rows = await session.scalars(
            select(RoleGrant).where(RoleGrant.user_id.in_(user_ids)).order_by(RoleGrant.id)
        )
        for grant in rows:
            found[grant.user_id].append(grant)
    return found


async def _user(session: AsyncSession, principal: Principal, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None or not (principal.is_platform or user.company_id == principal.company_id):
        raise NotFound(f"user {user_id}: no such user")
    return user


# --- changing ---------------------------------------------------------------------------------


async def create_user(
    sessions: SessionFactory, principal: Principal, draft: UserIn, *, ip: str = ""
) -> StaffMember:
    """A new staff member, with the roles given (each one the principal could give)."""
    username = logins.username(draft.username)
    password_hash = None
    if draft.password is not None:
        check_policy(draft.password, username=username)
        password_hash = await hash_password(draft.password)
    async with sessions() as session, session.begin():
        company_id = await target_company(session, principal, draft.company_id)
        roles = [await _checked_role(session, principal, company_id, r) for r in draft.roles]
        if len(set(roles)) != len(roles):
            raise InvalidInput("roles: the same role and site are given twice")
        if draft.department_id is not None:
            await _require_department(session, company_id, draft.department_id)
        if await session.scalar(select(User.id).where(User.username == username)) is not None:
            raise Conflict(f"username: {username!r} is taken")
        user = User(
            company_id=company_id,
            username=username,
            display_name=draft.display_name.strip(),
            email=logins.email(draft.email),
            phone=logins.phone(draft.phone),
            department_id=draft.department_id,
            language=draft.language,
            password_hash=password_hash,
            created_at=_now(),
        )
        session.add(user)
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict(f"username: {username!r} is taken") from None
        grants = [
            RoleGrant(company_id=company_id, user_id=user.id, role=r.value, site_id=s) for r, s in roles
        ]
        session.add_all(grants)
        await session.flush()
        await record(
            session,
            principal,
            "user.create",
            "user",
            user.id,
            company_id=company_id,
            after={
                **profile(user),
                "can_sign_in": password_hash is not None,
                "roles": [{"role": r.value, "site_id": s} for r, s in roles],
            },
            ip=ip,
        )
        return StaffMember(user, grants)


async def update_user(
    sessions: SessionFactory, principal: Principal, user_id: int, patch: UserPatch, *, ip: str = ""
) -> StaffMember:
    """Change the fields given in ``patch`` (a field left out stays as it is)."""
    given = patch.model_fields_set
    async with sessions() as session, session.begin():
        member = await _managed(session, principal, user_id)
        user = member.user
        before = profile(user)
        if "display_name" in given and patch.display_name is not None:
            user.display_name = patch.display_name.strip()
        if "email" in given and patch.email is not None:
            user.email = logins.email(patch.email)
        if "phone" in given and patch.phone is not None:
            user.phone = logins.phone(patch.phone)
        if "language" in given and patch.language is not None:
            user.language = patch.language
        if "department_id" in given:
            if patch.department_id is not None:
                await _require_department(session, user.company_id, patch.department_id)
            user.department_id = patch.department_id
        after = profile(user)
        if after != before:
            await _audit_change(session, principal, "user.update", user, before, after, ip)
        return member


async def set_active(
    sessions: SessionFactory, principal: Principal, user_id: int, active: bool, *, ip: str = ""
) -> StaffMember:
    """Deactivate (sign-in refused, sessions ended; the account and its history stay) or
    reactivate a user."""
    async with sessions() as session, session.begin():
        member = await _managed(session, principal, user_id)
        user = member.user
        if user.active == active:
            return member
        if not active:
            if principal.kind == "user" and principal.id == user.id:
                raise Conflict("you cannot deactivate your own account")
            await _keep_an_administrator(session, member, losing=None)
            await end_user_sessions(session, user.id)
        before = profile(user)
        user.active = active
        await _audit_change(
            session,
            principal,
            "user.activate" if active else "user.deactivate",
            user,
            before,
            profile(user),
            ip,
        )
        return member


async def reset_password(
    sessions: SessionFactory, principal: Principal, user_id: int, password: str | None, *, ip: str = ""
) -> StaffMember:
    """Set a user's password (an administrator's reset; None: the user can no longer sign in with
    one). The user's sessions end and a lock is lifted."""
    async with sessions() as session:
        username = (await _user(session, principal, user_id)).username
    new_hash = None
    if password is not None:
        check_policy(password, username=username)
        new_hash = await hash_password(password)
    async with sessions() as session, session.begin():
        member = await _managed(session, principal, user_id)
        user = member.user
        user.password_hash = new_hash
        user.failed_logins = 0
        user.locked_until = None
        await end_user_sessions(session, user.id, keep=principal.session_hash)
        await record(
            session,
            principal,
            "user.password.reset",
            "user",
            user.id,
            company_id=user.company_id,
            after={"can_sign_in": new_hash is not None},
            ip=ip,
        )
        return member


async def unlock_user(
    sessions: SessionFactory, principal: Principal, user_id: int, *, ip: str = ""
) -> StaffMember:
    async with sessions() as session, session.begin():
        member = await _managed(session, principal, user_id)
        user = member.user
        before = {"failed_logins": user.failed_logins, "locked_until": user.locked_until}
        user.failed_logins = 0
        user.locked_until = None
        await record(
            session,
            principal,
            "user.unlock",
            "user",
            user.id,
            company_id=user.company_id,
            before=before,
            ip=ip,
        )
        return member


async def reset_totp(
    sessions: SessionFactory, principal: Principal, user_id: int, *, ip: str = ""
) -> StaffMember:
    """Turn a user's second factor off (a lost phone): they sign in with the password alone and
    can enrol again."""
    async with sessions() as session, session.begin():
        member = await _managed(session, principal, user_id)
        user = member.user
        was = user.totp_enabled
        user.totp_enabled = False
        user.totp_secret = None
        await record(
            session,
            principal,
            "user.totp.reset",
            "user",
            user.id,
            company_id=user.company_id,
            before={"totp_enabled": was},
            after={"totp_enabled": False},
            ip=ip,
        )
        return member


async def grant_role(
    sessions: SessionFactory, principal: Principal, user_id: int, role: RoleIn, *, ip: str = ""
) -> StaffMember:
    async with sessions() as session, session.begin():
        user = await _user(session, principal, user_id)
        checked = await _checked_role(session, principal, user.company_id, role)
        existing = await session.scalar(
            select(RoleGrant.id).where(
                RoleGrant.user_id == user.id,
                RoleGrant.role == checked[0].value,
                RoleGrant.site_id.is_(None) if checked[1] is None else RoleGrant.site_id == checked[1],
            )
        )
        if existing is not None:
            raise Conflict(f"user {user.id} already has {role.role.value} {_where(role.site_id)}")
        grant = RoleGrant(
            company_id=user.company_id, user_id=user.id, role=checked[0].value, site_id=checked[1]
        )
        session.add(grant)
        await session.flush()
        await record(
            session,
            principal,
            "user.role.grant",
            "user",
            user.id,
            company_id=user.company_id,
            site_id=checked[1],
            after={"grant_id": grant.id, "role": grant.role, "site_id": grant.site_id},
            ip=ip,
        )
        return StaffMember(user, (await _roles_of(session, [user.id])).get(user.id, []))


async def revoke_role(
    sessions: SessionFactory, principal: Principal, user_id: int, grant_id: int, *, ip: str = ""
) -> StaffMember:
    async with sessions() as session, session.begin():
        user = await _user(session, principal, user_id)
        grant = await session.get(RoleGrant, grant_id)
        if grant is None or grant.user_id != user.id:
            raise NotFound(f"role grant {grant_id}: user {user_id} has no such grant")
        require_role_delegable(principal, Role(grant.role), grant.site_id)
        member = StaffMember(user, (await _roles_of(session, [user.id])).get(user.id, []))
        await _keep_an_administrator(session, member, losing=grant)
        await session.delete(grant)
        await session.flush()
        await record(
            session,
            principal,
            "user.role.revoke",
            "user",
            user.id,
            company_id=user.company_id,
            site_id=grant.site_id,
            before={"grant_id": grant.id, "role": grant.role, "site_id": grant.site_id},
            ip=ip,
        )
        return StaffMember(user, [g for g in member.roles if g.id != grant.id])


# --- the checks -------------------------------------------------------------------------------


async def _managed(session: AsyncSession, principal: Principal, user_id: int) -> StaffMember:
    """The user, if the principal may manage them: same company, and holding nothing the
    principal does not hold (else a site manager could reset the administrator's password)."""
    member = await get_user(session, principal, user_id)
    require_outranks(principal, member.role_pairs(), who=f"user {user_id}")
    return member


async def _checked_role(
    session: AsyncSession, principal: Principal, company_id: int, role: RoleIn
) -> tuple[Role, int | None]:
    if role.site_id is not None:
        await require_sites(session, company_id, [role.site_id], field="site_id")
    require_role_delegable(principal, role.role, role.site_id)
    return role.role, role.site_id


async def _require_department(session: AsyncSession, company_id: int, department_id: int) -> None:
    department = await session.get(Department, department_id)
    if department is None or department.company_id != company_id:
        raise NotFound(f"department_id {department_id}: no such department")


async def _keep_an_administrator(
    session: AsyncSession, member: StaffMember, *, losing: RoleGrant | None
) -> None:
    """Conflict if the change would leave the company without an active administrator for
    every site: nobody could then manage its accounts but the platform operator."""
    admin_grants = [g for g in member.roles if g.role == Role.COMPANY_ADMIN.value and g.site_id is None]
    if not member.user.active or not admin_grants:
        return
    if losing is not None and (len(admin_grants) > 1 or losing.id != admin_grants[0].id):
        return
    others = await session.scalar(
        select(func.count())
        .select_from(RoleGrant)
        .join(User, User.id == RoleGrant.user_id)
        .where(
            RoleGrant.company_id == member.user.company_id,
            RoleGrant.role == Role.COMPANY_ADMIN.value,
            RoleGrant.site_id.is_(None),
            RoleGrant.user_id != member.user.id,
            User.active.is_(True),
        )
    )
    if not others:
        raise Conflict(
            f"user {member.user.id} is the company's last administrator: make someone else "
            "company_admin first"
        )


async def _audit_change(
    session: AsyncSession,
    principal: Principal,
    action: str,
    user: User,
    before: dict[str, Any],
    after: dict[str, Any],
    ip: str,
) -> None:
    changed = [k for k in after if after[k] != before.get(k)]
    await record(
        session,
        principal,
        action,
        "user",
        user.id,
        company_id=user.company_id,
        before={k: before[k] for k in changed},
        after={k: after[k] for k in changed},
        ip=ip,
    )


def _where(site_id: int | None) -> str:
    return "at every site" if site_id is None else f"at site {site_id}"
