"""Companies (the cloud's tenants) and their sites, and the per-site summary the console shows.

A company is registered by the platform operator only; everyone else sees their own company. A site
is created by a principal whose PROPERTY_WRITE holds for every site (a manager of some sites does
not add others); its code is unique across the cloud and never changes, because gateways' configs
and the access data key by it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import RoleGrant
from cloud.accounts.permissions import Forbidden, Permission, Principal
from cloud.audit.chain import PLATFORM_CHAIN
from cloud.kit.errors import Conflict, NotFound
from cloud.models import AccessCredential, AccessLevelRow, Gateway
from cloud.property.models import (
    Building,
    CommonArea,
    Company,
    Meter,
    Occupancy,
    ParkingSpace,
    Site,
    Unit,
)
from cloud.property.schemas import CompanyIn, CompanyPatch, SiteIn, SitePatch, patch_fields
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
    site_for,
    snapshot,
)

P = Permission


# -- companies


async def list_companies(
    session: AsyncSession, principal: Principal, *, cursor: str | None = None, limit: int = DEFAULT_PAGE
) -> Page[Company]:
    """Every company for the platform; one's own for everyone else."""
    stmt = select(Company).where(principal.company_clause(Company.id))
    return await page(session, stmt, Company, cursor, limit)


async def get_company(session: AsyncSession, principal: Principal, company_id: int) -> Company:
    return await load(session, principal, Company, company_id, "company")


async def create_company(
    session: AsyncSession, principal: Principal, data: CompanyIn, *, ip: str = ""
) -> Company:
    if not principal.is_platform:
        raise Forbidden(f"{principal.name}: only the platform operator registers companies")
    if await session.scalar(select(Company.id).where(Company.code == data.code)) is not None:
        raise Conflict(f"code: a company with code {data.code!r} already exists")
    company = Company(code=data.code, name=data.name, timezone=data.timezone, created_at=datetime.now(UTC))
    session.add(company)
    await flush(session, f"code: a company with code {data.code!r} already exists")
    # Registering a company is the platform's own act: it goes to the platform's chain.
    await audit(
        session, principal, "company.create", company, company_id=PLATFORM_CHAIN, site_id=None,
        after=snapshot(company), ip=ip,
    )  # fmt: skip
    return company


async def update_company(
    session: AsyncSession, principal: Principal, company_id: int, patch: CompanyPatch, *, ip: str = ""
) -> Company:
    company = await load(session, principal, Company, company_id, "company")
    require_everywhere(principal, P.PROPERTY_WRITE, "changing the company")
    before = snapshot(company)
    if apply(company, patch_fields(patch), required=("name", "timezone")):
        await flush(session, "company: changed by someone else meanwhile")
        await audit(
            session, principal, "company.update", company, company_id=company.id, site_id=None,
            before=before, after=snapshot(company), ip=ip,
        )  # fmt: skip
    return company


# -- sites


