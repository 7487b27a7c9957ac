"""The site view (``/sites/{id}``): its buildings, its gateways, their devices with each point's
latest value, the doors' states, and the live event stream (``/sites/{id}/stream``).

Latest values and door states come from ``latest_values`` (one row per gateway, source and
kind, kept by ingest), never from searching the events table; the recent events are one
indexed page of it (``gateway_id IN (...)``, newest first).

Each part shows only what the principal may see at the site: the buildings need sites.read (the
page's own permission), the gateways and devices gateways.read, values, doors and events
events.read. A site of another company, or outside the principal's sites, is 404.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.console import live, visibility
from cloud.console.event_rows import EventRow, event_row, trend_url, value_text
from cloud.console.i18n import N_, language_of
from cloud.console.templating import page_router, render, render_fragment
from cloud.console.zones import zone
from cloud.events.service import list_events
from cloud.kit.web import SessionDep
from cloud.models import Event, Gateway, GatewayDevice, GatewayPoint, LatestValue
from cloud.property.models import Building, Unit

router = page_router()

RECENT_EVENTS = 20
MAX_POINTS = 1000
POINT_KIND = "telemetry.point"

# A door's position from the newest of these kinds (door.secured: closed again after an alarm).
DOOR_POSITIONS = {
    "door.opened": ("open", N_("open")),
    "door.closed": ("closed", N_("closed")),
    "door.secured": ("closed", N_("closed")),
    "door.forced": ("forced", N_("forced open")),
    "door.held_open": ("held", N_("held open")),
}


@dataclass
class PointView:
    gateway_id: str
    source: str
    name: str  # the point's part of "device/point"
    unit: str = ""
    value: Any = None
    quality: str = ""
    time: datetime | None = None
    trend_url: str = ""


@dataclass
class DeviceView:
    gateway_id: str
    device: str
    protocol: str = ""
    description: str = ""
    points: list[PointView] = field(default_factory=list)


@dataclass
class DoorView:
    gateway_id: str
    source: str
    name: str
    position: str = ""  # open, closed, forced, held; "" unknown
    position_label: str = ""  # an English msgid
    position_time: datetime | None = None
    locked: bool | None = None
    lock_time: datetime | None = None
    mode: str = ""


async def _buildings(session: AsyncSession, site_id: int) -> list[Any]:
    units = func.count(Unit.id).label("units")
    stmt = (
        select(Building.id, Building.code, Building.name, units)
        .outerjoin(Unit, Unit.building_id == Building.id)
        .where(Building.site_id == site_id)
        .group_by(Building.id, Building.code, Building.name)
        .order_by(Building.code)
    )
    return list((await session.execute(stmt)).all())


async def _devices(session: AsyncSession, gateway_ids: list[str], with_values: bool) -> list[DeviceView]:
    """The gateways' devices with their points (and each point's latest reading if allowed)."""
    if not gateway_ids:
        return []
    devices: dict[tuple[str, str], DeviceView] = {}
    for d in (
        await session.scalars(
            select(GatewayDevice)
            .where(GatewayDevice.gateway_id.in_(gateway_ids))
            .order_by(GatewayDevice.gateway_id, GatewayDevice.device)
        )
    ).all():
        devices[(d.gateway_id, d.device)] = DeviceView(d.gateway_id, d.device, d.protocol, d.description)
    points: dict[tuple[str, str], PointView] = {}
    for p in (
        await session.scalars(
            select(GatewayPoint)
            .where(GatewayPoint.gateway_id.in_(gateway_ids))
            .order_by(GatewayPoint.gateway_id, GatewayPoint.source)
            .limit(MAX_POINTS)
        )
    ).all():
        points[(p.gateway_id, p.source)] = PointView(p.gateway_id, p.source, _point_name(p.source), p.unit)
    if with_values:
        # Points a gateway reports before its inventory says so show up from their values.
        for v in (
            await session.scalars(
                select(LatestValue)
                .where(LatestValue.gateway_id.in_(gateway_ids), LatestValue.kind == POINT_KIND)
                .limit(MAX_POINTS)
            )
        ).all():
            point = points.setdefault(
                (v.gateway_id, v.source), PointView(v.gateway_id, v.source, _point_name(v.source))
            )
            data = v.data or {}
            point.value = value_text(data["value"]) if "value" in data else None
            point.quality = str(data.get("quality", "good"))
            point.unit = point.unit or str(data.get("unit", ""))
            point.time = v.reported_time
            point.trend_url = trend_url(v.gateway_id, v.source)
    for point in points.values():
        device = point.source.split("/", 1)[0] if "/" in point.source else point.source
        devices.setdefault((point.gateway_id, device), DeviceView(point.gateway_id, device)).points.append(
            point
        )
    return [devices[k] for k in sorted(devices)]


def _point_name(source: str) -> str:
    return source.split("/", 1)[1] if "/" in source else source


async def _doors(session: AsyncSession, gateway_ids: list[str]) -> list[DoorView]:
    """Each door's position, lock and mode from the newest door.* rows of latest_values."""
    if not gateway_ids:
        return []
    rows = (
        await session.scalars(
            select(LatestValue)
            .where(LatestValue.gateway_id.in_(gateway_ids), LatestValue.kind.like("door.%"))
            .limit(MAX_POINTS)
        )
    ).all()
    doors: dict[tuple[str, str], DoorView] = {}
    for row in rows:
        data = row.data or {}
        name = data.get("door") if isinstance(data.get("door"), str) else row.source
        door = doors.setdefault((row.gateway_id, row.source), DoorView(row.gateway_id, row.source, str(name)))
        if row.kind in DOOR_POSITIONS:
            if door.position_time is None or row.reported_time > door.position_time:
                door.position, door.position_label = DOOR_POSITIONS[row.kind]
                door.position_time = row.reported_time
        elif row.kind == "door.lock_state" and isinstance(data.get("locked"), bool):
            door.locked = data["locked"]
            door.lock_time = row.reported_time
        elif row.kind == "door.mode":
            door.mode = str(data.get("mode", ""))
    return [doors[k] for k in sorted(doors, key=lambda k: (doors[k].name, k))]


