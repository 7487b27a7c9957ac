"""Monthly partitions of the PostgreSQL events table, kept ahead of the calendar.

The cloud calls ``ensure_event_partitions`` at start; a scheduled job may call it too. Replicas may
run it at the same time: an advisory lock makes them take turns. Rows that sat in the default
partition for a month that gets its own partition later (a gateway whose clock ran far ahead) are
moved into the new partition, since PostgreSQL refuses to create a partition whose rows the
default partition still holds.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)

MONTHS_AHEAD = 36
# pg_advisory_xact_lock key: "gh-part" as ASCII; any constant that nothing else uses.
_LOCK_KEY = 0x67682D70617274


@dataclass(frozen=True, slots=True)
class MonthPartition:
    name: str
    start: date
    end: date  # exclusive

    def bounds(self) -> str:
        return f"FROM ('{self.start.isoformat()} 00:00:00+00') TO ('{self.end.isoformat()} 00:00:00+00')"


def add_months(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def month_partition(month: date) -> MonthPartition:
    start = month.replace(day=1)
    return MonthPartition(f"events_p{start:%Y_%m}", start, add_months(start, 1))


def months_through(first: date, last: date) -> list[MonthPartition]:
    out = []
    month = first.replace(day=1)
    while month <= last:
        out.append(month_partition(month))
        month = add_months(month, 1)
    return out


async def ensure_event_partitions(
    conn: AsyncConnection, *, months_ahead: int = MONTHS_AHEAD, now: datetime | None = None
) -> list[str]:
    """Create the missing month partitions from this month through ``months_ahead`` months on.
    Returns the names created. Does nothing on SQLite. Runs in the caller's transaction."""
    if conn.dialect.name != "postgresql":
        return []
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    existing = set(
        (
            await conn.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'events'::regclass"
                )
            )
        ).scalars()
    )
    created = []
    for part in months_through(today, add_months(today, months_ahead)):
        if part.name in existing:
            continue
        await _create(conn, part)
        created.append(part.name)
    if created:
        log.info("events partitions created: %s .. %s (%d)", created[0], created[-1], len(created))
    return created


async def _create(conn: AsyncConnection, part: MonthPartition) -> None:
    in_range = "reported_time >= :start AND reported_time < :end"
    bounds = {
        "start": datetime(part.start.year, part.start.month, 1, tzinfo=UTC),
        "end": datetime(part.end.year, part.end.month, 1, tzinfo=UTC),
    }
    stranded = (
        await conn.execute(text(f"SELECT count(*) FROM events_default WHERE {in_range}"), bounds)
    ).scalar_one()
    if not stranded:
        await conn.execute(text(f"CREATE TABLE {part.name} PARTITION OF events FOR VALUES {part.bounds()}"))
        return
    # Build the partition beside the table, move the stranded rows in, then attach it.
    await conn.execute(text(f"CREATE TABLE {part.name} (LIKE events INCLUDING DEFAULTS)"))
    await conn.execute(
        text(
            f"WITH moved AS (DELETE FROM events_default WHERE {in_range} RETURNING *) "
            f"INSERT INTO {part.name} SELECT * FROM moved"
        ),
        bounds,
    )
    await conn.execute(text(f"ALTER TABLE events ATTACH PARTITION {part.name} FOR VALUES {part.bounds()}"))
    log.info("events partition %s created with %d rows moved from events_default", part.name, stranded)
