"""The console's pages of the property tree: the sites (``/property``) → a site's buildings → a
building's floors and units → a unit with its occupants, parking spaces and meters; adding a site,
a building, a floor, a unit; changing a unit; linking a person to a unit and ending that link.

Every page calls the property services with the principal: they check the permission at the site
and the company (another company's object is 404, one of the company at a site outside the
principal's permission 403). A part of a page that needs another permission (a unit's occupants
need people.read at its site) is shown only where the principal holds it, so a page never refuses
a principal its route lets in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import Depends, Form, Path, Query, Request
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.console.formkit import FORM_MISTAKES, NO_MISTAKE, Mistake, client_ip, done, parse_date
from cloud.console.i18n import N_, language_of
from cloud.console.templating import page_router
from cloud.console.zones import zone
from cloud.kit.errors import InvalidInput
from cloud.kit.web import SessionDep
from cloud.property import service
from cloud.property.labels import render_page
from cloud.property.models import DEFAULT_TIMEZONE, Floor, Occupancy, Person, Site, Unit
from cloud.property.schemas import (
    BuildingIn,
    FloorIn,
    OccupancyIn,
    OccupancyPatch,
    PersonIn,
    SiteIn,
    UnitIn,
    UnitPatch,
    normalise_phone,
)

P = Permission
router = page_router()

SitesRead = Annotated[Principal, Depends(Authorize(P.SITES_READ))]
PropertyWrite = Annotated[Principal, Depends(Authorize(P.PROPERTY_WRITE))]
PeopleWrite = Annotated[Principal, Depends(Authorize(P.PEOPLE_WRITE))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Cursor = Annotated[str | None, Query(max_length=64)]
Short = Annotated[str, Form(max_length=200)]
Long = Annotated[str, Form(max_length=2000)]

LIST_ALL = service.MAX_PAGE  # a building's floors, a unit's occupants: one page holds them all
# Who may import at a site: units need property.write, people people.write.
IMPORT_PERMISSIONS = (P.PROPERTY_WRITE, P.PEOPLE_WRITE)


def today_at(site: Site) -> date:
    """Today at the site: occupancies begin and end on the site's dates."""
    return datetime.now(UTC).astimezone(zone(site.timezone)).date()


async def counts_by(session: AsyncSession, column: Any, ids: Sequence[int]) -> dict[int, int]:
    """Rows per value of ``column`` among ``ids``: one grouped query for a page of rows."""
    if not ids:
        return {}
    rows = await session.execute(select(column, func.count()).where(column.in_(ids)).group_by(column))
    return {int(k): int(n) for k, n in rows.all()}


def _area(text: str) -> str:
    """An area as typed, without thousands separators (``1,234.50``)."""
    return text.strip().replace(",", "")


# -- sites


@router.get("/property")
async def sites_page(
    request: Request, session: SessionDep, principal: SitesRead, cursor: Cursor = None
) -> Response:
    return await _sites_view(request, session, principal, cursor)


async def _sites_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    cursor: str | None,
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    page = await service.site_summaries(session, principal, cursor=cursor)
    # A new site is the company's: for who may change every site (the platform, which has no
    # company, adds sites through the API naming one).
    can_add = (
        not principal.is_platform
        and principal.can(P.PROPERTY_WRITE)
        and principal.sites(P.PROPERTY_WRITE) is None
    )
    context = {"summaries": page.items, "next_cursor": page.next_cursor, "can_add": can_add}
    return render_page(request, principal, "property/sites.html", context, mistake)


