"""Times as the console shows and takes them: in the site's time zone (the company's where no
one site applies), with the zone said. Everything is stored in UTC; only the page is local."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud.kit.errors import InvalidInput
from cloud.property.models import DEFAULT_TIMEZONE

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SHORT_FORMAT = "%m-%d %H:%M"
# What <input type="datetime-local"> sends: minutes, or seconds when the user typed them.
_INPUT_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


@cache
def zone(name: str | None) -> ZoneInfo:
    """The zone called ``name``; the default zone for an empty or unknown name (a zone removed
    from the tz database must not take a page down: the times then say which zone they are in)."""
    try:
        return ZoneInfo(name or DEFAULT_TIMEZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)


def zone_label(tz: ZoneInfo, at: datetime | None = None) -> str:
    """``UTC+08:00`` for Asia/Shanghai: an offset reads the same in every language, where an
    abbreviation (CST) is ambiguous."""
    offset = (at or datetime.now(UTC)).astimezone(tz).utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def local_time(value: datetime | None, tz: ZoneInfo, fmt: str = TIME_FORMAT) -> str:
    """``value`` (aware, UTC) as wall time in ``tz``, e.g. ``2026-11-27 14:03:05``; "" for None."""
    if value is None:
        return ""
    return value.astimezone(tz).strftime(fmt)


def local_time_with_zone(value: datetime | None, tz: ZoneInfo) -> str:
    """``2026-11-27 14:03:05 UTC+08:00``: where the page does not say the zone elsewhere."""
    if value is None:
        return ""
    return f"{local_time(value, tz)} {zone_label(tz, value)}"


def input_value(value: datetime | None, tz: ZoneInfo) -> str:
    """A time as a ``datetime-local`` input's value, in ``tz``."""
    return "" if value is None else value.astimezone(tz).strftime("%Y-%m-%dT%H:%M")


def parse_local(text: str, tz: ZoneInfo, field: str) -> datetime | None:
    """A wall time typed in ``tz`` (a datetime-local input) as an aware UTC datetime; None for
    empty. InvalidInput naming ``field`` for anything else."""
    text = text.strip()
    if not text:
        return None
    for fmt in _INPUT_FORMATS:
        try:
            naive = datetime.strptime(text, fmt)
        except ValueError:
            continue
        # fold=0: in the hour a clock goes back, the earlier of the two moments.
        return naive.replace(tzinfo=tz).astimezone(UTC)
    raise InvalidInput(f"{field}: {text!r} is not a date and time like 2026-11-27T14:30")


def local_midnight(now: datetime, tz: ZoneInfo) -> datetime:
    """The start of ``now``'s day in ``tz``, as an aware UTC datetime."""
    local = now.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
