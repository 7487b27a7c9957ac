"""Writing an alert's timeline. One row is one INSERT, except inside ``batched_timeline``: the
engine's transactions act on up to 64 events, each writing a few rows, and one executemany at the
end costs a fraction of that many statements (a flood of flapping faults was bound by them). Rows
keep their order: everything in the transaction that writes timeline rows goes through here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.alerts.models import AlertTimeline

_BUFFER = "gatehouse.alert_timeline"


async def add_timeline(
    session: AsyncSession,
    alert_id: int,
    action: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
    actor_id: int | None = None,
) -> int | None:
    """Write a timeline row; its id, or None inside ``batched_timeline`` (written at the end)."""
    row = {"alert_id": alert_id, "at": at, "action": action, "actor_id": actor_id, "detail": detail or {}}
    buffer: list[dict[str, Any]] | None = session.info.get(_BUFFER)
    if buffer is not None:
        buffer.append(row)
        return None
    return int(
        (await session.execute(insert(AlertTimeline).values(**row).returning(AlertTimeline.id))).scalar_one()
    )


@asynccontextmanager
async def batched_timeline(session: AsyncSession) -> AsyncIterator[None]:
    """Timeline rows written inside go in at the end, in one statement (in the same transaction)."""
    if _BUFFER in session.info:  # nested: the outer one writes them
        yield
        return
    session.info[_BUFFER] = []
    try:
        yield
        rows = session.info[_BUFFER]
        if rows:
            await session.execute(insert(AlertTimeline), rows)
    finally:
        session.info.pop(_BUFFER, None)
