"""A telemetry point's trend (``/trend?gateway=..&source=..&hours=24``): an inline SVG chart of
its min..max band and average over the last hours, drawn in the site's zone (cloud/events/trends.py
downsamples in the database; cloud/console/charts.py lays the chart out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from starlette.responses import Response

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.console import visibility
from cloud.console.charts import line_chart
from cloud.console.event_rows import trend_url
from cloud.console.templating import page_router, render
from cloud.console.zones import zone
from cloud.events.trends import point_series
from cloud.kit.web import SessionDep
from cloud.models import GatewayPoint, LatestValue
from cloud.property.models import Site

router = page_router()

HOURS_CHOICES = (1, 6, 24, 72, 168, 720)


@router.get("/trend")
async def trend_page(
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, Depends(Authorize(Permission.EVENTS_READ))],
    gateway: Annotated[str, Query(min_length=1, max_length=64)],
    source: Annotated[str, Query(min_length=1, max_length=200)],
    hours: Annotated[int, Query(ge=1, le=720)] = 24,
) -> Response:
    gw = await visibility.get_gateway(session, principal, gateway, Permission.EVENTS_READ)
    site = await session.get(Site, gw.site_id) if gw.site_id is not None else None
    tz = zone(site.timezone) if site else await visibility.company_zone(session, principal)
    until = datetime.now(UTC)
    since = until - timedelta(hours=hours)
    series = await point_series(session, gw.id, source, since, until)
    point = await session.get(GatewayPoint, (gw.id, source))
    latest = await session.get(LatestValue, (gw.id, source, "telemetry.point"))
    unit = point.unit if point and point.unit else str((latest.data or {}).get("unit", "")) if latest else ""
    buckets = series.buckets
    context = {
        "gateway": gw,
        "site": site,
        "source": source,
        "unit": unit,
        "tz": tz,
        "hours": hours,
        "choices": [(h, trend_url(gw.id, source, h)) for h in HOURS_CHOICES],
        "series": series,
        "chart": line_chart(series, tz),
        "low": min((b.min for b in buckets), default=None),
        "high": max((b.max for b in buckets), default=None),
        "mean": (sum(b.avg * b.count for b in buckets) / series.readings) if series.readings else None,
        "latest": latest,
        "since": since,
        "until": until,
        "events_url": "/events?" + urlencode({"gateway": gw.id, "source": source, "kind": "telemetry.point"}),
    }
    return render(request, "trend.html", context, principal=principal)
