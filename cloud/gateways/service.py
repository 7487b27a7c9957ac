"""Gateway operations for the API and the CLI: permission checks, the registry change and its
audit entry in one transaction, then the broker (cloud.broker.provision).

Tenancy: a gateway belongs to the company of its site; one of another company is answered 404
(``principal.company_clause``), one of the principal's company at a site the permission does not
cover 403. A gateway without a company (registered by the platform without a site of the property
model) is the platform's alone.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.permissions import Forbidden, Permission, Principal
from cloud.audit.chain import record
from cloud.broker.provision import BrokerSync, Change, apply_change
from cloud.config import CloudConfig, broker_address
from cloud.db import SessionFactory
from cloud.gateways.config_file import gateway_config
from cloud.kit.errors import InvalidInput, NotFound
from cloud.kit.pagination import InvalidCursor
from cloud.models import Gateway, GatewayDevice, GatewayPoint, LatestValue
from cloud.property.models import Site
from cloud.registry import add_gateway, find_site, revoke_credentials, rotate_credentials
from protocols.topics import valid_gateway_id

MAX_PAGE = 1000
DEFAULT_PAGE = 100
_CURSOR_PREFIX = b"gw:"


@dataclass(frozen=True, slots=True)
class Issued:
    """New credentials: the gateway, its password (shown once), its config file, the broker's word."""

    gateway: Gateway
    password: str
    config_toml: str
    broker: BrokerSync


@dataclass(frozen=True, slots=True)
class Revoked:
    gateway: Gateway
    broker: BrokerSync


@dataclass(frozen=True, slots=True)
class GatewayPage:
    items: list[Gateway]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class GatewayDetail:
    gateway: Gateway
    devices: list[GatewayDevice]
    points: list[GatewayPoint]
    latest_values: list[LatestValue]


# -- reading


