"""The console's alert pages: the list (``/alerts``: unresolved, acknowledged, resolved... with
filters; unresolved life safety in red and first), one alert (``/alerts/{id}``: details, who was
notified on which channel, the timeline, photos, the actions as forms), silences
(``/alerts/silences``), the live stream (``/alerts/stream``) and the dashboard card
``open_alerts``.

The work is ``cloud.alerts.actions``; these routes carry forms to it and its answers back. A
state rule broken (acknowledging twice from two phones) or a form's mistake comes back as a flash
message on the alert's page; another company's alert is the 404 page, a life-safety alert for
someone without ``alarms.lifesafety`` the 403 page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from cloud.accounts.permissions import Authorize, Forbidden, Permission, Principal
from cloud.alerts import actions
from cloud.alerts.endpoints import photo_url
from cloud.alerts.models import (
    ACKNOWLEDGED,
    IN_PROGRESS,
    INHIBITED,
    LIFE_SAFETY,
    MAINTENANCE,
    OPEN,
    RESOLVED,
    Alert,
)
from cloud.alerts.stream import alert_stream, matching
from cloud.blobs import BlobStore
from cloud.console import live, visibility
from cloud.console.cards import card
from cloud.console.flash import flash
from cloud.console.formkit import FORM_MISTAKES, Mistake, client_ip, render_form
from cloud.console.i18n import N_, language_of, translate
from cloud.console.nav import register_nav
from cloud.console.templating import page_router, render_fragment
from cloud.console.zones import input_value, local_time, parse_local, zone
from cloud.kit.errors import CloudError, Conflict, InvalidInput
from cloud.kit.web import SessionDep
from cloud.property.models import Site

P = Permission
router = page_router()

register_nav("alerts", N_("Alerts"), "/alerts", permission=P.ALARMS_ACKNOWLEDGE, order=40)

Responder = Annotated[Principal, Depends(Authorize(P.ALARMS_ACKNOWLEDGE))]
Manager = Annotated[Principal, Depends(Authorize(P.ALERTS_MANAGE))]
MAX_ID = 2**63 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
PAGE = 50
CARD_NEWEST = 5

STATE_LABELS = {
    OPEN: N_("unacknowledged"),
    ACKNOWLEDGED: N_("acknowledged"),
    IN_PROGRESS: N_("in progress"),
    RESOLVED: N_("resolved"),
    INHIBITED: N_("held (gateway offline)"),
    actions.UNRESOLVED: N_("unresolved"),
}
STATE_BADGES = {OPEN: "bad", ACKNOWLEDGED: "warn", IN_PROGRESS: "warn", RESOLVED: "ok", INHIBITED: "muted"}
TRACK_LABELS = {LIFE_SAFETY: N_("Life safety"), MAINTENANCE: N_("Maintenance")}
CHANNEL_LABELS = {"email": N_("email"), "sms": N_("SMS"), "webhook": N_("webhook")}
NOTICE_LABELS = {
    "pending": N_("waiting"),
    "sending": N_("sending"),
    "sent": N_("sent"),
    "failed": N_("failed"),
    "cancelled": N_("cancelled"),
}
SEVERITY_LABELS = {"critical": N_("critical"), "major": N_("major"), "minor": N_("minor")}
HELD_LABELS = {"quiet_hours": N_("quiet hours"), "grouped": N_("grouped with others")}
LABELS = {
    "states": STATE_LABELS,
    "state_badges": STATE_BADGES,
    "tracks": TRACK_LABELS,
    "channels": CHANNEL_LABELS,
    "notices": NOTICE_LABELS,
    "severities": SEVERITY_LABELS,
    "held": HELD_LABELS,
}
# The actions a form may ask for, and the message shown after each.
DONE = {
    "acknowledge": N_("Acknowledged: escalation stopped."),
    "start": N_("Work started."),
    "notes": N_("Note added."),
    "photos": N_("Photo added."),
    "resolve": N_("Resolved."),
}


# ---------------------------------------------------------------------------------------------
# What the templates get


def may_handle(principal: Principal, alert: Alert) -> bool:
    """May the principal acknowledge, start and resolve this alert (life safety: security staff)?"""
    if not principal.can(P.ALARMS_ACKNOWLEDGE, alert.site_id):
        return False
    return alert.track != LIFE_SAFETY or principal.can(P.LIFESAFETY_ACKNOWLEDGE, alert.site_id)


def is_urgent(alert: Alert) -> bool:
    """An unresolved life-safety alert: red and on top."""
    return alert.track == LIFE_SAFETY and alert.state != RESOLVED


async def zones_of(
    session: AsyncSession, principal: Principal, alerts: Sequence[Alert]
) -> tuple[dict[int, Site], dict[int, ZoneInfo], ZoneInfo]:
    """The alerts' sites, each site's zone, and the company's zone (for an alert of no site)."""
    ids = sorted({a.site_id for a in alerts if a.site_id is not None})
    sites: dict[int, Site] = {}
    if ids:
        sites = {s.id: s for s in (await session.scalars(select(Site).where(Site.id.in_(ids)))).all()}
    zones = {site_id: zone(s.timezone) for site_id, s in sites.items()}
    return sites, zones, await visibility.company_zone(session, principal)


