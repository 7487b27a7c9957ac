"""``/api/v1/sites/{site}/access``: a site's credentials, access levels, schedules and holidays.

Imports take a CSV file as the raw request body (``Content-Type: text/csv``, UTF-8), e.g.
``curl --data-binary @credentials.csv -H 'Content-Type: text/csv' .../credentials/import``.
After a change, the site's online gateways are sent what they lack (``access.sync``).

Who may: the site in the path is a site's code (``Site.code``), looked up in the principal's
company (another company's answers 404); reading needs ``access.read`` at that site, importing or
changing ``access.write``. The platform operator may also address a site code that has no site row
(access data kept before sites existed, or set up ahead of them). Every import and change is written
to the audit log in its own transaction (``cloud.access.audit``).
"""

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request

from cloud.access.audit import AccessTarget, audit_hook, resolve_site
from cloud.access.csvfile import MAX_FILE_BYTES
from cloud.access.push import push_site
from cloud.access.schemas import AccessSummaryOut, ChangeOut, ErrorOut, InvalidRowsOut, RequestErrorsOut
from cloud.access.service import (
    MAX_SITE_LENGTH,
    Change,
    check_site,
    delete_schedule,
    import_credentials,
    import_levels,
    put_holidays,
    put_schedule,
    summary,
)
from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.kit.errors import CloudError, InvalidInput
from cloud.kit.web import SessionDep
from protocols.access import Holiday, Schedule

log = logging.getLogger(__name__)

router = APIRouter(tags=["access"])

SiteCode = Annotated[
    str, Path(min_length=1, max_length=MAX_SITE_LENGTH, description="The site's code (Site.code)")
]
Reader = Annotated[Principal, Depends(Authorize(Permission.ACCESS_READ))]
Writer = Annotated[Principal, Depends(Authorize(Permission.ACCESS_WRITE))]
Mode = Annotated[
    Literal["merge", "replace"],
    Query(description="merge: the file adds and changes; replace: also removes what the file lacks"),
]

_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_IMPORT_RESPONSES: dict[int | str, dict[str, object]] = {
    413: {"description": f"The file is over {MAX_FILE_BYTES // (1024 * 1024)} MiB"},
    422: {
        "model": InvalidRowsOut | ErrorOut | RequestErrorsOut,
        "description": "Problems in the file, row by row (nothing was stored); or a body or query "
        "parameter that is not valid",
    },
}


class FileTooLarge(CloudError):
    status_code = 413
    code = "too_large"


