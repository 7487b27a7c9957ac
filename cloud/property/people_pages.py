"""The console's people pages: ``/people`` (search by a part of the name or phone, at a site, paged)
and ``/people/{id}`` (a person's details and units; changing them). Linking a person to a unit is
on the unit's page (``tree_pages``).

The people service decides who is visible: everyone of the company for a principal whose
people.read holds at every site; for one limited to some sites, those linked to them (or to no unit
yet). Changing a person needs people.write at every site they are linked to.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Path, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.console import visibility
from cloud.console.formkit import FORM_MISTAKES, NO_MISTAKE, Mistake, client_ip, done
from cloud.console.i18n import N_
from cloud.console.templating import page_router
from cloud.kit.web import SessionDep
from cloud.property import service
from cloud.property.labels import render_page
from cloud.property.models import Building, Site, Unit
from cloud.property.schemas import PersonPatch

P = Permission
router = page_router()

PeopleRead = Annotated[Principal, Depends(Authorize(P.PEOPLE_READ))]
PeopleWrite = Annotated[Principal, Depends(Authorize(P.PEOPLE_WRITE))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Short = Annotated[str, Form(max_length=200)]


@router.get("/people")
async def people_page(
    request: Request,
    session: SessionDep,
    principal: PeopleRead,
    q: Annotated[str, Query(max_length=100)] = "",
    site: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    page = await service.list_people(session, principal, q=q.strip() or None, site_id=site, cursor=cursor)
    sites = await visibility.visible_sites(session, principal, P.PEOPLE_READ)
    context = {
        "people": page.items,
        "next_cursor": page.next_cursor,
        "params": {"q": q, "site": site or ""},
        "site_options": [(s.id, s.name) for s in sites],
    }
    return render_page(request, principal, "property/people.html", context)


@router.get("/people/{person_id}")
async def person_page(
    request: Request, session: SessionDep, principal: PeopleRead, person_id: Id
) -> Response:
    return await _person_view(request, session, principal, person_id)


async def _person_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    person_id: int,
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    person = await service.get_person(session, principal, person_id)
    found = await service.list_occupancies(session, principal, person_id=person.id, limit=service.MAX_PAGE)
    occupancies = sorted(found.items, key=lambda o: (o.start_date, o.id), reverse=True)
    units: dict[int, Any] = {}
    unit_ids = sorted({o.unit_id for o in occupancies})
    if unit_ids:
        # The occupancies listed are at the principal's sites: so are their units.
        rows = await session.execute(
            select(
                Unit.id,
                Unit.number,
                Building.code.label("building"),
                Site.id.label("site_id"),
                Site.name.label("site"),
            )
            .join(Building, Building.id == Unit.building_id)
            .join(Site, Site.id == Unit.site_id)
            .where(Unit.id.in_(unit_ids))
        )
        units = {r.id: r for r in rows}
    context = {
        "person": person,
        "occupancies": occupancies,
        "units": units,
        "can_write": principal.can(P.PEOPLE_WRITE),
    }
    return render_page(request, principal, "property/person.html", context, mistake)


@router.post("/people/{person_id}")
async def edit_person(
    request: Request,
    session: SessionDep,
    principal: PeopleWrite,
    person_id: Id,
    name: Short = "",
    phone: Short = "",
    email: Short = "",
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    form = {"name": name, "phone": phone, "email": email, "note": note}
    try:
        # The person first: someone of other sites is refused before the form is looked at.
        await service.get_person(session, principal, person_id, P.PEOPLE_WRITE)
        patch = PersonPatch(name=name, phone=phone, email=email, note=note)
        person = await service.update_person(session, principal, person_id, patch, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _person_view(request, session, principal, person_id, Mistake.of(e, form))
    return done(request, principal, f"/people/{person_id}", N_("%(name)s saved."), name=person.name)
