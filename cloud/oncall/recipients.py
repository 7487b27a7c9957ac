"""Who is told about an alert: the escalation policy that applies, the people a step names, their
channels and quiet hours, and who is on call.

- ``policy_for``: the most specific of the company's policies for the alert's track (site and
  skill, the site for any skill, the company's default for the skill, the company's default), or
  the built-in one of the track when the company has none.
- ``recipients_for_step``: the active staff of the alert's company a step's targets name, once each
  (``oncall`` and ``lead`` use the site's rota of the skill, or its ``general`` rota without one).
- ``on_call`` / ``schedule``: whose turn it is (``cloud.oncall.rota`` does the arithmetic).
- ``quiet_until``: the end of a person's quiet hours, if ``now`` is inside them (maintenance only:
  the notifier never asks for life safety).

These read and never write: the engine and the escalator call them inside their own transactions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import RoleGrant, User
from cloud.alerts.models import (
    LIFE_SAFETY,
    Alert,
    EscalationPolicy,
    NotifyPreference,
    OncallOverride,
    OncallRota,
)
from cloud.oncall.rota import Shift, Turns, shifts, who_at
from cloud.oncall.walltime import as_utc, parse_hhmm, zone
from cloud.property.models import Site

DEFAULT_CHANNELS = ("email", "sms")
LANGUAGES = ("zh", "en")
GENERAL = "general"  # the skill of a rota that covers whatever has no rota of its own


@dataclass(frozen=True)
class QuietHours:
    start: time  # local wall time in ``timezone``; may wrap midnight (22:00-07:00)
    end: time
    timezone: str


@dataclass(frozen=True)
class Recipient:
    user_id: int
    name: str
    email: str
    phone: str
    language: str  # "zh" or "en"
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    quiet: QuietHours | None = None


@dataclass(frozen=True)
class PolicyView:
    policy_id: int | None
    steps: list[dict[str, Any]] = field(default_factory=list)
    ack_timeout_s: int = 4 * 3600
    repeat_s: int = 120


# -- quiet hours


def quiet_until(recipient: Recipient, now: datetime) -> datetime | None:
    """The end of ``recipient``'s quiet hours (aware, UTC) if ``now`` is inside them, else None.

    Quiet hours run from ``start`` (inside) to ``end`` (outside) on the clock of their zone and
    wrap midnight when ``start`` is later than ``end``; equal times mean none. The arithmetic is
    the notifier's (``cloud.notify.quiet.quiet_end``), so the outbox and the console agree."""
    # Imported here: cloud.notify.quiet imports QuietHours from this module.
    from cloud.notify.quiet import quiet_end

    if recipient.quiet is None:
        return None
    return quiet_end(recipient.quiet, now)


# -- escalation policies


