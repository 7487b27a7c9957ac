"""The console's on-call pages: ``/oncall`` (per site: who is on call now for each skill, the
next 14 days of shifts, the overrides), a rota's page (its form, its shifts, its overrides), and
the escalation policies, webhooks and one's own notification settings (their own modules, whose
routers are included here).

A rota's members are chosen in turn order from the company's staff, one select per place, so the
form needs no script. Reading needs ALARMS_ACKNOWLEDGE, changing ALERTS_MANAGE (the service
checks the site).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Form, Path, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.alerts.models import OncallRota
from cloud.console import visibility, zones
from cloud.console.formkit import FORM_MISTAKES, NO_MISTAKE, Mistake, client_ip, done, render_form
from cloud.console.i18n import N_, language_of
from cloud.console.nav import register_nav
from cloud.console.templating import page_router
from cloud.kit.errors import InvalidInput
from cloud.kit.web import SessionDep
from cloud.oncall import policy_pages, preference_pages, recipients, service, webhook_pages
from cloud.oncall.labels import labels
from cloud.oncall.schemas import MAX_MEMBERS, SKILLS, OverrideIn, RotaIn, RotaPatch
from cloud.property.models import Site

P = Permission
router = page_router()
router.include_router(policy_pages.router)
router.include_router(webhook_pages.router)
router.include_router(preference_pages.router)

register_nav("oncall", N_("On call"), "/oncall", permission=P.ALARMS_ACKNOWLEDGE, order=46)

Read = Annotated[Principal, Depends(Authorize(P.ALARMS_ACKNOWLEDGE))]
Manage = Annotated[Principal, Depends(Authorize(P.ALERTS_MANAGE))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
SiteQuery = Annotated[int | None, Query(ge=1, le=2**63 - 1)]
Short = Annotated[str, Form(max_length=200)]
Long = Annotated[str, Form(max_length=2000)]
AHEAD_DAYS = 14
SPARE_MEMBER_ROWS = 3


def page(
    request: Request,
    principal: Principal,
    template: str,
    context: Mapping[str, Any],
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    """An on-call page with ``labels`` in the user's language."""
    lang = language_of(request, principal)
    return render_form(request, principal, template, {"labels": labels(lang), **context}, mistake)


async def staff_choices(
    session: AsyncSession, principal: Principal, company_id: int
) -> list[tuple[int, str]]:
    """(id, name) of the company's active staff, for a select."""
    principal.require_company(company_id)
    return [(u.id, u.display_name) for u in await service.staff_options(session, company_id)]


# -- the overview


async def _rota_rows(
    session: AsyncSession, principal: Principal, site: Site, now: datetime
) -> list[dict[str, Any]]:
    rotas = await session.scalars(
        select(OncallRota).where(OncallRota.site_id == site.id).order_by(OncallRota.skill)
    )
    rows = []
    for rota in rotas:
        plan = await recipients.schedule(session, rota.id, now, AHEAD_DAYS)
        overrides = await service.list_overrides(session, principal, rota.id, now=now)
        rows.append({"rota": rota, "now": plan[0] if plan else None, "shifts": plan, "overrides": overrides})
    return rows


@router.get("/oncall")
async def oncall_page(
    request: Request, session: SessionDep, principal: Read, site_id: SiteQuery = None
) -> Response:
    sites = await visibility.visible_sites(session, principal, P.ALARMS_ACKNOWLEDGE)
    site: Site | None
    if site_id is not None:
        site = await visibility.get_site(session, principal, site_id, P.ALARMS_ACKNOWLEDGE)
    else:
        site = sites[0] if sites else None
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    names: dict[int, str] = {}
    if site is not None:
        rows = await _rota_rows(session, principal, site, now)
        ids = [s.user_id for r in rows for s in r["shifts"]]
        ids += [o.user_id for r in rows for o in r["overrides"]]
        ids += [r["rota"].lead_user_id for r in rows]
        names = await service.user_names(session, site.company_id, ids)
    context = {
        "sites": sites,
        "site_options": [(s.id, s.name) for s in sites],
        "site": site,
        "rows": rows,
        "names": names,
        "now": now,
        "tz": zones.zone(site.timezone if site else None),
        "can_manage": site is not None and principal.can(P.ALERTS_MANAGE, site.id),
        "missing_skills": [s for s in SKILLS if s not in {r["rota"].skill for r in rows}],
    }
    return page(request, principal, "oncall/index.html", context)


