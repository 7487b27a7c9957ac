"""What people do to alerts, and what they see of them: acknowledge, start work, add a note or a
photo, resolve; silences of maintenance alerts; the alert list, one alert with its timeline, and
"my alerts" (the technician's page).

Each action runs in the caller's session and commits by itself, with, in the same transaction: the
alert's new state, a timeline row (``actor_id``: the user, None for a token or the platform), an
audit entry (``cloud.audit.chain.record``), and ``next_action_at = now`` so that the escalator
looks at the alert again (an acknowledgement stops the steps and starts the ack timeout; a
resolution ends everything). Acknowledging and resolving cancel the alert's pending notices and
tell its webhooks (``cloud.notify.outbox``).

State rules: acknowledge from open; start from open or acknowledged (acknowledging too); resolve
from any unresolved state; nothing after resolved but notes. A rule broken is a Conflict (409)
saying the alert's state; a life-safety alert acknowledged, started or resolved by someone
without ``alarms.lifesafety`` at its site is Forbidden (403), and one resolved without a word
of what was found is InvalidInput (422).

Visibility: the principal's company and the sites where it holds ``alarms.acknowledge``; an alert
of another company, or of a site outside those, is NotFound (404). Silences need
``alerts.manage`` at their site (every site, for a silence of all sites).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, false, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import User
from cloud.accounts.permissions import Forbidden, Permission, Principal
from cloud.alerts.lifecycle import tell_webhooks
from cloud.alerts.models import (
    ACKNOWLEDGED,
    IN_PROGRESS,
    INHIBITED,
    LIFE_SAFETY,
    MAINTENANCE,
    OPEN,
    RESOLVED,
    UNRESOLVED_STATES,
    Alert,
    AlertPhoto,
    AlertTimeline,
    Notification,
    Silence,
    Webhook,
)
from cloud.alerts.timeline import add_timeline
from cloud.audit.chain import record
from cloud.blobs import DEFAULT_MAX_BYTES, BlobStore, image_type
from cloud.kit.errors import Conflict, InvalidInput, NotFound
from cloud.kit.pagination import InvalidCursor
from cloud.models import Gateway
from cloud.notify.outbox import cancel_pending
from cloud.oncall.recipients import on_call
from cloud.property.models import Site

P = Permission
STATES = (OPEN, ACKNOWLEDGED, IN_PROGRESS, RESOLVED, INHIBITED)
# A filter value besides the states: everything not yet resolved.
UNRESOLVED = "unresolved"
STATE_FILTERS = (*STATES, UNRESOLVED)
TRACKS = (LIFE_SAFETY, MAINTENANCE)
# States a technician works on: an inhibited alert is held behind its gateway's offline alert.
ACTIVE_STATES = (OPEN, ACKNOWLEDGED, IN_PROGRESS)

MAX_NOTE = 2000
MAX_RESOLUTION = 2000
MAX_REASON = 500
MAX_TEXT_FILTER = 100
MAX_PATTERN = 200
MAX_FAULT = 64
MAX_PHOTO_BYTES = DEFAULT_MAX_BYTES
MAX_SILENCE = timedelta(days=30)
DEFAULT_PAGE = 50
MAX_PAGE = 200
TIMELINE_LIMIT = 500
ONCALL_PAIRS = 200  # (site, skill) pairs asked about per "my alerts" at most
MINE_LIMIT = 200


class StateConflict(Conflict):
    code = "alert_state"


# ---------------------------------------------------------------------------------------------
# Finding alerts


def utcnow() -> datetime:
    return datetime.now(UTC)


def visible_clauses(principal: Principal) -> list[ColumnElement[bool]]:
    """The alerts the principal may see: its company's, at sites where it holds alarms.acknowledge
    (an alert of no site only for a principal whose permission holds for every site)."""
    return [
        principal.company_clause(Alert.company_id),
        principal.site_clause(P.ALARMS_ACKNOWLEDGE, Alert.site_id),
    ]


def actor_id(principal: Principal) -> int | None:
    """The user behind the principal (a timeline's and an alert's ``*_by``); None for a token or
    the platform, which the audit entry names instead."""
    return principal.id if principal.kind == "user" else None


async def _load(session: AsyncSession, principal: Principal, alert_id: int, *, lock: bool = False) -> Alert:
    stmt = select(Alert).where(Alert.id == alert_id, *visible_clauses(principal))
    if lock and session.get_bind().dialect.name == "postgresql":
        # The escalator changes the same row: one of us waits for the other.
        stmt = stmt.with_for_update()
    alert = await session.scalar(stmt)
    if alert is None:
        raise NotFound(f"alert {alert_id}: no such alert")
    return alert


def _check_track(principal: Principal, alert: Alert, what: str) -> None:
    """Life-safety alerts are for security staff and managers: Forbidden for anyone else."""
    if alert.track == LIFE_SAFETY and not principal.can(P.LIFESAFETY_ACKNOWLEDGE, alert.site_id):
        raise Forbidden(
            f"{principal.name}: alert {alert.id} is a life-safety alert; only security staff and "
            f"managers ({P.LIFESAFETY_ACKNOWLEDGE.value}) may {what} it"
        )


async def _audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    alert: Alert,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    ip: str,
) -> None:
    await record(
        session,
        principal,
        action,
        "alert",
        alert.id,
        company_id=alert.company_id,
        site_id=alert.site_id,
        before=before,
        after=after,
        ip=ip,
    )


def _acknowledge_fields(principal: Principal, alert: Alert, now: datetime) -> None:
    alert.state = ACKNOWLEDGED
    alert.acknowledged_at = now
    alert.acknowledged_by = actor_id(principal)


# ---------------------------------------------------------------------------------------------
# Actions


async def acknowledge(
    session: AsyncSession, principal: Principal, alert_id: int, now: datetime | None = None, *, ip: str = ""
) -> Alert:
    """Someone has taken the alert: escalation stops, pending notices are cancelled."""
    now = now or utcnow()
    alert = await _load(session, principal, alert_id, lock=True)
    principal.require(P.ALARMS_ACKNOWLEDGE, alert.site_id)
    _check_track(principal, alert, "acknowledge")
    if alert.state != OPEN:
        raise StateConflict(f"alert {alert.id} is {alert.state}: only an open alert can be acknowledged")
    before = alert.state
    _acknowledge_fields(principal, alert, now)
    alert.next_action_at = now
    cancelled = await cancel_pending(session, alert.id, now)
    await tell_webhooks(session, alert, "acknowledged", now)
    await add_timeline(session, alert.id, "acknowledged", now, actor_id=actor_id(principal))
    await _audit(
        session,
        principal,
        "alert.acknowledge",
        alert,
        {"state": before},
        {"state": alert.state, "cancelled_notices": cancelled},
        ip,
    )
    await session.commit()
    return alert


async def start_work(
    session: AsyncSession, principal: Principal, alert_id: int, now: datetime | None = None, *, ip: str = ""
) -> Alert:
    """Work has begun on site (acknowledging an open alert on the way)."""
    now = now or utcnow()
    alert = await _load(session, principal, alert_id, lock=True)
    principal.require(P.ALARMS_ACKNOWLEDGE, alert.site_id)
    _check_track(principal, alert, "start work on")
    if alert.state not in (OPEN, ACKNOWLEDGED):
        raise StateConflict(
            f"alert {alert.id} is {alert.state}: work can start on an open or acknowledged alert only"
        )
    before = alert.state
    cancelled = 0
    if alert.state == OPEN:
        _acknowledge_fields(principal, alert, now)
        cancelled = await cancel_pending(session, alert.id, now)
        await tell_webhooks(session, alert, "acknowledged", now)
        await add_timeline(session, alert.id, "acknowledged", now, actor_id=actor_id(principal))
    alert.state = IN_PROGRESS
    alert.started_at = now
    alert.next_action_at = now
    await add_timeline(session, alert.id, "started", now, actor_id=actor_id(principal))
    await _audit(
        session,
        principal,
        "alert.start",
        alert,
        {"state": before},
        {"state": alert.state, "cancelled_notices": cancelled},
        ip,
    )
    await session.commit()
    return alert


async def add_note(
    session: AsyncSession,
    principal: Principal,
    alert_id: int,
    text: str,
    now: datetime | None = None,
    *,
    ip: str = "",
) -> AlertTimeline:
    """A note on the timeline (resolved alerts too: what was found afterwards)."""
    now = now or utcnow()
    text = text.strip()
    if not text:
        raise InvalidInput("text: write the note")
    if len(text) > MAX_NOTE:
        raise InvalidInput(f"text: at most {MAX_NOTE} characters, not {len(text)}")
    alert = await _load(session, principal, alert_id, lock=True)
    principal.require(P.ALARMS_ACKNOWLEDGE, alert.site_id)
    alert.next_action_at = now
    entry_id = await add_timeline(session, alert.id, "note", now, {"text": text}, actor_id(principal))
    await _audit(session, principal, "alert.note", alert, None, {"text": text}, ip)
    await session.commit()
    entry = await session.get(AlertTimeline, entry_id)
    assert entry is not None
    return entry


async def add_photo(
    session: AsyncSession,
    principal: Principal,
    alert_id: int,
    data: bytes,
    content_type: str = "",
    now: datetime | None = None,
    *,
    store: BlobStore,
    max_bytes: int = MAX_PHOTO_BYTES,
    ip: str = "",
) -> AlertPhoto:
    """A photo (JPEG, PNG or WebP, by its bytes: ``content_type`` as the client said is only
    recorded) kept in the blob store and shown on the alert. Not on a resolved alert."""
    now = now or utcnow()
    alert = await _load(session, principal, alert_id, lock=True)
    principal.require(P.ALARMS_ACKNOWLEDGE, alert.site_id)
    if alert.state == RESOLVED:
        raise StateConflict(f"alert {alert.id} is resolved: add a note instead of a photo")
    kind = image_type(data)
    # Checked before the write too: the disk is not touched for a refused file.
    blob = await asyncio.to_thread(store.put, data, max_bytes=max_bytes)
    photo = AlertPhoto(
        alert_id=alert.id,
        sha256=blob.sha256,
        content_type=kind,
        size=blob.size,
        uploaded_by=actor_id(principal),
        uploaded_at=now,
    )
    session.add(photo)
    await session.flush()
    alert.next_action_at = now
    await add_timeline(session, alert.id, "photo", now, {"photo_id": photo.id}, actor_id(principal))
    await _audit(
        session,
        principal,
        "alert.photo",
        alert,
        None,
        {"photo_id": photo.id, "sha256": blob.sha256, "size": blob.size, "content_type": kind,
         "declared_type": content_type[:100]},
        ip,
    )  # fmt: skip
    await session.commit()
    return photo


async def resolve(
    session: AsyncSession,
    principal: Principal,
    alert_id: int,
    resolution: str,
    now: datetime | None = None,
    *,
    ip: str = "",
) -> Alert:
    """Done: what was found and done in ``resolution`` (required for life safety)."""
    now = now or utcnow()
    resolution = resolution.strip()
    if len(resolution) > MAX_RESOLUTION:
        raise InvalidInput(f"resolution: at most {MAX_RESOLUTION} characters, not {len(resolution)}")
    alert = await _load(session, principal, alert_id, lock=True)
    principal.require(P.ALARMS_ACKNOWLEDGE, alert.site_id)
    _check_track(principal, alert, "resolve")
    if alert.state == RESOLVED:
        raise StateConflict(f"alert {alert.id} is already resolved")
    if alert.track == LIFE_SAFETY and not resolution:
        raise InvalidInput("resolution: say what was found and done (required for a life-safety alert)")
    before = alert.state
    alert.state = RESOLVED
    alert.resolved_at = now
    alert.resolved_by = actor_id(principal)
    alert.resolution = resolution
    alert.next_action_at = now
    cancelled = await cancel_pending(session, alert.id, now)
    await tell_webhooks(session, alert, "resolved", now)
    await add_timeline(
        session, alert.id, "resolved", now, {"resolution": resolution, "auto": False}, actor_id(principal)
    )
    await _audit(
        session,
        principal,
        "alert.resolve",
        alert,
        {"state": before},
        {"state": RESOLVED, "resolution": resolution, "cancelled_notices": cancelled},
        ip,
    )
    await session.commit()
    return alert


# ---------------------------------------------------------------------------------------------
# Silences


def _aware(value: datetime, name: str) -> datetime:
    """A time without a zone is UTC (the zone everything is stored in)."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{name}: {value.isoformat()} is out of range") from None


