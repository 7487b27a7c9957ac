"""Which company an account belongs to, and that the sites named are that company's. Another
company's object is answered 404, as if it did not exist (``permissions``)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.permissions import Principal
from cloud.kit.errors import InvalidInput, NotFound
from cloud.property.models import Company, Site


async def target_company(session: AsyncSession, principal: Principal, company_id: int | None) -> int:
    """The company a new user or token belongs to: the principal's own; the platform operator,
    who has none, must name it."""
    if principal.is_platform:
        if company_id is None:
            raise InvalidInput("company_id: the platform operator must say which company")
        if await session.get(Company, company_id) is None:
            raise NotFound(f"company_id {company_id}: no such company")
        return company_id
    if company_id is not None and company_id != principal.company_id:
        raise NotFound(f"company_id {company_id}: no such company")
    assert principal.company_id is not None
    return principal.company_id


async def require_sites(
    session: AsyncSession, company_id: int, site_ids: Iterable[int], *, field: str
) -> None:
    """NotFound naming ``field`` for a site that is not the company's."""
    for site_id in site_ids:
        site = await session.get(Site, site_id)
        if site is None or site.company_id != company_id:
            raise NotFound(f"{field}: site {site_id}: no such site")
