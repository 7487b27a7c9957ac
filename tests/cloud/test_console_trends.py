"""A point's trend: the downsampled series from the database (both backends), and the chart and
time arithmetic the console draws it with."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cloud.console import charts, zones
from cloud.events.trends import Bucket, Series, bucket_seconds, point_series
from cloud.kit.errors import InvalidInput
from protocols.envelope import EventRecord
from tests.cloud.browser import event_record, store_events
from tests.cloud.conftest import Database

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)


async def test_the_series_is_min_avg_max_per_bucket(db: Database) -> None:
    gateway = f"gw-trend-{secrets.token_hex(4)}"
    store = secrets.token_hex(16)

    def reading(
        seq: int, minute: float, value: object, quality: str = "good", source: str = "ahu1/temp"
    ) -> EventRecord:
        return event_record(
            seq, source=source, data={"value": value, "quality": quality}, at=T0 + timedelta(minutes=minute)
        )

    await store_events(
        db.sessions,
        gateway,
        store,
        [
            reading(1, 0, 20.0),
            reading(2, 1, 22),  # an integer is a number too
            reading(3, 2, 30.0, quality="stale"),  # left out
            reading(4, 3, "n/a"),  # text: left out
            reading(5, 10, 18.5),
            reading(6, 11, 25.5),
            reading(7, 12, 99.0, source="ahu1/other"),  # another point
            event_record(8, kind="door.opened", source="ahu1/temp", data={"value": 1}, at=T0),  # another kind
        ],
    )
    async with db.sessions() as session:
        series = await point_series(session, gateway, "ahu1/temp", T0, T0 + timedelta(hours=1), max_buckets=6)
    assert series.bucket_s == 600  # an hour in at most 6 buckets: 10 minutes each
    assert [(b.start, b.min, b.max, b.count) for b in series.buckets] == [
        (T0, 20.0, 22.0, 2),
        (T0 + timedelta(minutes=10), 18.5, 25.5, 2),
    ]
    assert series.buckets[0].avg == pytest.approx(21.0)
    assert series.buckets[1].avg == pytest.approx(22.0)
    assert series.readings == 4


async def test_a_boolean_point_averages_to_its_share_of_on(db: Database) -> None:
    gateway = f"gw-trend-{secrets.token_hex(4)}"
    records = [
        event_record(i, source="pump1/running", data={"value": i % 4 == 0}, at=T0 + timedelta(seconds=i))
        for i in range(1, 9)
    ]
    await store_events(db.sessions, gateway, secrets.token_hex(16), records)
    async with db.sessions() as session:
        series = await point_series(
            session, gateway, "pump1/running", T0, T0 + timedelta(minutes=1), max_buckets=1
        )
    [bucket] = series.buckets
    assert (bucket.min, bucket.max, bucket.count) == (0.0, 1.0, 8)
    assert bucket.avg == pytest.approx(0.25)


async def test_a_range_must_make_sense(db: Database) -> None:
    async with db.sessions() as session:
        with pytest.raises(InvalidInput, match="earlier"):
            await point_series(session, "gw", "x", T0, T0)
        with pytest.raises(InvalidInput, match="366 days"):
            await point_series(session, "gw", "x", T0, T0 + timedelta(days=400))
        with pytest.raises(InvalidInput, match="zone"):
            await point_series(session, "gw", "x", T0.replace(tzinfo=None), T0 + timedelta(hours=1))
        empty = await point_series(session, "gw-none", "x", T0, T0 + timedelta(hours=1))
    assert empty.buckets == [] and empty.readings == 0


def test_buckets_are_round_and_at_most_the_maximum() -> None:
    assert bucket_seconds(T0, T0 + timedelta(hours=24)) == 300  # 86,400 s / 500 → 172.8 → 5 min
    assert bucket_seconds(T0, T0 + timedelta(hours=1)) == 10
    assert bucket_seconds(T0, T0 + timedelta(seconds=100)) == 1
    assert bucket_seconds(T0, T0 + timedelta(days=30)) == 7200
    for hours in (1, 6, 24, 72, 168, 720):
        step = bucket_seconds(T0, T0 + timedelta(hours=hours))
        assert hours * 3600 / step <= 500


# --- times ------------------------------------------------------------------------------------


def test_times_typed_in_a_zone_are_stored_in_utc() -> None:
    assert zones.parse_local("2026-03-01T13:00", SHANGHAI, "since") == datetime(2026, 3, 1, 5, 0, tzinfo=UTC)
    assert zones.parse_local("2026-03-01", SHANGHAI, "since") == datetime(2026, 2, 28, 16, 0, tzinfo=UTC)
    assert zones.parse_local("  ", SHANGHAI, "since") is None
    with pytest.raises(InvalidInput, match="until: 'tomorrow'"):
        zones.parse_local("tomorrow", SHANGHAI, "until")


def test_local_midnight_and_labels() -> None:
    now = datetime(2026, 3, 1, 17, 30, tzinfo=UTC)  # 01:30 on 2 March in Shanghai
    assert zones.local_midnight(now, SHANGHAI) == datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
    assert zones.local_time(now, SHANGHAI) == "2026-03-02 01:30:00"
    assert zones.zone_label(SHANGHAI) == "UTC+08:00"
    assert zones.zone_label(ZoneInfo("America/St_Johns"), datetime(2026, 1, 1, tzinfo=UTC)) == "UTC-03:30"
    assert zones.zone(None) == SHANGHAI and zones.zone("Not/AZone") == SHANGHAI


# --- charts -----------------------------------------------------------------------------------


def test_time_ticks_fall_on_round_local_times() -> None:
    since = datetime(2026, 3, 1, 1, 7, tzinfo=UTC)  # 09:07 Shanghai
    ticks = charts.time_ticks(since, since + timedelta(hours=24), SHANGHAI)
    assert [label for _, label in ticks][:2] == ["03-01 12:00", "03-01 18:00"]
    assert all(t.astimezone(SHANGHAI).minute == 0 for t, _ in ticks)
    hourly = charts.time_ticks(since, since + timedelta(hours=5), SHANGHAI)
    assert [label for _, label in hourly] == ["10:00", "11:00", "12:00", "13:00", "14:00"]


def test_nice_steps() -> None:
    assert charts.nice_step(10) == 2
    assert charts.nice_step(0.37) == 0.1
    assert charts.nice_step(730) == 200
    assert charts.nice_step(0) == 1


def _series(starts: list[int], bucket_s: int = 60) -> Series:
    buckets = [Bucket(T0 + timedelta(seconds=s), 1.0, 2.0, 3.0, 1) for s in starts]
    return Series("gw", "p", T0, T0 + timedelta(hours=1), bucket_s, buckets)


def test_the_line_breaks_where_readings_stopped() -> None:
    chart = charts.line_chart(_series([0, 60, 120, 180, 1800, 1860, 3000]), SHANGHAI)
    assert len(chart.lines) == 2 and len(chart.bands) == 2  # 0-180 and 1800-1860
    assert len(chart.dots) == 1  # 3000 alone
    assert chart.low <= 1.0 and chart.high >= 3.0
    assert all(chart.top <= t.pos <= chart.bottom for t in chart.y_ticks)
    # Sparse but regular readings (one a minute in 10-second buckets) are still one line.
    sparse = charts.line_chart(_series(list(range(0, 3600, 60)), bucket_s=10), SHANGHAI)
    assert len(sparse.lines) == 1 and not sparse.dots


def test_hourly_bars_scale_to_the_busiest_hour() -> None:
    counts = [0] * 24
    counts[3], counts[4] = 50, 100
    chart = charts.hourly_bars(counts, [f"{h:02d}:00" for h in range(24)])
    assert len(chart.bars) == 24 and chart.max_value == 100
    assert chart.bars[4].height == 2 * chart.bars[3].height
    assert chart.bars[0].height == 0
    assert [label for _, label in chart.axis_labels] == ["00:00", "06:00", "12:00", "18:00"]