async def list_gateways_page(
    session: AsyncSession,
    principal: Principal,
    *,
    site_id: int | None = None,
    online: bool | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> GatewayPage:
    """The gateways the principal may read (GATEWAYS_READ), by id, ``limit`` at a time."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: must be between 1 and {MAX_PAGE}, not {limit}")
    stmt = select(Gateway).where(
        principal.company_clause(Gateway.company_id),
        principal.site_clause(Permission.GATEWAYS_READ, Gateway.site_id),
    )
    if site_id is not None:
        stmt = stmt.where(Gateway.site_id == site_id)
    if online is not None:
        stmt = stmt.where(Gateway.online.is_(online))
    if cursor:
        stmt = stmt.where(Gateway.id > decode_gateway_cursor(cursor))
    rows = list((await session.scalars(stmt.order_by(Gateway.id).limit(limit + 1))).all())
    if len(rows) > limit:
        return GatewayPage(rows[:limit], encode_gateway_cursor(rows[limit - 1].id))
    return GatewayPage(rows, None)


async def visible_gateway(
    session: AsyncSession,
    principal: Principal,
    gateway_id: str,
    permission: Permission,
    *,
    for_update: bool = False,
) -> Gateway:
    """The gateway, if it is of the principal's company (else NotFound) and the principal holds
    ``permission`` at its site (else Forbidden). ``for_update``: locked until the transaction
    ends, so that two changes of its credentials take turns."""
    stmt = select(Gateway).where(Gateway.id == gateway_id, principal.company_clause(Gateway.company_id))
    gateway = await session.scalar(stmt.with_for_update() if for_update else stmt)
    if gateway is None:
        raise NotFound(f"gateway {gateway_id!r}: no such gateway")
    if gateway.site_id is None and principal.sites(permission) is not None:
        # A gateway of the company but of no site: for those whose permission is company-wide.
        raise Forbidden(f"{principal.name}: not allowed to {permission.value} for gateway {gateway_id!r}")
    principal.require(permission, gateway.site_id)
    return gateway


async def gateway_detail(session: AsyncSession, principal: Principal, gateway_id: str) -> GatewayDetail:
    gateway = await visible_gateway(session, principal, gateway_id, Permission.GATEWAYS_READ)
    devices = await session.scalars(
        select(GatewayDevice).where(GatewayDevice.gateway_id == gateway_id).order_by(GatewayDevice.device)
    )
    points = await session.scalars(
        select(GatewayPoint).where(GatewayPoint.gateway_id == gateway_id).order_by(GatewayPoint.source)
    )
    latest = await session.scalars(
        select(LatestValue)
        .where(LatestValue.gateway_id == gateway_id)
        .order_by(LatestValue.source, LatestValue.kind)
    )
    return GatewayDetail(gateway, list(devices.all()), list(points.all()), list(latest.all()))


# -- credentials


async def register_gateway(
    sessions: SessionFactory,
    config: CloudConfig,
    principal: Principal,
    gateway_id: str,
    *,
    site: Site | int | str | None = None,
    name: str = "",
    mqtt_url: str | None = None,
    ip: str = "",
) -> Issued:
    """Register a gateway at ``site`` (a site id, or for the CLI a Site or a code) with new
    credentials. A principal other than the platform must name a site of its company and hold
    GATEWAYS_MANAGE there."""
    async with sessions() as session, session.begin():
        found = await find_site(session, site) if site is not None else None
        if found is not None:
            principal.require_company(found.company_id)
            principal.require(Permission.GATEWAYS_MANAGE, found.id)
        elif not principal.is_platform:
            if isinstance(site, int) or site:
                raise NotFound(f"site {site!r}: no such site")
            raise InvalidInput("site_id: required (the site the gateway serves)")
        reserved = frozenset({config.mqtt.username})
        where: Site | str = found if found is not None else (site if isinstance(site, str) else "")
        password = await add_gateway(session, gateway_id, where, name=name, reserved=reserved)
        gateway = await session.get(Gateway, gateway_id)
        assert gateway is not None
        await record(
            session,
            principal,
            "gateway.create",
            "gateway",
            gateway_id,
            company_id=gateway.company_id,
            site_id=gateway.site_id,
            after={"name": gateway.name, "site": gateway.site, "site_id": gateway.site_id},
            ip=ip,
        )
    broker = await apply_change(config, sessions, gateway_id, Change.ADDED, password)
    return Issued(gateway, password, _config_toml(config, gateway, password, mqtt_url, "registered"), broker)


async def rotate_gateway_credentials(
    sessions: SessionFactory,
    config: CloudConfig,
    principal: Principal,
    gateway_id: str,
    *,
    mqtt_url: str | None = None,
    ip: str = "",
) -> Issued:
    """A new password for the gateway (GATEWAYS_MANAGE at its site); the old one stops working
    and, where the broker allows (see cloud.broker.provision), its live connection is closed. A
    revoked gateway is reinstated."""
    async with sessions() as session, session.begin():
        gateway = await visible_gateway(
            session, principal, gateway_id, Permission.GATEWAYS_MANAGE, for_update=True
        )
        before = _credentials_state(gateway)
        password = await rotate_credentials(session, gateway)
        await record(
            session,
            principal,
            "gateway.credentials.rotate",
            "gateway",
            gateway_id,
            company_id=gateway.company_id,
            site_id=gateway.site_id,
            before=before,
            after=_credentials_state(gateway),
            ip=ip,
        )
    broker = await apply_change(config, sessions, gateway_id, Change.ROTATED, password)
    toml = _config_toml(config, gateway, password, mqtt_url, "credentials rotated")
    return Issued(gateway, password, toml, broker)


async def revoke_gateway_credentials(
    sessions: SessionFactory, config: CloudConfig, principal: Principal, gateway_id: str, *, ip: str = ""
) -> Revoked:
    """The gateway can no longer sign in (GATEWAYS_MANAGE at its site); its row, events and
    commands stay. Revoking again tells the broker again (say it was down the first time)."""
    async with sessions() as session, session.begin():
        gateway = await visible_gateway(
            session, principal, gateway_id, Permission.GATEWAYS_MANAGE, for_update=True
        )
        before = _credentials_state(gateway)
        if await revoke_credentials(session, gateway):
            await record(
                session,
                principal,
                "gateway.credentials.revoke",
                "gateway",
                gateway_id,
                company_id=gateway.company_id,
                site_id=gateway.site_id,
                before=before,
                after=_credentials_state(gateway),
                ip=ip,
            )
    broker = await apply_change(config, sessions, gateway_id, Change.REVOKED)
    return Revoked(gateway, broker)


def _credentials_state(gateway: Gateway) -> dict[str, Any]:
    # What the audit log keeps of a credentials change: when, never the password or its hash.
    state: dict[str, datetime | None] = {
        "revoked_at": gateway.revoked_at,
        "credentials_rotated_at": gateway.credentials_rotated_at,
    }
    return state


def _config_toml(
    config: CloudConfig, gateway: Gateway, password: str, mqtt_url: str | None, issued: str
) -> str:
    url = mqtt_url or broker_address(config).url
    return gateway_config(gateway.id, gateway.site, url, password, issued=issued)


# -- paging by gateway id


def encode_gateway_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(_CURSOR_PREFIX + last_id.encode()).decode().rstrip("=")


def decode_gateway_cursor(cursor: str) -> str:
    """The gateway id a cursor stands for; InvalidCursor (422) for anything this API did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        last_id = raw[len(_CURSOR_PREFIX) :].decode()
    except (binascii.Error, ValueError):
        raw, last_id = b"", ""
    if not raw.startswith(_CURSOR_PREFIX) or not valid_gateway_id(last_id):
        raise InvalidCursor("cursor: not a cursor this API issued (pass next_cursor back unchanged)")
    return last_id
