"""Chart geometry for inline SVG, computed here and drawn by the templates (``charts.html``).

No chart library and no script: the server knows the data, the zone and the language, and a
few hundred points of SVG are smaller than any library. Coordinates are in the SVG's own
units (``viewBox``); the SVG scales to its container's width, so one drawing fits a phone and a
desktop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from cloud.events.trends import Bucket, Series


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str  # e.g. "14:00"


@dataclass(frozen=True, slots=True)
class BarChart:
    width: int
    plot_height: int
    bars: list[Bar]
    max_value: int
    axis_labels: list[tuple[float, str]]  # (x, text) under some bars


def hourly_bars(
    counts: Sequence[int], labels: Sequence[str], *, width: int = 480, height: int = 100
) -> BarChart:
    """One bar per hour (24 of them for a day); every sixth hour labelled under the axis."""
    n = max(len(counts), 1)
    plot_h = height
    peak = max([*counts, 0])
    slot = width / n
    bars = []
    for i, count in enumerate(counts):
        h = 0.0 if peak == 0 else max(plot_h * count / peak, 1.0 if count else 0.0)
        bars.append(Bar(i * slot + 1, plot_h - h, max(slot - 2, 1), h, count, labels[i]))
    axis = [(i * slot + slot / 2, labels[i]) for i in range(0, len(counts), 6)]
    return BarChart(width, plot_h, bars, peak, axis)


@dataclass(frozen=True, slots=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True, slots=True)
class LineChart:
    width: int
    height: int
    left: int  # the plot area's left edge (y labels are left of it)
    top: int
    right: int
    bottom: int
    bands: list[str]  # polygon points of the min..max band, one per run without gaps
    lines: list[str]  # polyline points of the average, one per run without gaps
    dots: list[tuple[float, float]]  # lone buckets (no neighbour to draw a line to)
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    low: float
    high: float


def nice_step(span: float, target_ticks: int = 5) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about ``target_ticks`` ticks."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(target_ticks, 1)
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def _format_number(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


# Steps for the time axis, with the label format each reads best in.
_TIME_STEPS: tuple[tuple[timedelta, str], ...] = (
    (timedelta(minutes=1), "%H:%M"),
    (timedelta(minutes=5), "%H:%M"),
    (timedelta(minutes=10), "%H:%M"),
    (timedelta(minutes=15), "%H:%M"),
    (timedelta(minutes=30), "%H:%M"),
    (timedelta(hours=1), "%H:%M"),
    (timedelta(hours=2), "%H:%M"),
    (timedelta(hours=3), "%H:%M"),
    (timedelta(hours=6), "%m-%d %H:%M"),
    (timedelta(hours=12), "%m-%d %H:%M"),
    (timedelta(days=1), "%m-%d"),
    (timedelta(days=2), "%m-%d"),
    (timedelta(days=7), "%m-%d"),
    (timedelta(days=14), "%m-%d"),
    (timedelta(days=30), "%m-%d"),
)


def time_ticks(
    since: datetime, until: datetime, tz: ZoneInfo, max_ticks: int = 6
) -> list[tuple[datetime, str]]:
    """Round local times (whole hours, midnights) between ``since`` and ``until``, labelled in ``tz``."""
    span = until - since
    step, fmt = _TIME_STEPS[-1]
    for candidate, candidate_fmt in _TIME_STEPS:
        if span / candidate <= max_ticks:
            step, fmt = candidate, candidate_fmt
            break
    local = since.astimezone(tz)
    # The first round local time at or after ``since``, counted from the local midnight.
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if step >= timedelta(days=1):
        first = midnight if midnight >= local else midnight + timedelta(days=1)
    else:
        elapsed = local - midnight
        first = midnight + math.ceil(elapsed / step) * step
    ticks: list[tuple[datetime, str]] = []
    at = first
    while at < until.astimezone(tz) and len(ticks) < max_ticks * 2:
        # Wall-clock arithmetic on an aware local time: each tick is a round local time.
        ticks.append((at, at.strftime(fmt)))
        at = at + step
    return ticks


def line_chart(
    series: Series, tz: ZoneInfo, *, width: int = 720, height: int = 280, left: int = 56, bottom: int = 28
) -> LineChart:
    """The series as a min..max band with the average drawn over it."""
    top, right = 10, width - 10
    plot_bottom = height - bottom
    buckets = series.buckets
    if buckets:
        low = min(b.min for b in buckets)
        high = max(b.max for b in buckets)
    else:
        low, high = 0.0, 1.0
    if high == low:
        # A flat line: give it a little room above and below.
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    step = nice_step(high - low)
    low = math.floor(low / step) * step
    high = math.ceil(high / step) * step
    t0 = series.since.timestamp()
    t1 = series.until.timestamp()

    def x_of(moment: float) -> float:
        return round(left + (right - left) * (moment - t0) / (t1 - t0), 1)

    def y_of(value: float) -> float:
        return round(plot_bottom - (plot_bottom - top) * (value - low) / (high - low), 1)

    half = series.bucket_s / 2
    # A point read every minute leaves most 10-second buckets of an hour empty: the line joins
    # buckets as far apart as the readings usually are, and breaks only where the readings
    # stopped for longer (three times the usual spacing).
    gaps = sorted((b.start - a.start).total_seconds() for a, b in pairwise(buckets))
    usual = gaps[len(gaps) // 2] if gaps else series.bucket_s
    longest_join = max(3 * usual, series.bucket_s)
    runs: list[list[Bucket]] = []
    for b in buckets:
        if runs and (b.start - runs[-1][-1].start).total_seconds() <= longest_join:
            runs[-1].append(b)
        else:
            runs.append([b])
    band_parts = []
    lines = []
    dots = []
    for run in runs:
        xs = [x_of(b.start.timestamp() + half) for b in run]
        if len(run) == 1:
            dots.append((xs[0], y_of(run[0].avg)))
            continue
        lines.append(" ".join(f"{x},{y_of(b.avg)}" for x, b in zip(xs, run, strict=True)))
        upper = [f"{x},{y_of(b.max)}" for x, b in zip(xs, run, strict=True)]
        lower = [f"{x},{y_of(b.min)}" for x, b in reversed(list(zip(xs, run, strict=True)))]
        band_parts.append(" ".join(upper + lower))
    y_ticks = []
    value = low
    while value <= high + step / 2:
        y_ticks.append(Tick(y_of(value), _format_number(value, step)))
        value += step
    x_ticks = [Tick(x_of(at.timestamp()), label) for at, label in time_ticks(series.since, series.until, tz)]
    return LineChart(
        width,
        height,
        left,
        top,
        right,
        plot_bottom,
        band_parts,
        lines,
        dots,
        y_ticks,
        x_ticks,
        low,
        high,
    )
