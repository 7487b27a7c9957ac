"""The gateway registry: who may connect (id = MQTT username, password hash), which company and
site each serves, and the state each last reported.

Passwords are made here, shown once to whoever registers the gateway (or rotates its
credentials), and kept only as Mosquitto ``$7$`` hashes: the same string serves the embedded
broker's sign-in check and Mosquitto's password file. A revoked gateway keeps its row and its
history, with an empty hash: nothing signs in with it any more.

These functions run in the caller's transaction and neither check permissions nor write the
audit log: ``cloud.gateways.service`` does both, and tells the broker (``cloud.broker.provision``).
"""

import asyncio
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.broker.passwords import hash_password
from cloud.config import CloudConfig, mqtt_password
from cloud.events.repository import reported_time
from cloud.kit.errors import Conflict, InvalidInput, NotFound
from cloud.models import Gateway
from cloud.property.models import Site
from protocols.envelope import GatewayState
from protocols.topics import valid_gateway_id

log = logging.getLogger(__name__)

MAX_SITE_LENGTH = 200
MAX_NAME_LENGTH = 200


class GatewayExists(Conflict):
    code = "gateway_exists"


class InvalidGatewayId(InvalidInput):
    code = "invalid_gateway_id"


def new_password() -> str:
    # 192 bits, URL-safe: fits a TOML string, a password file and a shell without quoting trouble.
    return secrets.token_urlsafe(24)


async def find_site(session: AsyncSession, site: Site | int | str) -> Site | None:
    """The property model's site: a Site as it is, by id (NotFound if there is none), or by code
    (None if there is none)."""
    if isinstance(site, Site):
        return site
    if isinstance(site, int):
        found = await session.get(Site, site)
        if found is None:
            raise NotFound(f"site {site}: no such site")
        return found
    if not site:
        return None
    return await session.scalar(select(Site).where(Site.code == site))


async def add_gateway(
    session: AsyncSession,
    gateway_id: str,
    site: Site | int | str = "",
    *,
    name: str = "",
    reserved: frozenset[str] = frozenset(),
) -> str:
    """Register a gateway; returns its new password (the only time it is seen in clear).

    ``site`` is a Site, a site id, or a site code: the gateway then belongs to that site and its
    company. A code that names no site of the property model is kept as the gateway's site name
    only (as before there were sites; such a gateway, like one with no site, belongs to no
    company and only the platform operator sees it). ``reserved`` are usernames no gateway may
    take (the cloud's own MQTT user: the broker checks that one first, so a gateway of that name
    could never sign in). Raises InvalidGatewayId, GatewayExists, InvalidInput, or NotFound for a
    site id that does not exist. The caller commits."""
    if gateway_id in reserved:
        raise InvalidGatewayId(f"gateway id {gateway_id!r} is reserved for the cloud's own MQTT user")
    if not valid_gateway_id(gateway_id):
        raise InvalidGatewayId(
            f"gateway id {gateway_id!r}: 1-64 characters, letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    if isinstance(site, str) and len(site) > MAX_SITE_LENGTH:
        raise InvalidInput(f"site: at most {MAX_SITE_LENGTH} characters")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"name: at most {MAX_NAME_LENGTH} characters")
    if await session.get(Gateway, gateway_id) is not None:
        raise GatewayExists(f"gateway {gateway_id!r} is already registered")
    found = await find_site(session, site)
    code = found.code if found is not None else str(site)
    password = new_password()
    # PBKDF2 takes a while by design; hashlib releases the GIL, so a thread keeps the loop serving.
    password_hash = await asyncio.to_thread(hash_password, password)
    session.add(
        Gateway(
            id=gateway_id,
            site=code,
            company_id=found.company_id if found is not None else None,
            site_id=found.id if found is not None else None,
            name=name,
            password_hash=password_hash,
            created_at=datetime.now(UTC),
        )
    )
    try:
        await session.flush()
    except IntegrityError:
        # Registered by someone else between our check and our insert.
        raise GatewayExists(f"gateway {gateway_id!r} is already registered") from None
    log.info("gateway %s registered (site %r)", gateway_id, code)
    return password


async def rotate_credentials(session: AsyncSession, gateway: Gateway) -> str:
    """A new password for ``gateway`` (returned, the only time it is seen in clear); the old one
    stops working. A revoked gateway is reinstated with it. The caller commits."""
    password = new_password()
    gateway.password_hash = await asyncio.to_thread(hash_password, password)
    gateway.credentials_rotated_at = datetime.now(UTC)
    gateway.revoked_at = None
    await session.flush()
    log.info("gateway %s: credentials rotated", gateway.id)
    return password


async def revoke_credentials(session: AsyncSession, gateway: Gateway) -> bool:
    """Empty ``gateway``'s hash (nothing signs in with it) and mark it revoked; its row, events
    and commands stay. False if it was revoked already. The caller commits."""
    if gateway.revoked_at is not None and not gateway.password_hash:
        return False
    gateway.password_hash = ""
    gateway.revoked_at = datetime.now(UTC)
    await session.flush()
    log.info("gateway %s: credentials revoked", gateway.id)
    return True


async def get_password_hash(session: AsyncSession, username: str) -> str | None:
    """The stored hash for a gateway's MQTT username; None if no such gateway is registered or
    its credentials are revoked."""
    if not valid_gateway_id(username):
        return None
    return (
        await session.scalar(
            select(Gateway.password_hash).where(Gateway.id == username, Gateway.revoked_at.is_(None))
        )
    ) or None


