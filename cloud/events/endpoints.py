"""``GET /api/v1/events``: the stored events the principal may read, filtered and paged newest first."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.events.schemas import EventOut, EventPageOut
from cloud.events.scope import visible_gateway_ids
from cloud.events.service import DEFAULT_PAGE, KIND_PREFIX_PATTERN, MAX_PAGE, list_events
from cloud.kit.errors import NotFound
from cloud.kit.web import SessionDep
from protocols.events import KIND_PATTERN
from protocols.topics import GATEWAY_ID_PATTERN

router = APIRouter(tags=["events"])


@router.get(
    "/events",
    summary="List events, newest first",
    description="The events of the gateways at the sites where the principal may read events (the "
    "platform token: every gateway). Every filter given applies; page with next_cursor.",
)
async def get_events(
    session: SessionDep,
    principal: Annotated[Principal, Depends(Authorize(Permission.EVENTS_READ))],
    site_id: Annotated[int | None, Query(ge=1, description="Only the gateways of this site")] = None,
    gateway_id: Annotated[
        str | None, Query(pattern=GATEWAY_ID_PATTERN, description="Only this gateway")
    ] = None,
    kind: Annotated[
        str | None, Query(pattern=KIND_PATTERN, max_length=64, description="Only this kind, e.g. door.forced")
    ] = None,
    kind_prefix: Annotated[
        str | None,
        Query(pattern=KIND_PREFIX_PATTERN, max_length=64, description="Only kinds starting so, e.g. door."),
    ] = None,
    source: Annotated[
        str | None,
        Query(min_length=1, max_length=128, description="Only this source, e.g. ahu-1/supply_temp"),
    ] = None,
    since: Annotated[
        datetime | None, Query(description="ISO-8601; reported time at or after this (no zone: UTC)")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="ISO-8601; reported time before this (no zone: UTC)")
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=64, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> EventPageOut:
    gateway_ids = await visible_gateway_ids(session, principal, Permission.EVENTS_READ, site_id)
    if gateway_id is not None and gateway_ids is not None and gateway_id not in gateway_ids:
        # Another company's gateway, or one outside the principal's sites: as if it did not exist.
        raise NotFound(f"gateway_id: no gateway {gateway_id!r}")
    page = await list_events(
        session,
        gateway_ids=gateway_ids,
        gateway_id=gateway_id,
        kind=kind,
        kind_prefix=kind_prefix,
        source=source,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return EventPageOut(items=[EventOut.model_validate(e) for e in page.items], next_cursor=page.next_cursor)
