"""``/api/v1/gateways``: the gateways a principal may see, one gateway with its devices, points
and latest values, and its credentials (issued at registration, rotated, revoked)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from cloud.accounts.permissions import Authorize, Permission, Principal
from cloud.gateways.schemas import (
    MAX_ID,
    BrokerOut,
    CredentialsIn,
    CredentialsOut,
    DeviceOut,
    GatewayDetailOut,
    GatewayIn,
    GatewayOut,
    GatewayPageOut,
    LatestValueOut,
    PointOut,
    RevokedOut,
)
from cloud.gateways.service import (
    DEFAULT_PAGE,
    MAX_PAGE,
    Issued,
    gateway_detail,
    list_gateways_page,
    register_gateway,
    revoke_gateway_credentials,
    rotate_gateway_credentials,
)
from cloud.kit.web import SessionDep
from protocols.topics import GATEWAY_ID_PATTERN

router = APIRouter(tags=["gateways"])

Reader = Annotated[Principal, Depends(Authorize(Permission.GATEWAYS_READ))]
Manager = Annotated[Principal, Depends(Authorize(Permission.GATEWAYS_MANAGE))]
GatewayId = Annotated[str, Path(pattern=GATEWAY_ID_PATTERN, description="The gateway's id")]


@router.get("/gateways", summary="List the gateways you may see, with their last state")
async def get_gateways(
    session: SessionDep,
    principal: Reader,
    site_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only the gateways of this site")
    ] = None,
    online: Annotated[bool | None, Query(description="Only those connected (true) or not (false)")] = None,
    cursor: Annotated[
        str | None, Query(max_length=120, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> GatewayPageOut:
    page = await list_gateways_page(
        session, principal, site_id=site_id, online=online, cursor=cursor, limit=limit
    )
    return GatewayPageOut(
        items=[GatewayOut.model_validate(g) for g in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/gateways/{gateway_id}",
    summary="One gateway: its state, devices and points (from its config) and latest values",
)
async def get_gateway(session: SessionDep, principal: Reader, gateway_id: GatewayId) -> GatewayDetailOut:
    detail = await gateway_detail(session, principal, gateway_id)
    return GatewayDetailOut.model_validate(
        {
            **GatewayOut.model_validate(detail.gateway).model_dump(),
            "devices": [DeviceOut.model_validate(d) for d in detail.devices],
            "points": [PointOut.model_validate(p) for p in detail.points],
            "latest_values": [LatestValueOut.model_validate(v) for v in detail.latest_values],
        }
    )


@router.post(
    "/gateways",
    status_code=201,
    summary="Register a gateway at a site and issue its credentials",
    description="Answers the gateway's password (shown this once) inside a ready gateway config, and "
    "what the broker made of it (`broker.applied` false: the registry has the gateway, the detail "
    "says what is left to do at the broker). 404 a site that is not yours; 403 no gateways.manage "
    "at that site; 409 the id is taken; 422 a bad id or name.",
)
async def post_gateway(body: GatewayIn, request: Request, principal: Manager) -> JSONResponse:
    state = request.app.state
    issued = await register_gateway(
        state.sessions,
        state.config,
        principal,
        body.id,
        site=body.site_id,
        name=body.name,
        mqtt_url=body.mqtt_url,
        ip=_ip(request),
    )
    return JSONResponse(_credentials(issued).model_dump(mode="json"), 201)


@router.post(
    "/gateways/{gateway_id}/credentials",
    summary="Rotate a gateway's credentials: a new password, the old one stops working",
    description="The gateway's live connection with the old password is closed where the broker "
    "allows it (the embedded broker, Mosquitto's reload or its dynamic-security plugin). A revoked "
    "gateway is reinstated with the new password.",
)
async def post_credentials(
    gateway_id: GatewayId, request: Request, principal: Manager, body: CredentialsIn | None = None
) -> CredentialsOut:
    state = request.app.state
    issued = await rotate_gateway_credentials(
        state.sessions,
        state.config,
        principal,
        gateway_id,
        mqtt_url=body.mqtt_url if body is not None else None,
        ip=_ip(request),
    )
    return _credentials(issued)


@router.delete(
    "/gateways/{gateway_id}/credentials",
    summary="Revoke a gateway's credentials: it can no longer sign in; its history stays",
)
async def delete_credentials(gateway_id: GatewayId, request: Request, principal: Manager) -> RevokedOut:
    state = request.app.state
    revoked = await revoke_gateway_credentials(
        state.sessions, state.config, principal, gateway_id, ip=_ip(request)
    )
    return RevokedOut(
        gateway=GatewayOut.model_validate(revoked.gateway),
        broker=BrokerOut(applied=revoked.broker.applied, detail=revoked.broker.detail),
    )


def _credentials(issued: Issued) -> CredentialsOut:
    return CredentialsOut(
        gateway=GatewayOut.model_validate(issued.gateway),
        password=issued.password,
        config_toml=issued.config_toml,
        broker=BrokerOut(applied=issued.broker.applied, detail=issued.broker.detail),
    )


def _ip(request: Request) -> str:
    return request.client.host if request.client else ""
