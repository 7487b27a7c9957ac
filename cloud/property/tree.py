"""A site's buildings, their floors and the units (房屋) on them.

Reading needs SITES_READ at the site, changing PROPERTY_WRITE there. A unit's site and building
follow from its floor, so a unit cannot end up on a floor of another building or site; a unit moves
only between floors of its own building.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.permissions import Permission, Principal
from cloud.kit.errors import Conflict, InvalidInput
from cloud.models import Base
from cloud.property.models import Building, CommonArea, Floor, Meter, Occupancy, ParkingSpace, Unit
from cloud.property.schemas import (
    BuildingIn,
    BuildingPatch,
    FloorIn,
    FloorPatch,
    UnitIn,
    UnitPatch,
    UnitUse,
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


def floor_name(level: int) -> str:
    """How a floor is signed when no name is given: ``12F`` above ground, ``B1`` below."""
    return f"{level}F" if level > 0 else f"B{-level}"


def _check_level(level: int) -> None:
    if level == 0:
        raise InvalidInput("level: 0 is no floor (1 is the ground floor, -1 the first basement)")


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def _audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    row: Base,
    site_id: int,
    company_id: int,
    before: dict[str, object] | None,
    ip: str,
    *,
    deleted: bool = False,
) -> None:
    await audit(
        session,
        principal,
        action,
        row,
        company_id=company_id,
        site_id=site_id,
        before=before,
        after=None if deleted else snapshot(row),
        ip=ip,
    )


# -- buildings


async def list_buildings(
    session: AsyncSession,
    principal: Principal,
    *,
    site_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[Building]:
    principal.require(P.SITES_READ)
    stmt = select(Building).where(
        principal.company_clause(Building.company_id), principal.site_clause(P.SITES_READ, Building.site_id)
    )
    if site_id is not None:
        await site_for(session, principal, site_id, P.SITES_READ)
        stmt = stmt.where(Building.site_id == site_id)
    return await page(session, stmt, Building, cursor, limit)


async def get_building(
    session: AsyncSession, principal: Principal, building_id: int, permission: Permission = P.SITES_READ
) -> Building:
    building = await load(session, principal, Building, building_id, "building")
    principal.require(permission, building.site_id)
    return building


async def _code_free(session: AsyncSession, site_id: int, code: str, building_id: int | None = None) -> None:
    stmt = select(Building.id).where(Building.site_id == site_id, Building.code == code)
    if building_id is not None:
        stmt = stmt.where(Building.id != building_id)
    if await session.scalar(stmt) is not None:
        raise Conflict(f"code: the site already has a building {code!r}")


async def create_building(
    session: AsyncSession, principal: Principal, data: BuildingIn, *, ip: str = ""
) -> Building:
    site = await site_for(session, principal, data.site_id, P.PROPERTY_WRITE)
    await _code_free(session, site.id, data.code)
    building = Building(company_id=site.company_id, site_id=site.id, code=data.code, name=data.name)
    session.add(building)
    await flush(session, f"code: the site already has a building {data.code!r}")
    await _audit(session, principal, "building.create", building, site.id, site.company_id, None, ip)
    return building


async def update_building(
    session: AsyncSession, principal: Principal, building_id: int, patch: BuildingPatch, *, ip: str = ""
) -> Building:
    building = await get_building(session, principal, building_id, P.PROPERTY_WRITE)
    fields = patch_fields(patch)
    if fields.get("code") is not None:
        await _code_free(session, building.site_id, fields["code"], building.id)
    before = snapshot(building)
    if apply(building, fields, required=("code", "name")):
        await flush(session, "code: the site already has a building with that code")
        await _audit(
            session, principal, "building.update", building, building.site_id, building.company_id, before, ip
        )
    return building


async def delete_building(
    session: AsyncSession, principal: Principal, building_id: int, *, ip: str = ""
) -> None:
    building = await get_building(session, principal, building_id, P.PROPERTY_WRITE)
    what = f"building {building.code!r}"
    await refuse_if_used(
        session,
        what,
        [
            ("units", select(Unit.id).where(Unit.building_id == building.id)),
            ("floors", select(Floor.id).where(Floor.building_id == building.id)),
            ("common areas", select(CommonArea.id).where(CommonArea.building_id == building.id)),
        ],
    )
    await _audit(
        session, principal, "building.delete", building, building.site_id, building.company_id,
        snapshot(building), ip, deleted=True,
    )  # fmt: skip
    await delete(session, building, what)


# -- floors


async def list_floors(
    session: AsyncSession,
    principal: Principal,
    *,
    building_id: int | None = None,
    site_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[Floor]:
    principal.require(P.SITES_READ)
    # Floors carry no site: the building's says where they are.
    stmt = (
        select(Floor)
        .join(Building, Building.id == Floor.building_id)
        .where(
            principal.company_clause(Floor.company_id),
            principal.site_clause(P.SITES_READ, Building.site_id),
        )
    )
    if building_id is not None:
        await get_building(session, principal, building_id)
        stmt = stmt.where(Floor.building_id == building_id)
    if site_id is not None:
        await site_for(session, principal, site_id, P.SITES_READ)
        stmt = stmt.where(Building.site_id == site_id)
    return await page(session, stmt, Floor, cursor, limit)


async def _floor_and_building(
    session: AsyncSession, principal: Principal, floor_id: int, permission: Permission
) -> tuple[Floor, Building]:
    floor = await load(session, principal, Floor, floor_id, "floor")
    building = await session.get_one(Building, floor.building_id)
    principal.require(permission, building.site_id)
    return floor, building


async def get_floor(session: AsyncSession, principal: Principal, floor_id: int) -> Floor:
    return (await _floor_and_building(session, principal, floor_id, P.SITES_READ))[0]


async def _level_free(
    session: AsyncSession, building_id: int, level: int, floor_id: int | None = None
) -> None:
    stmt = select(Floor.id).where(Floor.building_id == building_id, Floor.level == level)
    if floor_id is not None:
        stmt = stmt.where(Floor.id != floor_id)
    if await session.scalar(stmt) is not None:
        raise Conflict(f"level: the building already has a floor at level {level}")


async def create_floor(session: AsyncSession, principal: Principal, data: FloorIn, *, ip: str = "") -> Floor:
    building = await get_building(session, principal, data.building_id, P.PROPERTY_WRITE)
    _check_level(data.level)
    await _level_free(session, building.id, data.level)
    floor = Floor(
        company_id=building.company_id,
        building_id=building.id,
        level=data.level,
        name=data.name or floor_name(data.level),
    )
    session.add(floor)
    await flush(session, f"level: the building already has a floor at level {data.level}")
    await _audit(session, principal, "floor.create", floor, building.site_id, building.company_id, None, ip)
    return floor


async def update_floor(
    session: AsyncSession, principal: Principal, floor_id: int, patch: FloorPatch, *, ip: str = ""
) -> Floor:
    floor, building = await _floor_and_building(session, principal, floor_id, P.PROPERTY_WRITE)
    fields = patch_fields(patch)
    if fields.get("level") is not None:
        _check_level(fields["level"])
        await _level_free(session, building.id, fields["level"], floor.id)
    before = snapshot(floor)
    if apply(floor, fields, required=("level", "name")):
        await flush(session, "level: the building already has a floor at that level")
        await _audit(
            session, principal, "floor.update", floor, building.site_id, floor.company_id, before, ip
        )
    return floor


async def delete_floor(session: AsyncSession, principal: Principal, floor_id: int, *, ip: str = "") -> None:
    floor, building = await _floor_and_building(session, principal, floor_id, P.PROPERTY_WRITE)
    what = f"floor {floor.name!r} of building {building.code!r}"
    await refuse_if_used(session, what, [("units", select(Unit.id).where(Unit.floor_id == floor.id))])
    await _audit(
        session, principal, "floor.delete", floor, building.site_id, floor.company_id, snapshot(floor), ip,
        deleted=True,
    )  # fmt: skip
    await delete(session, floor, what)


# -- units


async def list_units(
    session: AsyncSession,
    principal: Principal,
    *,
    site_id: int | None = None,
    building_id: int | None = None,
    floor_id: int | None = None,
    use: UnitUse | None = None,
    number_prefix: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[Unit]:
    principal.require(P.SITES_READ)
    stmt = select(Unit).where(
        principal.company_clause(Unit.company_id), principal.site_clause(P.SITES_READ, Unit.site_id)
    )
    if site_id is not None:
        await site_for(session, principal, site_id, P.SITES_READ)
        stmt = stmt.where(Unit.site_id == site_id)
    if building_id is not None:
        await get_building(session, principal, building_id)
        stmt = stmt.where(Unit.building_id == building_id)
    if floor_id is not None:
        await get_floor(session, principal, floor_id)
        stmt = stmt.where(Unit.floor_id == floor_id)
    if use is not None:
        stmt = stmt.where(Unit.use == use)
    if number_prefix:
        stmt = stmt.where(Unit.number.like(_like_prefix(number_prefix), escape="\\"))
    return await page(session, stmt, Unit, cursor, limit)


async def get_unit(
    session: AsyncSession, principal: Principal, unit_id: int, permission: Permission = P.SITES_READ
) -> Unit:
    unit = await load(session, principal, Unit, unit_id, "unit")
    principal.require(permission, unit.site_id)
    return unit


async def _number_free(
    session: AsyncSession, building_id: int, number: str, unit_id: int | None = None
) -> None:
    stmt = select(Unit.id).where(Unit.building_id == building_id, Unit.number == number)
    if unit_id is not None:
        stmt = stmt.where(Unit.id != unit_id)
    if await session.scalar(stmt) is not None:
        raise Conflict(f"number: the building already has a unit {number!r}")


async def create_unit(session: AsyncSession, principal: Principal, data: UnitIn, *, ip: str = "") -> Unit:
    floor, building = await _floor_and_building(session, principal, data.floor_id, P.PROPERTY_WRITE)
    await _number_free(session, building.id, data.number)
    unit = Unit(
        company_id=building.company_id,
        site_id=building.site_id,
        building_id=building.id,
        floor_id=floor.id,
        number=data.number,
        floor_area_m2=data.floor_area_m2,
        use=data.use,
        created_at=datetime.now(UTC),
    )
    session.add(unit)
    await flush(session, f"number: the building already has a unit {data.number!r}")
    await _audit(session, principal, "unit.create", unit, unit.site_id, unit.company_id, None, ip)
    return unit


async def update_unit(
    session: AsyncSession, principal: Principal, unit_id: int, patch: UnitPatch, *, ip: str = ""
) -> Unit:
    unit = await get_unit(session, principal, unit_id, P.PROPERTY_WRITE)
    fields = patch_fields(patch)
    if fields.get("floor_id") is not None and fields["floor_id"] != unit.floor_id:
        floor = await get_floor(session, principal, fields["floor_id"])
        if floor.building_id != unit.building_id:
            raise InvalidInput(
                f"floor_id: floor {floor.id} is in another building; a unit moves only within its building"
            )
    if fields.get("number") is not None:
        await _number_free(session, unit.building_id, fields["number"], unit.id)
    before = snapshot(unit)
    if apply(unit, fields, required=("floor_id", "number", "floor_area_m2", "use")):
        await flush(session, "number: the building already has a unit with that number")
        await _audit(session, principal, "unit.update", unit, unit.site_id, unit.company_id, before, ip)
    return unit


async def delete_unit(session: AsyncSession, principal: Principal, unit_id: int, *, ip: str = "") -> None:
    unit = await get_unit(session, principal, unit_id, P.PROPERTY_WRITE)
    what = f"unit {unit.number!r}"
    await refuse_if_used(
        session,
        what,
        [
            ("occupancies", select(Occupancy.id).where(Occupancy.unit_id == unit.id)),
            ("parking spaces", select(ParkingSpace.id).where(ParkingSpace.unit_id == unit.id)),
            ("meters", select(Meter.id).where(Meter.unit_id == unit.id)),
        ],
    )
    await _audit(
        session,
        principal,
        "unit.delete",
        unit,
        unit.site_id,
        unit.company_id,
        snapshot(unit),
        ip,
        deleted=True,
    )
    await delete(session, unit, what)
