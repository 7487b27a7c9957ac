"""The console's pages of a site's parking spaces, common areas and utility meters: a list each
(paged), with a form to add one for who may change the site's property.

A form names a unit by its building and number (a site may have ten thousand units: no select of
them all) and a meter's gateway by its id (offered from the site's gateways).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Form, Path, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.console.formkit import FORM_MISTAKES, NO_MISTAKE, Mistake, client_ip, done, optional
from cloud.console.i18n import N_
from cloud.console.templating import page_router
from cloud.kit.errors import InvalidInput
from cloud.kit.web import SessionDep
from cloud.models import Gateway
from cloud.property import service
from cloud.property.labels import render_page
from cloud.property.models import Building, Person, Site, Unit
from cloud.property.schemas import CommonAreaIn, MeterIn, ParkingSpaceIn
from cloud.property.scope import site_for

P = Permission
router = page_router()

SitesRead = Annotated[Principal, Depends(Authorize(P.SITES_READ))]
PropertyWrite = Annotated[Principal, Depends(Authorize(P.PROPERTY_WRITE))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Cursor = Annotated[str | None, Query(max_length=64)]
Short = Annotated[str, Form(max_length=200)]

LIST_ALL = service.MAX_PAGE


async def _unit_labels(session: AsyncSession, unit_ids: Sequence[int | None]) -> dict[int, str]:
    """``T1-1203`` (building code and number) for each unit a page's rows link to."""
    ids = sorted({i for i in unit_ids if i is not None})
    if not ids:
        return {}
    rows = await session.execute(
        select(Unit.id, Unit.number, Building.code)
        .join(Building, Building.id == Unit.building_id)
        .where(Unit.id.in_(ids))
    )
    return {r.id: f"{r.code}-{r.number}" for r in rows}


async def _buildings(session: AsyncSession, principal: Principal, site_id: int) -> list[Building]:
    return (await service.list_buildings(session, principal, site_id=site_id, limit=LIST_ALL)).items


async def _building_options(
    session: AsyncSession, principal: Principal, site_id: int
) -> list[tuple[int, str]]:
    """(id, "T1 Tower 1") of the site's buildings, for a form's select."""
    return [(b.id, f"{b.code} {b.name}") for b in await _buildings(session, principal, site_id)]


async def _unit_in_site(
    session: AsyncSession, principal: Principal, site: Site, building_id: str, number: str
) -> int | None:
    """The unit a form names by building and number (None when the number is left empty)."""
    number = number.strip()
    if not number:
        return None
    if not building_id.strip().isdigit():
        raise InvalidInput("building_id: choose the unit's building")
    unit_id = await session.scalar(
        select(Unit.id).where(
            principal.company_clause(Unit.company_id),
            Unit.site_id == site.id,
            Unit.building_id == int(building_id),
            Unit.number == number,
        )
    )
    if unit_id is None:
        raise InvalidInput(f"unit_number: the building has no unit {number!r}")
    return int(unit_id)


# -- parking spaces


@router.get("/property/sites/{site_id}/parking")
async def parking_page(
    request: Request, session: SessionDep, principal: SitesRead, site_id: Id, cursor: Cursor = None
) -> Response:
    return await _parking_view(request, session, principal, site_id, cursor)


async def _parking_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    site_id: int,
    cursor: str | None,
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    site = await service.get_site(session, principal, site_id)
    page = await service.list_parking_spaces(session, principal, site_id=site.id, cursor=cursor)
    holders: dict[int, str] = {}
    if principal.can(P.PEOPLE_READ, site.id):
        ids = sorted({s.person_id for s in page.items if s.person_id is not None})
        if ids:
            rows = await session.execute(select(Person.id, Person.name).where(Person.id.in_(ids)))
            holders = {r.id: r.name for r in rows}
    can_write = principal.can(P.PROPERTY_WRITE, site.id)
    context = {
        "site": site,
        "spaces": page.items,
        "next_cursor": page.next_cursor,
        "unit_labels": await _unit_labels(session, [s.unit_id for s in page.items]),
        "holders": holders,
        "building_options": await _building_options(session, principal, site.id) if can_write else [],
        "can_write": can_write,
    }
    return render_page(request, principal, "property/parking.html", context, mistake)