@router.post("/property/sites")
async def add_site(
    request: Request,
    session: SessionDep,
    principal: PropertyWrite,
    code: Short = "",
    name: Short = "",
    address: Long = "",
    timezone: Short = "",
) -> Response:
    form = {"code": code, "name": name, "address": address, "timezone": timezone}
    try:
        data = SiteIn(code=code, name=name, address=address, timezone=timezone.strip() or DEFAULT_TIMEZONE)
        site = await service.create_site(session, principal, data, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _sites_view(request, session, principal, None, Mistake.of(e, form))
    return done(request, principal, f"/property/sites/{site.id}", N_("Site %(name)s added."), name=site.name)


@router.get("/property/sites/{site_id}")
async def site_page(
    request: Request, session: SessionDep, principal: SitesRead, site_id: Id, cursor: Cursor = None
) -> Response:
    return await _site_view(request, session, principal, site_id, cursor)


async def _site_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    site_id: int,
    cursor: str | None,
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    site = await service.get_site(session, principal, site_id)
    page = await service.list_buildings(session, principal, site_id=site.id, cursor=cursor)
    ids = [b.id for b in page.items]
    context = {
        "site": site,
        "buildings": page.items,
        "floors": await counts_by(session, Floor.building_id, ids),
        "units": await counts_by(session, Unit.building_id, ids),
        "next_cursor": page.next_cursor,
        "can_write": principal.can(P.PROPERTY_WRITE, site.id),
        "can_import": any(principal.can(p, site.id) for p in IMPORT_PERMISSIONS),
        "see_people": principal.can(P.PEOPLE_READ, site.id),
        "export_lang": language_of(request, principal),
    }
    return render_page(request, principal, "property/site.html", context, mistake)


@router.post("/property/sites/{site_id}/buildings")
async def add_building(
    request: Request,
    session: SessionDep,
    principal: PropertyWrite,
    site_id: Id,
    code: Short = "",
    name: Short = "",
) -> Response:
    form = {"code": code, "name": name}
    try:
        data = BuildingIn(site_id=site_id, code=code, name=name.strip() or code)
        building = await service.create_building(session, principal, data, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _site_view(request, session, principal, site_id, None, Mistake.of(e, form))
    url = f"/property/buildings/{building.id}"
    return done(request, principal, url, N_("Building %(code)s added."), code=building.code)


# -- buildings


@router.get("/property/buildings/{building_id}")
async def building_page(
    request: Request, session: SessionDep, principal: SitesRead, building_id: Id, cursor: Cursor = None
) -> Response:
    return await _building_view(request, session, principal, building_id, cursor)


async def _floors(session: AsyncSession, principal: Principal, building_id: int) -> list[Floor]:
    floors = (await service.list_floors(session, principal, building_id=building_id, limit=LIST_ALL)).items
    return sorted(floors, key=lambda f: f.level)


async def _building_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    building_id: int,
    cursor: str | None,
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    building = await service.get_building(session, principal, building_id)
    site = await service.get_site(session, principal, building.site_id)
    floors = await _floors(session, principal, building.id)
    page = await service.list_units(session, principal, building_id=building.id, cursor=cursor)
    context = {
        "site": site,
        "building": building,
        "floors": floors,
        "floor_names": {f.id: f.name for f in floors},
        "floor_options": [(f.id, f.name) for f in floors],
        "floor_units": await counts_by(session, Unit.floor_id, [f.id for f in floors]),
        "units": page.items,
        "next_cursor": page.next_cursor,
        "can_write": principal.can(P.PROPERTY_WRITE, site.id),
    }
    return render_page(request, principal, "property/building.html", context, mistake)


@router.post("/property/buildings/{building_id}/floors")
async def add_floor(
    request: Request,
    session: SessionDep,
    principal: PropertyWrite,
    building_id: Id,
    level: Short = "",
    name: Short = "",
) -> Response:
    form = {"level": level, "name": name}
    try:
        data = FloorIn(building_id=building_id, level=level.strip(), name=name)  # type: ignore[arg-type]
        floor = await service.create_floor(session, principal, data, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _building_view(
            request, session, principal, building_id, None, Mistake.of(e, form, "floor")
        )
    url = f"/property/buildings/{building_id}"
    return done(request, principal, url, N_("Floor %(name)s added."), name=floor.name)


@router.post("/property/buildings/{building_id}/units")
async def add_unit(
    request: Request,
    session: SessionDep,
    principal: PropertyWrite,
    building_id: Id,
    number: Short = "",
    floor_id: Short = "",
    floor_area_m2: Short = "",
    use: Short = "",
) -> Response:
    form = {"number": number, "floor_id": floor_id, "floor_area_m2": floor_area_m2, "use": use}
    try:
        building = await service.get_building(session, principal, building_id, P.PROPERTY_WRITE)
        if not floor_id.strip():
            raise InvalidInput("floor_id: choose the unit's floor (add the floor first if it is missing)")
        data = UnitIn(
            floor_id=floor_id,  # type: ignore[arg-type]
            number=number,
            floor_area_m2=_area(floor_area_m2),  # type: ignore[arg-type]
            use=use or "residential",  # type: ignore[arg-type]
        )
        floor = await service.get_floor(session, principal, data.floor_id)
        if floor.building_id != building.id:
            raise InvalidInput(f"floor_id: floor {floor.id} is not in building {building.code!r}")
        unit = await service.create_unit(session, principal, data, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _building_view(
            request, session, principal, building_id, None, Mistake.of(e, form, "unit")
        )
    url = f"/property/buildings/{building_id}"
    return done(request, principal, url, N_("Unit %(number)s added."), number=unit.number)


# -- units


@router.get("/property/units/{unit_id}")
async def unit_page(request: Request, session: SessionDep, principal: SitesRead, unit_id: Id) -> Response:
    return await _unit_view(request, session, principal, unit_id)


async def _unit_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    unit_id: int,
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    unit = await service.get_unit(session, principal, unit_id)
    building = await service.get_building(session, principal, unit.building_id)
    site = await service.get_site(session, principal, unit.site_id)
    can_write = principal.can(P.PROPERTY_WRITE, site.id)
    floors = await _floors(session, principal, building.id) if can_write else []
    see_people = principal.can(P.PEOPLE_READ, site.id)
    occupancies: list[Occupancy] = []
    people: dict[int, Person] = {}
    if see_people:
        found = await service.list_occupancies(session, principal, unit_id=unit.id, limit=LIST_ALL)
        occupancies = sorted(found.items, key=lambda o: (o.start_date, o.id), reverse=True)
        person_ids = sorted({o.person_id for o in occupancies})
        if person_ids:
            rows = await session.scalars(select(Person).where(Person.id.in_(person_ids)))
            people = {p.id: p for p in rows}
    spaces = await service.list_parking_spaces(
        session, principal, site_id=site.id, unit_id=unit.id, limit=LIST_ALL
    )
    meters = await service.list_meters(session, principal, site_id=site.id, unit_id=unit.id, limit=LIST_ALL)
    context = {
        "site": site,
        "building": building,
        "unit": unit,
        "floor": await session.get_one(Floor, unit.floor_id),
        "floor_options": [(f.id, f.name) for f in floors],
        "can_write": can_write,
        "see_people": see_people,
        "can_link": principal.can(P.PEOPLE_WRITE, site.id),
        "occupancies": occupancies,
        "people": people,
        "spaces": spaces.items,
        "meters": meters.items,
        "today": today_at(site),
    }
    return render_page(request, principal, "property/unit.html", context, mistake)


@router.post("/property/units/{unit_id}")
async def edit_unit(
    request: Request,
    session: SessionDep,
    principal: PropertyWrite,
    unit_id: Id,
    number: Short = "",
    floor_id: Short = "",
    floor_area_m2: Short = "",
    use: Short = "",
) -> Response:
    form = {"number": number, "floor_id": floor_id, "floor_area_m2": floor_area_m2, "use": use}
    try:
        # The unit first: another site's unit is refused before its form is looked at.
        await service.get_unit(session, principal, unit_id, P.PROPERTY_WRITE)
        patch = UnitPatch(
            floor_id=floor_id or None,  # type: ignore[arg-type]
            number=number or None,
            floor_area_m2=_area(floor_area_m2) or None,  # type: ignore[arg-type]
            use=use or None,  # type: ignore[arg-type]
        )
        unit = await service.update_unit(session, principal, unit_id, patch, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _unit_view(request, session, principal, unit_id, Mistake.of(e, form, "unit"))
    return done(
        request, principal, f"/property/units/{unit_id}", N_("Unit %(number)s saved."), number=unit.number
    )


# -- occupancies


@router.post("/property/units/{unit_id}/occupancies")
async def add_occupancy(
    request: Request,
    session: SessionDep,
    principal: PeopleWrite,
    unit_id: Id,
    name: Short = "",
    phone: Short = "",
    email: Short = "",
    role: Short = "",
    start_date: Short = "",
    end_date: Short = "",
    primary: Short = "",
) -> Response:
    """Link a person to the unit: the company's person with that phone number if there is one (a
    person owns a flat here and rents one there), else the one of that name already linked to the
    unit, else a new person — as the people import decides."""
    form = {
        "name": name,
        "phone": phone,
        "email": email,
        "role": role,
        "start_date": start_date,
        "end_date": end_date,
        "primary": primary,
    }
    ip = client_ip(request)
    try:
        unit = await service.get_unit(session, principal, unit_id, P.PEOPLE_WRITE)
        start = parse_date(start_date, "start_date")
        end = parse_date(end_date, "end_date", required=False)
        person_id = await _person_for(session, principal, unit, name, phone, email, ip)
        data = OccupancyIn(
            unit_id=unit.id,
            person_id=person_id,
            role=role,  # type: ignore[arg-type]
            start_date=start,  # type: ignore[arg-type]
            end_date=end,
            primary=bool(primary),
        )
        await service.create_occupancy(session, principal, data, ip=ip)
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _unit_view(request, session, principal, unit_id, Mistake.of(e, form, "occupancy"))
    url = f"/property/units/{unit_id}"
    return done(request, principal, url, N_("%(name)s linked to the unit."), name=name.strip())


async def _person_for(
    session: AsyncSession, principal: Principal, unit: Unit, name: str, phone: str, email: str, ip: str
) -> int:
    """The person a new occupancy is of (created if new)."""
    name = name.strip()
    if not name:
        raise InvalidInput("name: the person's name is needed")
    try:
        number = normalise_phone(phone)
    except ValueError as e:
        raise InvalidInput(f"phone: {e}") from None
    if number:
        found = await session.scalar(
            select(Person)
            .where(Person.company_id == unit.company_id, Person.phone == number)
            .order_by(Person.id)
            .limit(1)
        )
        if found is not None:
            # Whose number it is stays unsaid: they may be of a site the principal cannot see.
            if found.name != name:
                raise InvalidInput(f"phone: {number} is another person's number; check the name and phone")
            return found.id
    else:
        linked = await session.scalar(
            select(Person.id)
            .join(Occupancy, Occupancy.person_id == Person.id)
            .where(Occupancy.unit_id == unit.id, Person.name == name)
            .limit(1)
        )
        if linked is not None:
            return int(linked)
    draft = PersonIn(name=name, phone=number, email=email)
    return (await service.create_person(session, principal, draft, ip=ip)).id


@router.post("/property/occupancies/{occupancy_id}/end")
async def end_occupancy(
    request: Request, session: SessionDep, principal: PeopleWrite, occupancy_id: Id, end_date: Short = ""
) -> Response:
    """End a link (a move-out) on the date given: the last day. The history stays."""
    occupancy, unit = await service.get_occupancy(session, principal, occupancy_id, P.PEOPLE_WRITE)
    unit_id = unit.id  # read now: a rollback below expires the loaded rows
    try:
        end = parse_date(end_date, "end_date")
        patch = OccupancyPatch(end_date=end)
        await service.update_occupancy(session, principal, occupancy.id, patch, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _unit_view(request, session, principal, unit_id, Mistake.of(e, {"end_date": end_date}))
    url = f"/property/units/{unit_id}"
    return done(request, principal, url, N_("The occupancy ends on %(date)s."), date=end_date.strip())
