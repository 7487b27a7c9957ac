"""Is a schedule open at a given local time? (The rules are in protocols/access.py's docstring.)

Used by access levels, scheduled unlock windows and intrusion arming schedules alike.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime, timedelta

from protocols.access import Interval, minutes

DAY = 24 * 60


def _covers(iv: Interval, start_day: date, t: datetime, holiday: bool) -> bool:
    """Does ``iv``, begun on ``start_day``, cover local time ``t``?"""
    if not holiday and start_day.weekday() not in iv.days:
        return False
    a, b = minutes(iv.start), minutes(iv.end)
    if b <= a:  # runs past midnight
        b += DAY
    offset = (t.date() - start_day).days * DAY + t.hour * 60 + t.minute
    return a <= offset < b


def is_open(
    intervals: Sequence[Interval],
    holiday_intervals: Sequence[Interval],
    holidays: Collection[date],
    local: datetime,
) -> bool:
    """True when ``local`` (a naive or aware wall time in the site's zone) falls in the schedule."""
    for start_day in (local.date(), local.date() - timedelta(days=1)):
        holiday = start_day in holidays
        for iv in holiday_intervals if holiday else intervals:
            if _covers(iv, start_day, local, holiday):
                return True
    return False
