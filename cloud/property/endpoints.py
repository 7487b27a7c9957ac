"""The property API under /api/v1: companies, sites and their buildings, floors and units, people
and occupancies, parking spaces, common areas, meters, departments; imports and exports.

Each route names the permission it needs (``Authorize``) and hands the request to the service
(``cloud.property.service``), which checks the site it touches and the company it belongs to; the
route commits. Lists page by id with an opaque cursor: ``{"items": [...], "next_cursor": ...}``.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.kit.web import SessionDep
from cloud.property import service
from cloud.property.exporting import Export, Language, export_people, export_units
from cloud.property.importing import ImportResult, import_people, import_units
from cloud.property.schemas import (
    BuildingIn,
    BuildingOut,
    BuildingPatch,
    CommonAreaIn,
    CommonAreaOut,
    CommonAreaPatch,
    CompanyIn,
    CompanyOut,
    CompanyPatch,
    DepartmentIn,
    DepartmentOut,
    DepartmentPatch,
    ErrorOut,
    FloorIn,
    FloorOut,
    FloorPatch,
    ImportOut,
    ImportRejectedOut,
    MeterIn,
    MeterKind,
    MeterOut,
    MeterPatch,
    OccupancyIn,
    OccupancyOut,
    OccupancyPatch,
    OccupantRole,
    Page,
    ParkingSpaceIn,
    ParkingSpaceOut,
    ParkingSpacePatch,
    PersonIn,
    PersonOut,
    PersonPatch,
    ProblemOut,
    SiteIn,
    SiteOut,
    SitePatch,
    SiteSummaryOut,
    UnitIn,
    UnitOut,
    UnitPatch,
    UnitUse,
)
from cloud.property.sheets import MAX_FILE_BYTES, MAX_ROWS, FileFormat, FileTooLarge

P = Permission
O = TypeVar("O", bound=BaseModel)  # noqa: E741

router = APIRouter(
    tags=["property"],
    responses={
        404: {"model": ErrorOut, "description": "No such object (or another company's)"},
        409: {"model": ErrorOut, "description": "Conflicts with what is stored (a duplicate; still in use)"},
    },
)


# The principal of each route, if it has the permission (at some site: the service checks the site).
Anyone = Annotated[Principal, Depends(Authorize(None))]
SitesRead = Annotated[Principal, Depends(Authorize(P.SITES_READ))]
PropertyWrite = Annotated[Principal, Depends(Authorize(P.PROPERTY_WRITE))]
PeopleRead = Annotated[Principal, Depends(Authorize(P.PEOPLE_READ))]
PeopleWrite = Annotated[Principal, Depends(Authorize(P.PEOPLE_WRITE))]
UsersRead = Annotated[Principal, Depends(Authorize(P.USERS_READ))]
UsersManage = Annotated[Principal, Depends(Authorize(P.USERS_MANAGE))]

Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Cursor = Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page")]
Limit = Annotated[int, Query(ge=1, le=service.MAX_PAGE)]
Filter = Annotated[int | None, Query(ge=1, le=2**63 - 1)]
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold a NUL: refused as input, not a 500
NO_CONTENT: dict[str, Any] = {"status_code": 204, "response_class": Response}


def _ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _page(out: type[O], page: service.Page[Any]) -> Page[O]:
    return Page[O](items=[out.model_validate(x) for x in page.items], next_cursor=page.next_cursor)


# -- companies


@router.get("/companies", summary="Companies: every one for the platform, one's own for others")
async def get_companies(
    session: SessionDep, principal: Anyone, cursor: Cursor = None, limit: Limit = service.DEFAULT_PAGE
) -> Page[CompanyOut]:
    return _page(CompanyOut, await service.list_companies(session, principal, cursor=cursor, limit=limit))


@router.post("/companies", status_code=201, summary="Register a company (the platform operator only)")
async def post_company(
    request: Request, session: SessionDep, principal: Anyone, body: CompanyIn
) -> CompanyOut:
    company = await service.create_company(session, principal, body, ip=_ip(request))
    await session.commit()
    return CompanyOut.model_validate(company)


@router.get("/companies/{company_id}", summary="A company")
async def get_company(session: SessionDep, principal: Anyone, company_id: Id) -> CompanyOut:
    return CompanyOut.model_validate(await service.get_company(session, principal, company_id))


@router.patch("/companies/{company_id}", summary="Rename a company or change its time zone")
async def patch_company(
    request: Request, session: SessionDep, principal: PropertyWrite, company_id: Id, body: CompanyPatch
) -> CompanyOut:
    company = await service.update_company(session, principal, company_id, body, ip=_ip(request))
    await session.commit()
    return CompanyOut.model_validate(company)


# -- sites


@router.get("/sites", summary="Sites the principal may read")
async def get_sites(
    session: SessionDep,
    principal: SitesRead,
    company_id: Filter = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[SiteOut]:
    page = await service.list_sites(session, principal, company_id=company_id, cursor=cursor, limit=limit)
    return _page(SiteOut, page)


@router.get("/sites/summary", summary="Per site: buildings, units, occupied units, people")
async def get_site_summaries(
    session: SessionDep,
    principal: SitesRead,
    company_id: Filter = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[SiteSummaryOut]:
    page = await service.site_summaries(session, principal, company_id=company_id, cursor=cursor, limit=limit)
    return Page[SiteSummaryOut](
        items=[SiteSummaryOut.model_validate(s, from_attributes=True) for s in page.items],
        next_cursor=page.next_cursor,
    )


@router.post("/sites", status_code=201, summary="Add a site (PROPERTY_WRITE for every site)")
async def post_site(request: Request, session: SessionDep, principal: PropertyWrite, body: SiteIn) -> SiteOut:
    site = await service.create_site(session, principal, body, ip=_ip(request))
    await session.commit()
    return SiteOut.model_validate(site)


@router.get("/sites/{site_id}", summary="A site")
async def get_site(session: SessionDep, principal: SitesRead, site_id: Id) -> SiteOut:
    return SiteOut.model_validate(await service.get_site(session, principal, site_id))


@router.patch("/sites/{site_id}", summary="Change a site's name, address or time zone (not its code)")
async def patch_site(
    request: Request, session: SessionDep, principal: PropertyWrite, site_id: Id, body: SitePatch
) -> SiteOut:
    site = await service.update_site(session, principal, site_id, body, ip=_ip(request))
    await session.commit()
    return SiteOut.model_validate(site)


@router.delete("/sites/{site_id}", **NO_CONTENT, summary="Remove an empty site")
async def delete_site(
    request: Request, session: SessionDep, principal: PropertyWrite, site_id: Id
) -> Response:
    await service.delete_site(session, principal, site_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- buildings


@router.get("/buildings", summary="Buildings")
async def get_buildings(
    session: SessionDep,
    principal: SitesRead,
    site_id: Filter = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[BuildingOut]:
    page = await service.list_buildings(session, principal, site_id=site_id, cursor=cursor, limit=limit)
    return _page(BuildingOut, page)


@router.post("/buildings", status_code=201, summary="Add a building to a site")
async def post_building(
    request: Request, session: SessionDep, principal: PropertyWrite, body: BuildingIn
) -> BuildingOut:
    building = await service.create_building(session, principal, body, ip=_ip(request))
    await session.commit()
    return BuildingOut.model_validate(building)


@router.get("/buildings/{building_id}", summary="A building")
async def get_building(session: SessionDep, principal: SitesRead, building_id: Id) -> BuildingOut:
    return BuildingOut.model_validate(await service.get_building(session, principal, building_id))


@router.patch("/buildings/{building_id}", summary="Change a building")
async def patch_building(
    request: Request, session: SessionDep, principal: PropertyWrite, building_id: Id, body: BuildingPatch
) -> BuildingOut:
    building = await service.update_building(session, principal, building_id, body, ip=_ip(request))
    await session.commit()
    return BuildingOut.model_validate(building)


@router.delete("/buildings/{building_id}", **NO_CONTENT, summary="Remove a building without floors or units")
async def delete_building(
    request: Request, session: SessionDep, principal: PropertyWrite, building_id: Id
) -> Response:
    await service.delete_building(session, principal, building_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- floors


@router.get("/floors", summary="Floors")
async def get_floors(
    session: SessionDep,
    principal: SitesRead,
    building_id: Filter = None,
    site_id: Filter = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[FloorOut]:
    page = await service.list_floors(
        session, principal, building_id=building_id, site_id=site_id, cursor=cursor, limit=limit
    )
    return _page(FloorOut, page)


@router.post("/floors", status_code=201, summary="Add a floor to a building")
async def post_floor(
    request: Request, session: SessionDep, principal: PropertyWrite, body: FloorIn
) -> FloorOut:
    floor = await service.create_floor(session, principal, body, ip=_ip(request))
    await session.commit()
    return FloorOut.model_validate(floor)


@router.get("/floors/{floor_id}", summary="A floor")
async def get_floor(session: SessionDep, principal: SitesRead, floor_id: Id) -> FloorOut:
    return FloorOut.model_validate(await service.get_floor(session, principal, floor_id))


@router.patch("/floors/{floor_id}", summary="Change a floor")
async def patch_floor(
    request: Request, session: SessionDep, principal: PropertyWrite, floor_id: Id, body: FloorPatch
) -> FloorOut:
    floor = await service.update_floor(session, principal, floor_id, body, ip=_ip(request))
    await session.commit()
    return FloorOut.model_validate(floor)


@router.delete("/floors/{floor_id}", **NO_CONTENT, summary="Remove a floor without units")
async def delete_floor(
    request: Request, session: SessionDep, principal: PropertyWrite, floor_id: Id
) -> Response:
    await service.delete_floor(session, principal, floor_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- units


@router.get("/units", summary="Units, filtered by site, building, floor, use or number prefix")
async def get_units(
    session: SessionDep,
    principal: SitesRead,
    site_id: Filter = None,
    building_id: Filter = None,
    floor_id: Filter = None,
    use: UnitUse | None = None,
    number_prefix: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[UnitOut]:
    page = await service.list_units(
        session,
        principal,
        site_id=site_id,
        building_id=building_id,
        floor_id=floor_id,
        use=use,
        number_prefix=number_prefix,
        cursor=cursor,
        limit=limit,
    )
    return _page(UnitOut, page)


@router.post("/units", status_code=201, summary="Add a unit on a floor")
async def post_unit(request: Request, session: SessionDep, principal: PropertyWrite, body: UnitIn) -> UnitOut:
    unit = await service.create_unit(session, principal, body, ip=_ip(request))
    await session.commit()
    return UnitOut.model_validate(unit)


@router.get("/units/{unit_id}", summary="A unit")
async def get_unit(session: SessionDep, principal: SitesRead, unit_id: Id) -> UnitOut:
    return UnitOut.model_validate(await service.get_unit(session, principal, unit_id))


@router.patch("/units/{unit_id}", summary="Change a unit")
async def patch_unit(
    request: Request, session: SessionDep, principal: PropertyWrite, unit_id: Id, body: UnitPatch
) -> UnitOut:
    unit = await service.update_unit(session, principal, unit_id, body, ip=_ip(request))
    await session.commit()
    return UnitOut.model_validate(unit)


@router.delete("/units/{unit_id}", **NO_CONTENT, summary="Remove a unit nobody occupies")
async def delete_unit(
    request: Request, session: SessionDep, principal: PropertyWrite, unit_id: Id
) -> Response:
    await service.delete_unit(session, principal, unit_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- people


@router.get("/people", tags=["people"], summary="People, by name or phone, or of a site or unit")
async def get_people(
    session: SessionDep,
    principal: PeopleRead,
    q: Annotated[
        str | None, Query(max_length=100, pattern=NO_NUL, description="A part of the name or phone")
    ] = None,
    site_id: Filter = None,
    unit_id: Filter = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[PersonOut]:
    page = await service.list_people(
        session, principal, q=q, site_id=site_id, unit_id=unit_id, cursor=cursor, limit=limit
    )
    return _page(PersonOut, page)


@router.post("/people", status_code=201, tags=["people"], summary="Add a person")
async def post_person(
    request: Request, session: SessionDep, principal: PeopleWrite, body: PersonIn
) -> PersonOut:
    person = await service.create_person(session, principal, body, ip=_ip(request))
    await session.commit()
    return PersonOut.model_validate(person)


@router.get("/people/{person_id}", tags=["people"], summary="A person")
async def get_person(session: SessionDep, principal: PeopleRead, person_id: Id) -> PersonOut:
    return PersonOut.model_validate(await service.get_person(session, principal, person_id))


@router.patch("/people/{person_id}", tags=["people"], summary="Change a person")
async def patch_person(
    request: Request, session: SessionDep, principal: PeopleWrite, person_id: Id, body: PersonPatch
) -> PersonOut:
    person = await service.update_person(session, principal, person_id, body, ip=_ip(request))
    await session.commit()
    return PersonOut.model_validate(person)


@router.delete(
    "/people/{person_id}", **NO_CONTENT, tags=["people"], summary="Remove a person linked to nothing"
)
async def delete_person(
    request: Request, session: SessionDep, principal: PeopleWrite, person_id: Id
) -> Response:
    await service.delete_person(session, principal, person_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- occupancies


@router.get("/occupancies", tags=["people"], summary="Who occupies which unit, as what, when")
async def get_occupancies(
    session: SessionDep,
    principal: PeopleRead,
    unit_id: Filter = None,
    person_id: Filter = None,
    site_id: Filter = None,
    role: OccupantRole | None = None,
    on: Annotated[date | None, Query(description="Only those holding on this date")] = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[OccupancyOut]:
    page = await service.list_occupancies(
        session,
        principal,
        unit_id=unit_id,
        person_id=person_id,
        site_id=site_id,
        role=role,
        on=on,
        cursor=cursor,
        limit=limit,
    )
    return _page(OccupancyOut, page)


@router.post("/occupancies", status_code=201, tags=["people"], summary="Link a person to a unit")
async def post_occupancy(
    request: Request, session: SessionDep, principal: PeopleWrite, body: OccupancyIn
) -> OccupancyOut:
    occupancy = await service.create_occupancy(session, principal, body, ip=_ip(request))
    await session.commit()
    return OccupancyOut.model_validate(occupancy)


@router.get("/occupancies/{occupancy_id}", tags=["people"], summary="An occupancy")
async def get_occupancy(session: SessionDep, principal: PeopleRead, occupancy_id: Id) -> OccupancyOut:
    occupancy, _unit = await service.get_occupancy(session, principal, occupancy_id)
    return OccupancyOut.model_validate(occupancy)


@router.patch(
    "/occupancies/{occupancy_id}", tags=["people"], summary="Change an occupancy (end it: end_date)"
)
async def patch_occupancy(
    request: Request, session: SessionDep, principal: PeopleWrite, occupancy_id: Id, body: OccupancyPatch
) -> OccupancyOut:
    occupancy = await service.update_occupancy(session, principal, occupancy_id, body, ip=_ip(request))
    await session.commit()
    return OccupancyOut.model_validate(occupancy)


@router.delete(
    "/occupancies/{occupancy_id}",
    **NO_CONTENT,
    tags=["people"],
    summary="Remove an occupancy entered by mistake",
)
async def delete_occupancy(
    request: Request, session: SessionDep, principal: PeopleWrite, occupancy_id: Id
) -> Response:
    await service.delete_occupancy(session, principal, occupancy_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- parking spaces


@router.get("/parking-spaces", summary="Parking spaces")
async def get_parking_spaces(
    session: SessionDep,
    principal: SitesRead,
    site_id: Filter = None,
    unit_id: Filter = None,
    person_id: Filter = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[ParkingSpaceOut]:
    page = await service.list_parking_spaces(
        session, principal, site_id=site_id, unit_id=unit_id, person_id=person_id, cursor=cursor, limit=limit
    )
    return _page(ParkingSpaceOut, page)


@router.post("/parking-spaces", status_code=201, summary="Add a parking space")
async def post_parking_space(
    request: Request, session: SessionDep, principal: PropertyWrite, body: ParkingSpaceIn
) -> ParkingSpaceOut:
    space = await service.create_parking_space(session, principal, body, ip=_ip(request))
    await session.commit()
    return ParkingSpaceOut.model_validate(space)


@router.get("/parking-spaces/{space_id}", summary="A parking space")
async def get_parking_space(session: SessionDep, principal: SitesRead, space_id: Id) -> ParkingSpaceOut:
    return ParkingSpaceOut.model_validate(await service.get_parking_space(session, principal, space_id))


@router.patch("/parking-spaces/{space_id}", summary="Change a parking space")
async def patch_parking_space(
    request: Request, session: SessionDep, principal: PropertyWrite, space_id: Id, body: ParkingSpacePatch
) -> ParkingSpaceOut:
    space = await service.update_parking_space(session, principal, space_id, body, ip=_ip(request))
    await session.commit()
    return ParkingSpaceOut.model_validate(space)


@router.delete("/parking-spaces/{space_id}", **NO_CONTENT, summary="Remove a parking space")
async def delete_parking_space(
    request: Request, session: SessionDep, principal: PropertyWrite, space_id: Id
) -> Response:
    await service.delete_parking_space(session, principal, space_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- common areas


@router.get("/common-areas", summary="Common areas")
async def get_common_areas(
    session: SessionDep,
    principal: SitesRead,
    site_id: Filter = None,
    building_id: Filter = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[CommonAreaOut]:
    page = await service.list_common_areas(
        session, principal, site_id=site_id, building_id=building_id, cursor=cursor, limit=limit
    )
    return _page(CommonAreaOut, page)


@router.post("/common-areas", status_code=201, summary="Add a common area")
async def post_common_area(
    request: Request, session: SessionDep, principal: PropertyWrite, body: CommonAreaIn
) -> CommonAreaOut:
    area = await service.create_common_area(session, principal, body, ip=_ip(request))
    await session.commit()
    return CommonAreaOut.model_validate(area)


@router.get("/common-areas/{area_id}", summary="A common area")
async def get_common_area(session: SessionDep, principal: SitesRead, area_id: Id) -> CommonAreaOut:
    return CommonAreaOut.model_validate(await service.get_common_area(session, principal, area_id))


@router.patch("/common-areas/{area_id}", summary="Change a common area")
async def patch_common_area(
    request: Request, session: SessionDep, principal: PropertyWrite, area_id: Id, body: CommonAreaPatch
) -> CommonAreaOut:
    area = await service.update_common_area(session, principal, area_id, body, ip=_ip(request))
    await session.commit()
    return CommonAreaOut.model_validate(area)


@router.delete("/common-areas/{area_id}", **NO_CONTENT, summary="Remove a common area without meters")
async def delete_common_area(
    request: Request, session: SessionDep, principal: PropertyWrite, area_id: Id
) -> Response:
    await service.delete_common_area(session, principal, area_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- meters


@router.get("/meters", summary="Utility meters")
async def get_meters(
    session: SessionDep,
    principal: SitesRead,
    site_id: Filter = None,
    unit_id: Filter = None,
    common_area_id: Filter = None,
    gateway_id: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    kind: MeterKind | None = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[MeterOut]:
    page = await service.list_meters(
        session,
        principal,
        site_id=site_id,
        unit_id=unit_id,
        common_area_id=common_area_id,
        gateway_id=gateway_id,
        kind=kind,
        cursor=cursor,
        limit=limit,
    )
    return _page(MeterOut, page)


@router.post(
    "/meters", status_code=201, summary="Add a meter (of a unit or common area, read by a gateway point)"
)
async def post_meter(
    request: Request, session: SessionDep, principal: PropertyWrite, body: MeterIn
) -> MeterOut:
    meter = await service.create_meter(session, principal, body, ip=_ip(request))
    await session.commit()
    return MeterOut.model_validate(meter)


@router.get("/meters/{meter_id}", summary="A meter")
async def get_meter(session: SessionDep, principal: SitesRead, meter_id: Id) -> MeterOut:
    return MeterOut.model_validate(await service.get_meter(session, principal, meter_id))


@router.patch("/meters/{meter_id}", summary="Change a meter")
async def patch_meter(
    request: Request, session: SessionDep, principal: PropertyWrite, meter_id: Id, body: MeterPatch
) -> MeterOut:
    meter = await service.update_meter(session, principal, meter_id, body, ip=_ip(request))
    await session.commit()
    return MeterOut.model_validate(meter)


@router.delete("/meters/{meter_id}", **NO_CONTENT, summary="Remove a meter")
async def delete_meter(
    request: Request, session: SessionDep, principal: PropertyWrite, meter_id: Id
) -> Response:
    await service.delete_meter(session, principal, meter_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- departments


@router.get("/departments", tags=["departments"], summary="The company's departments")
async def get_departments(
    session: SessionDep,
    principal: UsersRead,
    company_id: Filter = None,
    parent_id: Filter = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[DepartmentOut]:
    page = await service.list_departments(
        session, principal, company_id=company_id, parent_id=parent_id, cursor=cursor, limit=limit
    )
    return _page(DepartmentOut, page)


@router.post("/departments", status_code=201, tags=["departments"], summary="Add a department")
async def post_department(
    request: Request, session: SessionDep, principal: UsersManage, body: DepartmentIn
) -> DepartmentOut:
    department = await service.create_department(session, principal, body, ip=_ip(request))
    await session.commit()
    return DepartmentOut.model_validate(department)


@router.get("/departments/{department_id}", tags=["departments"], summary="A department")
async def get_department(session: SessionDep, principal: UsersRead, department_id: Id) -> DepartmentOut:
    return DepartmentOut.model_validate(await service.get_department(session, principal, department_id))


@router.patch("/departments/{department_id}", tags=["departments"], summary="Rename or move a department")
async def patch_department(
    request: Request, session: SessionDep, principal: UsersManage, department_id: Id, body: DepartmentPatch
) -> DepartmentOut:
    department = await service.update_department(session, principal, department_id, body, ip=_ip(request))
    await session.commit()
    return DepartmentOut.model_validate(department)


@router.delete(
    "/departments/{department_id}",
    **NO_CONTENT,
    tags=["departments"],
    summary="Remove a department without staff or sub-departments",
)
async def delete_department(
    request: Request, session: SessionDep, principal: UsersManage, department_id: Id
) -> Response:
    await service.delete_department(session, principal, department_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- imports and exports

_IMPORT_DESCRIPTION = (
    "A multipart form: `file` (CSV in UTF-8 or GB18030, or .xlsx; at most "
    f"{MAX_FILE_BYTES // (1024 * 1024)} MB and {MAX_ROWS:,} rows) and `dry_run` (true: check and count, "
    "write nothing). Headers in Chinese or English; see the columns in cloud/property/importing.py. "
    "All or nothing: with any problem, nothing is written and the answer (422, or 200 for a dry run) "
    "lists every problem by row, column and value."
)
_IMPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorOut, "description": "The file is too large"},
    # Not a declared model: a malformed request (no file field) answers FastAPI's own 422 body.
    422: {
        "description": "Problems in the file, nothing written: the report as for 200, with `ok` false, "
        "`detail` and `code` (invalid_rows or invalid_file); or a malformed request"
    },
}


async def _upload(file: UploadFile) -> bytes:
    data = await file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise FileTooLarge(f"file: over {MAX_FILE_BYTES // (1024 * 1024)} MB; split it")
    return data


def _import_answer(result: ImportResult) -> ImportOut | JSONResponse:
    answer = ImportOut(
        ok=result.ok,
        dry_run=result.dry_run,
        rows=result.rows,
        created=result.created,
        updated=result.updated,
        unchanged=result.unchanged,
        counts=result.counts,
        problems=[
            ProblemOut(row=p.row, column=p.column, value=p.value, message=p.message) for p in result.problems
        ],
        problem_count=len(result.problems),
    )
    if result.ok or result.dry_run:
        return answer
    n = len(result.problems)
    rejected = ImportRejectedOut(
        **answer.model_dump(),
        detail=f"{n} problem{'s' if n != 1 else ''} in the file; nothing was imported",
        code="invalid_rows",
    )
    return JSONResponse(rejected.model_dump(mode="json"), status_code=422)


@router.post(
    "/sites/{site_id}/imports/units",
    summary="Import units from a spreadsheet",
    description=_IMPORT_DESCRIPTION,
    responses=_IMPORT_RESPONSES,
    response_model=ImportOut,
)
async def post_units_import(
    request: Request,
    session: SessionDep,
    principal: PropertyWrite,
    site_id: Id,
    file: Annotated[UploadFile, File(description="CSV or .xlsx")],
    dry_run: Annotated[bool, Form()] = False,
) -> Any:
    data = await _upload(file)
    result = await import_units(
        session, principal, site_id, data, file.filename or "", dry_run=dry_run, ip=_ip(request)
    )
    if result.ok and not dry_run:
        await session.commit()
    return _import_answer(result)


@router.post(
    "/sites/{site_id}/imports/people",
    tags=["people"],
    summary="Import people and their occupancies from a spreadsheet",
    description=_IMPORT_DESCRIPTION,
    responses=_IMPORT_RESPONSES,
    response_model=ImportOut,
)
async def post_people_import(
    request: Request,
    session: SessionDep,
    principal: PeopleWrite,
    site_id: Id,
    file: Annotated[UploadFile, File(description="CSV or .xlsx")],
    dry_run: Annotated[bool, Form()] = False,
) -> Any:
    data = await _upload(file)
    result = await import_people(
        session, principal, site_id, data, file.filename or "", dry_run=dry_run, ip=_ip(request)
    )
    if result.ok and not dry_run:
        await session.commit()
    return _import_answer(result)


Format = Annotated[FileFormat, Query(alias="format", description="csv (UTF-8 with BOM) or xlsx")]
Lang = Annotated[Language | None, Query(description="Headers and values in zh or en; default: yours")]
_EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                "schema": {"type": "string", "format": "binary"}
            },
        },
        "description": "The file, with the import's columns",
    }
}


def _streamed(export: Export) -> StreamingResponse:
    ascii_name = export.filename.encode("ascii", "replace").decode().replace("?", "_")
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(export.filename)}"
    return StreamingResponse(
        export.chunks, media_type=export.media_type, headers={"Content-Disposition": disposition}
    )


@router.get(
    "/sites/{site_id}/exports/units",
    summary="Export the site's units (re-imports as it is)",
    response_class=StreamingResponse,
    responses=_EXPORT_RESPONSES,
)
async def get_units_export(
    request: Request, principal: SitesRead, site_id: Id, fmt: Format = "csv", lang: Lang = None
) -> StreamingResponse:
    language: Literal["zh", "en"] = lang or ("en" if principal.language == "en" else "zh")
    return _streamed(await export_units(request.app.state.sessions, principal, site_id, fmt, language))


@router.get(
    "/sites/{site_id}/exports/people",
    tags=["people"],
    summary="Export the people of the site's units (re-imports as it is)",
    response_class=StreamingResponse,
    responses=_EXPORT_RESPONSES,
)
async def get_people_export(
    request: Request, principal: PeopleRead, site_id: Id, fmt: Format = "csv", lang: Lang = None
) -> StreamingResponse:
    language: Literal["zh", "en"] = lang or ("en" if principal.language == "en" else "zh")
    return _streamed(await export_people(request.app.state.sessions, principal, site_id, fmt, language))


__all__ = ["router"]
