"""The live streams of alerts (the console's ``/alerts/stream``, the technician's ``/tech/stream``),
by Server-Sent Events, as ``cloud/console/live.py`` streams events.

Everything that happens to an alert writes a row of ``alert_timeline``, whose id is the stream's
cursor: every ``POLL_S`` the stream reads the timeline rows after the last one it passed (a range
of the primary key, whoever they belong to), and for the alerts among them that the principal may
see sends the alert as it is now: ``event: alert`` with the row's HTML (``data-alert-id`` on its
outer element: the page replaces that alert's row or puts it on top) when it matches the page's
filter, ``event: gone`` with the alert's id when it no longer does (resolved, on a filtered
page). The message id is the newest timeline id seen, so the browser's reconnect
(``Last-Event-ID``) resumes there. Each poll takes a connection from the pool and gives it back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from fastapi import Request
from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.permissions import Principal
from cloud.alerts.actions import visible_clauses
from cloud.alerts.models import Alert, AlertTimeline
from cloud.console.live import HEARTBEAT_S, MAX_STREAM_S, POLL_S, RETRY_MS, sse_message
from cloud.db import SessionFactory

log = logging.getLogger(__name__)

BATCH = 500  # timeline rows per poll at most

# (session, principal, the changed alerts the principal may see) -> the ids that match the page
Matcher = Callable[[AsyncSession, Principal, Sequence[Alert]], Awaitable[set[int]]]
# (session, the alerts to send) -> each alert's HTML
Renderer = Callable[[AsyncSession, Sequence[Alert]], Awaitable[dict[int, str]]]


def matching(*clauses: ColumnElement[bool]) -> Matcher:
    """A matcher of SQL filters (the list page's state, track, site and text)."""

    async def match(session: AsyncSession, principal: Principal, alerts: Sequence[Alert]) -> set[int]:
        if not clauses:
            return {a.id for a in alerts}
        rows = await session.scalars(select(Alert.id).where(Alert.id.in_([a.id for a in alerts]), *clauses))
        return set(rows.all())

    return match


async def changes(
    sessions: SessionFactory,
    principal: Principal,
    after: int,
    match: Matcher,
    render: Renderer,
) -> tuple[int, list[str], bool]:
    """The SSE messages for the timeline rows after ``after``, the id to continue after, and
    whether the poll was full (more may be waiting: poll again at once)."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(AlertTimeline.id, AlertTimeline.alert_id)
                .where(AlertTimeline.id > after)
                .order_by(AlertTimeline.id)
                .limit(BATCH)
            )
        ).all()
        if not rows:
            return after, [], False
        last_change: dict[int, int] = {}
        for row in rows:
            last_change[row.alert_id] = row.id
        newest = rows[-1].id
        full = len(rows) == BATCH
        alerts = list(
            (
                await session.scalars(
                    select(Alert).where(Alert.id.in_(sorted(last_change)), *visible_clauses(principal))
                )
            ).all()
        )
        if not alerts:
            return newest, [], full
        matched = await match(session, principal, alerts)
        shown = [a for a in alerts if a.id in matched]
        html = await render(session, shown) if shown else {}
    messages = []
    # In the order the changes happened: the page ends with the newest on top.
    for alert in sorted(alerts, key=lambda a: last_change[a.id]):
        if alert.id in html:
            messages.append(sse_message(html[alert.id], event="alert", id=newest))
        else:
            messages.append(sse_message(str(alert.id), event="gone", id=newest))
    return newest, messages, full


async def alert_stream(
    request: Request,
    sessions: SessionFactory,
    principal: Principal,
    after: int,
    match: Matcher,
    render: Renderer,
    *,
    poll_s: float = POLL_S,
    heartbeat_s: float = HEARTBEAT_S,
    max_stream_s: float = MAX_STREAM_S,
) -> AsyncIterator[str]:
    """``ready`` (with the id it starts after), then ``alert`` / ``gone`` messages as alerts change."""
    yield f"retry: {RETRY_MS}\n\n"
    yield sse_message(str(after), event="ready")
    started = last_beat = time.monotonic()
    while True:
        if await request.is_disconnected():
            return
        try:
            after, messages, full = await changes(sessions, principal, after, match, render)
        except (SQLAlchemyError, OSError) as e:
            # The browser comes back after RETRY_MS and resumes from the last id it got.
            log.warning("alert stream: poll failed, closing the stream: %s", e)
            return
        for message in messages:
            yield message
        now = time.monotonic()
        if now - last_beat >= heartbeat_s:
            last_beat = now
            yield ": keep-alive\n\n"
        if now - started >= max_stream_s:
            return
        if not full:
            await asyncio.sleep(poll_s)
