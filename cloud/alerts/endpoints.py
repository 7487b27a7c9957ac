"""The alerts API under /api/v1: the alert list and one alert with its timeline, the actions on an
alert (acknowledge, start, notes, photos, resolve), its photos, and silences.

Alerts need ``alarms.acknowledge`` (life-safety alerts: ``alarms.lifesafety`` to acknowledge,
start or resolve, checked by ``cloud.alerts.actions``); silences need ``alerts.manage``. Another
company's alert or silence answers 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Path, Query, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.alerts import actions
from cloud.alerts.models import Alert, AlertPhoto, Silence
from cloud.blobs import BlobStore, TooLarge
from cloud.kit.web import SessionDep

router = APIRouter(tags=["alerts"])

Responder = Annotated[Principal, Depends(Authorize(Permission.ALARMS_ACKNOWLEDGE))]
Manager = Annotated[Principal, Depends(Authorize(Permission.ALERTS_MANAGE))]
MAX_ID = 2**63 - 1
AlertId = Annotated[int, Path(ge=1, le=MAX_ID)]
PhotoId = Annotated[int, Path(ge=1, le=MAX_ID)]
SilenceId = Annotated[int, Path(ge=1, le=MAX_ID)]
# Text: bounded, and no NUL (PostgreSQL text cannot hold one).
NO_NUL = r"^[^\x00]*$"
STATE_PATTERN = "^(" + "|".join(actions.STATE_FILTERS) + ")$"
TRACK_PATTERN = "^(" + "|".join(actions.TRACKS) + ")$"
PHOTO_CACHE = "private, max-age=86400"


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _store(request: Request) -> BlobStore:
    return BlobStore.of(request.app.state.config)


# -- schemas


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    company_id: int | None
    site_id: int | None
    gateway_id: str
    track: str = Field(description="life_safety or maintenance")
    key: str = Field(description='Maintenance: "<gateway>|<source>|<fault>"; life safety: the event')
    kind: str = Field(description="The kind of the event that raised it, or gateway.offline")
    source: str
    fault: str
    skill: str
    severity: str
    details: dict[str, Any] = Field(description="The raising event's data")
    state: str = Field(description="open, acknowledged, in_progress, resolved or inhibited")
    active: bool = Field(description="The fault is still present")
    flapping: bool
    flap_count: int
    event_count: int
    raised_at: datetime
    first_event_at: datetime
    last_event_at: datetime
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: int | None = Field(description="The user (None: a token, or not acknowledged)")
    started_at: datetime | None
    resolved_at: datetime | None
    resolved_by: int | None = Field(description="The user (None: resolved by itself, or a token)")
    resolution: str
    escalation_step: int
    inhibited_by: int | None
    silence_id: int | None


class AlertPageOut(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class TimelineOut(BaseModel):
    id: int
    at: datetime
    action: str = Field(description="raised, notified, acknowledged, escalated, note, resolved...")
    actor_id: int | None = Field(description="The user; None: the system (or a token)")
    actor_name: str
    detail: dict[str, Any]


class PhotoOut(BaseModel):
    id: int
    content_type: str
    size: int
    sha256: str
    uploaded_by: int | None
    uploaded_at: datetime
    url: str


class NotificationOut(BaseModel):
    id: int
    user_id: int | None
    webhook_id: int | None
    name: str
    channel: str = Field(description="email, sms or webhook")
    address: str
    reason: str
    step: int
    status: str = Field(description="pending, sending, sent, failed or cancelled")
    created_at: datetime
    sent_at: datetime | None
    last_error: str


class AlertDetailOut(AlertOut):
    site_name: str
    timeline: list[TimelineOut]
    photos: list[PhotoOut]
    notifications: list[NotificationOut]


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=actions.MAX_NOTE, pattern=NO_NUL)


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: str = Field(
        "",
        max_length=actions.MAX_RESOLUTION,
        pattern=NO_NUL,
        description="What was found and done (required for a life-safety alert)",
    )


class SilenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: int | None = Field(None, ge=1, le=MAX_ID, description="None: every site of the company")
    company_id: int | None = Field(
        None, ge=1, le=MAX_ID, description="The platform token only, for a silence of every site"
    )
    gateway_id: str = Field("", max_length=100, pattern=NO_NUL, description="Only this gateway's alerts")
    source_pattern: str = Field(
        "",
        max_length=actions.MAX_PATTERN,
        pattern=NO_NUL,
        description='Sources matching it, e.g. "chiller-2/*"',
    )
    fault: str = Field("", max_length=actions.MAX_FAULT, pattern=NO_NUL, description="Only this fault code")
    reason: str = Field(min_length=1, max_length=actions.MAX_REASON, pattern=NO_NUL)
    ends_at: datetime = Field(description="In the future, at most 30 days ahead (no zone: UTC)")


class SilenceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    company_id: int
    site_id: int | None
    gateway_id: str
    source_pattern: str
    fault: str
    reason: str
    starts_at: datetime
    ends_at: datetime
    created_by: int | None
    created_at: datetime
    ended_at: datetime | None
    ended_by: int | None


class SilencePageOut(BaseModel):
    items: list[SilenceOut]
    next_cursor: str | None


def _alert_out(alert: Alert) -> AlertOut:
    return AlertOut.model_validate(alert)


def _photo_out(photo: AlertPhoto) -> PhotoOut:
    return PhotoOut(
        id=photo.id,
        content_type=photo.content_type,
        size=photo.size,
        sha256=photo.sha256,
        uploaded_by=photo.uploaded_by,
        uploaded_at=photo.uploaded_at,
        url=photo_url(photo),
    )


def photo_url(photo: AlertPhoto) -> str:
    return f"/api/v1/alerts/{photo.alert_id}/photos/{photo.id}"


def _silence_out(silence: Silence) -> SilenceOut:
    return SilenceOut.model_validate(silence)


# -- alerts


@router.get(
    "/alerts",
    summary="List alerts: unresolved life safety first, then newest first",
    description="The alerts of the sites where the principal may acknowledge alarms. Every filter "
    "given applies; state=unresolved is every state but resolved. Page with next_cursor.",
)
async def get_alerts(
    session: SessionDep,
    principal: Responder,
    state: Annotated[str | None, Query(pattern=STATE_PATTERN)] = None,
    track: Annotated[str | None, Query(pattern=TRACK_PATTERN)] = None,
    site_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    text: Annotated[
        str | None,
        Query(
            max_length=actions.MAX_TEXT_FILTER, pattern=NO_NUL, description="In kind, source, fault, gateway"
        ),
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=120, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=actions.MAX_PAGE)] = actions.DEFAULT_PAGE,
) -> AlertPageOut:
    page = await actions.list_alerts(
        session, principal, state=state, track=track, site_id=site_id, text=text, cursor=cursor, limit=limit
    )
    return AlertPageOut(items=[_alert_out(a) for a in page.items], next_cursor=page.next_cursor)


async def _detail(session: SessionDep, principal: Principal, alert_id: int) -> AlertDetailOut:
    detail = await actions.get_alert(session, principal, alert_id)
    base = _alert_out(detail.alert).model_dump()
    return AlertDetailOut(
        **base,
        site_name=detail.site.name if detail.site is not None else "",
        timeline=[
            TimelineOut(
                id=e.id,
                at=e.at,
                action=e.action,
                actor_id=e.actor_id,
                actor_name=e.actor_name,
                detail=e.detail,
            )
            for e in detail.timeline
        ],
        photos=[_photo_out(p) for p in detail.photos],
        notifications=[
            NotificationOut(
                id=n.id,
                user_id=n.user_id,
                webhook_id=n.webhook_id,
                name=n.name,
                channel=n.channel,
                address=n.address,
                reason=n.reason,
                step=n.step,
                status=n.status,
                created_at=n.created_at,
                sent_at=n.sent_at,
                last_error=n.last_error,
            )
            for n in detail.notices
        ],
    )


@router.get("/alerts/{alert_id}", summary="One alert with its timeline, photos and notifications")
async def get_alert(session: SessionDep, principal: Responder, alert_id: AlertId) -> AlertDetailOut:
    return await _detail(session, principal, alert_id)


@router.post(
    "/alerts/{alert_id}/acknowledge",
    summary="Acknowledge an open alert",
    description="Stops escalation and cancels pending notifications. 409 unless the alert is open; "
    "403 for a life-safety alert without alarms.lifesafety.",
)
async def acknowledge(
    request: Request, session: SessionDep, principal: Responder, alert_id: AlertId
) -> AlertOut:
    return _alert_out(await actions.acknowledge(session, principal, alert_id, ip=_client_ip(request)))


@router.post(
    "/alerts/{alert_id}/start",
    summary="Start work on an alert (acknowledging it if open)",
    description="409 unless the alert is open or acknowledged.",
)
async def start(request: Request, session: SessionDep, principal: Responder, alert_id: AlertId) -> AlertOut:
    return _alert_out(await actions.start_work(session, principal, alert_id, ip=_client_ip(request)))


@router.post("/alerts/{alert_id}/notes", summary="Add a note to the alert's timeline", status_code=201)
async def add_note(
    request: Request, session: SessionDep, principal: Responder, alert_id: AlertId, body: NoteIn
) -> TimelineOut:
    entry = await actions.add_note(session, principal, alert_id, body.text, ip=_client_ip(request))
    names = await actions.user_names(session, [entry.actor_id])
    return TimelineOut(
        id=entry.id,
        at=entry.at,
        action=entry.action,
        actor_id=entry.actor_id,
        actor_name=names.get(entry.actor_id, "") if entry.actor_id is not None else "",
        detail=dict(entry.detail or {}),
    )


@router.post(
    "/alerts/{alert_id}/photos",
    summary="Attach a photo (JPEG, PNG or WebP; at most 10 MB)",
    description="multipart/form-data with the image in `file`. The type is checked by the file's "
    "bytes: 415 for anything but JPEG, PNG or WebP; 413 above 10 MB; 409 on a resolved alert.",
    status_code=201,
)
async def add_photo(
    request: Request,
    session: SessionDep,
    principal: Responder,
    alert_id: AlertId,
    file: Annotated[UploadFile, File(description="The photo")],
) -> PhotoOut:
    data = await file.read(actions.MAX_PHOTO_BYTES + 1)
    if len(data) > actions.MAX_PHOTO_BYTES:
        raise TooLarge(f"file: more than the {actions.MAX_PHOTO_BYTES} bytes allowed")
    photo = await actions.add_photo(
        session,
        principal,
        alert_id,
        data,
        file.content_type or "",
        store=_store(request),
        ip=_client_ip(request),
    )
    return _photo_out(photo)


@router.get(
    "/alerts/{alert_id}/photos/{photo_id}",
    summary="A photo of the alert (its bytes)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
)
async def get_photo(
    request: Request, session: SessionDep, principal: Responder, alert_id: AlertId, photo_id: PhotoId
) -> Response:
    photo = await actions.get_photo(session, principal, alert_id, photo_id)
    data = _store(request).get(photo.sha256)
    return Response(
        data,
        media_type=photo.content_type,
        headers={
            "Cache-Control": PHOTO_CACHE,
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
        },
    )


@router.post(
    "/alerts/{alert_id}/resolve",
    summary="Resolve an alert",
    description="409 if already resolved; 422 without a resolution for a life-safety alert.",
)
async def resolve(
    request: Request, session: SessionDep, principal: Responder, alert_id: AlertId, body: ResolveIn
) -> AlertOut:
    return _alert_out(
        await actions.resolve(session, principal, alert_id, body.resolution, ip=_client_ip(request))
    )


# -- silences


@router.get("/silences", summary="Silences, newest first")
async def get_silences(
    session: SessionDep,
    principal: Manager,
    active: Annotated[bool | None, Query(description="true: in force now; false: over")] = None,
    cursor: Annotated[str | None, Query(max_length=120)] = None,
    limit: Annotated[int, Query(ge=1, le=actions.MAX_PAGE)] = actions.DEFAULT_PAGE,
) -> SilencePageOut:
    page = await actions.list_silences(session, principal, active=active, cursor=cursor, limit=limit)
    return SilencePageOut(items=[_silence_out(s) for s in page.items], next_cursor=page.next_cursor)


@router.post(
    "/silences",
    summary="Silence maintenance alerts for a while (never life safety)",
    description="Matching maintenance alerts raise no notifications until ends_at. A reason is "
    "required; ends_at must be in the future and at most 30 days ahead. Audited.",
    status_code=201,
)
async def post_silence(
    request: Request, session: SessionDep, principal: Manager, body: SilenceIn
) -> SilenceOut:
    silence = await actions.create_silence(
        session,
        principal,
        reason=body.reason,
        ends_at=body.ends_at,
        site_id=body.site_id,
        gateway_id=body.gateway_id,
        source_pattern=body.source_pattern,
        fault=body.fault,
        company_id=body.company_id,
        ip=_client_ip(request),
    )
    return _silence_out(silence)


@router.delete("/silences/{silence_id}", summary="End a silence early (audited)")
async def delete_silence(
    request: Request, session: SessionDep, principal: Manager, silence_id: SilenceId
) -> SilenceOut:
    return _silence_out(await actions.end_silence(session, principal, silence_id, ip=_client_ip(request)))