@router.post("/property/sites/{site_id}/parking")
async def add_parking_space(
    request: Request,
    session: SessionDep,
    principal: PropertyWrite,
    site_id: Id,
    code: Short = "",
    kind: Short = "",
    building_id: Short = "",
    unit_number: Short = "",
) -> Response:
    form = {"code": code, "kind": kind, "building_id": building_id, "unit_number": unit_number}
    try:
        site = await site_for(session, principal, site_id, P.PROPERTY_WRITE)
        unit_id = await _unit_in_site(session, principal, site, building_id, unit_number)
        data = ParkingSpaceIn(site_id=site.id, code=code, kind=kind or "rented", unit_id=unit_id)  # type: ignore[arg-type]
        space = await service.create_parking_space(session, principal, data, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _parking_view(request, session, principal, site_id, None, Mistake.of(e, form))
    url = f"/property/sites/{site_id}/parking"
    return done(request, principal, url, N_("Parking space %(code)s added."), code=space.code)


# -- common areas


@router.get("/property/sites/{site_id}/common-areas")
async def common_areas_page(
    request: Request, session: SessionDep, principal: SitesRead, site_id: Id, cursor: Cursor = None
) -> Response:
    return await _areas_view(request, session, principal, site_id, cursor)


async def _areas_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    site_id: int,
    cursor: str | None,
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    site = await service.get_site(session, principal, site_id)
    page = await service.list_common_areas(session, principal, site_id=site.id, cursor=cursor)
    buildings = await _buildings(session, principal, site.id)
    context = {
        "site": site,
        "areas": page.items,
        "next_cursor": page.next_cursor,
        "building_options": [(b.id, f"{b.code} {b.name}") for b in buildings],
        "building_codes": {b.id: b.code for b in buildings},
        "can_write": principal.can(P.PROPERTY_WRITE, site.id),
    }
    return render_page(request, principal, "property/common_areas.html", context, mistake)


@router.post("/property/sites/{site_id}/common-areas")
async def add_common_area(
    request: Request,
    session: SessionDep,
    principal: PropertyWrite,
    site_id: Id,
    name: Short = "",
    kind: Short = "",
    building_id: Short = "",
    area_m2: Short = "",
) -> Response:
    form = {"name": name, "kind": kind, "building_id": building_id, "area_m2": area_m2}
    try:
        data = CommonAreaIn(
            site_id=site_id,
            name=name,
            kind=kind or "other",  # type: ignore[arg-type]
            building_id=optional(building_id),  # type: ignore[arg-type]
            area_m2=optional(area_m2.replace(",", "")),  # type: ignore[arg-type]
        )
        area = await service.create_common_area(session, principal, data, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _areas_view(request, session, principal, site_id, None, Mistake.of(e, form))
    url = f"/property/sites/{site_id}/common-areas"
    return done(request, principal, url, N_("Common area %(name)s added."), name=area.name)


# -- meters


@router.get("/property/sites/{site_id}/meters")
async def meters_page(
    request: Request, session: SessionDep, principal: SitesRead, site_id: Id, cursor: Cursor = None
) -> Response:
    return await _meters_view(request, session, principal, site_id, cursor)


async def _meters_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    site_id: int,
    cursor: str | None,
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    site = await service.get_site(session, principal, site_id)
    page = await service.list_meters(session, principal, site_id=site.id, cursor=cursor)
    can_write = principal.can(P.PROPERTY_WRITE, site.id)
    areas = (await service.list_common_areas(session, principal, site_id=site.id, limit=LIST_ALL)).items
    gateways: list[str] = []
    if can_write and principal.can(P.GATEWAYS_READ, site.id):
        rows = await session.scalars(
            select(Gateway.id)
            .where(principal.company_clause(Gateway.company_id), Gateway.site_id == site.id)
            .order_by(Gateway.id)
            .limit(LIST_ALL)
        )
        gateways = list(rows.all())
    context = {
        "site": site,
        "meters": page.items,
        "next_cursor": page.next_cursor,
        "unit_labels": await _unit_labels(session, [m.unit_id for m in page.items]),
        "area_names": {a.id: a.name for a in areas},
        "area_options": [(a.id, a.name) for a in areas],
        "building_options": await _building_options(session, principal, site.id) if can_write else [],
        "gateways": gateways,
        "can_write": can_write,
    }
    return render_page(request, principal, "property/meters.html", context, mistake)


@router.post("/property/sites/{site_id}/meters")
async def add_meter(
    request: Request,
    session: SessionDep,
    principal: PropertyWrite,
    site_id: Id,
    code: Short = "",
    kind: Short = "",
    building_id: Short = "",
    unit_number: Short = "",
    common_area_id: Short = "",
    gateway_id: Short = "",
    point: Short = "",
    multi_tariff: Short = "",
) -> Response:
    form = {
        "code": code,
        "kind": kind,
        "building_id": building_id,
        "unit_number": unit_number,
        "common_area_id": common_area_id,
        "gateway_id": gateway_id,
        "point": point,
        "multi_tariff": multi_tariff,
    }
    try:
        site = await site_for(session, principal, site_id, P.PROPERTY_WRITE)
        unit_id = await _unit_in_site(session, principal, site, building_id, unit_number)
        data = MeterIn(
            site_id=site.id,
            code=code,
            kind=kind,  # type: ignore[arg-type]
            unit_id=unit_id,
            common_area_id=optional(common_area_id),  # type: ignore[arg-type]
            gateway_id=optional(gateway_id),
            point=optional(point),
            multi_tariff=bool(multi_tariff),
        )
        meter = await service.create_meter(session, principal, data, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _meters_view(request, session, principal, site_id, None, Mistake.of(e, form))
    url = f"/property/sites/{site_id}/meters"
    return done(request, principal, url, N_("Meter %(code)s added."), code=meter.code)
