"""The on-call API under /api/v1: rotas and overrides (``/oncall/...``), who is on call now,
escalation policies, webhooks, and one's own notify preferences (``/me/notify-preferences``).

Reading needs ALARMS_ACKNOWLEDGE, changing ALERTS_MANAGE (at the site: the service checks it);
one's own preferences any signed-in member of staff. Each route hands the request to
``cloud.oncall.service`` and commits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.kit.errors import InvalidInput
from cloud.kit.web import SessionDep
from cloud.oncall import service
from cloud.oncall.schemas import (
    OnCallEntryOut,
    OnCallNowOut,
    OverrideIn,
    OverrideOut,
    PolicyIn,
    PolicyOut,
    PolicyPatch,
    PreferencesIn,
    PreferencesOut,
    RotaIn,
    RotaOut,
    RotaPatch,
    ShiftOut,
    Track,
    WebhookCreatedOut,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)
from cloud.property.schemas import ErrorOut, Page
from cloud.property.scope import MAX_PAGE

P = Permission
router = APIRouter(
    tags=["on call"],
    responses={
        404: {"model": ErrorOut, "description": "No such object (or another company's)"},
        409: {"model": ErrorOut, "description": "Conflicts with what is stored (a duplicate)"},
    },
)

Read = Annotated[Principal, Depends(Authorize(P.ALARMS_ACKNOWLEDGE))]
Manage = Annotated[Principal, Depends(Authorize(P.ALERTS_MANAGE))]
Staff = Annotated[Principal, Depends(Authorize(None))]

Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Cursor = Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
SiteFilter = Annotated[int | None, Query(ge=1, le=2**63 - 1)]
NO_CONTENT: dict[str, Any] = {"status_code": 204, "response_class": Response}


def _ip(request: Request) -> str:
    return request.client.host if request.client else ""


# -- rotas


@router.get("/oncall/rotas", summary="On-call rotas of the sites the principal may see")
async def get_rotas(
    session: SessionDep,
    principal: Read,
    site_id: SiteFilter = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[RotaOut]:
    page = await service.list_rotas(session, principal, site_id=site_id, cursor=cursor, limit=limit)
    return Page[RotaOut](items=[RotaOut.model_validate(r) for r in page.items], next_cursor=page.next_cursor)


@router.post("/oncall/rotas", status_code=201, summary="Add a rota (one per site and skill)")
async def post_rota(request: Request, session: SessionDep, principal: Manage, body: RotaIn) -> RotaOut:
    rota = await service.create_rota(session, principal, body, ip=_ip(request))
    await session.commit()
    return RotaOut.model_validate(rota)


@router.get("/oncall/rotas/{rota_id}", summary="A rota")
async def get_rota(session: SessionDep, principal: Read, rota_id: Id) -> RotaOut:
    return RotaOut.model_validate(await service.get_rota(session, principal, rota_id))


@router.patch("/oncall/rotas/{rota_id}", summary="Change a rota (members in turn order, lead, handover)")
async def patch_rota(
    request: Request, session: SessionDep, principal: Manage, rota_id: Id, body: RotaPatch
) -> RotaOut:
    rota = await service.update_rota(session, principal, rota_id, body, ip=_ip(request))
    await session.commit()
    return RotaOut.model_validate(rota)


@router.delete("/oncall/rotas/{rota_id}", **NO_CONTENT, summary="Remove a rota and its overrides")
async def delete_rota(request: Request, session: SessionDep, principal: Manage, rota_id: Id) -> Response:
    await service.delete_rota(session, principal, rota_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


@router.get("/oncall/rotas/{rota_id}/schedule", summary="The rota's shifts ahead (overrides applied)")
async def get_schedule(
    session: SessionDep,
    principal: Read,
    rota_id: Id,
    start: Annotated[datetime | None, Query(description="Default: now")] = None,
    days: Annotated[int, Query(ge=1, le=service.SCHEDULE_MAX_DAYS)] = 14,
) -> list[ShiftOut]:
    if start is not None and (start.tzinfo is None or not 2000 <= start.year <= 2099):
        raise InvalidInput("start: a time with its zone (2026-11-27T08:00:00+08:00), years 2000 to 2099")
    rota = await service.get_rota(session, principal, rota_id)
    plan = await service.rota_schedule(session, principal, rota_id, start=start, days=days)
    names = await service.user_names(session, rota.company_id, [s.user_id for s in plan])
    return [
        ShiftOut(
            user_id=s.user_id,
            name=names.get(s.user_id, "") if s.user_id is not None else "",
            starts_at=s.starts_at,
            ends_at=s.ends_at,
            override_id=s.override_id,
        )
        for s in plan
    ]


@router.get("/oncall/now", summary="Who is on call at a site now, per skill")
async def get_on_call_now(
    session: SessionDep, principal: Read, site_id: Annotated[int, Query(ge=1, le=2**63 - 1)]
) -> OnCallNowOut:
    now = datetime.now(UTC)
    entries = await service.on_call_now(session, principal, site_id, now)
    company_ids = {e.rota.company_id for e in entries}
    names: dict[int, str] = {}
    for company_id in company_ids:
        names.update(await service.user_names(session, company_id, [e.user_id for e in entries]))
    return OnCallNowOut(
        site_id=site_id,
        at=now,
        items=[
            OnCallEntryOut(
                skill=e.rota.skill,
                rota_id=e.rota.id,
                rota_name=e.rota.name,
                user_id=e.user_id,
                name=names.get(e.user_id, "") if e.user_id is not None else "",
                override_id=e.override_id,
                until=e.until,
            )
            for e in entries
        ],
    )


# -- overrides


@router.get("/oncall/rotas/{rota_id}/overrides", summary="A rota's overrides not yet over (or all)")
async def get_overrides(
    session: SessionDep,
    principal: Read,
    rota_id: Id,
    include_past: Annotated[bool, Query(description="Also those already over")] = False,
) -> list[OverrideOut]:
    rows = await service.list_overrides(session, principal, rota_id, include_past=include_past)
    return [OverrideOut.model_validate(o) for o in rows]


@router.post("/oncall/rotas/{rota_id}/overrides", status_code=201, summary="Put someone on call for a while")
async def post_override(
    request: Request, session: SessionDep, principal: Manage, rota_id: Id, body: OverrideIn
) -> OverrideOut:
    override = await service.create_override(session, principal, rota_id, body, ip=_ip(request))
    await session.commit()
    return OverrideOut.model_validate(override)


@router.delete("/oncall/overrides/{override_id}", **NO_CONTENT, summary="Remove an override")
async def delete_override(
    request: Request, session: SessionDep, principal: Manage, override_id: Id
) -> Response:
    await service.delete_override(session, principal, override_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- escalation policies


@router.get("/escalation-policies", summary="Escalation policies (the sites' and the company's defaults)")
async def get_policies(
    session: SessionDep,
    principal: Read,
    site_id: SiteFilter = None,
    track: Annotated[Track | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[PolicyOut]:
    page = await service.list_policies(
        session, principal, site_id=site_id, track=track, cursor=cursor, limit=limit
    )
    return Page[PolicyOut](
        items=[PolicyOut.model_validate(p) for p in page.items], next_cursor=page.next_cursor
    )


@router.post("/escalation-policies", status_code=201, summary="Add an escalation policy")
async def post_policy(request: Request, session: SessionDep, principal: Manage, body: PolicyIn) -> PolicyOut:
    policy = await service.create_policy(session, principal, body, ip=_ip(request))
    await session.commit()
    return PolicyOut.model_validate(policy)


@router.get("/escalation-policies/{policy_id}", summary="An escalation policy")
async def get_policy(session: SessionDep, principal: Read, policy_id: Id) -> PolicyOut:
    return PolicyOut.model_validate(await service.get_policy(session, principal, policy_id))


@router.patch("/escalation-policies/{policy_id}", summary="Change an escalation policy's steps or timings")
async def patch_policy(
    request: Request, session: SessionDep, principal: Manage, policy_id: Id, body: PolicyPatch
) -> PolicyOut:
    policy = await service.update_policy(session, principal, policy_id, body, ip=_ip(request))
    await session.commit()
    return PolicyOut.model_validate(policy)


@router.delete("/escalation-policies/{policy_id}", **NO_CONTENT, summary="Remove an escalation policy")
async def delete_policy(request: Request, session: SessionDep, principal: Manage, policy_id: Id) -> Response:
    await service.delete_policy(session, principal, policy_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- webhooks


@router.get("/webhooks", summary="Webhooks (never their secrets)")
async def get_webhooks(
    session: SessionDep,
    principal: Read,
    site_id: SiteFilter = None,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Page[WebhookOut]:
    page = await service.list_webhooks(session, principal, site_id=site_id, cursor=cursor, limit=limit)
    return Page[WebhookOut](
        items=[WebhookOut.model_validate(w) for w in page.items], next_cursor=page.next_cursor
    )


@router.post("/webhooks", status_code=201, summary="Add a webhook: its signing secret is in this answer only")
async def post_webhook(
    request: Request, session: SessionDep, principal: Manage, body: WebhookIn
) -> WebhookCreatedOut:
    made = await service.create_webhook(session, principal, body, ip=_ip(request))
    await session.commit()
    shown = WebhookOut.model_validate(made.row).model_dump()
    return WebhookCreatedOut(**shown, secret=made.secret)


@router.get("/webhooks/{webhook_id}", summary="A webhook")
async def get_webhook(session: SessionDep, principal: Read, webhook_id: Id) -> WebhookOut:
    return WebhookOut.model_validate(await service.get_webhook(session, principal, webhook_id))


@router.patch("/webhooks/{webhook_id}", summary="Change a webhook (its secret stays)")
async def patch_webhook(
    request: Request, session: SessionDep, principal: Manage, webhook_id: Id, body: WebhookPatch
) -> WebhookOut:
    webhook = await service.update_webhook(session, principal, webhook_id, body, ip=_ip(request))
    await session.commit()
    return WebhookOut.model_validate(webhook)


@router.delete("/webhooks/{webhook_id}", **NO_CONTENT, summary="Remove a webhook")
async def delete_webhook(
    request: Request, session: SessionDep, principal: Manage, webhook_id: Id
) -> Response:
    await service.delete_webhook(session, principal, webhook_id, ip=_ip(request))
    await session.commit()
    return Response(status_code=204)


# -- one's own notify preferences


def _preferences_out(p: service.Preferences) -> PreferencesOut:
    return PreferencesOut(
        user_id=p.user_id,
        channels=p.channels,
        quiet_start=p.quiet_start,
        quiet_end=p.quiet_end,
        timezone=p.timezone,
        saved=p.saved,
    )


@router.get("/me/notify-preferences", summary="My channels and quiet hours (the defaults if never set)")
async def get_my_preferences(session: SessionDep, principal: Staff) -> PreferencesOut:
    return _preferences_out(await service.get_preferences(session, principal))


@router.put(
    "/me/notify-preferences", summary="Set my channels and quiet hours (maintenance only; never life safety)"
)
async def put_my_preferences(
    request: Request, session: SessionDep, principal: Staff, body: PreferencesIn
) -> PreferencesOut:
    saved = await service.set_preferences(session, principal, body, ip=_ip(request))
    await session.commit()
    return _preferences_out(saved)