async def row_context(session: AsyncSession, principal: Principal, alerts: Sequence[Alert]) -> dict[str, Any]:
    sites, zones, default_tz = await zones_of(session, principal, alerts)
    return {"sites": sites, "zones": zones, "default_tz": default_tz, "labels": LABELS, "urgent": is_urgent}


def iso_time(text: object, tz: ZoneInfo) -> str:
    """A time the timeline's detail holds as ISO text (a held notice's "until"), in ``tz``."""
    if not isinstance(text, str):
        return ""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return text
    return local_time(value if value.tzinfo else value.replace(tzinfo=UTC), tz)


def _params(state: str, track: str, site: int | None, text: str) -> dict[str, Any]:
    return {"state": state, "track": track, "site": site or "", "text": text}


# ---------------------------------------------------------------------------------------------
# The list and its live stream


@router.get("/alerts")
async def alerts_page(
    request: Request,
    session: SessionDep,
    principal: Responder,
    state: Annotated[str, Query(max_length=20)] = actions.UNRESOLVED,
    track: Annotated[str, Query(max_length=20)] = "",
    site: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    text: Annotated[str, Query(max_length=actions.MAX_TEXT_FILTER)] = "",
    cursor: Annotated[str | None, Query(max_length=120)] = None,
) -> Response:
    state = state if state in (*actions.STATE_FILTERS, "all") else actions.UNRESOLVED
    track = track if track in actions.TRACKS else ""
    # Before the list: a change made meanwhile is streamed (again), never lost.
    after = await actions.newest_timeline_id(session)
    page = await actions.list_alerts(
        session,
        principal,
        state=None if state == "all" else state,
        track=track or None,
        site_id=site,
        text=text,
        cursor=cursor,
        limit=PAGE,
    )
    sites = await visibility.visible_sites(session, principal, P.ALARMS_ACKNOWLEDGE)
    params = _params(state, track, site, text)
    context = {
        "alerts": page.items,
        "next_cursor": page.next_cursor,
        "first_page": cursor is None,
        "params": params,
        "state_options": [(s, STATE_LABELS[s]) for s in (actions.UNRESOLVED, *actions.STATES)],
        "track_options": list(TRACK_LABELS.items()),
        "site_options": [(s.id, s.name) for s in sites],
        "stream_url": f"/alerts/stream?{_query({**params, 'after': after})}",
        "can_manage": principal.can(P.ALERTS_MANAGE),
        **(await row_context(session, principal, page.items)),
    }
    return render_form(request, principal, "alerts/list.html", context)


def _query(params: Mapping[str, Any]) -> str:
    return urlencode([(k, v) for k, v in params.items() if v not in (None, "")])


