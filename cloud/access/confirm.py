"""Telling connected gateways, round after round, that their access data is current.

A gateway counts its credential store as fresh from the last time the cloud confirmed it: the
empty ``access.sync`` whose ``base == version ==`` the store's version ("you are current",
edge/access.py ``apply``), or a delta it applied. After its ``stale_after_s`` without one it honours
only ``offline_ok`` credentials. Births and changes confirm it, but a gateway that stays connected
through a day without any change would go stale with the cloud right there. So every
``access.confirm_every_s``, for every online gateway of a site that has access data:

- at the site's version: the empty delta at that version, unless the gateway was sent a sync to
  that version (not refused, failed or expired) less than ``RECENT_FRACTION`` of a period ago
  (a birth's "current", a delta, another replica's round);
- behind (or ahead of) the site: what it lacks, unless the syncs on their way bring it
  (``push_if_behind``);
- nothing to a gateway of a site without access data.

The commands go through ``send_delta`` as the pushes do: recorded in ``gateway_commands`` with
``by`` "cloud", expiring after ``PUSH_EXPIRES_S``.

Ingest runs the rounds as a task of their own, beside (never in) the events path. With several
ingest replicas, on PostgreSQL a round holds a transaction-level advisory lock (``LOCK_KEY``) and a
replica that cannot take it skips the round; the "recently confirmed" rule keeps replicas whose
rounds do not overlap from doubling the confirmations. SQLite is one process: no lock. A round
that fails (the database or the broker away) is logged once for the whole outage; the next round
tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.access.push import CLOUD_USER, SYNC, Hold, push_if_behind, send_delta
from cloud.commands.service import BrokerUnavailable, Publisher, Status
from cloud.db import SessionFactory, is_transient
from cloud.models import AccessVersion, Gateway, GatewayCommand
from protocols.access import AccessDelta

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock's key for the rounds ("ghconf" in ASCII): one replica at a time.
LOCK_KEY = 0x6768636F6E66
# A gateway sent a sync to the site's version less than this part of a period ago is not confirmed
# again in this round: a round never runs less than a period after the last one of its replica.
RECENT_FRACTION = 0.9
# The sync statuses that count as a confirmation on its way or done.
_CONFIRMING = (Status.SENT.value, Status.PENDING.value, Status.DONE.value)


@dataclass(slots=True)
class ConfirmRound:
    """What one round did. ``ran`` is False when another replica held the round's lock."""

    ran: bool = True
    confirmed: list[str] = field(default_factory=list)  # sent "you are current"
    caught_up: list[str] = field(default_factory=list)  # sent what they lacked
    failed: list[str] = field(default_factory=list)  # could not be sent (logged)
    pruned: int = 0  # the cloud's own access.sync rows older than a week, deleted


@dataclass(frozen=True, slots=True)
class _Online:
    gateway_id: str
    site: str
    reported: int
    current: int