def _target(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": kind, **more}


# The built-in policies, for a company that has written none for the track.
DEFAULT_STEPS: Mapping[str, list[dict[str, Any]]] = {
    "maintenance": [
        {"after_s": 0, "targets": [_target("oncall")]},
        {"after_s": 900, "targets": [_target("lead")]},
        {"after_s": 1800, "targets": [_target("role", role="property_manager")]},
    ],
    LIFE_SAFETY: [
        {
            "after_s": 0,
            "targets": [
                _target("role", role="security_guard"),
                _target("oncall", skill="security"),
                _target("role", role="property_manager"),
            ],
        },
        {"after_s": 300, "targets": [_target("role", role="company_admin")]},
    ],
}
DEFAULT_ACK_TIMEOUT_S: Mapping[str, int] = {"maintenance": 4 * 3600, LIFE_SAFETY: 30 * 60}
DEFAULT_REPEAT_S = 120


def default_policy(track: str) -> PolicyView:
    """The built-in policy of ``track`` (a copy: callers may change it)."""
    steps = DEFAULT_STEPS.get(track, DEFAULT_STEPS["maintenance"])
    return PolicyView(
        None,
        copy.deepcopy(list(steps)),
        DEFAULT_ACK_TIMEOUT_S.get(track, DEFAULT_ACK_TIMEOUT_S["maintenance"]),
        DEFAULT_REPEAT_S,
    )


def _specificity(policy: EscalationPolicy, skill: str) -> tuple[int, int]:
    """Lower is more specific: the site before the company, the skill before any skill; then the
    older policy (the service refuses two of one kind, so this only settles a race)."""
    site_rank = 0 if policy.site_id is not None else 2
    skill_rank = 0 if skill and policy.skill == skill else 1
    return site_rank + skill_rank, policy.id


async def policy_for(session: AsyncSession, alert: Alert) -> PolicyView:
    """The escalation policy for ``alert``: the company's most specific, else the built-in one."""
    if alert.company_id is None:
        return default_policy(alert.track)
    site_match = (
        or_(EscalationPolicy.site_id == alert.site_id, EscalationPolicy.site_id.is_(None))
        if alert.site_id is not None
        else EscalationPolicy.site_id.is_(None)
    )
    stmt = select(EscalationPolicy).where(
        EscalationPolicy.company_id == alert.company_id,
        EscalationPolicy.track == alert.track,
        site_match,
        EscalationPolicy.skill.in_(sorted({alert.skill or "", ""})),
    )
    found = list((await session.scalars(stmt)).all())
    if not found:
        return default_policy(alert.track)
    best = min(found, key=lambda p: _specificity(p, alert.skill or ""))
    return PolicyView(best.id, copy.deepcopy(list(best.steps)), best.ack_timeout_s, best.repeat_s)


# -- on call


async def rota_for(session: AsyncSession, site_id: int, skill: str) -> OncallRota | None:
    return await session.scalar(
        select(OncallRota).where(OncallRota.site_id == site_id, OncallRota.skill == skill)
    )


async def site_zone_name(session: AsyncSession, site_id: int) -> str | None:
    return await session.scalar(select(Site.timezone).where(Site.id == site_id))


def turns_of(rota: OncallRota, timezone: str | None) -> Turns:
    try:
        handover = parse_hhmm(rota.handover_time)
    except ValueError:
        handover = time(8, 0)  # the service stores only valid times; an old row must not break alerts
    return Turns(
        tuple(rota.members or ()), handover, max(rota.period_days, 1), rota.starts_on, zone(timezone)
    )


async def _overrides(
    session: AsyncSession, rota_id: int, start: datetime, end: datetime
) -> list[OncallOverride]:
    """The rota's overrides overlapping [start, end)."""
    stmt = select(OncallOverride).where(
        OncallOverride.rota_id == rota_id,
        OncallOverride.starts_at < end,
        OncallOverride.ends_at > start,
    )
    return list((await session.scalars(stmt)).all())


async def on_call_at(session: AsyncSession, rota: OncallRota, now: datetime) -> tuple[int | None, int | None]:
    """(user id, override id) on call for ``rota`` at ``now``."""
    now = as_utc(now)
    overrides = await _overrides(session, rota.id, now, now + timedelta(microseconds=1))
    turns = turns_of(rota, await site_zone_name(session, rota.site_id))
    return who_at(turns, overrides, now)


async def on_call(session: AsyncSession, site_id: int, skill: str, now: datetime) -> int | None:
    """The user on call for ``skill`` at ``site_id`` at ``now`` (an override covering ``now`` wins);
    None without a rota, before it starts, or with no members."""
    rota = await rota_for(session, site_id, skill)
    if rota is None:
        return None
    user_id, _ = await on_call_at(session, rota, now)
    return user_id


async def schedule(session: AsyncSession, rota_id: int, start: datetime, days: int) -> list[Shift]:
    """The rota's shifts from ``start`` for ``days`` days (overrides applied; nobody's gaps
    included), for the console's forward view. Empty for an unknown rota."""
    rota = await session.get(OncallRota, rota_id)
    if rota is None:
        return []
    start = as_utc(start)
    end = start + timedelta(days=days)
    overrides = await _overrides(session, rota.id, start, end)
    return shifts(turns_of(rota, await site_zone_name(session, rota.site_id)), overrides, start, end)


# -- recipients


def _skill_of(target: Mapping[str, Any], alert: Alert) -> str:
    return str(target.get("skill") or alert.skill or "")


async def _user_ids_for_target(
    session: AsyncSession, alert: Alert, target: Mapping[str, Any], now: datetime
) -> list[int]:
    kind = target.get("type")
    if kind == "user":
        user_id = target.get("user_id")
        return [user_id] if isinstance(user_id, int) else []
    if kind == "role":
        site_match = (
            or_(RoleGrant.site_id == alert.site_id, RoleGrant.site_id.is_(None))
            if alert.site_id is not None
            else RoleGrant.site_id.is_(None)
        )
        rows = await session.scalars(
            select(RoleGrant.user_id)
            .where(
                RoleGrant.company_id == alert.company_id,
                RoleGrant.role == str(target.get("role", "")),
                site_match,
            )
            .order_by(RoleGrant.user_id)
        )
        return list(rows.all())
    if kind in ("oncall", "lead") and alert.site_id is not None:
        skill = _skill_of(target, alert)
        rota = await rota_for(session, alert.site_id, skill)
        if rota is None and skill != GENERAL:
            # No rota for the skill (or the alert has none): the site's general rota covers it.
            rota = await rota_for(session, alert.site_id, GENERAL)
        if rota is None:
            return []
        if kind == "lead":
            return [rota.lead_user_id] if rota.lead_user_id is not None else []
        user_id, _ = await on_call_at(session, rota, now)
        return [user_id] if user_id is not None else []
    return []


def quiet_hours_of(preference: NotifyPreference | None) -> QuietHours | None:
    if preference is None or not preference.quiet_start or not preference.quiet_end:
        return None
    try:
        start, end = parse_hhmm(preference.quiet_start), parse_hhmm(preference.quiet_end)
    except ValueError:
        return None
    if start == end:
        return None
    return QuietHours(start, end, preference.timezone or "")


def recipient_of(user: User, preference: NotifyPreference | None) -> Recipient:
    channels = tuple(preference.channels) if preference is not None and preference.channels else None
    return Recipient(
        user_id=user.id,
        name=user.display_name,
        email=user.email,
        phone=user.phone,
        language=user.language if user.language in LANGUAGES else "zh",
        channels=channels or DEFAULT_CHANNELS,
        quiet=quiet_hours_of(preference),
    )


async def recipients_of(session: AsyncSession, company_id: int, user_ids: Iterable[int]) -> list[Recipient]:
    """The active users of ``company_id`` among ``user_ids``, in that order, once each, with
    their preferences (the defaults where they set none)."""
    ordered = list(dict.fromkeys(user_ids))
    if not ordered:
        return []
    users = {
        u.id: u
        for u in await session.scalars(
            select(User).where(User.id.in_(ordered), User.company_id == company_id, User.active.is_(True))
        )
    }
    preferences = {
        p.user_id: p
        for p in await session.scalars(
            select(NotifyPreference).where(NotifyPreference.user_id.in_(sorted(users)))
        )
    }
    return [recipient_of(users[i], preferences.get(i)) for i in ordered if i in users]


async def recipients_for_step(
    session: AsyncSession, alert: Alert, step: Mapping[str, Any], now: datetime
) -> list[Recipient]:
    """The people ``step``'s targets name for ``alert`` at ``now``: only active staff of the
    alert's company, each once, in the order the targets name them."""
    if alert.company_id is None:
        return []
    user_ids: list[int] = []
    targets: Sequence[Mapping[str, Any]] = step.get("targets") or []
    for target in targets:
        if isinstance(target, Mapping):
            user_ids.extend(await _user_ids_for_target(session, alert, target, now))
    return await recipients_of(session, alert.company_id, user_ids)


__all__ = [
    "DEFAULT_CHANNELS",
    "PolicyView",
    "QuietHours",
    "Recipient",
    "default_policy",
    "on_call",
    "policy_for",
    "quiet_until",
    "recipients_for_step",
    "schedule",
]