async def _csv_body(request: Request) -> bytes:
    if request.headers.get("content-type", "").startswith("multipart/"):
        raise InvalidInput("body: send the CSV file itself as the body (Content-Type: text/csv), not a form")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise FileTooLarge(f"body: the file is over {MAX_FILE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _target(request: Request, principal: Principal, site: str) -> AccessTarget:
    """The site a change is for, checked: 404 not the principal's, 403 no access.write there."""
    check_site(site)
    async with request.app.state.sessions() as session:
        return await resolve_site(session, principal, site, Permission.ACCESS_WRITE, request)


async def _pushed(request: Request, target: AccessTarget, change: Change) -> ChangeOut:
    """The change's answer, after sending the site's online gateways what it changed."""
    pushed: list[str] = []
    site = target.code
    publisher = request.app.state.publisher
    if change.bumped and publisher is not None:
        try:
            pushed = await push_site(request.app.state.sessions, publisher, site, by=target.by)
        except Exception:
            # Stored is stored: the gateways catch up at their next birth.
            log.exception("access: site %r changed to version %d but the push failed", site, change.version)
    return ChangeOut(
        added=change.added,
        changed=change.changed,
        unchanged=change.unchanged,
        removed=change.removed,
        version=change.version,
        pushed_to=pushed,
    )


@router.get("/sites/{site}/access", summary="A site's access version and how much it holds")
async def get_access(
    session: SessionDep, principal: Reader, site: SiteCode, request: Request
) -> AccessSummaryOut:
    check_site(site)
    await resolve_site(session, principal, site, Permission.ACCESS_READ, request)
    s = await summary(session, site)
    return AccessSummaryOut(
        site=s.site,
        version=s.version,
        schedules=s.schedules,
        levels=s.levels,
        holidays=s.holidays,
        credentials=s.credentials,
    )


@router.post(
    "/sites/{site}/access/credentials/import",
    summary="Import credentials from CSV (body: the file, Content-Type: text/csv)",
    description="Columns (header row, any order; id and card required): id, card, facility, holder, "
    "levels (level ids separated by ';'), valid_from, valid_until (ISO date or date and time, UTC "
    "unless it has an offset; a date alone for valid_until means to the end of that day), pin (4-12 "
    "digits, kept only as its hash), suspended, offline_ok, clock_free, first_person_in, "
    "antipassback_exempt (true/false, 1/0, yes/no; empty = false). All or nothing: any problem "
    "answers 422 with every problem by row and column, and nothing is stored. A change bumps the "
    "site's version once; rows that did not change keep theirs. mode=replace also removes the "
    "site's credentials the file lacks.",
    openapi_extra=_CSV_BODY,
    responses=_IMPORT_RESPONSES,
)
async def post_credentials(
    request: Request, principal: Writer, site: SiteCode, mode: Mode = "merge"
) -> ChangeOut:
    target = await _target(request, principal, site)
    data = await _csv_body(request)
    change = await import_credentials(
        request.app.state.sessions,
        site,
        data,
        replace=mode == "replace",
        audit=audit_hook(target, "access.credentials.import", "access.credentials", site, mode=mode),
    )
    return await _pushed(request, target, change)


@router.post(
    "/sites/{site}/access/levels/import",
    summary="Import access levels from CSV (body: the file, Content-Type: text/csv)",
    description="Columns: id, name, doors (door names separated by ';'), schedule (a schedule id of "
    "the site, or empty for at all times). All or nothing, as for credentials. mode=replace also "
    "removes the levels the file lacks, refused while a credential holds one of them.",
    openapi_extra=_CSV_BODY,
    responses=_IMPORT_RESPONSES,
)
async def post_levels(request: Request, principal: Writer, site: SiteCode, mode: Mode = "merge") -> ChangeOut:
    target = await _target(request, principal, site)
    data = await _csv_body(request)
    change = await import_levels(
        request.app.state.sessions,
        site,
        data,
        replace=mode == "replace",
        audit=audit_hook(target, "access.levels.import", "access.levels", site, mode=mode),
    )
    return await _pushed(request, target, change)


class ScheduleIn(Schedule):
    """A schedule; its id comes from the path (an id in the body must be the same)."""

    id: str = ""


@router.put("/sites/{site}/access/schedules/{schedule_id}", summary="Add or replace a schedule")
async def put_one_schedule(
    request: Request,
    principal: Writer,
    site: SiteCode,
    schedule_id: Annotated[str, Path(min_length=1, max_length=64)],
    body: ScheduleIn,
) -> ChangeOut:
    target = await _target(request, principal, site)
    if body.id and body.id != schedule_id:
        raise InvalidInput(f"id: the body names schedule {body.id!r}, the path {schedule_id!r}")
    schedule = Schedule(id=schedule_id, name=body.name, intervals=body.intervals, holiday=body.holiday)
    change = await put_schedule(
        request.app.state.sessions,
        site,
        schedule,
        audit=audit_hook(target, "access.schedule.put", "access.schedule", f"{site}/{schedule_id}"),
    )
    return await _pushed(request, target, change)


@router.delete(
    "/sites/{site}/access/schedules/{schedule_id}",
    summary="Remove a schedule (409 while an access level uses it)",
)
async def delete_one_schedule(
    request: Request,
    principal: Writer,
    site: SiteCode,
    schedule_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> ChangeOut:
    target = await _target(request, principal, site)
    change = await delete_schedule(
        request.app.state.sessions,
        site,
        schedule_id,
        audit=audit_hook(target, "access.schedule.delete", "access.schedule", f"{site}/{schedule_id}"),
    )
    return await _pushed(request, target, change)


@router.put("/sites/{site}/access/holidays", summary="Replace the site's holidays")
async def put_site_holidays(
    request: Request, principal: Writer, site: SiteCode, body: Annotated[list[Holiday], Body()]
) -> ChangeOut:
    target = await _target(request, principal, site)
    change = await put_holidays(
        request.app.state.sessions,
        site,
        body,
        audit=audit_hook(target, "access.holidays.put", "access.holidays", site),
    )
    return await _pushed(request, target, change)
