"""The live event stream of a site, by Server-Sent Events.

Every ``POLL_S`` the stream asks for the site's gateways' events with an id above the last one
sent (``events.id`` is the ingest order and indexed: a cheap, bounded query), and sends each as
an SSE message whose ``id`` is the event's id, so that the browser's automatic reconnect
(``Last-Event-ID``) resumes where it stopped. Each poll takes a connection from the pool and
gives it back: a thousand open pages hold no database connection between polls.

A comment line every ``HEARTBEAT_S`` keeps proxies from closing a quiet stream and lets the
server notice a client that went away; the stream also ends after ``MAX_STREAM_S`` so that the
browser reconnects and the principal is checked again (a session that ended, a role taken away).

An event is assigned its id when inserted but seen when its transaction commits: with several
ingest transactions at once (an alarm's own, or several PostgreSQL workers), a lower id may
commit after a higher one was sent, and is then not shown live. The event search shows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from fastapi import Request
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from cloud.db import SessionFactory
from cloud.events.repository import select_events_after
from cloud.models import Event

log = logging.getLogger(__name__)

POLL_S = 0.5
HEARTBEAT_S = 15.0
MAX_STREAM_S = 300.0
BATCH = 200  # events per poll at most; a burst is sent over the next polls
RETRY_MS = 2000  # the browser waits this long before reconnecting
POINT_KIND = "telemetry.point"


def sse_message(data: str, *, event: str | None = None, id: int | None = None) -> str:
    """One SSE message. Each line of ``data`` gets its own ``data:`` field (the browser joins
    them with newlines), so a multi-line fragment cannot end the message early."""
    lines = []
    if event:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    lines.extend(f"data: {line}" for line in (data.splitlines() or [""]))
    return "\n".join(lines) + "\n\n"


def resume_after(request: Request, after: int | None) -> int | None:
    """The id to resume after: the browser's Last-Event-ID (a reconnect) over the page's ``after``."""
    header = request.headers.get("last-event-id", "").strip()
    if header.isdigit() and len(header) <= 19:
        return int(header)
    return after


async def newest_id(sessions: SessionFactory) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.max(Event.id))) or 0)


async def new_events(sessions: SessionFactory, gateway_ids: Sequence[str], after: int) -> list[Event]:
    """Up to BATCH events of ``gateway_ids`` with an id above ``after``, oldest first."""
    if not gateway_ids:
        return []
    async with sessions() as session:
        return await select_events_after(session, gateway_ids, after, BATCH)


async def event_stream(
    request: Request,
    sessions: SessionFactory,
    gateway_ids: Sequence[str],
    after: int,
    render_row: Callable[[Event], str],
    *,
    readings: bool = True,
    poll_s: float = POLL_S,
    heartbeat_s: float = HEARTBEAT_S,
    max_stream_s: float = MAX_STREAM_S,
) -> AsyncIterator[str]:
    """The SSE messages: ``ready`` (with the id it starts after), then one ``row`` per event."""
    yield f"retry: {RETRY_MS}\n\n"
    yield sse_message(str(after), event="ready")
    started = last_beat = time.monotonic()
    while True:
        if await request.is_disconnected():
            return
        try:
            events = await new_events(sessions, gateway_ids, after)
        except (SQLAlchemyError, OSError) as e:
            # The database went away: end the stream; the browser comes back after RETRY_MS and
            # resumes from the last id it got.
            log.warning("live stream: poll failed, closing the stream: %s", e)
            return
        for event in events:
            after = event.id
            # Readings left out are still passed over: the next poll starts after them.
            if readings or event.kind != POINT_KIND:
                yield sse_message(render_row(event), event="row", id=event.id)
        now = time.monotonic()
        if now - last_beat >= heartbeat_s:
            last_beat = now
            yield ": keep-alive\n\n"
        if now - started >= max_stream_s:
            return
        if len(events) < BATCH:
            await asyncio.sleep(poll_s)
