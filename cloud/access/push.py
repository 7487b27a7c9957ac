"""Bringing a site's gateways up to its access version with ``access.sync`` commands.

When:
- after a change bumps the site's version: to its online gateways (an offline one catches up at
  its birth), each from the version it will be at once the syncs already on their way are taken;
- at a gateway's birth: what its reported ``access_version`` lacks, or the empty "you are current"
  delta when it lacks nothing (the gateway counts its store as fresh from that contact);
- when a connected gateway re-announces its state (after applying a delta, say) and still lacks
  something that no sync on its way will bring;
- when a gateway answers ``version_mismatch``: a delta from the version it says it has
  (``data.version``), which is a reset when it has nothing or a version the cloud never made.

A gateway takes a delta it is already past as "current", so a delta sent twice (two ingest workers
see the same birth) does no harm. Each part of a delta is its own command (own id), sent in order,
expiring after ``PUSH_EXPIRES_S``. A part that does not fit one MQTT message makes the parts
smaller; a delta that cannot be made to fit (a first part of many thousand removals) is sent as a
reset instead. What the gateway answers is recorded like any command's answer, and
``note_sync_result`` keeps the gateway's access version from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.access import repository as repo
from cloud.access.service import build_delta
from cloud.commands.repository import unanswered
from cloud.commands.service import Outgoing, Publisher, Status, TooLarge, delta_summary, send_commands
from cloud.db import SessionFactory
from cloud.models import Gateway, GatewayCommand
from protocols.access import CREDENTIALS_PER_PART, AccessDelta, split_delta
from protocols.envelope import CommandResult

log = logging.getLogger(__name__)

SYNC = "access.sync"
PUSH_EXPIRES_S = 600
CLOUD_USER = "cloud"  # who asks for the pushes nobody asked for (births, resets)
VERSION_MISMATCH = "version_mismatch"
_MIN_PER_PART = 100

Hold = Callable[[], AbstractAsyncContextManager[None]]


def sync_commands(delta: AccessDelta, per_part: int = CREDENTIALS_PER_PART) -> list[Outgoing]:
    return [
        # Defaults left out: the gateway reads a missing field as its default, and a credential's
        # dozen false flags are most of its bytes.
        Outgoing(SYNC, part.model_dump(mode="json", exclude_defaults=True), delta_summary(part))
        for part in split_delta(delta, per_part)
    ]


async def send_delta(
    sessions: SessionFactory,
    publisher: Publisher,
    gateway_id: str,
    site: str,
    delta: AccessDelta,
    *,
    by: str = CLOUD_USER,
    hold: Hold | None = None,
) -> list[GatewayCommand]:
    """Send ``delta`` to the gateway as access.sync commands, one per part."""
    per_part = CREDENTIALS_PER_PART
    while True:
        try:
            commands = await send_commands(
                sessions,
                publisher,
                gateway_id,
                sync_commands(delta, per_part),
                by=by,
                expires_in_s=PUSH_EXPIRES_S,
                hold=hold,
            )
        except TooLarge:
            if per_part > _MIN_PER_PART:
                per_part //= 2
                continue
            if delta.reset:
                raise
            log.info("access: the delta for %s does not fit MQTT messages; sending a reset", gateway_id)
            async with sessions() as session:
                reset = await build_delta(session, site, 0)
            if reset is None:
                return []
            delta, per_part = reset, CREDENTIALS_PER_PART
            continue
        log.info(
            "access: %s sent %s %d -> %d in %d part(s)",
            gateway_id,
            "reset" if delta.reset else "delta",
            delta.base,
            delta.version,
            len(commands),
        )
        return commands


def _expected_version(reported: int, in_flight: list[GatewayCommand]) -> int:
    """The version the gateway will be at once the syncs already on their way are taken."""
    versions = [c.args.get("version") for c in in_flight]
    return max([reported, *(v for v in versions if isinstance(v, int))])


async def push_site(sessions: SessionFactory, publisher: Publisher, site: str, *, by: str) -> list[str]:
    """After a change of the site's access data: send each online gateway of the site what it
    lacks, counting the syncs already on their way to it. Returns the gateways sent something.
    An offline gateway is brought up to date at its next birth."""
    now = datetime.now(UTC)
    async with sessions() as session:
        expected: dict[str, int] = {}
        for gateway_id, reported in await repo.site_gateways(session, site, online_only=True):
            expected[gateway_id] = _expected_version(
                reported, await unanswered(session, gateway_id, SYNC, now)
            )
        current = await repo.site_version(session, site)
        deltas: dict[int, AccessDelta | None] = {}
        for base in sorted(set(expected.values())):
            if base != current:
                deltas[base] = await build_delta(session, site, base)
    pushed = []
    for gateway_id, base in expected.items():
        delta = deltas.get(base)
        if delta is None:
            continue  # current, or about to be
        try:
            await send_delta(sessions, publisher, gateway_id, site, delta, by=by)
        except Exception:
            # One gateway's failure is not the others': it catches up at its next birth.
            log.exception("access: cannot send %s its delta from %d", gateway_id, base)
            continue
        pushed.append(gateway_id)
    return pushed


async def push_on_birth(
    sessions: SessionFactory,
    publisher: Publisher,
    gateway_id: str,
    reported: int,
    *,
    hold: Hold | None = None,
) -> list[GatewayCommand]:
    """A gateway came online with its store at ``reported``: send what it lacks, or "current"."""
    async with sessions() as session:
        gateway = await session.get(Gateway, gateway_id)
        if gateway is None:
            return []
        site = gateway.site
        delta = await build_delta(session, site, reported)
    if delta is None:
        if reported:
            log.warning(
                "access: %s reports access version %d, but site %r has no access data",
                gateway_id,
                reported,
                site,
            )
        return []
    return await send_delta(sessions, publisher, gateway_id, site, delta, hold=hold)


async def push_if_behind(
    sessions: SessionFactory,
    publisher: Publisher,
    gateway_id: str,
    reported: int,
    *,
    hold: Hold | None = None,
) -> list[GatewayCommand]:
    """A connected gateway re-announced its state at ``reported``: send what it lacks only if no
    sync on its way will bring it to the site's version (otherwise nothing: no ping-pong)."""
    now = datetime.now(UTC)
    async with sessions() as session:
        gateway = await session.get(Gateway, gateway_id)
        if gateway is None:
            return []
        site = gateway.site
        current = await repo.site_version(session, site)
        expected = _expected_version(reported, await unanswered(session, gateway_id, SYNC, now))
        if current == 0 or expected == current:
            return []
        delta = await build_delta(session, site, expected)
    if delta is None:
        return []
    return await send_delta(sessions, publisher, gateway_id, site, delta, hold=hold)


