"""``/api/v1/gateways/{gateway_id}/commands``: send a command, wait for its answer, list them.

Who may: reading a gateway's commands needs ``gateways.read``; sending one needs ``doors.control``
for a door command and ``gateways.command`` for any other, at the gateway's site
(``cloud.commands.service.visible_gateway``). The route itself asks for either of the two
(``AuthorizeAny``): which one applies depends on the body.
"""

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from cloud.accounts.permissions import Authorize, AuthorizeAny, Permission, Principal
from cloud.commands.schemas import CommandIn, CommandOut, CommandPageOut
from cloud.commands.service import (
    DEFAULT_PAGE,
    MAX_BY_LENGTH,
    MAX_PAGE,
    Status,
    get_command,
    issue_command,
    list_commands,
    visible_gateway,
    wait_for_answer,
)
from cloud.kit.web import SessionDep
from protocols.topics import GATEWAY_ID_PATTERN

router = APIRouter(tags=["commands"])

GatewayId = Annotated[str, Path(pattern=GATEWAY_ID_PATTERN, description="The gateway's id")]


Commander = Annotated[Principal, Depends(AuthorizeAny(Permission.DOORS_CONTROL, Permission.GATEWAYS_COMMAND))]
Reader = Annotated[Principal, Depends(Authorize(Permission.GATEWAYS_READ))]


def _asker(request: Request, principal: Principal) -> Principal:
    """The principal as a command names it: the platform token under its configured owner
    (``api.token_owner``), everyone else under their own name."""
    if principal.is_platform:
        return dataclasses.replace(principal, name=request.app.state.token_owner)
    return principal


@router.post(
    "/gateways/{gateway_id}/commands",
    summary="Send a command to a gateway and wait for its answer",
    description="Checks who asks (door commands: doors.control at the gateway's site; others: "
    "gateways.command), then the command's arguments, records it with who asked and in the audit "
    "log, sends it on the gateway's `cmd` topic with an expiry, then waits up to `wait_s` seconds "
    "for the gateway's answer. 200 with the answer; 202 with status `sent` if none came in time "
    "(poll `GET .../commands/{id}`). 404 unknown gateway (or not yours); 403 not allowed at its "
    "site; 422 unknown command or bad arguments (the detail names the field); 503 no connection to "
    "the broker (nothing was sent).",
    responses={202: {"model": CommandOut, "description": "Sent; no answer yet"}},
)
async def post_command(
    gateway_id: GatewayId, body: CommandIn, request: Request, principal: Commander
) -> JSONResponse:
    state = request.app.state
    asker = _asker(request, principal)
    command = await issue_command(
        state.sessions,
        state.publisher,
        gateway_id,
        body.name,
        body.args,
        by=asker.name[:MAX_BY_LENGTH] or asker.actor,
        expires_in_s=body.expires_in_s,
        principal=asker,
        ip=request.client.host if request.client else "",
    )
    if body.wait_s > 0:
        command = await wait_for_answer(state.sessions, gateway_id, command.id, body.wait_s)
    out = CommandOut.of(command)
    return JSONResponse(out.model_dump(mode="json"), 202 if command.status == Status.SENT else 200)


@router.get("/gateways/{gateway_id}/commands", summary="List a gateway's commands, newest first")
async def get_commands(
    session: SessionDep,
    principal: Reader,
    gateway_id: GatewayId,
    cursor: Annotated[
        str | None, Query(max_length=64, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> CommandPageOut:
    await visible_gateway(session, principal, gateway_id, Permission.GATEWAYS_READ)
    page = await list_commands(session, gateway_id, cursor=cursor, limit=limit)
    return CommandPageOut(items=[CommandOut.of(c) for c in page.items], next_cursor=page.next_cursor)


@router.get("/gateways/{gateway_id}/commands/{command_id}", summary="One command and its answer")
async def get_one_command(
    session: SessionDep,
    principal: Reader,
    gateway_id: GatewayId,
    command_id: Annotated[str, Path(max_length=64)],
) -> CommandOut:
    await visible_gateway(session, principal, gateway_id, Permission.GATEWAYS_READ)
    return CommandOut.of(await get_command(session, gateway_id, command_id))
