"""The console's webhooks (``/oncall/webhooks``): the company's receivers of alert notices, adding
one (its signing secret shown on the answer this once, never again) and removing one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Form, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts.permissions import Authorize, Forbidden, Permission, Principal
from cloud.console import visibility
from cloud.console.formkit import FORM_MISTAKES, NO_MISTAKE, Mistake, client_ip, done, render_form
from cloud.console.i18n import N_, language_of
from cloud.console.templating import page_router
from cloud.kit.web import SessionDep
from cloud.oncall import service
from cloud.oncall.labels import labels
from cloud.oncall.schemas import MAX_URL, TRACKS, WebhookIn

P = Permission
router = page_router()
# A company-wide one asked for by someone who manages only some sites: said on the form.
CREATE_MISTAKES = (*FORM_MISTAKES, Forbidden)

Read = Annotated[Principal, Depends(Authorize(P.ALARMS_ACKNOWLEDGE))]
Manage = Annotated[Principal, Depends(Authorize(P.ALERTS_MANAGE))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


async def _webhooks_view(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    cursor: str | None = None,
    mistake: Mistake = NO_MISTAKE,
    created: service.NewWebhook | None = None,
) -> Response:
    result = await service.list_webhooks(session, principal, cursor=cursor)
    readable = await visibility.visible_sites(session, principal, P.ALARMS_ACKNOWLEDGE)
    manageable = await visibility.visible_sites(session, principal, P.ALERTS_MANAGE)
    context: Mapping[str, Any] = {
        "webhooks": result.items,
        "next_cursor": result.next_cursor,
        "created": created,
        "site_names": {s.id: s.name for s in readable},
        "site_options": [(s.id, s.name) for s in manageable],
        "tracks": TRACKS,
        "can_manage": principal.can(P.ALERTS_MANAGE),
        "every_site": principal.can(P.ALERTS_MANAGE) and principal.sites(P.ALERTS_MANAGE) is None,
        "labels": labels(language_of(request, principal)),
    }
    return render_form(request, principal, "oncall/webhooks.html", context, mistake)


@router.get("/oncall/webhooks")
async def webhooks_page(
    request: Request,
    session: SessionDep,
    principal: Read,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    return await _webhooks_view(request, session, principal, cursor)


@router.post("/oncall/webhooks")
async def create_webhook(
    request: Request,
    session: SessionDep,
    principal: Manage,
    name: Annotated[str, Form(max_length=200)] = "",
    url: Annotated[str, Form(max_length=MAX_URL)] = "",
    site_id: Annotated[str, Form(max_length=30)] = "",
    tracks: Annotated[list[str], Form(max_length=len(TRACKS))] = [],  # noqa: B006 (FastAPI copies it)
) -> Response:
    """Add a webhook and show its secret on the answer itself (never shown again)."""
    form: dict[str, Any] = {"name": name, "url": url, "site_id": site_id, "tracks": tracks}
    try:
        draft = WebhookIn.model_validate(
            {"name": name, "url": url, "site_id": site_id.strip() or None, "tracks": tracks}
        )
        made = await service.create_webhook(session, principal, draft, ip=client_ip(request))
        await session.commit()
    except CREATE_MISTAKES as e:
        await session.rollback()
        return await _webhooks_view(request, session, principal, None, Mistake.of(e, form))
    return await _webhooks_view(request, session, principal, None, created=made)


@router.post("/oncall/webhooks/{webhook_id}/delete")
async def delete_webhook(
    request: Request, session: SessionDep, principal: Manage, webhook_id: Id
) -> Response:
    webhook = await service.delete_webhook(session, principal, webhook_id, ip=client_ip(request))
    name = webhook.name
    await session.commit()
    return done(request, principal, "/oncall/webhooks", N_("Webhook %(name)s removed."), name=name)
