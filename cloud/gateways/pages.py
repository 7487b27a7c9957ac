"""The console's gateway pages: the gateways (``/gateways``: site, online or offline, last seen,
version, events), one gateway (``/gateways/{id}``: its devices and points with their latest values,
other latest states, its credentials), registering one (``/gateways/new``), and rotating or revoking
its credentials, each after a confirmation page.

New credentials (registering, rotating) are shown once, on the answer to the form: the password
and the ready gateway config, with a link that saves the config as a file. They are never stored
in clear, so they cannot be shown again; rotating makes new ones.

The gateway service (``cloud.gateways.service``) checks the company and the permission at the
gateway's site: another company's gateway is 404, one of a site outside the principal's 403.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, Form, Path, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from cloud.accounts.permissions import Authorize, Forbidden, Permission, Principal
from cloud.console import visibility
from cloud.console.flash import flash
from cloud.console.formkit import FORM_MISTAKES, NO_MISTAKE, Mistake, client_ip, done, render_form
from cloud.console.i18n import N_, language_of, translate
from cloud.console.nav import register_nav
from cloud.console.templating import page_router
from cloud.console.zones import zone
from cloud.gateways.service import (
    Issued,
    gateway_detail,
    list_gateways_page,
    register_gateway,
    revoke_gateway_credentials,
    rotate_gateway_credentials,
    visible_gateway,
)
from cloud.kit.web import SessionDep
from cloud.models import Gateway, LatestValue
from cloud.property.models import Site
from protocols.topics import GATEWAY_ID_PATTERN

P = Permission
router = page_router()

register_nav("gateways", N_("Gateways"), "/gateways", permission=P.GATEWAYS_READ, order=60)

Reader = Annotated[Principal, Depends(Authorize(P.GATEWAYS_READ))]
Manager = Annotated[Principal, Depends(Authorize(P.GATEWAYS_MANAGE))]
GatewayId = Annotated[str, Path(pattern=GATEWAY_ID_PATTERN)]
Short = Annotated[str, Form(max_length=200)]
PAGE = 50
POINT_KIND = "telemetry.point"
# A refusal at the site chosen in the form (no gateways.manage there) is the form's mistake too.
MISTAKES = (*FORM_MISTAKES, Forbidden)


async def _site_names(session: AsyncSession, site_ids: set[int | None]) -> dict[int, Site]:
    ids = sorted(i for i in site_ids if i is not None)
    if not ids:
        return {}
    return {s.id: s for s in await session.scalars(select(Site).where(Site.id.in_(ids)))}


async def _zone_of(session: AsyncSession, principal: Principal, gateway: Gateway) -> ZoneInfo:
    """Times of a gateway in its site's zone (the company's, for one without a site)."""
    if gateway.site_id is not None:
        site = await session.get(Site, gateway.site_id)
        if site is not None:
            return zone(site.timezone)
    return await visibility.company_zone(session, principal)


def _may_manage(principal: Principal, gateway: Gateway) -> bool:
    if gateway.site_id is None:
        # A gateway of no site: for who holds gateways.manage at every site.
        return principal.can(P.GATEWAYS_MANAGE) and principal.sites(P.GATEWAYS_MANAGE) is None
    return principal.can(P.GATEWAYS_MANAGE, gateway.site_id)


# -- the list


@router.get("/gateways")
async def gateways_page(
    request: Request,
    session: SessionDep,
    principal: Reader,
    site: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    state: Annotated[str, Query(pattern="^(|online|offline)$")] = "",
    cursor: Annotated[str | None, Query(max_length=120)] = None,
) -> Response:
    online = {"online": True, "offline": False}.get(state)
    page = await list_gateways_page(
        session, principal, site_id=site, online=online, cursor=cursor, limit=PAGE
    )
    sites = await _site_names(session, {g.site_id for g in page.items})
    zones = {site_id: zone(s.timezone) for site_id, s in sites.items()}
    choices = await visibility.visible_sites(session, principal, P.GATEWAYS_READ)
    context = {
        "gateways": page.items,
        "next_cursor": page.next_cursor,
        "sites": sites,
        "zones": zones,
        "default_zone": await visibility.company_zone(session, principal),
        "params": {"site": site or "", "state": state},
        "site_options": [(s.id, s.name) for s in choices],
        "can_register": principal.can(P.GATEWAYS_MANAGE),
    }
    return render_form(request, principal, "gateways/list.html", context)


# -- registering (before /gateways/{id}: "new" is taken to mean this page)


async def _new_view(
    request: Request, session: AsyncSession, principal: Principal, mistake: Mistake = NO_MISTAKE
) -> Response:
    sites = await visibility.visible_sites(session, principal, P.GATEWAYS_MANAGE)
    context = {"site_options": [(s.id, s.name) for s in sites], "platform": principal.is_platform}
    return render_form(request, principal, "gateways/new.html", context, mistake)


@router.get("/gateways/new")
async def new_gateway_page(request: Request, session: SessionDep, principal: Manager) -> Response:
    return await _new_view(request, session, principal)


@router.post("/gateways/new")
async def register(
    request: Request,
    session: SessionDep,
    principal: Manager,
    gateway_id: Annotated[str, Form(max_length=100)] = "",
    site_id: Short = "",
    name: Short = "",
) -> Response:
    form = {"gateway_id": gateway_id, "site_id": site_id, "name": name}
    state = request.app.state
    site = int(site_id) if site_id.strip().isdigit() else None
    try:
        issued = await register_gateway(
            state.sessions, state.config, principal, gateway_id.strip(), site=site, name=name.strip(),
            ip=client_ip(request),
        )  # fmt: skip
    except MISTAKES as e:
        return await _new_view(request, session, principal, Mistake.of(e, form))
    return await _credentials(request, session, principal, issued, registered=True)


async def _credentials(
    request: Request, session: AsyncSession, principal: Principal, issued: Issued, *, registered: bool
) -> Response:
    """The password and ready config, this once."""
    gateway = issued.gateway
    sites = await _site_names(session, {gateway.site_id})
    context = {
        "gateway": gateway,
        "site": sites.get(gateway.site_id) if gateway.site_id is not None else None,
        "password": issued.password,
        "config_toml": issued.config_toml,
        "broker": issued.broker,
        "registered": registered,
    }
    return render_form(request, principal, "gateways/credentials.html", context)


# -- one gateway


@router.get("/gateways/{gateway_id}")
async def gateway_page(
    request: Request, session: SessionDep, principal: Reader, gateway_id: GatewayId
) -> Response:
    detail = await gateway_detail(session, principal, gateway_id)
    gateway = detail.gateway
    values: dict[str, LatestValue] = {}
    others: list[LatestValue] = []
    for v in detail.latest_values:
        if v.kind == POINT_KIND:
            values[v.source] = v
        else:
            others.append(v)
    points: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in detail.points:
        points[p.device].append({"point": p, "value": values.pop(p.source, None)})
    # Values of points the gateway's inventory does not list (yet): shown under their device too.
    for source, v in sorted(values.items()):
        device = source.split("/", 1)[0]
        points[device].append({"point": None, "source": source, "value": v})
    sites = await _site_names(session, {gateway.site_id})
    context = {
        "gateway": gateway,
        "site": sites.get(gateway.site_id) if gateway.site_id is not None else None,
        "devices": detail.devices,
        "points": dict(points),
        "device_names": sorted({d.device for d in detail.devices} | set(points)),
        "others": others,
        "tz": await _zone_of(session, principal, gateway),
        "can_manage": _may_manage(principal, gateway),
    }
    return render_form(request, principal, "gateways/detail.html", context)


# -- rotating and revoking, each confirmed first


async def _confirm_view(
    request: Request, session: AsyncSession, principal: Principal, gateway_id: str, action: str
) -> Response:
    gateway = await visible_gateway(session, principal, gateway_id, P.GATEWAYS_MANAGE)
    sites = await _site_names(session, {gateway.site_id})
    context = {
        "gateway": gateway,
        "site": sites.get(gateway.site_id) if gateway.site_id is not None else None,
        "action": action,
    }
    return render_form(request, principal, "gateways/confirm.html", context)


def _unconfirmed(gateway_id: str, action: str) -> Response:
    return RedirectResponse(f"/gateways/{gateway_id}/{action}", 303)


@router.get("/gateways/{gateway_id}/rotate")
async def confirm_rotate(
    request: Request, session: SessionDep, principal: Manager, gateway_id: GatewayId
) -> Response:
    return await _confirm_view(request, session, principal, gateway_id, "rotate")


@router.post("/gateways/{gateway_id}/rotate")
async def rotate(
    request: Request,
    session: SessionDep,
    principal: Manager,
    gateway_id: GatewayId,
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    # The gateway first (404 or 403 before anything else), then the confirmation.
    await visible_gateway(session, principal, gateway_id, P.GATEWAYS_MANAGE)
    if confirm != "yes":
        return _unconfirmed(gateway_id, "rotate")
    state = request.app.state
    issued = await rotate_gateway_credentials(
        state.sessions, state.config, principal, gateway_id, ip=client_ip(request)
    )
    return await _credentials(request, session, principal, issued, registered=False)


@router.get("/gateways/{gateway_id}/revoke")
async def confirm_revoke(
    request: Request, session: SessionDep, principal: Manager, gateway_id: GatewayId
) -> Response:
    return await _confirm_view(request, session, principal, gateway_id, "revoke")


@router.post("/gateways/{gateway_id}/revoke")
async def revoke(
    request: Request,
    session: SessionDep,
    principal: Manager,
    gateway_id: GatewayId,
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    await visible_gateway(session, principal, gateway_id, P.GATEWAYS_MANAGE)
    if confirm != "yes":
        return _unconfirmed(gateway_id, "revoke")
    state = request.app.state
    revoked = await revoke_gateway_credentials(
        state.sessions, state.config, principal, gateway_id, ip=client_ip(request)
    )
    response = done(
        request,
        principal,
        f"/gateways/{gateway_id}",
        N_("Credentials revoked: the gateway can no longer sign in."),
    )
    if not revoked.broker.applied:
        # What is left to do at the broker (the operator's words, as the service gives them).
        lang = language_of(request, principal)
        left = translate(lang, "At the broker: %(detail)s") % {"detail": revoked.broker.detail}
        flash(response, request, left, "warning")
    return response