async def _silence_company(
    session: AsyncSession, principal: Principal, site_id: int | None, company_id: int | None
) -> tuple[int, Site | None]:
    """The company and site a new silence is for, checked: the site must be the company's and
    alerts.manage must hold there (at every site for an all-sites silence)."""
    if site_id is not None:
        site = await session.get(Site, site_id)
        if site is None or (not principal.is_platform and site.company_id != principal.company_id):
            raise NotFound(f"site_id: no site {site_id}")
        if company_id is not None and company_id != site.company_id:
            raise InvalidInput(f"company_id: site {site_id} is not of company {company_id}")
        principal.require(P.ALERTS_MANAGE, site.id)
        return site.company_id, site
    principal.require(P.ALERTS_MANAGE)
    if principal.sites(P.ALERTS_MANAGE) is not None:
        raise Forbidden(
            f"{principal.name}: a silence of every site needs {P.ALERTS_MANAGE.value} at every site; "
            "choose one of your sites"
        )
    if principal.is_platform:
        if company_id is None:
            raise InvalidInput("company_id: the platform token must say which company (or give site_id)")
        return company_id, None
    assert principal.company_id is not None
    if company_id is not None and company_id != principal.company_id:
        raise NotFound(f"company_id: no company {company_id}")
    return principal.company_id, None


