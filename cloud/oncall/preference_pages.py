"""One's own notification settings (``/account/notifications``): the channels maintenance
notices come by, and quiet hours when they wait (life-safety alarms come at once, always, on
every channel). Any signed-in member of staff; an API token or the platform has none to set."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts.models import User
from cloud.accounts.permissions import Authorize, Principal
from cloud.console.formkit import FORM_MISTAKES, NO_MISTAKE, Mistake, client_ip, done, render_form
from cloud.console.i18n import N_, language_of
from cloud.console.templating import page_router
from cloud.kit.web import SessionDep
from cloud.oncall import recipients, service
from cloud.oncall.labels import labels
from cloud.oncall.schemas import CHANNELS, PreferencesIn
from cloud.oncall.walltime import parse_hhmm, zone

router = page_router()

Staff = Annotated[Principal, Depends(Authorize(None))]
Short = Annotated[str, Form(max_length=100)]


def _quiet_now(preferences: service.Preferences, now: datetime) -> datetime | None:
    """The end of my quiet hours if I am in them now."""
    if not preferences.quiet_start or not preferences.quiet_end:
        return None
    quiet = recipients.QuietHours(
        parse_hhmm(preferences.quiet_start), parse_hhmm(preferences.quiet_end), preferences.timezone
    )
    who = recipients.Recipient(preferences.user_id, "", "", "", "zh", tuple(preferences.channels), quiet)
    return recipients.quiet_until(who, now)


async def _view(
    request: Request, session: AsyncSession, principal: Principal, mistake: Mistake = NO_MISTAKE
) -> Response:
    context: dict[str, Any] = {"preferences": None, "user": None, "channels": CHANNELS, "quiet_until": None}
    context["labels"] = labels(language_of(request, principal))
    if principal.kind == "user" and principal.id is not None:
        preferences = await service.get_preferences(session, principal)
        context["preferences"] = preferences
        context["user"] = await session.get(User, principal.id)
        context["quiet_until"] = _quiet_now(preferences, datetime.now(UTC))
        context["tz"] = zone(preferences.timezone)
        if not mistake.form:
            shown: dict[str, Any] = {
                "channels": preferences.channels,
                "quiet_start": preferences.quiet_start or "",
                "quiet_end": preferences.quiet_end or "",
                "timezone": preferences.timezone,
            }
            mistake = Mistake(mistake.error, shown, mistake.form_name, mistake.status_code)
    return render_form(request, principal, "oncall/notifications.html", context, mistake)


@router.get("/account/notifications")
async def notifications_page(request: Request, session: SessionDep, principal: Staff) -> Response:
    return await _view(request, session, principal)


@router.post("/account/notifications")
async def save_notifications(
    request: Request,
    session: SessionDep,
    principal: Staff,
    channels: Annotated[list[str], Form(max_length=len(CHANNELS))] = [],  # noqa: B006 (FastAPI copies it)
    quiet_start: Short = "",
    quiet_end: Short = "",
    timezone: Short = "",
) -> Response:
    form: dict[str, Any] = {
        "channels": channels,
        "quiet_start": quiet_start,
        "quiet_end": quiet_end,
        "timezone": timezone,
    }
    try:
        draft = PreferencesIn.model_validate(
            {
                "channels": channels,
                "quiet_start": quiet_start.strip() or None,
                "quiet_end": quiet_end.strip() or None,
                "timezone": timezone.strip() or "Asia/Shanghai",
            }
        )
        await service.set_preferences(session, principal, draft, ip=client_ip(request))
        await session.commit()
    except FORM_MISTAKES as e:
        await session.rollback()
        return await _view(request, session, principal, Mistake.of(e, form))
    return done(request, principal, "/account/notifications", N_("Notification settings saved."))
