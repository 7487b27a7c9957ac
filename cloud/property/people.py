"""People (owners, tenants, residents) and their occupancies of units.

A person belongs to the company, not to a site; their sites are those of the units they occupy (or
occupied). So, for a principal whose PEOPLE_READ holds only at some sites, a person is visible when
linked to one of those sites, or linked to none yet (just entered, about to be linked); a change to a
person needs PEOPLE_WRITE at every site they are linked to: a manager of one estate does not rename
an owner of another. An occupancy is its unit's site's.

A unit has one primary occupant (its main contact and payer) at a time: two primary occupancies of
one unit may not overlap in dates.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import ResidentAccount
from cloud.accounts.permissions import Forbidden, Permission, Principal
from cloud.kit.errors import Conflict, InvalidInput
from cloud.property.models import Occupancy, ParkingSpace, Person, Unit
from cloud.property.schemas import (
    OccupancyIn,
    OccupancyPatch,
    OccupantRole,
    PersonIn,
    PersonPatch,
    patch_fields,
)
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
    site_for,
    snapshot,
)
from cloud.property.tree import get_unit

P = Permission


def _escaped(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _visible(principal: Principal, permission: Permission) -> ColumnElement[bool]:
    """People the principal may see under ``permission``: linked to one of its sites, or to none."""
    scope = principal.sites(permission)
    if scope is None:
        return principal.company_clause(Person.company_id)
    linked_here = exists().where(
        Occupancy.person_id == Person.id,
        Occupancy.unit_id == Unit.id,
        Unit.site_id.in_(sorted(scope)),
    )
    linked_at_all = exists().where(Occupancy.person_id == Person.id)
    return and_(principal.company_clause(Person.company_id), or_(linked_here, ~linked_at_all))


async def person_sites(session: AsyncSession, person_id: int) -> set[int]:
    """The sites of the units the person occupies or occupied."""
    rows = await session.scalars(
        select(Unit.site_id)
        .join(Occupancy, Occupancy.unit_id == Unit.id)
        .where(Occupancy.person_id == person_id)
    )
    return set(rows.all())


# -- people


async def list_people(
    session: AsyncSession,
    principal: Principal,
    *,
    q: str | None = None,
    site_id: int | None = None,
    unit_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[Person]:
    """People by name or phone (``q``: a part of either), or those linked to a site or unit."""
    principal.require(P.PEOPLE_READ)
    stmt = select(Person).where(_visible(principal, P.PEOPLE_READ))
    if q and q.strip():
        # Phones are stored without spaces or dashes: "138 0013" finds 13800138000.
        digits = "".join(ch for ch in q if ch not in " -.()")
        stmt = stmt.where(
            or_(
                Person.name.ilike(_escaped(q.strip()), escape="\\"),
                Person.phone.like(_escaped(digits), escape="\\") if digits else false(),
            )
        )
    if site_id is not None:
        await site_for(session, principal, site_id, P.PEOPLE_READ)
        stmt = stmt.where(
            exists().where(
                Occupancy.person_id == Person.id, Occupancy.unit_id == Unit.id, Unit.site_id == site_id
            )
        )
    if unit_id is not None:
        await get_unit(session, principal, unit_id, P.PEOPLE_READ)
        stmt = stmt.where(exists().where(Occupancy.person_id == Person.id, Occupancy.unit_id == unit_id))
    return await page(session, stmt, Person, cursor, limit)


async def get_person(
    session: AsyncSession, principal: Principal, person_id: int, permission: Permission = P.PEOPLE_READ
) -> Person:
    """The person, if the principal may see them (NotFound otherwise: another company's, or, for a
    principal limited to some sites, someone of other sites only) and use ``permission`` on them."""
    principal.require(permission)
    person = await session.scalar(
        select(Person).where(Person.id == person_id, _visible(principal, P.PEOPLE_READ))
    )
    if person is None:
        # Someone of the principal's company, but of other sites only: it exists, so 403.
        if not principal.is_platform and principal.company_id is not None:
            own = await session.scalar(
                select(Person.id).where(Person.id == person_id, Person.company_id == principal.company_id)
            )
            if own is not None:
                raise Forbidden(f"{principal.name}: person {person_id} is linked only to sites outside yours")
        await load(session, principal, Person, person_id, "person")  # raises NotFound
    assert person is not None
    if permission != P.PEOPLE_READ:
        for site_id in sorted(await person_sites(session, person.id)):
            principal.require(permission, site_id)
    return person


async def create_person(
    session: AsyncSession, principal: Principal, data: PersonIn, *, ip: str = ""
) -> Person:
    principal.require(P.PEOPLE_WRITE)
    company_id = await company_for(session, principal, data.company_id)
    person = Person(
        company_id=company_id,
        name=data.name,
        phone=data.phone,
        email=data.email,
        note=data.note,
        created_at=datetime.now(UTC),
    )
    session.add(person)
    await flush(session, "person: could not be stored")
    await audit(
        session, principal, "person.create", person, company_id=company_id, site_id=None,
        after=snapshot(person), ip=ip,
    )  # fmt: skip
    return person


async def update_person(
    session: AsyncSession, principal: Principal, person_id: int, patch: PersonPatch, *, ip: str = ""
) -> Person:
    person = await get_person(session, principal, person_id, P.PEOPLE_WRITE)
    before = snapshot(person)
    if apply(person, patch_fields(patch), required=("name", "phone", "email", "note")):
        await flush(session, "person: changed by someone else meanwhile")
        await audit(
            session, principal, "person.update", person, company_id=person.company_id, site_id=None,
            before=before, after=snapshot(person), ip=ip,
        )  # fmt: skip
    return person


async def delete_person(session: AsyncSession, principal: Principal, person_id: int, *, ip: str = "") -> None:
    person = await get_person(session, principal, person_id, P.PEOPLE_WRITE)
    what = f"person {person.id} ({person.name})"
    await refuse_if_used(
        session,
        what,
        [
            ("occupancies", select(Occupancy.id).where(Occupancy.person_id == person.id)),
            ("parking spaces", select(ParkingSpace.id).where(ParkingSpace.person_id == person.id)),
            ("a resident account", select(ResidentAccount.id).where(ResidentAccount.person_id == person.id)),
        ],
    )
    await audit(
        session, principal, "person.delete", person, company_id=person.company_id, site_id=None,
        before=snapshot(person), ip=ip,
    )  # fmt: skip
    await delete(session, person, what)


# -- occupancies


def current(today: date) -> ColumnElement[bool]:
    """Occupancies that hold on ``today``."""
    return and_(Occupancy.start_date <= today, or_(Occupancy.end_date.is_(None), Occupancy.end_date >= today))


async def list_occupancies(
    session: AsyncSession,
    principal: Principal,
    *,
    unit_id: int | None = None,
    person_id: int | None = None,
    site_id: int | None = None,
    role: OccupantRole | None = None,
    on: date | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[Occupancy]:
    """Occupancies at the principal's sites; ``on``: only those that hold on that date."""
    principal.require(P.PEOPLE_READ)
    stmt = (
        select(Occupancy)
        .join(Unit, Unit.id == Occupancy.unit_id)
        .where(
            principal.company_clause(Occupancy.company_id),
            principal.site_clause(P.PEOPLE_READ, Unit.site_id),
        )
    )
    if unit_id is not None:
        await get_unit(session, principal, unit_id, P.PEOPLE_READ)
        stmt = stmt.where(Occupancy.unit_id == unit_id)
    if person_id is not None:
        await get_person(session, principal, person_id)
        stmt = stmt.where(Occupancy.person_id == person_id)
    if site_id is not None:
        await site_for(session, principal, site_id, P.PEOPLE_READ)
        stmt = stmt.where(Unit.site_id == site_id)
    if role is not None:
        stmt = stmt.where(Occupancy.role == role)
    if on is not None:
        stmt = stmt.where(current(on))
    return await page(session, stmt, Occupancy, cursor, limit)