def may_manage_silence(principal: Principal, silence: Silence) -> bool:
    if silence.site_id is None:
        return principal.can(P.ALERTS_MANAGE) and principal.sites(P.ALERTS_MANAGE) is None
    return principal.can(P.ALERTS_MANAGE, silence.site_id)


def silence_snapshot(silence: Silence) -> dict[str, Any]:
    return {
        "site_id": silence.site_id,
        "gateway_id": silence.gateway_id,
        "source_pattern": silence.source_pattern,
        "fault": silence.fault,
        "reason": silence.reason,
        "starts_at": silence.starts_at,
        "ends_at": silence.ends_at,
        "ended_at": silence.ended_at,
    }


async def create_silence(
    session: AsyncSession,
    principal: Principal,
    *,
    reason: str,
    ends_at: datetime,
    site_id: int | None = None,
    gateway_id: str = "",
    source_pattern: str = "",
    fault: str = "",
    company_id: int | None = None,
    now: datetime | None = None,
    ip: str = "",
) -> Silence:
    """Maintenance alerts matching (site or every site, gateway, source pattern, fault) raise no
    notices until ``ends_at`` (in the future, at most 30 days ahead). Life safety is never
    silenced: the engine does not apply silences to it."""
    now = now or utcnow()
    reason = reason.strip()
    if not reason:
        raise InvalidInput("reason: say why these alerts are silenced (e.g. chiller 2 under maintenance)")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"reason: at most {MAX_REASON} characters, not {len(reason)}")
    ends = _aware(ends_at, "ends_at")
    if ends <= now:
        raise InvalidInput("ends_at: must be in the future")
    if ends > now + MAX_SILENCE:
        raise InvalidInput(f"ends_at: at most {MAX_SILENCE.days} days ahead; make a new silence after that")
    source_pattern, fault, gateway_id = source_pattern.strip(), fault.strip(), gateway_id.strip()
    if len(source_pattern) > MAX_PATTERN:
        raise InvalidInput(f"source_pattern: at most {MAX_PATTERN} characters")
    if len(fault) > MAX_FAULT:
        raise InvalidInput(f"fault: at most {MAX_FAULT} characters")
    company, site = await _silence_company(session, principal, site_id, company_id)
    if gateway_id:
        gateway = await session.get(Gateway, gateway_id)
        if gateway is None or gateway.company_id != company:
            raise NotFound(f"gateway_id: no gateway {gateway_id!r}")
        if site is not None and gateway.site_id != site.id:
            raise InvalidInput(f"gateway_id: gateway {gateway_id!r} is not at site {site.id}")
        if site is None and principal.sites(P.ALERTS_MANAGE) is not None:
            raise Forbidden(f"{principal.name}: not allowed to silence gateway {gateway_id!r}")
    silence = Silence(
        company_id=company,
        site_id=site.id if site is not None else None,
        gateway_id=gateway_id,
        source_pattern=source_pattern,
        fault=fault,
        reason=reason,
        starts_at=now,
        ends_at=ends,
        created_by=actor_id(principal),
        created_at=now,
    )
    session.add(silence)
    await session.flush()
    # Alerts already open that it covers stop escalating now, not at their next step: the
    # escalator looks at each maintenance alert of its scope at once and applies it.
    scope = [Alert.company_id == company, Alert.track == MAINTENANCE, Alert.state.in_(ACTIVE_STATES)]
    if site is not None:
        scope.append(Alert.site_id == site.id)
    if gateway_id:
        scope.append(Alert.gateway_id == gateway_id)
    await session.execute(update(Alert).where(*scope).values(next_action_at=now))
    await record(
        session,
        principal,
        "alert.silence.create",
        "silence",
        silence.id,
        company_id=company,
        site_id=silence.site_id,
        after=silence_snapshot(silence),
        ip=ip,
    )
    await session.commit()
    return silence