class AccessConfirmer:
    """The rounds: ``await run(stopping)`` until ``stopping`` is set; ``run_round()`` is one of them.

    ``every_s`` is the period (``access.confirm_every_s``; anything above 0 for tests); ``hold``
    wraps each write (ingest's write gate)."""

    def __init__(
        self,
        sessions: SessionFactory,
        publisher: Publisher,
        *,
        every_s: float,
        hold: Hold | None = None,
    ) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s: must be above 0, not {every_s}")
        self._sessions = sessions
        self._publisher = publisher
        self._hold = hold
        self.every_s = every_s

    async def run(self, stopping: asyncio.Event) -> None:
        """A round every ``every_s`` (the first one period after the start) until ``stopping``.
        Never ends on a failed round: it is logged (once until a round works again) and the next
        round tries again."""
        failing = False
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), self.every_s)
                return
            except TimeoutError:
                pass
            try:
                await self.run_round(stopping)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not failing:
                    failing = True
                    expected = isinstance(e, BrokerUnavailable) or is_transient(e)
                    log.error(
                        "access: a confirmation round failed (%s); trying again every %g s",
                        _one_line(e),
                        self.every_s,
                        exc_info=not expected,
                    )
                else:
                    log.debug("access: a confirmation round failed again: %s", _one_line(e))
                continue
            if failing:
                failing = False
                log.info("access: confirmation rounds work again")

    async def run_round(self, stopping: asyncio.Event | None = None) -> ConfirmRound:
        """One round over the online gateways (see the module's text). Raises BrokerUnavailable
        when not connected to the broker, and a database outage's error; a gateway that fails
        otherwise is logged and the others still get theirs."""
        if not self._publisher.connected:
            raise BrokerUnavailable("not connected to the MQTT broker")
        async with self._round_lock() as locked:
            if not locked:
                log.debug("access: another ingest worker is running the confirmation round")
                return ConfirmRound(ran=False)
            return await self._round(stopping)

    @contextlib.asynccontextmanager
    async def _round_lock(self) -> AsyncIterator[bool]:
        """True if this worker may run the round: always on SQLite (one process); on PostgreSQL
        if it took the advisory lock, held until the round ends (its transaction ends with it)."""
        async with self._sessions() as session:
            if session.get_bind().dialect.name != "postgresql":
                yield True
                return
            async with session.begin():
                yield bool(await session.scalar(select(func.pg_try_advisory_xact_lock(LOCK_KEY))))

    async def _prune(self, now: datetime) -> int:
        async with self._sessions() as session, session.begin():
            return await _prune_syncs(session, now - KEEP_SYNCS)

    async def _round(self, stopping: asyncio.Event | None) -> ConfirmRound:
        done = ConfirmRound()
        now = datetime.now(UTC)
        recent = now - timedelta(seconds=self.every_s * RECENT_FRACTION)
        async with self._sessions() as session:
            online = await _online_gateways(session)
        first_error: Exception | None = None
        for gw in online:
            if stopping is not None and stopping.is_set():
                break
            try:
                if gw.reported == gw.current:
                    async with self._sessions() as session:
                        if await _confirmed_since(session, gw.gateway_id, gw.current, recent):
                            continue
                    delta = AccessDelta(base=gw.current, version=gw.current)
                    await send_delta(
                        self._sessions,
                        self._publisher,
                        gw.gateway_id,
                        gw.site,
                        delta,
                        by=CLOUD_USER,
                        hold=self._hold,
                    )
                    done.confirmed.append(gw.gateway_id)
                elif await push_if_behind(
                    self._sessions, self._publisher, gw.gateway_id, gw.reported, hold=self._hold
                ):
                    done.caught_up.append(gw.gateway_id)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if is_transient(e):
                    raise  # the database is away: so is every other gateway's round
                done.failed.append(gw.gateway_id)
                first_error = first_error or e
        if first_error is not None:
            log.warning(
                "access: could not confirm %d gateway(s) (%s); they are tried again next round",
                len(done.failed),
                ", ".join(done.failed[:10]) + (", ..." if len(done.failed) > 10 else ""),
                exc_info=first_error,
            )
        done.pruned = await self._prune(now)
        if done.confirmed or done.caught_up:
            log.info(
                "access: confirmed %d gateway(s) current, sent %d what they lacked",
                len(done.confirmed),
                len(done.caught_up),
            )
        return done


KEEP_SYNCS = timedelta(days=7)


async def _prune_syncs(session: AsyncSession, before: datetime) -> int:
    """The cloud's own access.sync rows older than ``before``: each gateway gets one an hour, and
    they are plumbing, not history (the access tables and the gateways' events hold that). A
    command a person sent is never pruned here."""
    result = await session.execute(
        delete(GatewayCommand).where(
            GatewayCommand.requested_by == CLOUD_USER,
            GatewayCommand.name == SYNC,
            GatewayCommand.requested_at < before,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def _online_gateways(session: AsyncSession) -> list[_Online]:
    """The online gateways of sites with access data, with their reported and the site's version."""
    rows = await session.execute(
        select(Gateway.id, Gateway.site, Gateway.access_version, AccessVersion.version)
        .join(AccessVersion, AccessVersion.site == Gateway.site)
        .where(Gateway.online.is_(True), AccessVersion.version > 0)
        .order_by(Gateway.id)
    )
    return [_Online(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


async def _confirmed_since(session: AsyncSession, gateway_id: str, version: int, since: datetime) -> bool:
    """Whether the gateway's last access.sync, sent after ``since``, goes to ``version`` and was not
    refused, failed or expired unanswered."""
    last = await session.scalar(
        select(GatewayCommand)
        .where(GatewayCommand.gateway_id == gateway_id, GatewayCommand.name == SYNC)
        .order_by(GatewayCommand.seq.desc())
        .limit(1)
    )
    if last is None or last.requested_at < since or last.args.get("version") != version:
        return False
    if last.status == Status.SENT and last.expires_at <= datetime.now(UTC):
        return False
    return last.status in _CONFIRMING


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
