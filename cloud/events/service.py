"""Reading events back: the filtered, cursor-paged list the API and the console show."""

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from cloud.events.repository import EventQuery, select_events
from cloud.kit.errors import InvalidInput
from cloud.kit.pagination import decode_cursor, encode_cursor
from cloud.models import Event

MAX_PAGE = 1000
DEFAULT_PAGE = 100


@dataclass(frozen=True, slots=True)
class EventPage:
    items: list[Event]
    next_cursor: str | None  # None: this is the last page


def _utc(value: datetime | None) -> datetime | None:
    # A time without a zone is taken as UTC, the zone everything is stored in.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def list_events(
    session: AsyncSession,
    *,
    gateway_id: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> EventPage:
    """Events newest first (in ingest order), filtered by gateway, kind and reported time
    (``since`` inclusive, ``until`` exclusive). Pass ``next_cursor`` back as ``cursor`` for the
    next page. Raises InvalidInput for a bad limit, an empty time window or a foreign cursor."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: must be between 1 and {MAX_PAGE}, not {limit}")
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and since >= until:
        raise InvalidInput("since: must be earlier than until")
    query = EventQuery(
        gateway_id=gateway_id,
        kind=kind,
        since=since,
        until=until,
        before_id=decode_cursor(cursor) if cursor else None,
    )
    rows = await select_events(session, query, limit + 1)
    if len(rows) > limit:
        return EventPage(rows[:limit], encode_cursor(rows[limit - 1].id))
    return EventPage(rows, None)
