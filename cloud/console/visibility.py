"""What a principal may see, as the console's pages ask it: its company's sites and gateways,
narrowed to the sites a permission holds for. Another company's site or gateway, or one outside
the principal's sites, is NotFound (404): the page does not say that it exists."""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.permissions import Permission, Principal
from cloud.console.zones import zone
from cloud.events import scope as events_scope
from cloud.kit.errors import NotFound
from cloud.models import Gateway
from cloud.property.models import Company, Site

# A dashboard or a filter lists this many sites or gateways at most; a company with more uses
# the property and gateway pages, which page.
LIST_LIMIT = 500


async def visible_sites(session: AsyncSession, principal: Principal, permission: Permission) -> list[Site]:
    """The sites of the principal's company where it holds ``permission``, by name."""
    stmt = (
        select(Site)
        .where(principal.company_clause(Site.company_id), principal.site_clause(permission, Site.id))
        .order_by(Site.name, Site.id)
        .limit(LIST_LIMIT)
    )
    return list((await session.scalars(stmt)).all())


async def get_site(session: AsyncSession, principal: Principal, site_id: int, permission: Permission) -> Site:
    """The site, if it is the principal's company's and ``permission`` holds there; else NotFound."""
    site = await session.get(Site, site_id)
    if site is None or not principal.can(permission, site_id):
        raise NotFound(f"site {site_id}: no such site")
    principal.require_company(site.company_id)
    return site


async def visible_gateways(
    session: AsyncSession, principal: Principal, permission: Permission, site_id: int | None = None
) -> list[Gateway]:
    """The gateways of the principal's company at sites where ``permission`` holds (only those
    of ``site_id`` if given), by id. A gateway of the company not yet placed at a site is seen
    only by a principal whose permission holds for every site."""
    stmt = select(Gateway).where(
        principal.company_clause(Gateway.company_id), principal.site_clause(permission, Gateway.site_id)
    )
    if site_id is not None:
        stmt = stmt.where(Gateway.site_id == site_id)
    stmt = stmt.order_by(Gateway.id).limit(LIST_LIMIT)
    return list((await session.scalars(stmt)).all())


async def visible_gateway_ids(
    session: AsyncSession, principal: Principal, permission: Permission, site_id: int | None = None
) -> list[str] | None:
    """The gateways whose events (or other data under ``permission``) the principal may read:
    cloud.events.scope decides (None: no restriction, the platform over all sites)."""
    return await events_scope.visible_gateway_ids(session, principal, permission, site_id)


async def get_gateway(
    session: AsyncSession, principal: Principal, gateway_id: str, permission: Permission
) -> Gateway:
    """The gateway, if the principal may use ``permission`` at its site; else NotFound."""
    gateway = await session.get(Gateway, gateway_id)
    if gateway is None:
        raise NotFound(f"gateway {gateway_id!r}: no such gateway")
    if not principal.is_platform:
        if gateway.company_id != principal.company_id:
            raise NotFound(f"gateway {gateway_id!r}: no such gateway")
        scope = principal.sites(permission)
        if scope is not None and gateway.site_id not in scope:
            raise NotFound(f"gateway {gateway_id!r}: no such gateway")
    return gateway


async def company_zone(session: AsyncSession, principal: Principal) -> ZoneInfo:
    """The zone of the principal's company (the default zone for the platform)."""
    if principal.company_id is None:
        return zone(None)
    name = await session.scalar(select(Company.timezone).where(Company.id == principal.company_id))
    return zone(name)


async def site_zones(session: AsyncSession, site_ids: Sequence[int]) -> dict[int, ZoneInfo]:
    """Each site's zone, for pages that show times of several sites."""
    if not site_ids:
        return {}
    rows = await session.execute(select(Site.id, Site.timezone).where(Site.id.in_(sorted(set(site_ids)))))
    return {row.id: zone(row.timezone) for row in rows}
