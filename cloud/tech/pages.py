"""The technician's page: mobile first, its own small layout (no desktop navigation).

- ``/tech`` (and ``/tech/``, the installed app's start inside the service worker's scope): my open
  alerts (``cloud.alerts.actions.my_alerts``: those I was notified of, or am on call for), life
  safety on top, then newest first; kept current by ``/tech/stream``.
- ``/tech/alerts/{id}``: the alert, its latest timeline, and the buttons: acknowledge, start, add
  a note, add a photo (the phone's camera), resolve. The link in every SMS and email points here;
  without a session the app's handler sends the browser to ``/login?next=/tech/alerts/{id}``, and
  the sign-in comes back here.
- ``/tech/stream``: SSE of my alerts' changes (``?alert=ID``: of that one alert, which the alert's
  page uses to say it is out of date).
- ``/tech/manifest.webmanifest`` and ``/tech/sw.js``: the PWA. The service worker (scope
  ``/tech/``) keeps the shell (styles, scripts, icons) cache-first and the alert pages
  network-first with the last fetched copy as the fallback, so a page opened once opens again on
  a poor connection; a form posted without a connection answers a page saying it was not sent.

Everything needs ``alarms.acknowledge``; acknowledging and resolving a life-safety alert
``alarms.lifesafety`` too (the buttons are not shown without it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.alerts import actions
from cloud.alerts.models import Alert
from cloud.alerts.pages import detail_context, perform, row_context
from cloud.alerts.stream import Matcher, alert_stream
from cloud.console import live
from cloud.console.assets import static_url
from cloud.console.formkit import render_form
from cloud.console.i18n import N_, language_of, translate
from cloud.console.templating import page_router, render_fragment
from cloud.kit.web import SessionDep

router = page_router()

Technician = Annotated[Principal, Depends(Authorize(Permission.ALARMS_ACKNOWLEDGE))]
MAX_ID = 2**63 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
TIMELINE_SHOWN = 20
APP_NAME = "门岗 Gatehouse 技术员"
SHORT_NAME = "门岗技术员"
THEME = "#14284b"
ICONS = (("tech-icon-192.png", 192), ("tech-icon-512.png", 512))
# What the service worker keeps for a poor connection, besides the pages it fetched.
SHELL = ("tech.css", "tech.js", "alerts.js", *(name for name, _ in ICONS))
NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
APP = {"app_name": N_("Gatehouse technician")}


async def _cards(session: AsyncSession, principal: Principal, alerts: Sequence[Alert]) -> dict[str, Any]:
    return {**(await row_context(session, principal, alerts)), **APP}


@router.get("/tech")
@router.get("/tech/")
async def my_alerts_page(request: Request, session: SessionDep, principal: Technician) -> Response:
    # Before the list: a change made meanwhile is streamed (again), never lost.
    after = await actions.newest_timeline_id(session)
    alerts = await actions.my_alerts(session, principal)
    context = {
        "alerts": alerts,
        "stream_url": f"/tech/stream?after={after}",
        **(await _cards(session, principal, alerts)),
    }
    return render_form(request, principal, "tech/list.html", context)


@router.get("/tech/stream")
async def my_alerts_stream(
    request: Request,
    principal: Technician,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    alert: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this alert's changes")] = None,
) -> Response:
    """SSE: my alerts as they change (``alert``: one card each); one that is no longer mine or
    no longer open (resolved by someone) as ``gone``. With ``alert``: that alert's changes."""
    sessions = request.app.state.sessions
    start = live.resume_after(request, after)
    if start is None:
        async with sessions() as session:
            start = await actions.newest_timeline_id(session)
    lang = language_of(request, principal)

    async def mine(session: AsyncSession, who: Principal, alerts: Sequence[Alert]) -> set[int]:
        if alert is not None:
            return {a.id for a in alerts if a.id == alert}
        return await actions.mine_among(session, who, [a.id for a in alerts], actions.utcnow())

    async def render_cards(session: AsyncSession, alerts: Sequence[Alert]) -> dict[int, str]:
        context = await _cards(session, principal, alerts)
        return {a.id: render_fragment(lang, "tech/card.html", {**context, "a": a}) for a in alerts}

    match: Matcher = mine
    return StreamingResponse(
        alert_stream(request, sessions, principal, start, match, render_cards),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/tech/alerts/{alert_id}")
async def alert_page(request: Request, session: SessionDep, principal: Technician, alert_id: Id) -> Response:
    after = await actions.newest_timeline_id(session)
    context = await detail_context(session, principal, alert_id)
    context.update(
        APP,
        latest=list(reversed(context["d"].timeline))[:TIMELINE_SHOWN],
        watch_url=f"/tech/stream?alert={alert_id}&after={after}",
    )
    return render_form(request, principal, "tech/detail.html", context)


def _back(alert_id: int) -> str:
    return f"/tech/alerts/{alert_id}"


Text = Annotated[str, Form(max_length=actions.MAX_NOTE + 100)]


@router.post("/tech/alerts/{alert_id}/acknowledge")
async def acknowledge(request: Request, session: SessionDep, principal: Technician, alert_id: Id) -> Response:
    return await perform(request, session, principal, alert_id, "acknowledge", _back(alert_id))


@router.post("/tech/alerts/{alert_id}/start")
async def start(request: Request, session: SessionDep, principal: Technician, alert_id: Id) -> Response:
    return await perform(request, session, principal, alert_id, "start", _back(alert_id))


@router.post("/tech/alerts/{alert_id}/notes")
async def add_note(
    request: Request, session: SessionDep, principal: Technician, alert_id: Id, text: Text = ""
) -> Response:
    return await perform(request, session, principal, alert_id, "notes", _back(alert_id), text=text)


@router.post("/tech/alerts/{alert_id}/photos")
async def add_photo(
    request: Request,
    session: SessionDep,
    principal: Technician,
    alert_id: Id,
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    return await perform(request, session, principal, alert_id, "photos", _back(alert_id), file=file)


@router.post("/tech/alerts/{alert_id}/resolve")
async def resolve(
    request: Request, session: SessionDep, principal: Technician, alert_id: Id, resolution: Text = ""
) -> Response:
    return await perform(request, session, principal, alert_id, "resolve", _back(alert_id), text=resolution)


# ---------------------------------------------------------------------------------------------
# The PWA


def manifest(lang: str) -> dict[str, Any]:
    return {
        "id": "/tech/",
        "name": APP_NAME,
        "short_name": SHORT_NAME,
        "description": translate(lang, "My alerts: acknowledge, start, add notes and photos, resolve."),
        "lang": "zh-CN" if lang == "zh" else "en",
        "start_url": "/tech/",
        "scope": "/tech/",
        "display": "standalone",
        "orientation": "portrait",
        "background_color": THEME,
        "theme_color": THEME,
        "icons": [
            {"src": static_url(name), "sizes": f"{size}x{size}", "type": "image/png", "purpose": "any"}
            for name, size in ICONS
        ]
        + [{"src": static_url(ICONS[-1][0]), "sizes": "512x512", "type": "image/png", "purpose": "maskable"}],
    }


@router.get("/tech/manifest.webmanifest")
async def web_manifest(request: Request, principal: Technician) -> Response:
    body = json.dumps(manifest(language_of(request, principal)), ensure_ascii=False)
    return Response(body, media_type="application/manifest+json", headers=NO_CACHE)


@router.get("/tech/sw.js")
async def service_worker(request: Request, principal: Technician) -> Response:
    """The service worker, with the shell's versioned URLs (a changed file is a changed worker,
    which the browser then installs) and the offline page in the user's language."""
    lang = language_of(request, principal)
    offline = render_fragment(lang, "tech/offline.html", APP)
    body = render_fragment(
        lang,
        "tech/sw.js",
        {"shell": [static_url(name) for name in SHELL], "offline_html": offline},
    )
    return Response(
        body,
        media_type="text/javascript",
        headers={**NO_CACHE, "Service-Worker-Allowed": "/tech/"},
    )