@router.get("/sites/{site_id}")
async def site_page(
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(Authorize(Permission.SITES_READ))],
    site_id: int,
) -> Response:
    site = await visibility.get_site(session, principal, site_id, Permission.SITES_READ)
    tz = zone(site.timezone)
    see_gateways = principal.can(Permission.GATEWAYS_READ, site.id)
    see_events = principal.can(Permission.EVENTS_READ, site.id)
    gateways: list[Gateway] = []
    if see_gateways or see_events:
        # The gateways are the site's whether shown or not: events are found through them.
        gateways = list(
            (
                await session.scalars(
                    select(Gateway)
                    .where(principal.company_clause(Gateway.company_id), Gateway.site_id == site.id)
                    .order_by(Gateway.id)
                )
            ).all()
        )
    gateway_ids = [g.id for g in gateways]
    recent: list[EventRow] = []
    after = 0
    if see_events:
        page = (
            await list_events(session, gateway_ids=gateway_ids, limit=RECENT_EVENTS) if gateway_ids else None
        )
        recent = [event_row(e) for e in page.items] if page else []
        # The stream starts after what the page shows; with nothing shown, after the newest event
        # anywhere (ids are global), so that nothing stored from now on is missed.
        after = recent[0].id if recent else int(await session.scalar(select(func.max(Event.id))) or 0)
    context = {
        "site": site,
        "tz": tz,
        "buildings": await _buildings(session, site.id),
        "see_gateways": see_gateways,
        "see_events": see_events,
        "gateways": gateways if see_gateways else [],
        "devices": await _devices(session, gateway_ids, see_events) if see_gateways else [],
        "doors": await _doors(session, gateway_ids) if see_events else [],
        "recent": recent,
        "stream_url": f"/sites/{site.id}/stream?after={after}",
    }
    return render(request, "site.html", context, principal=principal)


@router.get("/sites/{site_id}/stream")
async def site_stream(
    request: Request,
    principal: Annotated[Principal, Depends(Authorize(Permission.EVENTS_READ))],
    site_id: int,
    after: Annotated[int | None, Query(ge=0)] = None,
    readings: Annotated[bool, Query(description="include telemetry readings")] = True,
) -> Response:
    sessions = request.app.state.sessions
    async with sessions() as session:
        site = await visibility.get_site(session, principal, site_id, Permission.EVENTS_READ)
        gateway_ids = await visibility.visible_gateway_ids(
            session, principal, Permission.EVENTS_READ, site.id
        )
    start = live.resume_after(request, after)
    if start is None:
        start = await live.newest_id(sessions)
    tz = zone(site.timezone)
    lang = language_of(request, principal)

    def row_html(event: Event) -> str:
        return render_fragment(lang, "partials/event_row.html", {"e": event_row(event), "tz": tz})

    return StreamingResponse(
        live.event_stream(request, sessions, gateway_ids or [], start, row_html, readings=readings),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
