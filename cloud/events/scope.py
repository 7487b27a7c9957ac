"""Whose events a principal may read: those of the gateways at its company's sites where it holds
the permission (events.read by default).

Events carry a gateway id and nothing else about their owner: tenancy is decided once, here, by
turning the principal into the list of gateway ids its queries are limited to. A gateway is
placed at a site (``Gateway.company_id``, ``site_id``); one of the company not yet placed at a site
is seen only by a principal whose permission holds for every site, and a gateway of no company
only by the platform.
"""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.permissions import Permission, Principal
from cloud.kit.errors import NotFound
from cloud.models import Gateway
from cloud.property.models import Site


async def visible_gateway_ids(
    session: AsyncSession,
    principal: Principal,
    permission: Permission = Permission.EVENTS_READ,
    site_id: int | None = None,
) -> list[str] | None:
    """The ids of the gateways whose events ``principal`` may read (only those at ``site_id`` if
    given), sorted; None means no restriction (the platform over every site), an empty list
    that there is nothing to see. A ``site_id`` of another company, one the permission does not
    hold for, or none at all is NotFound: the answer does not say whether it exists."""
    if site_id is not None:
        site_company = await session.scalar(select(Site.company_id).where(Site.id == site_id))
        foreign = not principal.is_platform and site_company != principal.company_id
        if site_company is None or foreign or not principal.can(permission, site_id):
            raise NotFound(f"site_id: no site {site_id}")
    elif principal.is_platform:
        return None
    if not principal.can(permission):
        return []
    stmt = select(Gateway.id).where(
        principal.company_clause(Gateway.company_id), principal.site_clause(permission, Gateway.site_id)
    )
    if site_id is not None:
        stmt = stmt.where(Gateway.site_id == site_id)
    return list((await session.scalars(stmt.order_by(Gateway.id))).all())