async def get_occupancy(
    session: AsyncSession, principal: Principal, occupancy_id: int, permission: Permission = P.PEOPLE_READ
) -> tuple[Occupancy, Unit]:
    occupancy = await load(session, principal, Occupancy, occupancy_id, "occupancy")
    unit = await session.get_one(Unit, occupancy.unit_id)
    principal.require(permission, unit.site_id)
    return occupancy, unit


async def check_primary(
    session: AsyncSession,
    unit_id: int,
    start: date,
    end: date | None,
    occupancy_id: int | None = None,
) -> None:
    """Conflict if another primary occupancy of the unit overlaps ``start``..``end``."""
    overlapping = [
        Occupancy.unit_id == unit_id,
        Occupancy.primary.is_(True),
        or_(Occupancy.end_date.is_(None), Occupancy.end_date >= start),
        Occupancy.start_date <= end if end is not None else true(),
    ]
    if occupancy_id is not None:
        overlapping.append(Occupancy.id != occupancy_id)
    other = await session.scalar(select(Occupancy).where(*overlapping).limit(1))
    if other is not None:
        until = other.end_date.isoformat() if other.end_date else "open"
        raise Conflict(
            f"primary: the unit already has a primary occupant (occupancy {other.id}, person "
            f"{other.person_id}, {other.start_date} to {until}); end that one first"
        )


