"""The dashboard (``/``) and the cards this module adds to it: the sites, the gateways online and
offline, and today's events.

Each card is a query or two on small or summary tables (sites, gateways, event_counts_hourly),
never on the events table: the page must stay fast with hundreds of millions of events.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.console import visibility
from cloud.console.cards import card, visible_cards
from cloud.console.charts import hourly_bars
from cloud.console.i18n import N_, language_of
from cloud.console.nav import register_nav
from cloud.console.templating import page_router, render, render_fragment
from cloud.console.zones import local_midnight
from cloud.kit.web import SessionDep
from cloud.models import EventCountHourly, Gateway
from cloud.property.models import Site

router = page_router()

register_nav("dashboard", N_("Dashboard"), "/", order=10)

SITES_SHOWN = 12
GATEWAYS_SHOWN = 8


@router.get("/")
async def dashboard(
    request: Request, session: SessionDep, principal: Annotated[Principal, Depends(Authorize(None))]
) -> Response:
    lang = language_of(request, principal)
    tz = await visibility.company_zone(session, principal)
    shown = []
    for c in visible_cards(principal):
        context = await c.render(session, principal)
        if context is None:
            continue
        common = {"tz": tz, "principal": principal, "csrf_token": principal.csrf_token or ""}
        body = render_fragment(lang, c.template, {**common, **context})
        shown.append({"key": c.key, "title": c.title, "wide": c.wide, "body": Markup(body)})
    return render(request, "dashboard.html", {"cards": shown, "tz": tz}, principal=principal)


@card("sites", 10, Permission.SITES_READ, title=N_("Sites"))
async def sites_card(session: AsyncSession, principal: Principal) -> Mapping[str, Any]:
    where = (
        principal.company_clause(Site.company_id),
        principal.site_clause(Permission.SITES_READ, Site.id),
    )
    total = await session.scalar(select(func.count()).select_from(Site).where(*where)) or 0
    sites = (
        await session.execute(
            select(Site.id, Site.name, Site.code)
            .where(*where)
            .order_by(Site.name, Site.id)
            .limit(SITES_SHOWN)
        )
    ).all()
    return {"total": total, "sites": sites, "more": max(total - len(sites), 0)}


@card("gateways", 20, Permission.GATEWAYS_READ, title=N_("Gateways"))
async def gateways_card(session: AsyncSession, principal: Principal) -> Mapping[str, Any]:
    where = (
        principal.company_clause(Gateway.company_id),
        principal.site_clause(Permission.GATEWAYS_READ, Gateway.site_id),
        Gateway.revoked_at.is_(None),
    )
    counts = dict(
        (bool(online), int(n))
        for online, n in (
            await session.execute(select(Gateway.online, func.count()).where(*where).group_by(Gateway.online))
        ).all()
    )
    # Offline first (what needs looking at), the longest silent first; then the online ones.
    offline = (
        await session.execute(
            select(Gateway.id, Gateway.name, Gateway.site_id, Gateway.last_seen_at)
            .where(*where, Gateway.online.is_(False))
            .order_by(Gateway.last_seen_at.asc().nulls_first(), Gateway.id)
            .limit(GATEWAYS_SHOWN)
        )
    ).all()
    online = (
        await session.execute(
            select(Gateway.id, Gateway.name, Gateway.site_id, Gateway.last_seen_at)
            .where(*where, Gateway.online.is_(True))
            .order_by(Gateway.id)
            .limit(max(GATEWAYS_SHOWN - len(offline), 0))
        )
    ).all()
    return {
        "online_count": counts.get(True, 0),
        "offline_count": counts.get(False, 0),
        "offline": offline,
        "online": online,
    }


@card("events_today", 30, Permission.EVENTS_READ, title=N_("Today's events"), wide=True)
async def events_today_card(session: AsyncSession, principal: Principal) -> Mapping[str, Any]:
    """Events stored since midnight in the company's zone, per hour (event_counts_hourly: one
    row per gateway and hour, so a day is at most 24 rows a gateway)."""
    tz = await visibility.company_zone(session, principal)
    now = datetime.now(UTC)
    midnight = local_midnight(now, tz)
    gateway_ids = await visibility.visible_gateway_ids(session, principal, Permission.EVENTS_READ)
    counts = [0] * 24
    if gateway_ids is None or gateway_ids:
        stmt = (
            select(EventCountHourly.hour, func.sum(EventCountHourly.count))
            .where(EventCountHourly.hour >= midnight)
            .group_by(EventCountHourly.hour)
        )
        if gateway_ids is not None:
            stmt = stmt.where(EventCountHourly.gateway_id.in_(gateway_ids))
        for hour, total in (await session.execute(stmt)).all():
            index = int((hour - midnight) / timedelta(hours=1))
            # A day with a clock change has 23 or 25 hours: its last hour joins the 24th bar.
            counts[min(max(index, 0), 23)] += int(total or 0)
    labels = [(midnight + timedelta(hours=h)).astimezone(tz).strftime("%H:00") for h in range(24)]
    current = min(int((now - midnight) / timedelta(hours=1)), 23)
    return {"total": sum(counts), "chart": hourly_bars(counts, labels), "current_hour": current}