# -- a rota


def _rota_form(rota: OncallRota | None) -> dict[str, Any]:
    if rota is None:
        return {"handover_time": "08:00", "period_days": "7", "members": []}
    return {
        "name": rota.name,
        "skill": rota.skill,
        "members": [str(m) for m in rota.members],
        "lead_user_id": str(rota.lead_user_id or ""),
        "handover_time": rota.handover_time,
        "period_days": str(rota.period_days),
        "starts_on": rota.starts_on.isoformat(),
    }


def _member_rows(form: Mapping[str, Any]) -> list[str]:
    """The member selects of the form: the chosen ones in order, then a few empty places."""
    chosen = [str(m) for m in form.get("members", []) if str(m).strip()]
    return chosen + [""] * min(SPARE_MEMBER_ROWS, max(MAX_MEMBERS - len(chosen), 0))


async def _new_rota_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    site_id: int | None,
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    sites = await visibility.visible_sites(session, principal, P.ALERTS_MANAGE)
    form = dict(mistake.form) if mistake.form else {**_rota_form(None), "site_id": str(site_id or "")}
    company_id = principal.company_id
    if company_id is None and site_id is not None:  # the platform: the site's company
        chosen = await visibility.get_site(session, principal, site_id, P.ALERTS_MANAGE)
        company_id = chosen.company_id
    context = {
        "rota": None,
        "site": None,
        "site_options": [(s.id, s.name) for s in sites],
        "staff": await staff_choices(session, principal, company_id) if company_id is not None else [],
        "member_rows": _member_rows(form),
        "skills": SKILLS,
    }
    return page(
        request,
        principal,
        "oncall/rota_form.html",
        context,
        Mistake(mistake.error, form, "", mistake.status_code),
    )


@router.get("/oncall/rotas/new")
async def new_rota_page(
    request: Request, session: SessionDep, principal: Manage, site_id: SiteQuery = None
) -> Response:
    if site_id is not None:
        await visibility.get_site(session, principal, site_id, P.ALERTS_MANAGE)
    return await _new_rota_view(request, session, principal, site_id)


def _rota_fields(
    name: str,
    skill: str,
    members: list[str],
    lead_user_id: str,
    handover_time: str,
    period_days: str,
    starts_on: str,
) -> dict[str, Any]:
    return {
        "name": name,
        "skill": skill,
        "members": [m.strip() for m in members if m.strip()],
        "lead_user_id": lead_user_id.strip() or None,
        "handover_time": handover_time.strip(),
        "period_days": period_days.strip(),
        "starts_on": starts_on.strip() or None,
    }


MemberList = Annotated[list[str], Form(max_length=MAX_MEMBERS + SPARE_MEMBER_ROWS)]


