"""``GET /api/v1/events``: the stored events, filtered and paged newest first."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from cloud.events.schemas import EventOut, EventPageOut
from cloud.events.service import DEFAULT_PAGE, MAX_PAGE, list_events
from cloud.kit.web import SessionDep
from protocols.events import KIND_PATTERN
from protocols.topics import GATEWAY_ID_PATTERN

router = APIRouter(tags=["events"])


@router.get("/events", summary="List events, newest first")
async def get_events(
    session: SessionDep,
    gateway_id: Annotated[
        str | None, Query(pattern=GATEWAY_ID_PATTERN, description="Only this gateway")
    ] = None,
    kind: Annotated[
        str | None, Query(pattern=KIND_PATTERN, max_length=64, description="Only this kind, e.g. door.forced")
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
    page = await list_events(
        session, gateway_id=gateway_id, kind=kind, since=since, until=until, cursor=cursor, limit=limit
    )
    return EventPageOut(items=[EventOut.model_validate(e) for e in page.items], next_cursor=page.next_cursor)
