"""What ingest refused, kept so that the console can show it (the gateway dead-letters its copy)."""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.models import IngestReject
from protocols.ranges import Ranges


def record_reject(
    session: AsyncSession,
    *,
    at: datetime,
    topic: str,
    reason: str,
    gateway_id: str | None = None,
    store_id: str | None = None,
    ranges: Ranges | None = None,
) -> None:
    """Add the reject to the session; it is written with the caller's commit."""
    session.add(
        IngestReject(
            at=at,
            topic=topic,
            reason=reason,
            gateway_id=gateway_id,
            store_id=store_id,
            ranges=[[a, b] for a, b in ranges] if ranges else None,
        )
    )


async def recent_rejects(session: AsyncSession, limit: int = 100) -> list[IngestReject]:
    stmt = select(IngestReject).order_by(IngestReject.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())