async def get_silence(session: AsyncSession, principal: Principal, silence_id: int) -> Silence:
    silence = await session.scalar(
        select(Silence).where(Silence.id == silence_id, *_silence_visible(principal))
    )
    if silence is None:
        raise NotFound(f"silence {silence_id}: no such silence")
    return silence


async def end_silence(
    session: AsyncSession, principal: Principal, silence_id: int, now: datetime | None = None, *, ip: str = ""
) -> Silence:
    """End a silence early; the alerts it held are looked at again by the escalator at once."""
    now = now or utcnow()
    silence = await get_silence(session, principal, silence_id)
    if not may_manage_silence(principal, silence):
        raise Forbidden(f"{principal.name}: not allowed to end silence {silence.id}")
    if silence.ended_at is not None or silence.ends_at <= now:
        raise Conflict(f"silence {silence.id} has already ended")
    before = silence_snapshot(silence)
    silence.ended_at = now
    silence.ended_by = actor_id(principal)
    await session.execute(
        update(Alert)
        .where(Alert.silence_id == silence.id, Alert.state.in_(UNRESOLVED_STATES))
        .values(next_action_at=now)
    )
    await record(
        session,
        principal,
        "alert.silence.end",
        "silence",
        silence.id,
        company_id=silence.company_id,
        site_id=silence.site_id,
        before=before,
        after=silence_snapshot(silence),
        ip=ip,
    )
    await session.commit()
    return silence


