"""Quiet hours: when a person's maintenance notices wait (never life safety).

A pure function of the quiet hours and the time, so the outbox and the on-call module agree on it.
"""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud.oncall.recipients import QuietHours
from cloud.oncall.walltime import wall_instant


def quiet_end(quiet: QuietHours, now: datetime) -> datetime | None:
    """The end of the quiet hours (aware, UTC) if ``now`` falls inside them; else None.

    ``start``/``end`` are wall times in ``quiet.timezone``; ``start > end`` wraps midnight
    (22:00-07:00 is quiet from 22:00 to 07:00 the next morning); ``start == end`` is no quiet hours.
    An unknown time zone is read as UTC rather than dropping the person's notices."""
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: quiet hours need an aware time")
    if quiet.start == quiet.end:
        return None
    try:
        zone = ZoneInfo(quiet.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = now.astimezone(zone)
    wall = local.time().replace(tzinfo=None)
    today = local.date()
    if quiet.start < quiet.end:
        if not quiet.start <= wall < quiet.end:
            return None
        end_day = today
    elif wall >= quiet.start:
        end_day = today + timedelta(days=1)
    elif wall < quiet.end:
        end_day = today
    else:
        return None
    # The instant the clocks show the end (a time a spring-forward skips: the jump; one shown twice
    # when they fall back: the first after now), as the rotas' handovers are computed.
    end = wall_instant(end_day, quiet.end, zone, after=now)
    return end if end > now else None
