"""The on-call services, for the API and the console: rotas and their overrides, escalation
policies, webhooks, and a person's own notify preferences.

Each takes ``(session, principal, ...)`` like the property services (``cloud.property.scope``):
another company's object is NotFound, one of the principal's company at a site outside its
permission Forbidden. Reading needs ALARMS_ACKNOWLEDGE (the technicians who are called need to
see the rota), changing ALERTS_MANAGE at the site, or for every site when the object is the
company's (a default policy, a webhook for all sites). Every change is recorded in the audit log;
the services flush and the caller commits, so a change and its audit entry are one transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import User
from cloud.accounts.permissions import Permission, Principal
from cloud.accounts.selfservice import NotAUser
from cloud.alerts.models import (
    LIFE_SAFETY,
    EscalationPolicy,
    NotifyPreference,
    OncallOverride,
    OncallRota,
    Webhook,
)
from cloud.audit.chain import record
from cloud.kit.errors import Conflict, InvalidInput, NotFound
from cloud.oncall import recipients
from cloud.oncall.rota import Shift
from cloud.oncall.schemas import (
    OverrideIn,
    PolicyIn,
    PolicyPatch,
    PreferencesIn,
    RotaIn,
    RotaPatch,
    StepIn,
    WebhookIn,
    WebhookPatch,
)
from cloud.oncall.walltime import DEFAULT_TIMEZONE, parse_hhmm, zone
from cloud.property.models import Company, Site
from cloud.property.schemas import patch_fields
from cloud.property.scope import (
    DEFAULT_PAGE,
    Page,
    apply,
    audit,
    company_for,
    flush,
    load,
    page,
    require_everywhere,
    site_for,
    snapshot,
)

P = Permission
READ = P.ALARMS_ACKNOWLEDGE
MANAGE = P.ALERTS_MANAGE
MAX_OVERRIDE = timedelta(days=366)
SCHEDULE_MAX_DAYS = 92


def _now() -> datetime:
    return datetime.now(UTC)


async def _active_staff(session: AsyncSession, company_id: int, user_ids: Iterable[int]) -> set[int]:
    ids = sorted(set(user_ids))
    if not ids:
        return set()
    rows = await session.scalars(
        select(User.id).where(User.id.in_(ids), User.company_id == company_id, User.active.is_(True))
    )
    return set(rows.all())


async def _require_staff(session: AsyncSession, company_id: int, user_ids: Sequence[int], field: str) -> None:
    """InvalidInput naming the first id that is not an active member of the company's staff
    (another company's user reads the same as one that does not exist)."""
    found = await _active_staff(session, company_id, user_ids)
    for i, user_id in enumerate(user_ids):
        if user_id not in found:
            where = f"{field}[{i}]" if field == "members" else field
            raise InvalidInput(f"{where}: user {user_id} is not an active member of the company's staff")


def _site_clause_or_company_wide(principal: Principal, column: Any) -> ColumnElement[bool]:
    """Rows of the sites the principal may read, and the company-wide ones (site None)."""
    return or_(column.is_(None), principal.site_clause(READ, column))


# -- rotas


async def list_rotas(
    session: AsyncSession,
    principal: Principal,
    *,
    site_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[OncallRota]:
    principal.require(READ)
    stmt = select(OncallRota).where(
        principal.company_clause(OncallRota.company_id), principal.site_clause(READ, OncallRota.site_id)
    )
    if site_id is not None:
        await site_for(session, principal, site_id, READ)
        stmt = stmt.where(OncallRota.site_id == site_id)
    return await page(session, stmt, OncallRota, cursor, limit)


async def get_rota(session: AsyncSession, principal: Principal, rota_id: int) -> OncallRota:
    rota = await load(session, principal, OncallRota, rota_id, "rota")
    principal.require(READ, rota.site_id)
    return rota


async def _rota_free(session: AsyncSession, site: Site, skill: str, rota_id: int | None = None) -> None:
    stmt = select(OncallRota.id).where(OncallRota.site_id == site.id, OncallRota.skill == skill)
    if rota_id is not None:
        stmt = stmt.where(OncallRota.id != rota_id)
    existing = await session.scalar(stmt)
    if existing is not None:
        raise Conflict(f"skill: {site.name} already has a {skill} rota (rota {existing}): edit that one")


def _latest_handover_day(now: datetime, handover_time: str, timezone: str) -> date:
    """The last day whose handover is not after ``now``, at the site: a new rota without a first
    day is in force at once (made at 07:00 with an 08:00 handover, it starts yesterday)."""
    local = now.astimezone(zone(timezone))
    today = local.date()
    return today if local.time() >= parse_hhmm(handover_time) else today - timedelta(days=1)


async def create_rota(
    session: AsyncSession, principal: Principal, data: RotaIn, *, ip: str = "", now: datetime | None = None
) -> OncallRota:
    site = await site_for(session, principal, data.site_id, MANAGE)
    await _require_staff(session, site.company_id, data.members, "members")
    if data.lead_user_id is not None:
        await _require_staff(session, site.company_id, [data.lead_user_id], "lead_user_id")
    await _rota_free(session, site, data.skill)
    moment = now or _now()
    rota = OncallRota(
        company_id=site.company_id,
        site_id=site.id,
        skill=data.skill,
        name=data.name,
        members=list(data.members),
        lead_user_id=data.lead_user_id,
        handover_time=data.handover_time,
        period_days=data.period_days,
        starts_on=data.starts_on or _latest_handover_day(moment, data.handover_time, site.timezone),
        created_at=moment,
    )
    session.add(rota)
    await flush(session, f"skill: the site already has a {data.skill} rota")
    await audit(
        session, principal, "oncall.rota.create", rota, company_id=rota.company_id, site_id=rota.site_id,
        after=snapshot(rota), ip=ip,
    )  # fmt: skip
    return rota


async def update_rota(
    session: AsyncSession, principal: Principal, rota_id: int, patch: RotaPatch, *, ip: str = ""
) -> OncallRota:
    rota = await load(session, principal, OncallRota, rota_id, "rota")
    site = await site_for(session, principal, rota.site_id, MANAGE)
    fields = patch_fields(patch)
    if fields.get("members") is not None:
        await _require_staff(session, rota.company_id, fields["members"], "members")
    if fields.get("lead_user_id") is not None:
        await _require_staff(session, rota.company_id, [fields["lead_user_id"]], "lead_user_id")
    if fields.get("skill") is not None:
        await _rota_free(session, site, fields["skill"], rota.id)
    before = snapshot(rota)
    required = ("name", "skill", "members", "handover_time", "period_days", "starts_on")
    if apply(rota, fields, required=required):
        await flush(session, "skill: the site already has a rota of that skill")
        await audit(
            session, principal, "oncall.rota.update", rota, company_id=rota.company_id, site_id=rota.site_id,
            before=before, after=snapshot(rota), ip=ip,
        )  # fmt: skip
    return rota


async def delete_rota(session: AsyncSession, principal: Principal, rota_id: int, *, ip: str = "") -> None:
    rota = await load(session, principal, OncallRota, rota_id, "rota")
    principal.require(MANAGE, rota.site_id)
    await audit(
        session, principal, "oncall.rota.delete", rota, company_id=rota.company_id, site_id=rota.site_id,
        before=snapshot(rota), ip=ip,
    )  # fmt: skip
    # Its overrides go with it (the foreign key cascades too; said here so SQLite need not).
    await session.execute(delete(OncallOverride).where(OncallOverride.rota_id == rota.id))
    await session.delete(rota)
    await session.flush()


# -- overrides


async def list_overrides(
    session: AsyncSession,
    principal: Principal,
    rota_id: int,
    *,
    include_past: bool = False,
    now: datetime | None = None,
) -> list[OncallOverride]:
    """The rota's overrides, soonest first: those not yet over (or all)."""
    rota = await get_rota(session, principal, rota_id)
    stmt = select(OncallOverride).where(OncallOverride.rota_id == rota.id)
    if not include_past:
        stmt = stmt.where(OncallOverride.ends_at > (now or _now()))
    stmt = stmt.order_by(OncallOverride.starts_at, OncallOverride.id).limit(500)
    return list((await session.scalars(stmt)).all())


async def create_override(
    session: AsyncSession,
    principal: Principal,
    rota_id: int,
    data: OverrideIn,
    *,
    ip: str = "",
    now: datetime | None = None,
) -> OncallOverride:
    rota = await load(session, principal, OncallRota, rota_id, "rota")
    principal.require(MANAGE, rota.site_id)
    moment = now or _now()
    if data.ends_at - data.starts_at > MAX_OVERRIDE:
        raise InvalidInput("ends_at: an override lasts at most a year")
    if data.ends_at <= moment:
        raise InvalidInput("ends_at: already past; an override that is over changes nothing")
    if data.ends_at > moment + MAX_OVERRIDE:
        raise InvalidInput("ends_at: at most a year from now")
    await _require_staff(session, rota.company_id, [data.user_id], "user_id")
    override = OncallOverride(
        rota_id=rota.id,
        user_id=data.user_id,
        starts_at=data.starts_at,
        ends_at=data.ends_at,
        reason=data.reason,
        created_by=principal.id if principal.kind == "user" else None,
        created_at=moment,
    )
    session.add(override)
    await session.flush()
    await audit(
        session, principal, "oncall.override.create", override, company_id=rota.company_id,
        site_id=rota.site_id, after=snapshot(override), ip=ip,
    )  # fmt: skip
    return override


async def _load_override(
    session: AsyncSession, principal: Principal, override_id: int
) -> tuple[OncallOverride, OncallRota]:
    row = (
        await session.execute(
            select(OncallOverride, OncallRota)
            .join(OncallRota, OncallRota.id == OncallOverride.rota_id)
            .where(OncallOverride.id == override_id, principal.company_clause(OncallRota.company_id))
        )
    ).first()
    if row is None:
        raise NotFound(f"override {override_id}: no such override")
    return row[0], row[1]


async def delete_override(
    session: AsyncSession, principal: Principal, override_id: int, *, ip: str = ""
) -> OncallOverride:
    override, rota = await _load_override(session, principal, override_id)
    principal.require(MANAGE, rota.site_id)
    await audit(
        session, principal, "oncall.override.delete", override, company_id=rota.company_id,
        site_id=rota.site_id, before=snapshot(override), ip=ip,
    )  # fmt: skip
    await session.delete(override)
    await session.flush()
    return override


# -- who is on call


@dataclass(frozen=True)
class OnCallNow:
    rota: OncallRota
    user_id: int | None
    override_id: int | None
    until: datetime | None  # the end of the current shift (within the next 92 days)


async def on_call_now(
    session: AsyncSession, principal: Principal, site_id: int, now: datetime | None = None
) -> list[OnCallNow]:
    """Who is on call at the site for each skill that has a rota, by skill."""
    site = await site_for(session, principal, site_id, READ)
    moment = now or _now()
    rotas = await session.scalars(
        select(OncallRota).where(OncallRota.site_id == site.id).order_by(OncallRota.skill)
    )
    out = []
    for rota in rotas:
        current = await recipients.schedule(session, rota.id, moment, SCHEDULE_MAX_DAYS)
        first = current[0] if current else None
        until = (
            first.ends_at if first and first.ends_at < moment + timedelta(days=SCHEDULE_MAX_DAYS) else None
        )
        out.append(
            OnCallNow(rota, first.user_id if first else None, first.override_id if first else None, until)
        )
    return out


async def rota_schedule(
    session: AsyncSession,
    principal: Principal,
    rota_id: int,
    *,
    start: datetime | None = None,
    days: int = 14,
) -> list[Shift]:
    """The rota's shifts from ``start`` (now) for ``days`` (1 to 92) days."""
    rota = await get_rota(session, principal, rota_id)
    if not 1 <= days <= SCHEDULE_MAX_DAYS:
        raise InvalidInput(f"days: 1 to {SCHEDULE_MAX_DAYS}")
    return await recipients.schedule(session, rota.id, start or _now(), days)


async def user_names(
    session: AsyncSession, company_id: int, user_ids: Iterable[int | None]
) -> dict[int, str]:
    ids = sorted({i for i in user_ids if i is not None})
    if not ids:
        return {}
    rows = await session.execute(
        select(User.id, User.display_name).where(User.id.in_(ids), User.company_id == company_id)
    )
    return {r.id: r.display_name for r in rows}


async def staff_options(session: AsyncSession, company_id: int) -> list[User]:
    """The company's active staff, by name: who can be put on a rota or named in a policy."""
    rows = await session.scalars(
        select(User)
        .where(User.company_id == company_id, User.active.is_(True))
        .order_by(User.display_name, User.id)
        .limit(1000)
    )
    return list(rows.all())


# -- escalation policies


def check_steps(track: str, steps: Sequence[StepIn]) -> list[dict[str, Any]]:
    """The steps as stored; InvalidInput naming the step and field when they are out of order."""
    if not steps:
        raise InvalidInput("steps: at least one step")
    if track == LIFE_SAFETY and steps[0].after_s != 0:
        raise InvalidInput(
            f"steps[0].after_s: step 1 of a life-safety policy is told at once: 0, not {steps[0].after_s}"
        )
    for i in range(1, len(steps)):
        if steps[i].after_s <= steps[i - 1].after_s:
            raise InvalidInput(
                f"steps[{i}].after_s: step {i + 1} at {steps[i].after_s} s is not after step {i} at "
                f"{steps[i - 1].after_s} s; steps go in ascending order of after_s"
            )
    return [s.stored() for s in steps]


async def _check_step_users(session: AsyncSession, company_id: int, steps: Sequence[StepIn]) -> None:
    wanted = [t.user_id for s in steps for t in s.targets if t.user_id is not None]
    found = await _active_staff(session, company_id, wanted)
    for i, step in enumerate(steps):
        for j, target in enumerate(step.targets):
            if target.user_id is not None and target.user_id not in found:
                raise InvalidInput(
                    f"steps[{i}].targets[{j}].user_id: step {i + 1}, target {j + 1}: user {target.user_id} "
                    "is not an active member of the company's staff"
                )


async def _policy_free(
    session: AsyncSession,
    company_id: int,
    site_id: int | None,
    track: str,
    skill: str,
    policy_id: int | None = None,
) -> None:
    stmt = select(EscalationPolicy.id).where(
        EscalationPolicy.company_id == company_id,
        EscalationPolicy.site_id.is_(None) if site_id is None else EscalationPolicy.site_id == site_id,
        EscalationPolicy.track == track,
        EscalationPolicy.skill == skill,
    )
    if policy_id is not None:
        stmt = stmt.where(EscalationPolicy.id != policy_id)
    existing = await session.scalar(stmt)
    if existing is not None:
        where = "this site" if site_id is not None else "the company's default"
        what = f"the {skill} skill" if skill else "any skill"
        raise Conflict(
            f"skill: {where} already has a {track} policy for {what} (policy {existing}): edit that one"
        )


async def _scope_for_company_or_site(
    session: AsyncSession, principal: Principal, company_id: int | None, site_id: int | None, what: str
) -> tuple[int, int | None]:
    """(company, site) of a new policy or webhook, checked: ALERTS_MANAGE at the site, or for
    every site when it is the company's."""
    if site_id is not None:
        site = await site_for(session, principal, site_id, MANAGE)
        if company_id is not None and company_id != site.company_id:
            raise InvalidInput(f"company_id: site {site_id} is not of company {company_id}")
        return site.company_id, site.id
    require_everywhere(principal, MANAGE, what)
    return await company_for(session, principal, company_id), None


async def list_policies(
    session: AsyncSession,
    principal: Principal,
    *,
    site_id: int | None = None,
    track: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[EscalationPolicy]:
    """The company's policies the principal may read: its sites' and the company's defaults.
    ``site_id`` narrows to that site's and the defaults that apply there."""
    principal.require(READ)
    stmt = select(EscalationPolicy).where(
        principal.company_clause(EscalationPolicy.company_id),
        _site_clause_or_company_wide(principal, EscalationPolicy.site_id),
    )
    if site_id is not None:
        await site_for(session, principal, site_id, READ)
        stmt = stmt.where(or_(EscalationPolicy.site_id == site_id, EscalationPolicy.site_id.is_(None)))
    if track is not None:
        stmt = stmt.where(EscalationPolicy.track == track)
    return await page(session, stmt, EscalationPolicy, cursor, limit)


async def get_policy(session: AsyncSession, principal: Principal, policy_id: int) -> EscalationPolicy:
    policy = await load(session, principal, EscalationPolicy, policy_id, "escalation policy")
    principal.require(READ, policy.site_id)
    return policy


async def create_policy(
    session: AsyncSession, principal: Principal, data: PolicyIn, *, ip: str = "", now: datetime | None = None
) -> EscalationPolicy:
    company_id, site_id = await _scope_for_company_or_site(
        session, principal, data.company_id, data.site_id, "a company-wide escalation policy"
    )
    steps = check_steps(data.track, data.steps)
    await _check_step_users(session, company_id, data.steps)
    await _policy_free(session, company_id, site_id, data.track, data.skill)
    default = recipients.default_policy(data.track)
    policy = EscalationPolicy(
        company_id=company_id,
        site_id=site_id,
        track=data.track,
        skill=data.skill,
        name=data.name,
        steps=steps,
        ack_timeout_s=data.ack_timeout_s if data.ack_timeout_s is not None else default.ack_timeout_s,
        repeat_s=data.repeat_s if data.repeat_s is not None else default.repeat_s,
        created_at=now or _now(),
    )
    session.add(policy)
    await session.flush()
    await audit(
        session, principal, "escalation_policy.create", policy, company_id=company_id, site_id=site_id,
        after=snapshot(policy), ip=ip,
    )  # fmt: skip
    return policy


def _require_manage(principal: Principal, site_id: int | None, what: str) -> None:
    if site_id is not None:
        principal.require(MANAGE, site_id)
    else:
        require_everywhere(principal, MANAGE, what)


async def update_policy(
    session: AsyncSession, principal: Principal, policy_id: int, patch: PolicyPatch, *, ip: str = ""
) -> EscalationPolicy:
    policy = await load(session, principal, EscalationPolicy, policy_id, "escalation policy")
    _require_manage(principal, policy.site_id, "changing a company-wide escalation policy")
    fields = patch_fields(patch)
    for name in ("name", "skill", "steps", "ack_timeout_s", "repeat_s"):
        if name in fields and fields[name] is None:
            raise InvalidInput(f"{name}: cannot be null")
    if patch.steps is not None:
        fields["steps"] = check_steps(policy.track, patch.steps)
        await _check_step_users(session, policy.company_id, patch.steps)
    if "skill" in fields:
        await _policy_free(
            session, policy.company_id, policy.site_id, policy.track, fields["skill"], policy.id
        )
    before = snapshot(policy)
    if apply(policy, fields):
        await session.flush()
        await audit(
            session, principal, "escalation_policy.update", policy, company_id=policy.company_id,
            site_id=policy.site_id, before=before, after=snapshot(policy), ip=ip,
        )  # fmt: skip
    return policy


async def delete_policy(session: AsyncSession, principal: Principal, policy_id: int, *, ip: str = "") -> None:
    policy = await load(session, principal, EscalationPolicy, policy_id, "escalation policy")
    _require_manage(principal, policy.site_id, "removing a company-wide escalation policy")
    await audit(
        session, principal, "escalation_policy.delete", policy, company_id=policy.company_id,
        site_id=policy.site_id, before=snapshot(policy), ip=ip,
    )  # fmt: skip
    await session.delete(policy)
    await session.flush()


# -- webhooks


def _webhook_snapshot(webhook: Webhook) -> dict[str, Any]:
    """The webhook for the audit log: never its secret."""
    shown = snapshot(webhook)
    shown["secret"] = "set"
    return shown


async def list_webhooks(
    session: AsyncSession,
    principal: Principal,
    *,
    site_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page[Webhook]:
    principal.require(READ)
    stmt = select(Webhook).where(
        principal.company_clause(Webhook.company_id), _site_clause_or_company_wide(principal, Webhook.site_id)
    )
    if site_id is not None:
        await site_for(session, principal, site_id, READ)
        stmt = stmt.where(or_(Webhook.site_id == site_id, Webhook.site_id.is_(None)))
    return await page(session, stmt, Webhook, cursor, limit)


async def get_webhook(session: AsyncSession, principal: Principal, webhook_id: int) -> Webhook:
    webhook = await load(session, principal, Webhook, webhook_id, "webhook")
    principal.require(READ, webhook.site_id)
    return webhook


@dataclass(frozen=True)
class NewWebhook:
    row: Webhook
    secret: str  # shown once, to the one who made it


async def create_webhook(
    session: AsyncSession, principal: Principal, data: WebhookIn, *, ip: str = "", now: datetime | None = None
) -> NewWebhook:
    company_id, site_id = await _scope_for_company_or_site(
        session, principal, data.company_id, data.site_id, "a webhook for every site"
    )
    secret = secrets.token_urlsafe(32)
    webhook = Webhook(
        company_id=company_id,
        site_id=site_id,
        name=data.name,
        url=data.url,
        secret=secret,
        tracks=sorted(set(data.tracks)),
        active=data.active,
        created_at=now or _now(),
    )
    session.add(webhook)
    await session.flush()
    await audit(
        session, principal, "webhook.create", webhook, company_id=company_id, site_id=site_id,
        after=_webhook_snapshot(webhook), ip=ip,
    )  # fmt: skip
    return NewWebhook(webhook, secret)


async def update_webhook(
    session: AsyncSession, principal: Principal, webhook_id: int, patch: WebhookPatch, *, ip: str = ""
) -> Webhook:
    webhook = await load(session, principal, Webhook, webhook_id, "webhook")
    _require_manage(principal, webhook.site_id, "changing a webhook for every site")
    fields = patch_fields(patch)
    if fields.get("tracks") is not None:
        fields["tracks"] = sorted(set(fields["tracks"]))
    before = _webhook_snapshot(webhook)
    if apply(webhook, fields, required=("name", "url", "tracks", "active")):
        await session.flush()
        await audit(
            session, principal, "webhook.update", webhook, company_id=webhook.company_id,
            site_id=webhook.site_id, before=before, after=_webhook_snapshot(webhook), ip=ip,
        )  # fmt: skip
    return webhook


async def delete_webhook(
    session: AsyncSession, principal: Principal, webhook_id: int, *, ip: str = ""
) -> Webhook:
    webhook = await load(session, principal, Webhook, webhook_id, "webhook")
    _require_manage(principal, webhook.site_id, "removing a webhook for every site")
    await audit(
        session, principal, "webhook.delete", webhook, company_id=webhook.company_id, site_id=webhook.site_id,
        before=_webhook_snapshot(webhook), ip=ip,
    )  # fmt: skip
    await session.delete(webhook)
    await session.flush()
    return webhook


# -- one's own notify preferences


@dataclass(frozen=True)
class Preferences:
    user_id: int
    channels: list[str]
    quiet_start: str | None
    quiet_end: str | None
    timezone: str
    saved: bool  # False: nothing saved yet, the defaults


async def _own_user_id(session: AsyncSession, principal: Principal) -> int:
    if principal.kind != "user" or principal.id is None:
        raise NotAUser("an API token or the platform has no notify preferences: they are a person's")
    return principal.id


async def _default_zone(session: AsyncSession, principal: Principal) -> str:
    name = await session.scalar(select(Company.timezone).where(Company.id == principal.company_id))
    return name or DEFAULT_TIMEZONE


async def get_preferences(session: AsyncSession, principal: Principal) -> Preferences:
    user_id = await _own_user_id(session, principal)
    row = await session.get(NotifyPreference, user_id)
    if row is None:
        zone_name = await _default_zone(session, principal)
        return Preferences(user_id, list(recipients.DEFAULT_CHANNELS), None, None, zone_name, False)
    return Preferences(user_id, list(row.channels), row.quiet_start, row.quiet_end, row.timezone, True)


async def set_preferences(
    session: AsyncSession, principal: Principal, data: PreferencesIn, *, ip: str = ""
) -> Preferences:
    user_id = await _own_user_id(session, principal)
    row = await session.get(NotifyPreference, user_id)
    before = snapshot(row) if row is not None else None
    fields = {
        # In a fixed order, so that saving the same choice again changes nothing.
        "channels": [c for c in ("email", "sms") if c in data.channels],
        "quiet_start": data.quiet_start,
        "quiet_end": data.quiet_end,
        "timezone": data.timezone,
    }
    if row is None:
        row = NotifyPreference(user_id=user_id, **fields)
        session.add(row)
        changed = True
    else:
        changed = apply(row, fields)
    if changed:
        await session.flush()
        await record(
            session, principal, "notify_preferences.update", NotifyPreference.__tablename__, user_id,
            company_id=principal.company_id, before=before, after=snapshot(row), ip=ip,
        )  # fmt: skip
    return Preferences(user_id, list(row.channels), row.quiet_start, row.quiet_end, row.timezone, True)
