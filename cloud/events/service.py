"""Reading events back: the filtered, cursor-paged list the API and the console show."""

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from cloud.events.repository import EventQuery, select_events
from cloud.kit.errors import InvalidInput
from cloud.kit.pagination import decode_cursor, encode_cursor
from cloud.models import Event

MAX_PAGE = 1000
# The start of a kind (protocols.events.KIND_PATTERN): "door", "door.", "door.held_".
KIND_PREFIX_PATTERN = r"^[a-z][a-z0-9_.]{0,63}$"
KIND_PREFIX = re.compile(KIND_PREFIX_PATTERN)
DEFAULT_PAGE = 100


@dataclass(frozen=True, slots=True)
class EventPage:
    items: list[Event]
    next_cursor: str | None  # None: this is the last page


def _utc(value: datetime | None, name: str) -> datetime | None:
    # A time without a zone is taken as UTC, the zone everything is stored in.
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01 in a zone east of UTC is in year 0
        raise InvalidInput(f"{name}: {value.isoformat()} is out of range in UTC") from None


async def list_events(
    session: AsyncSession,
    *,
    gateway_id: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
    gateway_ids: Collection[str] | None = None,
    source: str | None = None,
    sources: Collection[str] | None = None,
    kind_prefix: str | None = None,
) -> EventPage:
    """Events newest first (in ingest order), filtered by gateway, kind and reported time
    (``since`` inclusive, ``until`` exclusive). Pass ``next_cursor`` back as ``cursor`` for the
    next page. Raises InvalidInput for a bad limit, an empty time window or a foreign cursor.

    ``gateway_ids``: only these gateways (None: any; a principal's reach comes from
    ``cloud.events.scope.visible_gateway_ids``); ``gateway_id`` narrows it to one. ``source`` /
    ``sources``: exactly this source / any of these. ``kind_prefix``: kinds that start with it,
    e.g. ``"door."``. Every filter applies together with the others."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: must be between 1 and {MAX_PAGE}, not {limit}")
    since, until = _utc(since, "since"), _utc(until, "until")
    if since is not None and until is not None and since >= until:
        raise InvalidInput("since: must be earlier than until")
    if kind_prefix is not None and not KIND_PREFIX.fullmatch(kind_prefix):
        raise InvalidInput(
            f"kind_prefix: {kind_prefix!r} is not the start of an event kind (lower-case letters, digits, "
            "'_' and '.', e.g. door.)"
        )
    query = EventQuery(
        gateway_id=gateway_id,
        kind=kind,
        since=since,
        until=until,
        before_id=decode_cursor(cursor) if cursor else None,
        gateway_ids=None if gateway_ids is None else tuple(gateway_ids),
        source=source,
        sources=None if sources is None else tuple(sources),
        kind_prefix=kind_prefix,
    )
    rows = await select_events(session, query, limit + 1)
    if len(rows) > limit:
        return EventPage(rows[:limit], encode_cursor(rows[limit - 1].id))
    return EventPage(rows, None)