async def active_credentials(session: AsyncSession) -> dict[str, str]:
    """``{gateway id: hash}`` of every gateway that may sign in (registered, not revoked)."""
    rows = await session.execute(
        select(Gateway.id, Gateway.password_hash)
        .where(Gateway.revoked_at.is_(None), Gateway.password_hash != "")
        .order_by(Gateway.id)
    )
    return {row.id: row.password_hash for row in rows}


async def list_gateways(session: AsyncSession) -> list[Gateway]:
    return list((await session.scalars(select(Gateway).order_by(Gateway.id))).all())


async def registered(session: AsyncSession, gateway_ids: Iterable[str]) -> set[str]:
    """Those of ``gateway_ids`` that are registered."""
    ids = set(gateway_ids)
    if not ids:
        return set()
    return set((await session.scalars(select(Gateway.id).where(Gateway.id.in_(ids)))).all())


async def count_online(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).where(Gateway.online.is_(True))) or 0)


@dataclass(frozen=True, slots=True)
class Seen:
    """What one ingest commit learnt of a gateway: when it last sent, how many events were new."""

    at: datetime
    new_events: int


async def mark_seen(session: AsyncSession, seen: Mapping[str, Seen]) -> None:
    """Update last_seen_at and event_count of each gateway in ``seen`` (in the caller's transaction)."""
    # In id order: two ingest workers updating the same gateways then lock rows in the same order
    # and cannot deadlock.
    for gateway_id in sorted(seen):
        s = seen[gateway_id]
        await session.execute(
            update(Gateway)
            .where(Gateway.id == gateway_id)
            .values(last_seen_at=s.at, event_count=Gateway.event_count + s.new_events)
        )


@dataclass(frozen=True, slots=True)
class StateApplied:
    """What recording a state message found."""

    known: bool  # the gateway is registered
    # Online after offline, or with a new boot id: a new connection. Not the retained birth
    # delivered again to a reconnecting cloud, nor a gateway re-announcing its state while it
    # stays connected (its clock got synchronised, its credential store changed version).
    birth: bool = False


async def apply_state(session: AsyncSession, gateway_id: str, state: GatewayState) -> StateApplied:
    """Record a gateway's birth or death message (in the caller's transaction)."""
    before = (
        await session.execute(
            select(Gateway.online, Gateway.boot_id)
            .where(Gateway.id == gateway_id)
            # Two ingest workers get every state: the second sees what the first recorded.
            .with_for_update()
        )
    ).first()
    if before is None:
        return StateApplied(known=False)
    values: dict[str, object] = {"online": state.online, "clock_synced": state.clock_synced}
    # A death message (the MQTT will) may carry less than the birth did; what it leaves empty is
    # kept from before rather than wiped.
    for column in ("version", "config_version", "boot_id", "store_id"):
        value = getattr(state, column)
        if value:
            values[column] = value
    if state.time_ms:
        values["state_time"] = reported_time(state.time_ms)
    if state.online:
        values["access_version"] = state.access_version
    await session.execute(update(Gateway).where(Gateway.id == gateway_id).values(**values))
    connected_before = bool(before.online) and before.boot_id == state.boot_id
    return StateApplied(known=True, birth=state.online and not connected_before)


@dataclass(frozen=True, slots=True)
class MosquittoSync:
    """What ``write_mosquitto_files`` did."""

    written: bool  # the files named in [mosquitto] were written (False: none is configured)
    reloaded: bool  # Mosquitto was signalled to read them again


async def write_mosquitto_files(session: AsyncSession, config: CloudConfig) -> MosquittoSync:
    """Rewrite the Mosquitto password and ACL files named in ``[mosquitto]`` from the registry (plus
    the cloud's own user) and ask Mosquitto to reload them. At the reload Mosquitto 2.0 checks every
    connected client against the new files and disconnects those that no longer pass: a gateway
    whose password was rotated or revoked is off the broker then, not at its next reconnect."""
    files = config.mosquitto
    if not files.password_file and not files.acl_file:
        return MosquittoSync(written=False, reloaded=False)
    from cloud.broker import mosquitto

    if files.password_file:
        # Revoked gateways are left out.
        entries = await active_credentials(session)
        entries[config.mqtt.username] = await asyncio.to_thread(hash_password, mqtt_password(config))
        await asyncio.to_thread(mosquitto.write_password_file, files.password_file, entries)
        log.info("mosquitto password file %s written (%d users)", files.password_file, len(entries))
    if files.acl_file:
        await asyncio.to_thread(mosquitto.write_acl_file, files.acl_file, config.mqtt.username)
        log.info("mosquitto ACL file %s written", files.acl_file)
    reloaded = False
    if files.pid_file:
        reloaded = mosquitto.signal_reload(files.pid_file)
        if reloaded:
            log.info("mosquitto (pid file %s) asked to reload its files", files.pid_file)
        else:
            log.warning("mosquitto not signalled: no running process in pid file %s", files.pid_file)
    return MosquittoSync(written=True, reloaded=reloaded)


async def sync_mosquitto_files(session: AsyncSession, config: CloudConfig) -> bool:
    """Bring the external Mosquitto in line with the registry, at start: rewrite its files and
    reload them, or with ``[mosquitto] dynsec``, give the cloud's user its rights and delete the
    plugin's clients of revoked or unregistered gateways. False if there is nothing to sync (or
    the plugin could not be reached, which is logged: the cloud starts all the same)."""
    if config.mosquitto.dynsec:
        from cloud.broker.provision import reconcile_dynsec

        return await reconcile_dynsec(session, config)
    return (await write_mosquitto_files(session, config)).written
