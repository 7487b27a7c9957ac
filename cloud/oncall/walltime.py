"""Wall-clock times in a zone, as people give them ("hand over at 08:00", "quiet 22:00–07:00"),
turned into instants, with the two days a year when a clock jumps.

A wall time the clock skips (02:30 on the night a zone springs forward) happens at the moment the
clock passes it: the jump itself. A wall time the clock shows twice (02:30 when it falls back)
happens the first time, unless the caller asks for the first one after some instant.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# The console's: the default zone for an empty or unknown name.
from cloud.console.zones import zone
from cloud.property.models import DEFAULT_TIMEZONE


def parse_hhmm(text: str) -> time:
    """``"08:00"`` as a time; ValueError for anything else (``"8:00"``, ``"24:00"``)."""
    if len(text) != 5 or text[2] != ":" or not (text[:2].isdigit() and text[3:].isdigit()):
        raise ValueError(f"{text!r} is not a time like 08:00")
    hour, minute = int(text[:2]), int(text[3:])
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a time of day (00:00 to 23:59)")
    return time(hour, minute)


def as_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is taken to be UTC already (what the database holds)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def wall_instant(day: date, at: time, tz: ZoneInfo, *, after: datetime | None = None) -> datetime:
    """The instant (UTC) when the clocks of ``tz`` show ``at`` on ``day``.

    Skipped by a spring-forward jump: the jump (the first instant whose wall time is ``at`` or
    later). Shown twice when the clock falls back: the first of the two, or with ``after`` the
    first of them later than ``after``."""
    naive = datetime.combine(day, at)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if _wall(first, tz) != naive:
        # Skipped: fold=0 read it with the offset before the jump, fold=1 with the one after; the
        # jump lies between them, where the wall time first reaches ``at``.
        low, high = sorted((first, second))
        lo_s, hi_s = 0, int((high - low).total_seconds())
        while lo_s < hi_s:
            mid = (lo_s + hi_s) // 2
            if _wall(low + timedelta(seconds=mid), tz) >= naive:
                hi_s = mid
            else:
                lo_s = mid + 1
        return low + timedelta(seconds=lo_s)
    candidates = sorted({first, second})
    if after is not None:
        later = [c for c in candidates if c > after]
        return later[0] if later else candidates[-1]
    return candidates[0]


__all__ = ["DEFAULT_TIMEZONE", "as_utc", "parse_hhmm", "wall_instant", "zone"]