def _silence_visible(principal: Principal) -> list[ColumnElement[bool]]:
    """The company's silences of the principal's sites, and those of every site (they hold there
    too), for whoever manages alerts somewhere."""
    scope = principal.sites(P.ALERTS_MANAGE)
    clauses = [principal.company_clause(Silence.company_id)]
    if scope is not None:
        clauses.append(or_(Silence.site_id.is_(None), Silence.site_id.in_(sorted(scope))))
    return clauses


def silence_active(silence: Silence, now: datetime) -> bool:
    return silence.ended_at is None and silence.starts_at <= now < silence.ends_at


@dataclass(frozen=True, slots=True)
class SilencePage:
    items: list[Silence]
    next_cursor: str | None


async def list_silences(
    session: AsyncSession,
    principal: Principal,
    *,
    active: bool | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
    now: datetime | None = None,
) -> SilencePage:
    """Silences newest first; ``active``: only those in force now (False: only those over)."""
    now = now or utcnow()
    limit = max(1, min(limit, MAX_PAGE))
    stmt = select(Silence).where(*_silence_visible(principal))
    in_force = and_(Silence.ended_at.is_(None), Silence.starts_at <= now, Silence.ends_at > now)
    if active is True:
        stmt = stmt.where(in_force)
    elif active is False:
        stmt = stmt.where(~in_force)
    if cursor is not None:
        _, before_id = _decode_cursor(cursor)
        stmt = stmt.where(Silence.id < before_id)
    rows = list((await session.scalars(stmt.order_by(Silence.id.desc()).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return SilencePage(rows, _encode_cursor(1, rows[-1].id) if more and rows else None)


# ---------------------------------------------------------------------------------------------
# Lists


@dataclass(frozen=True, slots=True)
class AlertPage:
    items: list[Alert]
    next_cursor: str | None


_CURSOR_PREFIX = "al:"


def _encode_cursor(rank: int, last_id: int) -> str:
    raw = f"{_CURSOR_PREFIX}{rank}:{last_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raw = ""
    rank, _, last = raw.removeprefix(_CURSOR_PREFIX).partition(":")
    if not raw.startswith(_CURSOR_PREFIX) or rank not in ("0", "1") or not last.isdigit() or len(last) > 19:
        raise InvalidCursor("cursor: not a cursor this API issued (pass next_cursor back unchanged)")
    return int(rank), int(last)


def _rank() -> ColumnElement[int]:
    """0 for an unresolved life-safety alert (shown first), 1 for the rest."""
    return case((and_(Alert.track == LIFE_SAFETY, Alert.state != RESOLVED), 0), else_=1)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def filter_clauses(
    *, state: str | None = None, track: str | None = None, site_id: int | None = None, text: str | None = None
) -> list[ColumnElement[bool]]:
    """The list's filters as SQL (InvalidInput for a value that is none of the choices)."""
    clauses: list[ColumnElement[bool]] = []
    if state:
        if state not in STATE_FILTERS:
            raise InvalidInput(f"state: one of {', '.join(STATE_FILTERS)}, not {state!r}")
        clauses.append(Alert.state.in_(UNRESOLVED_STATES) if state == UNRESOLVED else Alert.state == state)
    if track:
        if track not in TRACKS:
            raise InvalidInput(f"track: one of {', '.join(TRACKS)}, not {track!r}")
        clauses.append(Alert.track == track)
    if site_id is not None:
        clauses.append(Alert.site_id == site_id)
    if text:
        text = text.strip()
        if len(text) > MAX_TEXT_FILTER:
            raise InvalidInput(f"text: at most {MAX_TEXT_FILTER} characters")
        if "\x00" in text:
            raise InvalidInput("text: must not contain NUL")
        if text:
            pattern = _like(text.lower())
            clauses.append(
                or_(
                    *(
                        func.lower(column).like(pattern, escape="\\")
                        for column in (
                            Alert.kind,
                            Alert.source,
                            Alert.fault,
                            Alert.gateway_id,
                            Alert.resolution,
                        )
                    )
                )
            )
    return clauses


async def check_site(session: AsyncSession, principal: Principal, site_id: int) -> None:
    """NotFound unless the site is the principal's company's and alarms.acknowledge holds there."""
    company = await session.scalar(select(Site.company_id).where(Site.id == site_id))
    foreign = not principal.is_platform and company != principal.company_id
    if company is None or foreign or not principal.can(P.ALARMS_ACKNOWLEDGE, site_id):
        raise NotFound(f"site_id: no site {site_id}")


async def list_alerts(
    session: AsyncSession,
    principal: Principal,
    *,
    state: str | None = None,
    track: str | None = None,
    site_id: int | None = None,
    text: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> AlertPage:
    """The alerts the principal may see, filtered; unresolved life-safety alerts first, then
    newest first. Pass ``next_cursor`` back as ``cursor`` for the next page."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: between 1 and {MAX_PAGE}, not {limit}")
    if site_id is not None:
        await check_site(session, principal, site_id)
    rank = _rank()
    stmt = select(Alert, rank.label("rank")).where(
        *visible_clauses(principal), *filter_clauses(state=state, track=track, site_id=site_id, text=text)
    )
    if cursor is not None:
        after_rank, before_id = _decode_cursor(cursor)
        stmt = stmt.where(or_(rank > after_rank, and_(rank == after_rank, Alert.id < before_id)))
    rows = (await session.execute(stmt.order_by(rank, Alert.id.desc()).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(int(rows[-1].rank), rows[-1].Alert.id) if more else None
    return AlertPage([r.Alert for r in rows], next_cursor)


async def newest_timeline_id(session: AsyncSession) -> int:
    """Where a live stream starts: after every change made so far."""
    return int(await session.scalar(select(func.max(AlertTimeline.id))) or 0)


async def counts_by_track(session: AsyncSession, principal: Principal) -> dict[str, int]:
    """Unresolved alerts the principal may see, per track (the dashboard card)."""
    rows = await session.execute(
        select(Alert.track, func.count())
        .where(*visible_clauses(principal), Alert.state.in_(UNRESOLVED_STATES))
        .group_by(Alert.track)
    )
    counts = dict.fromkeys(TRACKS, 0)
    counts.update({track: int(n) for track, n in rows.all()})
    return counts


# ---------------------------------------------------------------------------------------------
# One alert


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    id: int
    at: datetime
    action: str
    actor_id: int | None
    actor_name: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NoticeView:
    """One notification: who (a person or a webhook), on which channel, and what became of it."""

    id: int
    user_id: int | None
    webhook_id: int | None
    name: str
    channel: str
    address: str
    reason: str
    step: int
    status: str
    created_at: datetime
    sent_at: datetime | None
    last_error: str


@dataclass(frozen=True, slots=True)
class AlertDetail:
    alert: Alert
    site: Site | None
    timeline: list[TimelineEntry]
    photos: list[AlertPhoto]
    notices: list[NoticeView]
    names: dict[int, str] = field(default_factory=dict)  # user id -> display name

    @property
    def recipients(self) -> list[str]:
        """Who was told (sent), once each, in the order they were."""
        seen: dict[str, None] = {}
        for n in self.notices:
            if n.status == "sent":
                seen.setdefault(n.name or n.address, None)
        return list(seen)


async def user_names(session: AsyncSession, user_ids: Iterable[int | None]) -> dict[int, str]:
    ids = sorted({i for i in user_ids if isinstance(i, int)})
    if not ids:
        return {}
    rows = await session.execute(select(User.id, User.display_name).where(User.id.in_(ids)))
    return {row.id: row.display_name for row in rows}


def _user_ids_in(detail: dict[str, Any]) -> list[int]:
    value = detail.get("user_id")
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


async def get_alert(
    session: AsyncSession, principal: Principal, alert_id: int, *, timeline_limit: int = TIMELINE_LIMIT
) -> AlertDetail:
    """The alert with its timeline (oldest first, the newest ``timeline_limit`` rows), photos and
    notifications; NotFound unless the principal may see it."""
    alert = await _load(session, principal, alert_id)
    site = await session.get(Site, alert.site_id) if alert.site_id is not None else None
    timeline_rows = list(
        (
            await session.scalars(
                select(AlertTimeline)
                .where(AlertTimeline.alert_id == alert.id)
                .order_by(AlertTimeline.id.desc())
                .limit(timeline_limit)
            )
        ).all()
    )
    timeline_rows.reverse()
    photos = list(
        (
            await session.scalars(
                select(AlertPhoto).where(AlertPhoto.alert_id == alert.id).order_by(AlertPhoto.id)
            )
        ).all()
    )
    notice_rows = (
        await session.execute(
            select(Notification, User.display_name, Webhook.name)
            .outerjoin(User, User.id == Notification.user_id)
            .outerjoin(Webhook, Webhook.id == Notification.webhook_id)
            .where(Notification.alert_id == alert.id)
            .order_by(Notification.id)
            .limit(TIMELINE_LIMIT)
        )
    ).all()
    ids: list[int | None] = [alert.acknowledged_by, alert.resolved_by]
    for entry in timeline_rows:
        ids.append(entry.actor_id)
        ids.extend(_user_ids_in(entry.detail or {}))
    ids.extend(p.uploaded_by for p in photos)
    names = await user_names(session, ids)
    timeline = [
        TimelineEntry(
            e.id,
            e.at,
            e.action,
            e.actor_id,
            names.get(e.actor_id, "") if e.actor_id is not None else "",
            dict(e.detail or {}),
        )
        for e in timeline_rows
    ]
    notices = [
        NoticeView(
            n.id,
            n.user_id,
            n.webhook_id,
            user_name or webhook_name or "",
            n.channel,
            n.address,
            n.reason,
            n.step,
            n.status,
            n.created_at,
            n.sent_at,
            n.last_error,
        )
        for n, user_name, webhook_name in notice_rows
    ]
    return AlertDetail(alert, site, timeline, photos, notices, names)


async def get_photo(session: AsyncSession, principal: Principal, alert_id: int, photo_id: int) -> AlertPhoto:
    alert = await _load(session, principal, alert_id)
    photo = await session.scalar(
        select(AlertPhoto).where(AlertPhoto.id == photo_id, AlertPhoto.alert_id == alert.id)
    )
    if photo is None:
        raise NotFound(f"photo {photo_id}: no such photo of alert {alert_id}")
    return photo


# ---------------------------------------------------------------------------------------------
# My alerts


async def _on_call_pairs(
    session: AsyncSession, principal: Principal, now: datetime, among: Sequence[int] | None = None
) -> list[tuple[int, str]]:
    """The (site, skill) pairs of the alerts the principal sees (of ``among``, if given) where it
    is on call now."""
    if principal.kind != "user":
        return []
    query = (
        select(Alert.site_id, Alert.skill)
        .where(*visible_clauses(principal), Alert.state.in_(ACTIVE_STATES), Alert.site_id.is_not(None))
        .distinct()
        .limit(ONCALL_PAIRS)
    )
    if among is not None:
        query = query.where(Alert.id.in_(list(among)))
    pairs = (await session.execute(query)).all()
    mine: list[tuple[int, str]] = []
    for site_id, skill in pairs:
        if site_id is not None and await on_call(session, site_id, skill, now) == principal.id:
            mine.append((int(site_id), str(skill)))
    return mine


async def mine_clause(
    session: AsyncSession, principal: Principal, now: datetime, among: Sequence[int] | None = None
) -> ColumnElement[bool]:
    """Alerts that are the principal's: it was notified of them, or it is on call for their site
    and skill (only the pairs of ``among`` are looked up, if given). Nothing for a principal that
    is no user (a token, the platform)."""
    if principal.kind != "user" or principal.id is None:
        return false()
    notified = (
        select(Notification.id)
        .where(Notification.alert_id == Alert.id, Notification.user_id == principal.id)
        .exists()
    )
    clauses: list[ColumnElement[bool]] = [notified]
    pairs = await _on_call_pairs(session, principal, now, among)
    clauses.extend(and_(Alert.site_id == site_id, Alert.skill == skill) for site_id, skill in pairs)
    return or_(*clauses)


async def my_alerts(
    session: AsyncSession, principal: Principal, *, now: datetime | None = None, limit: int = MINE_LIMIT
) -> list[Alert]:
    """The principal's unresolved alerts (not those held behind an offline gateway): life safety
    first, then newest first."""
    now = now or utcnow()
    mine = await mine_clause(session, principal, now)
    stmt = (
        select(Alert)
        .where(*visible_clauses(principal), Alert.state.in_(ACTIVE_STATES), mine)
        .order_by(_rank(), Alert.id.desc())
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def mine_among(
    session: AsyncSession, principal: Principal, alert_ids: Sequence[int], now: datetime
) -> set[int]:
    """Which of ``alert_ids`` are the principal's active alerts (the technician's live stream)."""
    if not alert_ids:
        return set()
    # Only the changed alerts' (site, skill) pairs: each is an on-call lookup of a few queries.
    mine = await mine_clause(session, principal, now, alert_ids)
    rows = await session.scalars(
        select(Alert.id).where(
            Alert.id.in_(list(alert_ids)), *visible_clauses(principal), Alert.state.in_(ACTIVE_STATES), mine
        )
    )
    return set(rows.all())
