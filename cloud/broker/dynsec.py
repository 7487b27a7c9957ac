"""Mosquitto's dynamic-security plugin, driven by the cloud (``[mosquitto] dynsec = true``).

Instead of rewriting a password file and an ACL file and signalling Mosquitto, the cloud sends the
plugin commands on ``$CONTROL/dynamic-security/v1`` and reads its answers on ``.../response``,
signed in as its own MQTT user, which must hold the plugin's admin role (``mosquitto_ctrl dynsec
init ... <cloud user>``; see config/mosquitto/README.md). Each gateway is a plugin client (its
username is its gateway id) holding a role of its own with its topics.

What Mosquitto 2.0.11 does, as checked on this machine (tests/cloud/test_gateways_broker.py):

- ``setClientPassword``, ``deleteClient`` and ``disableClient`` disconnect the client's live
  connection at once: a rotated or revoked gateway is off the broker the moment the command is
  answered, not at its next reconnect;
- ACL topics are literal: ``%u`` is *not* replaced by the username in 2.0.11 (a role with
  ``gh/v1/%u/cmd`` grants nothing), hence one role per gateway naming its own topics;
- the plugin hashes the password itself and its control API takes only clear passwords, so a
  gateway registered while the files were in use (the cloud keeps only its hash) cannot be moved
  into the plugin as it is: rotate its credentials (``gatehouse cloud gateway rotate ID``).
  ``reconcile`` lists such gateways at start.

A session is opened per operation (connect, subscribe to the answers, send, wait, disconnect):
registering a gateway is rare, and nothing has to be kept alive in between. Answers are matched
by ``correlationData``, since every admin subscribed to the response topic sees every answer.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud.config import BrokerAddress
from protocols.topics import DOWNLINK_CHANNELS, PREFIX, UPLINK_CHANNELS, topic

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
GATEWAY_ROLE_PREFIX = "gatehouse-gateway-"
CLOUD_ROLE = "gatehouse-cloud"
TIMEOUT_S = 10.0

# The plugin's answers that mean "already so": the operations below are idempotent.
_EXISTS = ("already exists",)
_MISSING = ("not found",)


class DynsecError(RuntimeError):
    """The broker could not be reached, or the plugin refused a command (the text says which)."""


def gateway_role(gateway_id: str) -> str:
    return f"{GATEWAY_ROLE_PREFIX}{gateway_id}"


def gateway_acls(gateway_id: str) -> list[dict[str, Any]]:
    """The same rights as the ACL file's ``pattern`` lines (cloud.broker.mosquitto.render_acl),
    spelt out for one gateway: publish its uplink channels, subscribe to and receive its downlink
    channels, nothing else (the plugin's defaults deny publishing and subscribing)."""
    acls: list[dict[str, Any]] = [
        {"acltype": "publishClientSend", "topic": topic(gateway_id, c), "allow": True}
        for c in sorted(UPLINK_CHANNELS)
    ]
    for c in sorted(DOWNLINK_CHANNELS):
        name = topic(gateway_id, c)
        acls += [
            {"acltype": "subscribeLiteral", "topic": name, "allow": True},
            {"acltype": "publishClientReceive", "topic": name, "allow": True},
            {"acltype": "unsubscribeLiteral", "topic": name, "allow": True},
        ]
    return acls


def cloud_acls() -> list[dict[str, Any]]:
    """The cloud user's rights on the gateways' topics (``readwrite gh/v1/#`` in the ACL file);
    its rights on ``$CONTROL`` come from the plugin's admin role."""
    everything = f"{PREFIX}/#"
    return [
        {"acltype": "publishClientSend", "topic": everything, "allow": True},
        {"acltype": "publishClientReceive", "topic": everything, "allow": True},
        {"acltype": "subscribePattern", "topic": everything, "allow": True},
        {"acltype": "unsubscribePattern", "topic": everything, "allow": True},
    ]


@dataclass
class _Exchange:
    """One request's waiting state, filled in by paho's thread."""

    expected: set[str]
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    connected: threading.Event = field(default_factory=threading.Event)
    connect_error: str = ""
    subscribed: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    lost: str = ""  # the broker closed the connection before every answer came


class DynsecControl:
    """Commands to the dynamic-security plugin of the Mosquitto at ``address``."""

    def __init__(
        self,
        address: BrokerAddress,
        username: str,
        password: str,
        *,
        ca_file: str = "",
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.address = address
        self.username = username
        self._password = password
        self._ca_file = ca_file
        self._timeout_s = timeout_s

    # -- what the registry needs

    async def add_gateway(self, gateway_id: str, password: str) -> None:
        """Create the gateway's role and client; a client left from before is re-keyed instead."""
        role = gateway_role(gateway_id)
        await self._ok(
            {"command": "createRole", "rolename": role, "acls": gateway_acls(gateway_id)}, tolerate=_EXISTS
        )
        answer = await self._one(
            {
                "command": "createClient",
                "username": gateway_id,
                "password": password,
                "roles": [{"rolename": role}],
            }
        )
        if _matches(answer, _EXISTS):
            await self.set_password(gateway_id, password)
            await self._ok({"command": "addClientRole", "username": gateway_id, "rolename": role})
        else:
            _check(answer)

    async def set_password(self, gateway_id: str, password: str) -> None:
        """New password (the plugin disconnects the gateway's live connection); a disabled client is
        enabled again. A gateway the plugin does not know yet is created."""
        answer = await self._one(
            {"command": "setClientPassword", "username": gateway_id, "password": password}
        )
        if _matches(answer, _MISSING):
            await self.add_gateway(gateway_id, password)
            return
        _check(answer)
        await self._ok({"command": "enableClient", "username": gateway_id})

    async def remove_gateway(self, gateway_id: str) -> None:
        """Delete the gateway's client (which disconnects it) and its role; gone already is fine."""
        await self._ok({"command": "deleteClient", "username": gateway_id}, tolerate=_MISSING)
        await self._ok({"command": "deleteRole", "rolename": gateway_role(gateway_id)}, tolerate=_MISSING)

    async def ensure_cloud_role(self) -> None:
        """Give the cloud's own user its rights on ``gh/v1/#`` unless it has them already.

        Adding a role to a client disconnects every connection of that client, this one included,
        before the plugin answers: so a role the user holds is not added again, and a lost answer
        is checked by asking again. The cloud's other sessions (ingest, commands) reconnect on
        their own; this happens once, the first time the cloud starts with the plugin."""
        await self._ok(
            {"command": "createRole", "rolename": CLOUD_ROLE, "acls": cloud_acls()}, tolerate=_EXISTS
        )
        if CLOUD_ROLE in await self._roles_of(self.username):
            return
        try:
            await self._ok({"command": "addClientRole", "username": self.username, "rolename": CLOUD_ROLE})
        except DynsecError:
            if CLOUD_ROLE not in await self._roles_of(self.username):
                raise
        log.info("dynamic security: %s given the role %s", self.username, CLOUD_ROLE)

    async def _roles_of(self, username: str) -> set[str]:
        client = _check(await self._one({"command": "getClient", "username": username}))
        return {r.get("rolename", "") for r in client.get("data", {}).get("client", {}).get("roles", [])}

    async def gateway_clients(self) -> set[str]:
        """Usernames of the plugin's clients that hold a Gatehouse gateway role."""
        answer = _check(await self._one({"command": "listClients", "verbose": True}))
        out: set[str] = set()
        for client in answer.get("data", {}).get("clients", []):
            roles = {r.get("rolename", "") for r in client.get("roles", [])}
            if gateway_role(client.get("username", "")) in roles:
                out.add(client["username"])
        return out

    async def reconcile(self, active: Iterable[str]) -> list[str]:
        """Delete the plugin's gateway clients that are no longer registered (or were revoked);
        return the registered gateways the plugin lacks (they need their credentials rotated)."""
        wanted = set(active)
        present = await self.gateway_clients()
        for gateway_id in sorted(present - wanted):
            log.info("dynamic security: removing gateway client %s (revoked or unregistered)", gateway_id)
            await self.remove_gateway(gateway_id)
        return sorted(wanted - present)

    # -- the exchange

    async def _ok(self, command: dict[str, Any], *, tolerate: tuple[str, ...] = ()) -> dict[str, Any]:
        answer = await self._one(command)
        if tolerate and _matches(answer, tolerate):
            return answer
        return _check(answer)

    async def _one(self, command: dict[str, Any]) -> dict[str, Any]:
        (answer,) = await self.run([command])
        return answer

    async def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``commands`` in one message and return the plugin's answers in the same order.
        Raises DynsecError if the broker cannot be reached or does not answer in time."""
        return await asyncio.to_thread(self._run_blocking, commands)

    def _run_blocking(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tag = secrets.token_hex(8)
        tagged = [{**c, "correlationData": f"{tag}-{i}"} for i, c in enumerate(commands)]
        exchange = _Exchange(expected={c["correlationData"] for c in tagged})
        client = self._client(exchange)
        try:
            try:
                client.connect(self.address.host, self.address.port, keepalive=30)
            except OSError as e:
                raise DynsecError(f"cannot reach Mosquitto at {self.address.url}: {e}") from None
            client.loop_start()
            self._wait(exchange.connected, "the CONNACK")
            if exchange.connect_error:
                raise DynsecError(
                    f"Mosquitto at {self.address.url} refused {self.username!r}: {exchange.connect_error}"
                )
            client.subscribe(RESPONSE_TOPIC, qos=1)
            self._wait(exchange.subscribed, "the SUBACK of the plugin's answers")
            client.publish(CONTROL_TOPIC, orjson.dumps({"commands": tagged}), qos=1)
            self._wait(exchange.done, f"the answer to {', '.join(c['command'] for c in commands)}")
            if exchange.lost:
                raise DynsecError(f"Mosquitto at {self.address.url} closed the connection before answering")
        finally:
            client.disconnect()
            client.loop_stop()
        return [exchange.answers[c["correlationData"]] for c in tagged]

    def _wait(self, event: threading.Event, what: str) -> None:
        if not event.wait(self._timeout_s):
            raise DynsecError(
                f"Mosquitto at {self.address.url}: waited {self._timeout_s:g} s in vain for {what} "
                "(is the dynamic-security plugin loaded, and the cloud's user its admin?)"
            )

    def _client(self, exchange: _Exchange) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"gatehouse-dynsec-{secrets.token_hex(4)}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set(self.username, self._password)
        if self.address.tls:
            client.tls_set(ca_certs=self._ca_file or None, cert_reqs=ssl.CERT_REQUIRED)

        def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
            if reason_code.is_failure:
                exchange.connect_error = str(reason_code)
            exchange.connected.set()

        def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
            if not any(code.is_failure for code in codes):
                exchange.subscribed.set()

        def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
            try:
                doc = orjson.loads(message.payload)
            except orjson.JSONDecodeError:
                return
            for answer in doc.get("responses", []) if isinstance(doc, dict) else []:
                tag = answer.get("correlationData") if isinstance(answer, dict) else None
                if tag in exchange.expected:
                    exchange.answers[tag] = answer
            if exchange.expected <= exchange.answers.keys():
                exchange.done.set()

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
            if not exchange.done.is_set():
                exchange.lost = str(reason_code)
                exchange.connected.set()
                exchange.subscribed.set()
                exchange.done.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        client.reconnect_delay_set(30, 30)  # one session per exchange: no reconnecting within it
        return client


def _matches(answer: dict[str, Any], phrases: tuple[str, ...]) -> bool:
    error = str(answer.get("error", "")).lower()
    return bool(error) and any(p in error for p in phrases)


def _check(answer: dict[str, Any]) -> dict[str, Any]:
    if answer.get("error"):
        raise DynsecError(f"dynamic security refused {answer.get('command')}: {answer['error']}")
    return answer
