"""Telling the broker that a gateway's credentials changed, whichever broker the cloud runs with.

The registry (cloud.registry) is the truth and is committed first; the broker then follows:

- the **embedded** broker (``mqtt.url`` empty) asks the registry at every sign-in, so a new
  gateway needs nothing; a rotated or revoked one is disconnected at once if the change was made
  in the process that runs the broker (cloud.broker.live), else within
  ``EmbeddedBroker.RECHECK_EVERY_S``;
- Mosquitto with **files** (``[mosquitto] password_file``/``acl_file``): both are rewritten and
  Mosquitto is sent SIGHUP (``pid_file``), which also disconnects every client whose password no
  longer passes; without a ``pid_file`` a systemd path unit does the reload
  (config/mosquitto/README.md), and until it does the old password still works;
- Mosquitto with the **dynamic-security** plugin (``[mosquitto] dynsec = true``): the gateway's
  client is created, re-keyed or deleted through ``$CONTROL/dynamic-security/v1``; re-keying and
  deleting disconnect its live connection at once;
- any other broker is not the cloud's to manage: the answer says so, and the operator gives it
  the credentials.

When the broker cannot be told (Mosquitto down, the signal not allowed), the change stands in the
registry and the answer says what is left to do.
"""

import logging
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from cloud.broker import live
from cloud.broker.dynsec import DynsecControl, DynsecError
from cloud.config import CloudConfig, broker_address, mqtt_password, uses_embedded_broker
from cloud.db import SessionFactory

log = logging.getLogger(__name__)


class Change(StrEnum):
    ADDED = "added"
    ROTATED = "rotated"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class BrokerSync:
    """What became of a credentials change at the broker."""

    applied: bool  # the broker has it (or needs nothing: it asks the registry)
    detail: str  # for the operator: what happened, or what is left to do


def dynsec_control(config: CloudConfig) -> DynsecControl:
    return DynsecControl(
        broker_address(config), config.mqtt.username, mqtt_password(config), ca_file=config.mqtt.ca_file
    )


async def apply_change(
    config: CloudConfig,
    sessions: SessionFactory,
    gateway_id: str,
    change: Change,
    password: str | None = None,
) -> BrokerSync:
    """Tell the broker (after the registry's commit). ``password`` in clear for ADDED and ROTATED:
    the dynamic-security plugin takes nothing else."""
    if uses_embedded_broker(config):
        return await _embedded(gateway_id, change)
    if config.mosquitto.dynsec:
        return await _dynsec(config, gateway_id, change, password)
    if config.mosquitto.password_file or config.mosquitto.acl_file:
        return await _files(config, sessions)
    return BrokerSync(
        False,
        f"the broker at {broker_address(config).url} is not managed by the cloud ([mosquitto] names no "
        "files and dynsec is off): give it this gateway's credentials yourself",
    )


async def _embedded(gateway_id: str, change: Change) -> BrokerSync:
    if change is Change.ADDED:
        return BrokerSync(True, "embedded broker: it asks the registry at every sign-in")
    if not live.running():
        return BrokerSync(
            True,
            "embedded broker (in another process): a connection with the old credentials is closed "
            "at its next periodic check, within seconds",
        )
    kicked = await live.recheck(gateway_id)
    return BrokerSync(True, f"embedded broker: {kicked} connection(s) with the old credentials closed")


async def _dynsec(config: CloudConfig, gateway_id: str, change: Change, password: str | None) -> BrokerSync:
    control = dynsec_control(config)
    try:
        if change is Change.REVOKED:
            await control.remove_gateway(gateway_id)
            return BrokerSync(True, "Mosquitto dynamic security: client deleted, its connection closed")
        assert password is not None, "the plugin needs the password in clear"
        if change is Change.ADDED:
            await control.add_gateway(gateway_id, password)
            return BrokerSync(True, "Mosquitto dynamic security: client created")
        await control.set_password(gateway_id, password)
        return BrokerSync(True, "Mosquitto dynamic security: password changed, the old connection closed")
    except DynsecError as e:
        log.error("gateway %s: %s not applied at the broker: %s", gateway_id, change.value, e)
        todo = (
            "revoke it again once the broker answers"
            if change is Change.REVOKED
            else "rotate its credentials once the broker answers (the plugin needs the password in clear)"
        )
        return BrokerSync(False, f"{e}; the registry has the change: {todo}")


async def _files(config: CloudConfig, sessions: SessionFactory) -> BrokerSync:
    from cloud.registry import write_mosquitto_files

    try:
        async with sessions() as session:
            done = await write_mosquitto_files(session, config)
    except (OSError, ValueError) as e:
        log.error("mosquitto files not written: %s", e)
        return BrokerSync(False, f"Mosquitto's files could not be written: {e}")
    if done.reloaded:
        return BrokerSync(
            True, "Mosquitto's files written and reloaded; connections with old credentials closed"
        )
    if config.mosquitto.pid_file:
        return BrokerSync(
            False,
            f"Mosquitto's files written, but Mosquitto (pid file {config.mosquitto.pid_file}) could not be "
            "signalled to reload them: until it reloads, the old credentials still work",
        )
    return BrokerSync(
        True,
        "Mosquitto's files written; no pid_file: Mosquitto reloads them through its path unit "
        "(config/mosquitto/README.md), which also closes connections with old credentials",
    )


async def reconcile_dynsec(session: AsyncSession, config: CloudConfig) -> bool:
    """At start, with the dynamic-security plugin: give the cloud's user its rights on the
    gateways' topics, delete the plugin's clients of gateways revoked or unregistered meanwhile,
    and name the registered gateways the plugin lacks (their passwords are known only as hashes:
    they need their credentials rotated). False (logged) if the plugin cannot be reached."""
    from cloud.registry import active_credentials

    control = dynsec_control(config)
    try:
        await control.ensure_cloud_role()
        missing = await control.reconcile(await active_credentials(session))
    except DynsecError as e:
        log.error("Mosquitto dynamic security not synchronised at start: %s", e)
        return False
    if missing:
        log.warning(
            "Mosquitto dynamic security lacks %d registered gateway(s): %s; rotate their credentials "
            "(gatehouse cloud gateway rotate ID) to give them a password there",
            len(missing),
            ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""),
        )
    return True
