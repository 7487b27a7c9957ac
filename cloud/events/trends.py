"""A telemetry point's series over a time range, downsampled in the database.

The events of one point are ``telemetry.point`` events of one gateway with one ``source``
(``device/point``); the index ``events_source_time (gateway_id, source, reported_time)`` finds
them. A day of a point read every second is 86,400 rows: they are grouped into at most
``max_buckets`` buckets of equal length (aligned on the epoch, so the same range gives the same
buckets) by the database, which sends back a few hundred rows of min, average and max.

Numbers are averaged as they are; a boolean point (a contact, a running flag) counts as 0 and 1,
so its average is the share of the time it was on. Text values and readings whose ``quality`` is
not ``good`` (a stale value repeated by a gateway whose device went offline, a device's own
fault flag) are left out. A bucket with no reading is absent from the series: the chart shows a
gap, not a line drawn across it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, Boolean, ColumnElement, Float, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.kit.errors import InvalidInput
from cloud.models import Event

POINT_KIND = "telemetry.point"
MAX_BUCKETS = 500
# Bucket lengths the series is cut into: round numbers, so that bucket edges fall on whole minutes
# and hours of the chart's axis.
BUCKET_STEPS_S = (
    *(1, 2, 5, 10, 15, 30),
    *(60, 120, 300, 600, 900, 1800),
    *(3600, 7200, 10800, 21600, 43200, 86400),
)
MAX_RANGE = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime  # UTC; the bucket covers [start, start + bucket_s)
    min: float
    avg: float
    max: float
    count: int  # numeric readings in the bucket


@dataclass(frozen=True, slots=True)
class Series:
    gateway_id: str
    source: str
    since: datetime
    until: datetime
    bucket_s: int
    buckets: list[Bucket]

    @property
    def readings(self) -> int:
        return sum(b.count for b in self.buckets)


def bucket_seconds(since: datetime, until: datetime, max_buckets: int = MAX_BUCKETS) -> int:
    """The shortest round bucket length that cuts [since, until) into at most ``max_buckets``."""
    span = (until - since).total_seconds()
    wanted = max(1, math.ceil(span / max_buckets))
    for step in BUCKET_STEPS_S:
        if step >= wanted:
            return step
    return math.ceil(wanted / 86400) * 86400


def _numeric_value(dialect: str) -> ColumnElement[float]:
    # JSON's number and boolean as a float; anything else NULL, which min/avg/max skip.
    if dialect == "postgresql":
        sql = (
            "CASE jsonb_typeof(events.data -> 'value') "
            "WHEN 'number' THEN (events.data ->> 'value')::float8 "
            "WHEN 'boolean' THEN ((events.data ->> 'value')::boolean)::int::float8 END"
        )
    else:
        # json_extract gives 1 and 0 for JSON's true and false.
        sql = (
            "CASE WHEN json_type(events.data, '$.value') IN ('integer', 'real', 'true', 'false') "
            "THEN CAST(json_extract(events.data, '$.value') AS REAL) END"
        )
    return literal_column(sql, Float())


def _good_quality(dialect: str) -> ColumnElement[bool]:
    # Drivers say "good", "stale" or "fault"; an event without a quality is taken as good.
    if dialect == "postgresql":
        return literal_column("coalesce(events.data ->> 'quality', 'good') = 'good'", Boolean())
    return literal_column("coalesce(json_extract(events.data, '$.quality'), 'good') = 'good'", Boolean())


def _bucket_index(dialect: str, bucket_s: int) -> ColumnElement[int]:
    # Whole seconds since the epoch, divided by the bucket length (an int we made, not user input).
    step = int(bucket_s)
    if dialect == "postgresql":
        return literal_column(
            f"floor(extract(epoch from events.reported_time) / {step})::bigint", BigInteger()
        )
    # SQLite keeps reported_time as UTC text "YYYY-MM-DD HH:MM:SS.ffffff", which strftime reads.
    return literal_column(f"CAST(strftime('%s', events.reported_time) AS INTEGER) / {step}", BigInteger())


async def point_series(
    session: AsyncSession,
    gateway_id: str,
    source: str,
    since: datetime,
    until: datetime,
    *,
    max_buckets: int = MAX_BUCKETS,
) -> Series:
    """The point's min/avg/max per bucket over [since, until) (reported time, aware datetimes).
    InvalidInput for an empty, reversed or over-long range."""
    if since.tzinfo is None or until.tzinfo is None:
        raise InvalidInput("since, until: times must say their zone")
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if since >= until:
        raise InvalidInput("since: must be earlier than until")
    if until - since > MAX_RANGE:
        raise InvalidInput(f"range: at most {MAX_RANGE.days} days")
    if not 1 <= max_buckets <= 10_000:
        raise InvalidInput("max_buckets: between 1 and 10000")
    bucket_s = bucket_seconds(since, until, max_buckets)
    conn = await session.connection()
    dialect = conn.dialect.name
    value = _numeric_value(dialect)
    index = _bucket_index(dialect, bucket_s).label("bucket")
    stmt = (
        select(index, func.min(value), func.avg(value), func.max(value), func.count(value))
        .where(
            Event.gateway_id == gateway_id,
            Event.source == source,
            Event.reported_time >= since,
            Event.reported_time < until,
            Event.kind == POINT_KIND,
            _good_quality(dialect),
        )
        .group_by(literal_column("bucket"))
        .order_by(literal_column("bucket"))
    )
    buckets = [
        Bucket(
            start=datetime.fromtimestamp(int(row[0]) * bucket_s, UTC),
            min=float(row[1]),
            avg=float(row[2]),
            max=float(row[3]),
            count=int(row[4]),
        )
        for row in (await session.execute(stmt)).all()
        if row[4]
    ]
    return Series(gateway_id, source, since, until, bucket_s, buckets)
