"""Whose turn it is: the arithmetic of a rota, without a database.

Members take turns of ``period_days`` local days, handing over at ``handover_time`` (the site's
wall time) from ``starts_on``: turn k starts at the handover on ``starts_on + k * period_days``
and its member is ``members[k mod len(members)]``. Counting local days rather than hours keeps
the handover at 08:00 on the clock when the zone changes to or from summer time (a week is then
167 or 169 hours). Before the first handover the rota is not yet in force: nobody's turn.

An override covering an instant wins over the turn; of several covering it, the one that began
last (a day's swap inside a week's sick leave), then the one added last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from typing import Protocol
from zoneinfo import ZoneInfo

from cloud.oncall.walltime import wall_instant


class RotaLike(Protocol):
    members: list[int]
    handover_time: str
    period_days: int
    starts_on: date


class OverrideLike(Protocol):
    id: int
    user_id: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class Shift:
    """Someone on call (``user_id`` None: nobody) from ``starts_at`` until ``ends_at``;
    ``override_id`` when an override put them there."""

    user_id: int | None
    starts_at: datetime
    ends_at: datetime
    override_id: int | None = None


@dataclass(frozen=True, slots=True)
class Turns:
    """A rota's turns in its site's zone."""

    members: tuple[int, ...]
    handover: time
    period_days: int
    starts_on: date
    tz: ZoneInfo

    def handover_at(self, k: int) -> datetime:
        """The instant turn ``k`` begins."""
        return wall_instant(self.starts_on + timedelta(days=k * self.period_days), self.handover, self.tz)

    def turn_at(self, now: datetime) -> int | None:
        """The index of the turn ``now`` falls in; None before the first handover."""
        days = (now.astimezone(self.tz).date() - self.starts_on).days
        k = days // self.period_days
        # Today may be a handover day with the handover still ahead.
        while k >= 0 and self.handover_at(k) > now:
            k -= 1
        if k < 0:
            return None
        while self.handover_at(k + 1) <= now:  # only if a handover fell in a skipped hour
            k += 1
        return k

    def member_at(self, now: datetime) -> int | None:
        if not self.members:
            return None
        k = self.turn_at(now)
        return None if k is None else self.members[k % len(self.members)]


def covering(overrides: Sequence[OverrideLike], now: datetime) -> OverrideLike | None:
    """The override in force at ``now``, if any."""
    live = [o for o in overrides if o.starts_at <= now < o.ends_at]
    if not live:
        return None
    return max(live, key=lambda o: (o.starts_at, o.id))


def who_at(turns: Turns, overrides: Sequence[OverrideLike], now: datetime) -> tuple[int | None, int | None]:
    """(user id or None, override id or None) on call at ``now``."""
    override = covering(overrides, now)
    if override is not None:
        return override.user_id, override.id
    return turns.member_at(now), None


def shifts(turns: Turns, overrides: Sequence[OverrideLike], start: datetime, end: datetime) -> list[Shift]:
    """Who is on call from ``start`` to ``end``, as consecutive shifts (nobody's included)."""
    if end <= start:
        return []
    cuts = {start, end}
    k = turns.turn_at(start)
    k = 0 if k is None else k + 1
    while (at := turns.handover_at(k)) < end:
        if at > start:
            cuts.add(at)
        k += 1
    for o in overrides:
        for at in (o.starts_at, o.ends_at):
            if start < at < end:
                cuts.add(at)
    points = sorted(cuts)
    out: list[Shift] = []
    for begin, finish in pairwise(points):
        user_id, override_id = who_at(turns, overrides, begin)
        last = out[-1] if out else None
        if last is not None and (last.user_id, last.override_id) == (user_id, override_id):
            out[-1] = Shift(user_id, last.starts_at, finish, override_id)
        else:
            out.append(Shift(user_id, begin, finish, override_id))
    return out


__all__ = ["Shift", "Turns", "covering", "shifts", "who_at"]
