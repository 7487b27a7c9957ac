"""The site view's live stream (Server-Sent Events) from the real app served by uvicorn, on SQLite
and PostgreSQL: an event stored after the stream opened arrives; a reconnect resumes after the
last event it got; the stream is the site's alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cloud.accounts.permissions import Role
from cloud.console.live import sse_message
from tests.cloud.browser import (
    LiveServer,
    SeededSite,
    StaffSession,
    event_record,
    seed_site,
    staff_session,
    store_events,
)
from tests.cloud.conftest import Database

WITHIN_S = 10.0  # a generous bound on a loaded machine; the stream polls every 0.5 s


@dataclass
class Message:
    event: str = ""
    id: str = ""
    data: str = ""


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """The SSE messages of a streaming response (comments skipped)."""
    current = Message()
    async for line in response.aiter_lines():
        if line == "":
            if current.event or current.data:
                yield current
            current = Message()
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(": ")
            if name == "data":
                current.data = f"{current.data}\n{value}" if current.data else value
            elif name in ("event", "id"):
                setattr(current, name, value)


async def next_message(stream: AsyncIterator[Message], event: str) -> Message:
    async with asyncio.timeout(WITHIN_S):
        async for m in stream:
            if m.event == event:
                return m
    raise AssertionError(f"the stream ended before a {event!r} message")


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(database_url, tmp_path)
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
async def site(db: Database) -> SeededSite:
    return await seed_site(db.sessions)


@pytest.fixture
async def guard(db: Database, site: SeededSite) -> StaffSession:
    return await staff_session(db.sessions, site.company_id, [(Role.SECURITY_GUARD, site.site_id)])


async def test_an_event_stored_after_connecting_arrives(
    server: LiveServer, db: Database, site: SeededSite, guard: StaffSession
) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=WITHIN_S) as client,
        client.stream("GET", f"/sites/{site.site_id}/stream", headers=guard.headers()) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = messages(response)
        await next_message(stream, "ready")
        await store_events(
            db.sessions,
            site.gateway_id,
            site.store_id,
            [event_record(7, kind="door.forced", source="door-lobby", data={"door": "Lobby door"})],
        )
        row = await next_message(stream, "row")
        assert row.id.isdigit()
        assert "door.forced" in row.data and "Lobby door" in row.data
        assert row.data.startswith("<tr data-id=")


async def test_a_reconnect_resumes_after_the_last_event_id(
    server: LiveServer, db: Database, site: SeededSite, guard: StaffSession
) -> None:
    await store_events(db.sessions, site.gateway_id, site.store_id, [event_record(1), event_record(2)])
    async with httpx.AsyncClient(base_url=server.url, timeout=WITHIN_S) as client:
        async with client.stream(
            "GET", f"/sites/{site.site_id}/stream?after=0", headers=guard.headers()
        ) as r:
            stream = messages(r)
            first = await next_message(stream, "row")
            second = await next_message(stream, "row")
        assert int(second.id) > int(first.id)
        headers = {**guard.headers(), "Last-Event-ID": first.id}
        async with client.stream("GET", f"/sites/{site.site_id}/stream?after=0", headers=headers) as r:
            resumed = await next_message(messages(r), "row")
        assert resumed.id == second.id


async def test_the_stream_carries_only_the_sites_events(
    server: LiveServer, db: Database, site: SeededSite, guard: StaffSession
) -> None:
    other = await seed_site(db.sessions)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=WITHIN_S) as client,
        client.stream("GET", f"/sites/{site.site_id}/stream?readings=false", headers=guard.headers()) as r,
    ):
        stream = messages(r)
        await next_message(stream, "ready")
        # Another company's event, then a reading (left out), then the site's door event.
        await store_events(
            db.sessions, other.gateway_id, other.store_id, [event_record(1, kind="door.opened")]
        )
        await store_events(db.sessions, site.gateway_id, site.store_id, [event_record(1)])
        await store_events(db.sessions, site.gateway_id, site.store_id, [event_record(2, kind="door.closed")])
        row = await next_message(stream, "row")
        assert "door.closed" in row.data
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.get(f"/sites/{other.site_id}/stream", headers=guard.headers())
        assert r.status_code == 404


def test_a_message_of_several_lines_stays_one_message() -> None:
    assert sse_message("<tr>\n<td>x</td>\n</tr>", event="row", id=5) == (
        "event: row\nid: 5\ndata: <tr>\ndata: <td>x</td>\ndata: </tr>\n\n"
    )
    assert sse_message("", event="ready") == "event: ready\ndata: \n\n"