@router.get("/alerts/stream")
async def alerts_stream(
    request: Request,
    principal: Responder,
    state: Annotated[str, Query(max_length=20)] = "",
    track: Annotated[str, Query(max_length=20)] = "",
    site: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    text: Annotated[str, Query(max_length=actions.MAX_TEXT_FILTER)] = "",
    after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
) -> Response:
    """The list page's changes (SSE): an alert that changed and matches the page's filters is
    sent as its row; one that no longer matches as ``gone``."""
    sessions = request.app.state.sessions
    clauses: list[ColumnElement[bool]] = actions.filter_clauses(
        state=state if state in actions.STATE_FILTERS else None,
        track=track if track in actions.TRACKS else None,
        site_id=site,
        text=text or None,
    )
    async with sessions() as session:
        if site is not None:
            await actions.check_site(session, principal, site)  # another company's site: 404
        start = live.resume_after(request, after)
        if start is None:
            start = await actions.newest_timeline_id(session)
    lang = language_of(request, principal)

    async def render_rows(session: AsyncSession, alerts: Sequence[Alert]) -> dict[int, str]:
        context = await row_context(session, principal, alerts)
        return {a.id: render_fragment(lang, "alerts/row.html", {**context, "a": a}) for a in alerts}

    return StreamingResponse(
        alert_stream(request, sessions, principal, start, matching(*clauses), render_rows),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# ---------------------------------------------------------------------------------------------
# Silences (before /alerts/{id}: "silences" is not an id)


async def _silences_view(
    request: Request, session: AsyncSession, principal: Principal, mistake: Mistake | None = None
) -> Response:
    now = actions.utcnow()
    page = await actions.list_silences(session, principal, limit=100, now=now)
    tz = await visibility.company_zone(session, principal)
    sites = await visibility.visible_sites(session, principal, P.ALERTS_MANAGE)
    site_names = {s.id: s.name for s in sites}
    every_site = principal.sites(P.ALERTS_MANAGE) is None
    gateways = await visibility.visible_gateways(session, principal, P.ALERTS_MANAGE)
    context = {
        "silences": page.items,
        "now": now,
        "tz": tz,
        "site_names": site_names,
        "site_options": [(s.id, s.name) for s in sites],
        "every_site": every_site,
        "gateway_options": [(g.id, f"{g.name or g.id} ({g.id})") for g in gateways],
        "default_end": input_value(now + timedelta(hours=2), tz),
        "active": actions.silence_active,
        "may_end": lambda s: actions.may_manage_silence(principal, s),
    }
    return render_form(request, principal, "alerts/silences.html", context, mistake or Mistake())


@router.get("/alerts/silences")
async def silences_page(request: Request, session: SessionDep, principal: Manager) -> Response:
    return await _silences_view(request, session, principal)


Short = Annotated[str, Form(max_length=200)]


@router.post("/alerts/silences")
async def add_silence(
    request: Request,
    session: SessionDep,
    principal: Manager,
    site: Short = "",
    gateway_id: Short = "",
    source_pattern: Short = "",
    fault: Short = "",
    reason: Annotated[str, Form(max_length=actions.MAX_REASON + 100)] = "",
    ends_at: Short = "",
) -> Response:
    form = {
        "site": site,
        "gateway_id": gateway_id,
        "source_pattern": source_pattern,
        "fault": fault,
        "reason": reason,
        "ends_at": ends_at,
    }
    try:
        site_id = int(site) if site.strip() else None
        tz = await visibility.company_zone(session, principal)
        if site_id is not None:
            site_row = await session.get(Site, site_id)
            if site_row is not None and site_row.company_id == principal.company_id:
                tz = zone(site_row.timezone)
        end = parse_local(ends_at, tz, "ends_at")
        if end is None:
            raise InvalidInput("ends_at: say until when (at most 30 days ahead)")
        await actions.create_silence(
            session,
            principal,
            reason=reason,
            ends_at=end,
            site_id=site_id,
            gateway_id=gateway_id,
            source_pattern=source_pattern,
            fault=fault,
            ip=client_ip(request),
        )
    except ValueError:
        await session.rollback()
        return await _silences_view(
            request, session, principal, Mistake("site: choose a site", form, "add", 422)
        )
    except (*FORM_MISTAKES, Forbidden) as e:
        await session.rollback()
        return await _silences_view(request, session, principal, Mistake.of(e, form, "add"))
    response = RedirectResponse("/alerts/silences", 303)
    flash(response, request, translate(language_of(request, principal), "Silence added."))
    return response


@router.post("/alerts/silences/{silence_id}/end")
async def end_silence(request: Request, session: SessionDep, principal: Manager, silence_id: Id) -> Response:
    lang = language_of(request, principal)
    response = RedirectResponse("/alerts/silences", 303)
    try:
        await actions.end_silence(session, principal, silence_id, ip=client_ip(request))
    except Conflict as e:
        flash(response, request, str(e), "warning")
        return response
    flash(response, request, translate(lang, "Silence ended."))
    return response


# ---------------------------------------------------------------------------------------------
# One alert, and what a form does to it (shared with the technician's page)


async def detail_context(session: AsyncSession, principal: Principal, alert_id: int) -> dict[str, Any]:
    detail = await actions.get_alert(session, principal, alert_id)
    alert = detail.alert
    tz = (
        zone(detail.site.timezone)
        if detail.site is not None
        else await visibility.company_zone(session, principal)
    )
    return {
        "d": detail,
        "a": alert,
        "tz": tz,
        "labels": LABELS,
        "urgent": is_urgent(alert),
        "may_handle": may_handle(principal, alert),
        "may_note": principal.can(P.ALARMS_ACKNOWLEDGE, alert.site_id),
        "photo_url": photo_url,
        "names": detail.names,
        "iso_time": iso_time,
        "max_photo_mb": actions.MAX_PHOTO_BYTES // (1024 * 1024),
    }


@router.get("/alerts/{alert_id}")
async def alert_page(request: Request, session: SessionDep, principal: Responder, alert_id: Id) -> Response:
    context = await detail_context(session, principal, alert_id)
    return render_form(request, principal, "alerts/detail.html", context)


async def perform(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    alert_id: int,
    action: str,
    back: str,
    *,
    text: str = "",
    file: UploadFile | None = None,
) -> Response:
    """Do ``action`` to the alert and go back to ``back`` with what happened as a flash message:
    success, or the state rule or mistake that refused it. NotFound and Forbidden are the error
    page (``page_router``)."""
    lang = language_of(request, principal)
    ip = client_ip(request)
    response = RedirectResponse(back, 303)
    try:
        if action == "acknowledge":
            await actions.acknowledge(session, principal, alert_id, ip=ip)
        elif action == "start":
            await actions.start_work(session, principal, alert_id, ip=ip)
        elif action == "notes":
            await actions.add_note(session, principal, alert_id, text, ip=ip)
        elif action == "resolve":
            await actions.resolve(session, principal, alert_id, text, ip=ip)
        elif action == "photos":
            if file is None or not file.filename:
                raise InvalidInput(translate(lang, "Choose a photo to add."))
            data = await file.read(actions.MAX_PHOTO_BYTES + 1)
            await actions.add_photo(
                session,
                principal,
                alert_id,
                data,
                file.content_type or "",
                store=BlobStore.of(request.app.state.config),
                ip=ip,
            )
        else:  # pragma: no cover - the routes name only the actions above
            raise InvalidInput(f"action: {action!r} is not one of {', '.join(DONE)}")
    except (Conflict, InvalidInput) as e:
        await session.rollback()
        # The alert must exist and be the principal's to say anything about it.
        await actions.get_alert(session, principal, alert_id, timeline_limit=1)
        flash(response, request, str(e), "warning" if isinstance(e, Conflict) else "error")
        return response
    except CloudError:
        await session.rollback()
        raise
    flash(response, request, translate(lang, DONE[action]))
    return response


Text = Annotated[str, Form(max_length=actions.MAX_NOTE + 100)]


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge(request: Request, session: SessionDep, principal: Responder, alert_id: Id) -> Response:
    return await perform(request, session, principal, alert_id, "acknowledge", f"/alerts/{alert_id}")


@router.post("/alerts/{alert_id}/start")
async def start(request: Request, session: SessionDep, principal: Responder, alert_id: Id) -> Response:
    return await perform(request, session, principal, alert_id, "start", f"/alerts/{alert_id}")


@router.post("/alerts/{alert_id}/notes")
async def add_note(
    request: Request, session: SessionDep, principal: Responder, alert_id: Id, text: Text = ""
) -> Response:
    return await perform(request, session, principal, alert_id, "notes", f"/alerts/{alert_id}", text=text)


@router.post("/alerts/{alert_id}/photos")
async def add_photo(
    request: Request,
    session: SessionDep,
    principal: Responder,
    alert_id: Id,
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    return await perform(request, session, principal, alert_id, "photos", f"/alerts/{alert_id}", file=file)


@router.post("/alerts/{alert_id}/resolve")
async def resolve(
    request: Request, session: SessionDep, principal: Responder, alert_id: Id, resolution: Text = ""
) -> Response:
    return await perform(
        request, session, principal, alert_id, "resolve", f"/alerts/{alert_id}", text=resolution
    )


# ---------------------------------------------------------------------------------------------
# The dashboard card


@card("open_alerts", 40, P.ALARMS_ACKNOWLEDGE, title=N_("Open alerts"), template="alerts/card.html")
async def open_alerts_card(session: AsyncSession, principal: Principal) -> Mapping[str, Any]:
    counts = await actions.counts_by_track(session, principal)
    page = await actions.list_alerts(session, principal, state=actions.UNRESOLVED, limit=CARD_NEWEST)
    return {
        "counts": counts,
        "total": sum(counts.values()),
        "alerts": page.items,
        **(await row_context(session, principal, page.items)),
    }