async def create_occupancy(
    session: AsyncSession, principal: Principal, data: OccupancyIn, *, ip: str = ""
) -> Occupancy:
    unit = await get_unit(session, principal, data.unit_id, P.PEOPLE_WRITE)
    person = await load(session, principal, Person, data.person_id, "person")
    if person.company_id != unit.company_id:
        raise InvalidInput(f"person_id: person {person.id} is not of the unit's company")
    if data.primary:
        await check_primary(session, unit.id, data.start_date, data.end_date)
    occupancy = Occupancy(
        company_id=unit.company_id,
        unit_id=unit.id,
        person_id=person.id,
        role=data.role,
        start_date=data.start_date,
        end_date=data.end_date,
        primary=data.primary,
    )
    session.add(occupancy)
    await flush(session, "occupancy: could not be stored")
    await audit(
        session, principal, "occupancy.create", occupancy, company_id=unit.company_id, site_id=unit.site_id,
        after=snapshot(occupancy), ip=ip,
    )  # fmt: skip
    return occupancy


async def update_occupancy(
    session: AsyncSession, principal: Principal, occupancy_id: int, patch: OccupancyPatch, *, ip: str = ""
) -> Occupancy:
    occupancy, unit = await get_occupancy(session, principal, occupancy_id, P.PEOPLE_WRITE)
    fields = patch_fields(patch)
    start = fields.get("start_date") or occupancy.start_date
    end = fields["end_date"] if "end_date" in fields else occupancy.end_date
    if end is not None and end < start:
        raise InvalidInput(f"end_date: {end} is before start_date {start}")
    primary = fields["primary"] if fields.get("primary") is not None else occupancy.primary
    if primary:
        await check_primary(session, unit.id, start, end, occupancy.id)
    before = snapshot(occupancy)
    if apply(occupancy, fields, required=("role", "start_date", "primary")):
        await flush(session, "occupancy: changed by someone else meanwhile")
        await audit(
            session, principal, "occupancy.update", occupancy, company_id=occupancy.company_id,
            site_id=unit.site_id, before=before, after=snapshot(occupancy), ip=ip,
        )  # fmt: skip
    return occupancy


async def delete_occupancy(
    session: AsyncSession, principal: Principal, occupancy_id: int, *, ip: str = ""
) -> None:
    """Removes a link entered by mistake; a person who moves out gets an end_date instead."""
    occupancy, unit = await get_occupancy(session, principal, occupancy_id, P.PEOPLE_WRITE)
    await audit(
        session, principal, "occupancy.delete", occupancy, company_id=occupancy.company_id,
        site_id=unit.site_id, before=snapshot(occupancy), ip=ip,
    )  # fmt: skip
    await delete(session, occupancy, f"occupancy {occupancy.id}")
