"""A site's parking spaces, common areas and utility meters.

Everything here is one site's: reading needs SITES_READ there, changing PROPERTY_WRITE. What a row
links to must be of the same site (a parking space's unit, a common area's building, a meter's unit
or common area) or, for a person, of the same company. A meter is read by a gateway point: the
gateway must serve the meter's site; when the gateway has told its inventory, the point must be one
of its points.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.permissions import Permission, Principal
from cloud.kit.errors import Conflict, InvalidInput
from cloud.models import Base, Gateway, GatewayPoint
from cloud.property.models import Building, CommonArea, Meter, ParkingSpace, Person, Site, Unit
from cloud.property.schemas import (
    CommonAreaIn,
    CommonAreaPatch,
    MeterIn,
    MeterKind,
    MeterPatch,
    ParkingSpaceIn,
    ParkingSpacePatch,
    patch_fields,
)
from cloud.property.scope import (
    DEFAULT_PAGE,
    Page,
    apply,
    audit,
    delete,
    flush,
    load,
    page,
    refuse_if_used,
    site_for,
    snapshot,
)

P = Permission


async def _get(
    session: AsyncSession,
    principal: Principal,
    model: type[Any],
    object_id: int,
    what: str,
    permission: Permission,
) -> Any:
    row = await load(session, principal, model, object_id, what)
    principal.require(permission, row.site_id)
    return row


async def _audit_change(
    session: AsyncSession,
    principal: Principal,
    action: str,
    row: Base,
    before: dict[str, Any] | None,
    ip: str,
    *,
    deleted: bool = False,
) -> None:
    await audit(
        session,
        principal,
        action,
        row,
        company_id=row.company_id,  # type: ignore[attr-defined]
        site_id=row.site_id,  # type: ignore[attr-defined]
        before=before,
        after=None if deleted else snapshot(row),
        ip=ip,
    )


async def _same_site(
    session: AsyncSession, principal: Principal, model: type[Any], object_id: int, site: Site, field: str
) -> None:
    """InvalidInput unless the linked row is of ``site`` (NotFound for another company's)."""
    what = field.removesuffix("_id").replace("_", " ")
    row = await load(session, principal, model, object_id, what)
    if row.site_id != site.id:
        raise InvalidInput(f"{field}: {what} {object_id} is not at site {site.code!r}")


async def _code_free(
    session: AsyncSession, model: type[Any], site_id: int, code: str, row_id: int | None
) -> None:
    stmt = select(model.id).where(model.site_id == site_id, model.code == code)
    if row_id is not None:
        stmt = stmt.where(model.id != row_id)
    if await session.scalar(stmt) is not None:
        raise Conflict(
            f"code: the site already has a {model.__tablename__.removesuffix('s').replace('_', ' ')} {code!r}"
        )


# -- parking spaces


async def list_parking_spaces(
    session: AsyncSession,
    principal: Principal,
    *,
    site_id: int | None = None,
    unit_id: int | None = None,
    person_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[ParkingSpace]:
    principal.require(P.SITES_READ)
    stmt = select(ParkingSpace).where(
        principal.company_clause(ParkingSpace.company_id),
        principal.site_clause(P.SITES_READ, ParkingSpace.site_id),
    )
    if site_id is not None:
        await site_for(session, principal, site_id, P.SITES_READ)
        stmt = stmt.where(ParkingSpace.site_id == site_id)
    if unit_id is not None:
        stmt = stmt.where(ParkingSpace.unit_id == unit_id)
    if person_id is not None:
        stmt = stmt.where(ParkingSpace.person_id == person_id)
    return await page(session, stmt, ParkingSpace, cursor, limit)


async def get_parking_space(
    session: AsyncSession, principal: Principal, space_id: int, permission: Permission = P.SITES_READ
) -> ParkingSpace:
    return await _get(session, principal, ParkingSpace, space_id, "parking space", permission)  # type: ignore[no-any-return]


async def _parking_links(
    session: AsyncSession, principal: Principal, site: Site, fields: dict[str, Any]
) -> None:
    if fields.get("unit_id") is not None:
        await _same_site(session, principal, Unit, fields["unit_id"], site, "unit_id")
    if fields.get("person_id") is not None:
        person = await load(session, principal, Person, fields["person_id"], "person")
        if person.company_id != site.company_id:
            raise InvalidInput(f"person_id: person {person.id} is not of the site's company")


async def create_parking_space(
    session: AsyncSession, principal: Principal, data: ParkingSpaceIn, *, ip: str = ""
) -> ParkingSpace:
    site = await site_for(session, principal, data.site_id, P.PROPERTY_WRITE)
    fields = data.model_dump()
    await _parking_links(session, principal, site, fields)
    await _code_free(session, ParkingSpace, site.id, data.code, None)
    space = ParkingSpace(company_id=site.company_id, **fields)
    session.add(space)
    await flush(session, f"code: the site already has a parking space {data.code!r}")
    await _audit_change(session, principal, "parking_space.create", space, None, ip)
    return space


async def update_parking_space(
    session: AsyncSession, principal: Principal, space_id: int, patch: ParkingSpacePatch, *, ip: str = ""
) -> ParkingSpace:
    space = await get_parking_space(session, principal, space_id, P.PROPERTY_WRITE)
    site = await session.get_one(Site, space.site_id)
    fields = patch_fields(patch)
    await _parking_links(session, principal, site, fields)
    if fields.get("code") is not None:
        await _code_free(session, ParkingSpace, site.id, fields["code"], space.id)
    before = snapshot(space)
    if apply(space, fields, required=("code", "kind")):
        await flush(session, "code: the site already has a parking space with that code")
        await _audit_change(session, principal, "parking_space.update", space, before, ip)
    return space


async def delete_parking_space(
    session: AsyncSession, principal: Principal, space_id: int, *, ip: str = ""
) -> None:
    space = await get_parking_space(session, principal, space_id, P.PROPERTY_WRITE)
    await _audit_change(session, principal, "parking_space.delete", space, snapshot(space), ip, deleted=True)
    await delete(session, space, f"parking space {space.code!r}")


# -- common areas


async def list_common_areas(
    session: AsyncSession,
    principal: Principal,
    *,
    site_id: int | None = None,
    building_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[CommonArea]:
    principal.require(P.SITES_READ)
    stmt = select(CommonArea).where(
        principal.company_clause(CommonArea.company_id),
        principal.site_clause(P.SITES_READ, CommonArea.site_id),
    )
    if site_id is not None:
        await site_for(session, principal, site_id, P.SITES_READ)
        stmt = stmt.where(CommonArea.site_id == site_id)
    if building_id is not None:
        stmt = stmt.where(CommonArea.building_id == building_id)
    return await page(session, stmt, CommonArea, cursor, limit)


async def get_common_area(
    session: AsyncSession, principal: Principal, area_id: int, permission: Permission = P.SITES_READ
) -> CommonArea:
    return await _get(session, principal, CommonArea, area_id, "common area", permission)  # type: ignore[no-any-return]


async def create_common_area(
    session: AsyncSession, principal: Principal, data: CommonAreaIn, *, ip: str = ""
) -> CommonArea:
    site = await site_for(session, principal, data.site_id, P.PROPERTY_WRITE)
    if data.building_id is not None:
        await _same_site(session, principal, Building, data.building_id, site, "building_id")
    area = CommonArea(company_id=site.company_id, **data.model_dump())
    session.add(area)
    await flush(session, "common area: could not be stored")
    await _audit_change(session, principal, "common_area.create", area, None, ip)
    return area


async def update_common_area(
    session: AsyncSession, principal: Principal, area_id: int, patch: CommonAreaPatch, *, ip: str = ""
) -> CommonArea:
    area = await get_common_area(session, principal, area_id, P.PROPERTY_WRITE)
    fields = patch_fields(patch)
    if fields.get("building_id") is not None:
        site = await session.get_one(Site, area.site_id)
        await _same_site(session, principal, Building, fields["building_id"], site, "building_id")
    before = snapshot(area)
    if apply(area, fields, required=("name", "kind")):
        await flush(session, "common area: changed by someone else meanwhile")
        await _audit_change(session, principal, "common_area.update", area, before, ip)
    return area


async def delete_common_area(
    session: AsyncSession, principal: Principal, area_id: int, *, ip: str = ""
) -> None:
    area = await get_common_area(session, principal, area_id, P.PROPERTY_WRITE)
    what = f"common area {area.name!r}"
    await refuse_if_used(session, what, [("meters", select(Meter.id).where(Meter.common_area_id == area.id))])
    await _audit_change(session, principal, "common_area.delete", area, snapshot(area), ip, deleted=True)
    await delete(session, area, what)


# -- meters


async def list_meters(
    session: AsyncSession,
    principal: Principal,
    *,
    site_id: int | None = None,
    unit_id: int | None = None,
    common_area_id: int | None = None,
    gateway_id: str | None = None,
    kind: MeterKind | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[Meter]:
    principal.require(P.SITES_READ)
    stmt = select(Meter).where(
        principal.company_clause(Meter.company_id), principal.site_clause(P.SITES_READ, Meter.site_id)
    )
    if site_id is not None:
        await site_for(session, principal, site_id, P.SITES_READ)
        stmt = stmt.where(Meter.site_id == site_id)
    if unit_id is not None:
        stmt = stmt.where(Meter.unit_id == unit_id)
    if common_area_id is not None:
        stmt = stmt.where(Meter.common_area_id == common_area_id)
    if gateway_id is not None:
        stmt = stmt.where(Meter.gateway_id == gateway_id)
    if kind is not None:
        stmt = stmt.where(Meter.kind == kind)
    return await page(session, stmt, Meter, cursor, limit)


async def get_meter(
    session: AsyncSession, principal: Principal, meter_id: int, permission: Permission = P.SITES_READ
) -> Meter:
    return await _get(session, principal, Meter, meter_id, "meter", permission)  # type: ignore[no-any-return]


async def _meter_links(
    session: AsyncSession, principal: Principal, site: Site, meter: dict[str, Any]
) -> None:
    """Check the links of a meter as it will be (``meter``: all its link fields)."""
    if meter["unit_id"] is not None and meter["common_area_id"] is not None:
        raise InvalidInput("unit_id: a meter is billed to a unit or shared by a common area, not both")
    if (meter["gateway_id"] is None) != (meter["point"] is None):
        raise InvalidInput("point: gateway_id and point go together (the gateway and the source it reports)")
    if meter["unit_id"] is not None:
        await _same_site(session, principal, Unit, meter["unit_id"], site, "unit_id")
    if meter["common_area_id"] is not None:
        await _same_site(session, principal, CommonArea, meter["common_area_id"], site, "common_area_id")
    gateway_id = meter["gateway_id"]
    if gateway_id is None:
        return
    gateway = await session.get(Gateway, gateway_id)
    if gateway is None or (not principal.is_platform and gateway.company_id != principal.company_id):
        raise InvalidInput(f"gateway_id: no gateway {gateway_id!r}")
    if gateway.company_id != site.company_id or (gateway.site_id != site.id and gateway.site != site.code):
        raise InvalidInput(f"gateway_id: gateway {gateway_id!r} does not serve site {site.code!r}")
    known = await session.scalar(
        select(GatewayPoint.source).where(GatewayPoint.gateway_id == gateway_id).limit(1)
    )
    if known is not None:
        has = await session.scalar(
            select(GatewayPoint.source).where(
                GatewayPoint.gateway_id == gateway_id, GatewayPoint.source == meter["point"]
            )
        )
        if has is None:
            raise InvalidInput(f"point: gateway {gateway_id!r} reports no point {meter['point']!r}")


_LINKS = ("unit_id", "common_area_id", "gateway_id", "point")


async def create_meter(session: AsyncSession, principal: Principal, data: MeterIn, *, ip: str = "") -> Meter:
    site = await site_for(session, principal, data.site_id, P.PROPERTY_WRITE)
    fields = data.model_dump()
    await _meter_links(session, principal, site, fields)
    await _code_free(session, Meter, site.id, data.code, None)
    meter = Meter(company_id=site.company_id, **fields)
    session.add(meter)
    await flush(session, f"code: the site already has a meter {data.code!r}")
    await _audit_change(session, principal, "meter.create", meter, None, ip)
    return meter


async def update_meter(
    session: AsyncSession, principal: Principal, meter_id: int, patch: MeterPatch, *, ip: str = ""
) -> Meter:
    meter = await get_meter(session, principal, meter_id, P.PROPERTY_WRITE)
    site = await session.get_one(Site, meter.site_id)
    fields = patch_fields(patch)
    if any(k in fields for k in _LINKS):
        await _meter_links(session, principal, site, {k: fields.get(k, getattr(meter, k)) for k in _LINKS})
    if fields.get("code") is not None:
        await _code_free(session, Meter, site.id, fields["code"], meter.id)
    before = snapshot(meter)
    if apply(meter, fields, required=("code", "kind", "multi_tariff")):
        await flush(session, "code: the site already has a meter with that code")
        await _audit_change(session, principal, "meter.update", meter, before, ip)
    return meter


async def delete_meter(session: AsyncSession, principal: Principal, meter_id: int, *, ip: str = "") -> None:
    meter = await get_meter(session, principal, meter_id, P.PROPERTY_WRITE)
    await _audit_change(session, principal, "meter.delete", meter, snapshot(meter), ip, deleted=True)
    await delete(session, meter, f"meter {meter.code!r}")
