"""Event search (``/events``): the events of the gateways the principal may read, filtered by
site, gateway, kind, source and time, newest first, a page at a time ("older" follows the cursor).

Times are typed and shown in the chosen site's zone (the company's when no site is chosen). A
source filter matches a source exactly, or ("contains") any source with that text in it: those
sources are looked up in ``latest_values`` (every source that ever reported, a small table) and
the events then found through the events_source_time index, never by scanning events for a
substring.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.console import visibility
from cloud.console.event_rows import event_row
from cloud.console.i18n import N_
from cloud.console.nav import register_nav
from cloud.console.templating import page_router, render
from cloud.console.zones import parse_local, zone
from cloud.events.service import KIND_PREFIX, EventPage, list_events
from cloud.kit.errors import InvalidInput, NotFound
from cloud.kit.web import SessionDep
from cloud.models import LatestValue
from protocols.events import KNOWN_KINDS, valid_kind

router = page_router()

register_nav("events", N_("Events"), "/events", permission=Permission.EVENTS_READ, order=80)

PAGE_SIZE = 50
# "contains" matches at most this many sources; a broader text should name more of the source.
MAX_MATCHED_SOURCES = 200


async def matching_sources(session: AsyncSession, gateway_ids: list[str] | None, text: str) -> list[str]:
    """Sources with ``text`` in them that the gateways ever reported (from latest_values)."""
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    stmt = select(LatestValue.source).where(LatestValue.source.like(pattern, escape="\\")).distinct()
    if gateway_ids is not None:
        stmt = stmt.where(LatestValue.gateway_id.in_(gateway_ids))
    return list((await session.scalars(stmt.order_by(LatestValue.source).limit(MAX_MATCHED_SOURCES))).all())


def kind_filter(text: str) -> tuple[str | None, str | None]:
    """(exact kind, kind prefix) of what was typed: ``door.forced`` is a kind; ``door.``,
    ``door.*`` and ``door`` mean every door kind."""
    text = text.strip()
    if not text:
        return None, None
    if valid_kind(text):
        return text, None
    prefix = text.rstrip("*")
    if prefix and "." not in prefix:
        prefix += "."
    if not KIND_PREFIX.fullmatch(prefix):
        raise InvalidInput(
            f"kind: {text!r} is not an event kind like door.forced, nor the start of one (door.)"
        )
    return None, prefix


@router.get("/events")
async def events_page(
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(Authorize(Permission.EVENTS_READ))],
    site_text: Annotated[str, Query(alias="site", max_length=20)] = "",
    gateway: Annotated[str, Query(max_length=64)] = "",
    kind: Annotated[str, Query(max_length=64)] = "",
    source: Annotated[str, Query(max_length=200)] = "",
    match: Annotated[Literal["equals", "contains"], Query()] = "equals",
    since: Annotated[str, Query(max_length=32)] = "",
    until: Annotated[str, Query(max_length=32)] = "",
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    # The form's "all sites" sends site= (empty): no filter, not an error.
    if site_text.strip() and not site_text.strip().isdigit():
        raise InvalidInput(f"site: {site_text!r} is not a site id")
    site = int(site_text) if site_text.strip() else None
    sites = await visibility.visible_sites(session, principal, Permission.EVENTS_READ)
    chosen_site = None
    if site is not None:
        chosen_site = await visibility.get_site(session, principal, site, Permission.EVENTS_READ)
    tz = zone(chosen_site.timezone) if chosen_site else await visibility.company_zone(session, principal)
    gateways = await visibility.visible_gateways(session, principal, Permission.EVENTS_READ, site)
    gateway_ids = await visibility.visible_gateway_ids(session, principal, Permission.EVENTS_READ, site)
    if gateway:
        if gateway_ids is not None and gateway not in gateway_ids:
            raise NotFound(f"gateway {gateway!r}: no such gateway")
        if gateway_ids is None:
            await visibility.get_gateway(session, principal, gateway, Permission.EVENTS_READ)
        gateway_ids = [gateway]
    params = {
        "site": site,
        "gateway": gateway,
        "kind": kind,
        "source": source,
        "match": match if source else "",
        "since": since,
        "until": until,
    }
    error = ""
    page = EventPage([], None)
    try:
        since_at = parse_local(since, tz, "since")
        until_at = parse_local(until, tz, "until")
        exact_kind, kind_prefix = kind_filter(kind)
        sources: list[str] | None = None
        if source and match == "contains":
            sources = await matching_sources(session, gateway_ids, source)
        elif source:
            sources = [source]
        if gateway_ids == [] or sources == []:
            page = EventPage([], None)
        else:
            page = await list_events(
                session,
                gateway_ids=gateway_ids,
                kind=exact_kind,
                kind_prefix=kind_prefix,
                sources=sources,
                since=since_at,
                until=until_at,
                cursor=cursor,
                limit=PAGE_SIZE,
            )
    except InvalidInput as e:
        error = str(e)
    context = {
        "tz": tz,
        "site_options": [(s.id, s.name) for s in sites],
        "gateway_options": [(g.id, f"{g.name} ({g.id})" if g.name else g.id) for g in gateways],
        "kinds": sorted(KNOWN_KINDS),
        "params": params,
        "since_value": since,
        "until_value": until,
        "rows": [event_row(e) for e in page.items],
        "next_cursor": page.next_cursor,
        "error": error,
        "first_page": cursor is None,
    }
    return render(request, "events.html", context, principal=principal, status_code=422 if error else 200)
