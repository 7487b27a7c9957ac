"""Companies, sites, staff and tokens for the tests, written straight to the database (the
accounts and property services have their own tests): a test asks for "a property manager of
site A of company X" in one line and gets a bearer token that stands for exactly that."""

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.authn import token_hash
from cloud.accounts.models import ApiToken, RoleGrant, User
from cloud.accounts.permissions import ROLE_PERMISSIONS, Permission, Role
from cloud.db import SessionFactory
from cloud.property.models import Company, Site


@dataclass(frozen=True)
class Tenant:
    company_id: int
    site_ids: list[int]
    site_codes: list[str]


async def make_company(sessions: SessionFactory, code: str | None = None, sites: int = 1) -> Tenant:
    code = code or f"co-{secrets.token_hex(4)}"
    now = datetime.now(UTC)
    async with sessions() as session:
        company = Company(code=code, name=f"Company {code}", created_at=now)
        session.add(company)
        await session.flush()
        rows = [
            Site(
                company_id=company.id, code=f"{code}-site{i + 1}", name=f"{code} site {i + 1}", created_at=now
            )
            for i in range(sites)
        ]
        session.add_all(rows)
        await session.flush()
        tenant = Tenant(company.id, [s.id for s in rows], [s.code for s in rows])
        await session.commit()
    return tenant


async def make_token(
    sessions: SessionFactory,
    company_id: int,
    scopes: Iterable[Permission | str],
    site_ids: Iterable[int] | None = None,
    name: str = "test",
) -> str:
    """An API token with these scopes (and site limit); returns the bearer token."""
    token = f"ght_{secrets.token_urlsafe(24)}"
    async with sessions() as session:
        session.add(
            ApiToken(
                company_id=company_id,
                name=name,
                token_hash=token_hash(token),
                prefix=token[:8],
                scopes=sorted(str(s) for s in scopes),
                site_ids=None if site_ids is None else list(site_ids),
                created_at=datetime.now(UTC),
            )
        )
        await session.commit()
    return token


async def role_token(
    sessions: SessionFactory, company_id: int, role: Role, site_ids: Iterable[int] | None = None
) -> str:
    """A token standing for a user with ``role`` (at ``site_ids``, or every site)."""
    return await make_token(sessions, company_id, ROLE_PERMISSIONS[role], site_ids, name=role.value)


async def make_user(
    session: AsyncSession,
    company_id: int,
    username: str,
    roles: Iterable[tuple[Role, int | None]] = (),
    password_hash: str | None = None,
) -> User:
    user = User(
        company_id=company_id,
        username=username,
        display_name=username,
        password_hash=password_hash,
        created_at=datetime.now(UTC),
    )
    session.add(user)
    await session.flush()
    for role, site_id in roles:
        session.add(RoleGrant(company_id=company_id, user_id=user.id, role=role.value, site_id=site_id))
    await session.flush()
    return user


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