async def push_after_mismatch(
    sessions: SessionFactory, publisher: Publisher, gateway_id: str, have: int, *, hold: Hold | None = None
) -> list[GatewayCommand]:
    """The gateway refused a delta for its base and says its store is at ``have`` (0: nothing or
    unknown): send a delta from there (a reset if the cloud cannot go from there), unless one to
    the current version from the same place is already on its way (each part of a refused delta
    answers version_mismatch: one delta answers them all)."""
    now = datetime.now(UTC)
    async with sessions() as session:
        gateway = await session.get(Gateway, gateway_id)
        if gateway is None:
            return []
        site = gateway.site
        current = await repo.site_version(session, site)
        delta = await build_delta(session, site, have)
        if delta is None:
            return []
        for c in await unanswered(session, gateway_id, SYNC, now):
            if c.args.get("version") == current and (
                c.args.get("reset") if delta.reset else c.args.get("base") == have
            ):
                return []
    return await send_delta(sessions, publisher, gateway_id, site, delta, hold=hold)


async def note_sync_result(
    session: AsyncSession, command: GatewayCommand, result: CommandResult
) -> int | None:
    """Keep what an access.sync answer says of the gateway's store (``data.version``, else the
    delta's version once done), in the caller's transaction. When the gateway refused the delta
    for its base, returns the version it says it has (0 if it does not say): it needs a delta
    from there. None otherwise."""
    if command.name != SYNC:
        return None
    version = result.data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        version = command.args.get("version") if command.status == Status.DONE else None
    if isinstance(version, int):
        await session.execute(
            update(Gateway).where(Gateway.id == command.gateway_id).values(access_version=version)
        )
    if result.code == VERSION_MISMATCH:
        return version if isinstance(version, int) else 0
    return None