@router.post("/oncall/rotas")
async def create_rota(
    request: Request,
    session: SessionDep,
    principal: Manage,
    site_id: Short = "",
    name: Short = "",
    skill: Short = "",
    members: MemberList = [],  # noqa: B006 (FastAPI copies it)
    lead_user_id: Short = "",
    handover_time: Short = "08:00",
    period_days: Short = "7",
    starts_on: Short = "",
) -> Response:
    fields = _rota_fields(name, skill, members, lead_user_id, handover_time, period_days, starts_on)
    form = {**fields, "site_id": site_id, "members": fields["members"], "lead_user_id": lead_user_id}
    try:
        if not site_id.strip().isdigit():
            raise InvalidInput("site_id: choose the site")
        draft = RotaIn.model_validate({**fields, "site_id": site_id})
        rota = await service.create_rota(session, principal, draft, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        chosen = int(site_id) if site_id.strip().isdigit() else None
        return await _new_rota_view(request, session, principal, chosen, Mistake.of(e, form))
    return done(request, principal, f"/oncall/rotas/{rota.id}", N_("Rota %(name)s added."), name=rota.name)


async def _rota_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    rota_id: int,
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    rota = await service.get_rota(session, principal, rota_id)
    site = await session.get(Site, rota.site_id)
    assert site is not None
    now = datetime.now(UTC)
    plan = await recipients.schedule(session, rota.id, now, AHEAD_DAYS)
    overrides = await service.list_overrides(session, principal, rota.id, now=now)
    can_manage = principal.can(P.ALERTS_MANAGE, rota.site_id)
    staff = await staff_choices(session, principal, rota.company_id)
    names = dict(staff)
    names.update(
        await service.user_names(
            session, rota.company_id, [*rota.members, rota.lead_user_id, *(o.user_id for o in overrides)]
        )
    )
    rota_form = dict(mistake.form) if mistake.form and mistake.form_name == "rota" else _rota_form(rota)
    context = {
        "rota": rota,
        "site": site,
        "tz": zones.zone(site.timezone),
        "now": now,
        "shifts": plan,
        "overrides": overrides,
        "names": names,
        "staff": staff,
        "can_manage": can_manage,
        "rota_form": rota_form,
        "member_rows": _member_rows(rota_form),
        "skills": SKILLS,
        "site_options": [],
    }
    return page(request, principal, "oncall/rota.html", context, mistake)


@router.get("/oncall/rotas/{rota_id}")
async def rota_page(request: Request, session: SessionDep, principal: Read, rota_id: Id) -> Response:
    return await _rota_view(request, session, principal, rota_id)


@router.post("/oncall/rotas/{rota_id}")
async def update_rota(
    request: Request,
    session: SessionDep,
    principal: Manage,
    rota_id: Id,
    name: Short = "",
    skill: Short = "",
    members: MemberList = [],  # noqa: B006 (FastAPI copies it)
    lead_user_id: Short = "",
    handover_time: Short = "08:00",
    period_days: Short = "7",
    starts_on: Short = "",
) -> Response:
    fields = _rota_fields(name, skill, members, lead_user_id, handover_time, period_days, starts_on)
    form = {**fields, "lead_user_id": lead_user_id, "starts_on": starts_on}
    try:
        if fields["starts_on"] is None:
            raise InvalidInput("starts_on: a date is needed (2026-01-01)")
        patch = RotaPatch.model_validate(fields)
        rota = await service.update_rota(session, principal, rota_id, patch, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _rota_view(request, session, principal, rota_id, Mistake.of(e, form, "rota"))
    return done(request, principal, f"/oncall/rotas/{rota.id}", N_("Rota %(name)s saved."), name=rota.name)


@router.post("/oncall/rotas/{rota_id}/delete")
async def delete_rota(request: Request, session: SessionDep, principal: Manage, rota_id: Id) -> Response:
    rota = await service.get_rota(session, principal, rota_id)
    name, site_id = rota.name, rota.site_id
    await service.delete_rota(session, principal, rota_id, ip=client_ip(request))
    await session.commit()
    return done(request, principal, f"/oncall?site_id={site_id}", N_("Rota %(name)s removed."), name=name)


# -- overrides


@router.post("/oncall/rotas/{rota_id}/overrides")
async def add_override(
    request: Request,
    session: SessionDep,
    principal: Manage,
    rota_id: Id,
    user_id: Short = "",
    starts_at: Short = "",
    ends_at: Short = "",
    reason: Long = "",
) -> Response:
    form = {"user_id": user_id, "starts_at": starts_at, "ends_at": ends_at, "reason": reason}
    try:
        rota = await service.get_rota(session, principal, rota_id)
        site = await session.get(Site, rota.site_id)
        tz = zones.zone(site.timezone if site else None)
        start = zones.parse_local(starts_at, tz, "starts_at")
        end = zones.parse_local(ends_at, tz, "ends_at")
        if start is None or end is None:
            raise InvalidInput(f"{'starts_at' if start is None else 'ends_at'}: a date and time is needed")
        draft = OverrideIn.model_validate(
            {"user_id": user_id.strip() or None, "starts_at": start, "ends_at": end, "reason": reason}
        )
        await service.create_override(session, principal, rota_id, draft, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _rota_view(request, session, principal, rota_id, Mistake.of(e, form, "override"))
    return done(request, principal, f"/oncall/rotas/{rota_id}", N_("Override added."))


@router.post("/oncall/overrides/{override_id}/delete")
async def delete_override(
    request: Request, session: SessionDep, principal: Manage, override_id: Id
) -> Response:
    override = await service.delete_override(session, principal, override_id, ip=client_ip(request))
    rota_id = override.rota_id
    await session.commit()
    return done(request, principal, f"/oncall/rotas/{rota_id}", N_("Override removed."))