async def list_sites(
    session: AsyncSession,
    principal: Principal,
    *,
    company_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[Site]:
    """The sites the principal may read (``company_id`` narrows the platform's view to one company)."""
    principal.require(P.SITES_READ)
    stmt = select(Site).where(
        principal.company_clause(Site.company_id), principal.site_clause(P.SITES_READ, Site.id)
    )
    if company_id is not None:
        stmt = stmt.where(Site.company_id == company_id)
    return await page(session, stmt, Site, cursor, limit)


async def get_site(session: AsyncSession, principal: Principal, site_id: int) -> Site:
    return await site_for(session, principal, site_id, P.SITES_READ)


async def create_site(session: AsyncSession, principal: Principal, data: SiteIn, *, ip: str = "") -> Site:
    require_everywhere(principal, P.PROPERTY_WRITE, "adding a site")
    company_id = await company_for(session, principal, data.company_id)
    taken = f"code: a site with code {data.code!r} already exists (site codes are unique in the cloud)"
    if await session.scalar(select(Site.id).where(Site.code == data.code)) is not None:
        raise Conflict(taken)
    site = Site(
        company_id=company_id,
        code=data.code,
        name=data.name,
        address=data.address,
        timezone=data.timezone,
        created_at=datetime.now(UTC),
    )
    session.add(site)
    await flush(session, taken)
    await audit(
        session, principal, "site.create", site, company_id=company_id, site_id=site.id,
        after=snapshot(site), ip=ip,
    )  # fmt: skip
    return site


async def update_site(
    session: AsyncSession, principal: Principal, site_id: int, patch: SitePatch, *, ip: str = ""
) -> Site:
    site = await site_for(session, principal, site_id, P.PROPERTY_WRITE)
    before = snapshot(site)
    if apply(site, patch_fields(patch), required=("name", "address", "timezone")):
        await flush(session, "site: changed by someone else meanwhile")
        await audit(
            session, principal, "site.update", site, company_id=site.company_id, site_id=site.id,
            before=before, after=snapshot(site), ip=ip,
        )  # fmt: skip
    return site


async def delete_site(session: AsyncSession, principal: Principal, site_id: int, *, ip: str = "") -> None:
    """Refused (InUse) while the site has buildings, units, spaces, meters, gateways, role grants
    or access data: a site is removed empty."""
    site = await site_for(session, principal, site_id, P.PROPERTY_WRITE)
    require_everywhere(principal, P.PROPERTY_WRITE, "removing a site")
    await refuse_if_used(
        session,
        f"site {site.code!r}",
        [
            ("buildings", select(Building.id).where(Building.site_id == site.id)),
            ("units", select(Unit.id).where(Unit.site_id == site.id)),
            ("parking spaces", select(ParkingSpace.id).where(ParkingSpace.site_id == site.id)),
            ("common areas", select(CommonArea.id).where(CommonArea.site_id == site.id)),
            ("meters", select(Meter.id).where(Meter.site_id == site.id)),
            (
                "gateways",
                select(Gateway.id).where(or_(Gateway.site_id == site.id, Gateway.site == site.code)),
            ),
            ("staff role grants", select(RoleGrant.id).where(RoleGrant.site_id == site.id)),
            (
                "access credentials",
                select(AccessCredential.id).where(
                    AccessCredential.site == site.code, ~AccessCredential.deleted
                ),
            ),
            (
                "access levels",
                select(AccessLevelRow.id).where(AccessLevelRow.site == site.code, ~AccessLevelRow.deleted),
            ),
        ],
    )
    before = snapshot(site)
    await audit(
        session, principal, "site.delete", site, company_id=site.company_id, site_id=site.id,
        before=before, ip=ip,
    )  # fmt: skip
    await delete(session, site, f"site {site.code!r}")


# -- the console's summary


@dataclass(frozen=True, slots=True)
class SiteSummary:
    site_id: int
    code: str
    name: str
    buildings: int
    units: int
    occupied_units: int  # with an occupancy current today, in the site's zone
    people: int  # with an occupancy current today


async def site_summaries(
    session: AsyncSession,
    principal: Principal,
    *,
    company_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
    now: datetime | None = None,
) -> Page[SiteSummary]:
    """Per site the principal may read: its buildings, units, occupied units and people. A handful
    of grouped queries for the whole page, never one per site."""
    sites = await list_sites(session, principal, company_id=company_id, cursor=cursor, limit=limit)
    ids = [s.id for s in sites.items]
    if not ids:
        return Page([], None)
    buildings = await _counts(
        session, select(Building.site_id, func.count()).where(Building.site_id.in_(ids))
    )
    units = await _counts(session, select(Unit.site_id, func.count()).where(Unit.site_id.in_(ids)))
    occupied: dict[int, int] = {}
    people: dict[int, int] = {}
    # "Today" is the site's own: occupancies end on a local date.
    by_zone: dict[str, list[int]] = defaultdict(list)
    for s in sites.items:
        by_zone[s.timezone].append(s.id)
    moment = now or datetime.now(UTC)
    for zone, zone_ids in by_zone.items():
        today = moment.astimezone(ZoneInfo(zone)).date()
        current = _current(today)
        joined = select(Unit.site_id).join(Occupancy, Occupancy.unit_id == Unit.id)
        occupied |= await _counts(
            session,
            joined.add_columns(func.count(func.distinct(Occupancy.unit_id))).where(
                Unit.site_id.in_(zone_ids), *current
            ),
        )
        people |= await _counts(
            session,
            joined.add_columns(func.count(func.distinct(Occupancy.person_id))).where(
                Unit.site_id.in_(zone_ids), *current
            ),
        )
    return Page(
        [
            SiteSummary(
                s.id,
                s.code,
                s.name,
                buildings.get(s.id, 0),
                units.get(s.id, 0),
                occupied.get(s.id, 0),
                people.get(s.id, 0),
            )
            for s in sites.items
        ],
        sites.next_cursor,
    )


def _current(today: date) -> tuple[ColumnElement[bool], ...]:
    return (
        Occupancy.start_date <= today,
        or_(Occupancy.end_date.is_(None), Occupancy.end_date >= today),
    )


async def _counts(session: AsyncSession, stmt: Select[int, int]) -> dict[int, int]:
    rows = (await session.execute(stmt.group_by(stmt.selected_columns[0]))).all()
    return {int(r[0]): int(r[1]) for r in rows}


async def site_by_code(
    session: AsyncSession, principal: Principal, code: str, permission: Permission
) -> Site:
    """The site with this code (as gateways and access data name it), checked as ``site_for``."""
    site_id = await session.scalar(
        select(Site.id).where(Site.code == code, principal.company_clause(Site.company_id))
    )
    if site_id is None:
        raise NotFound(f"site {code!r}: no such site")
    return await site_for(session, principal, site_id, permission)
