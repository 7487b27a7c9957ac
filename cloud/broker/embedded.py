"""The embedded MQTT broker of ``gatehouse demo``: amqtt 0.12.1 on a loopback port.

Sign-in and topic rights are two amqtt plugins (configured under amqtt 0.12's ``plugins`` key)
that ask a :class:`~cloud.broker.authority.RegistryAuthority`, i.e. the cloud's gateway registry:
a gateway registered at run time is admitted at once, and only to its own topics. A gateway whose
credentials are rotated or revoked is disconnected (``EmbeddedBroker.recheck``): at once when the
change is made in this process (cloud.broker.live), else within ``RECHECK_EVERY_S``.

What amqtt 0.12.1 does, as verified on this machine (most of it pinned down by
``tests/cloud/broker/test_broker_embedded.py``):

- MQTT 3.1.1 only. A publish the topic check refuses is dropped silently; the publisher still
  gets its PUBACK (as with Mosquitto under 3.1.1). A refused subscription gets 0x80 in the SUBACK.
- Persistent sessions (clean session off, client id given) keep their subscriptions and queue
  QoS 1/2 messages while the client is away, in memory and without a limit; they are delivered
  when the client comes back, **with the retain flag set** (amqtt sends them through its
  retained-message path), so a subscriber must not read the retain flag as "old state". Nothing
  survives a broker restart: sessions, queues and retained messages live in memory only.
- A QoS 1 message already sent to a subscriber but not yet PUBACKed when it disconnects is
  forgotten, not resent at its return (Mosquitto resends it, flagged dup). So with the embedded
  broker a message can be lost in flight; the end-to-end ack (after the cloud's commit) and the
  gateway's resend of what was never acked are what recover it. Such late PUBACKs show up as
  "Received PUBACK for unknown pending message" warnings from amqtt.
- Retained messages: kept per topic (in memory), replaced by a newer one, cleared by an empty
  retained publish, and sent when a client subscribes to a matching filter, at the lower of the
  two QoS. amqtt also re-sends them each time a persistent session reconnects (QoS 0).
- The will (the gateway's death message on ``state``) is published when the connection ends
  without a DISCONNECT: to current subscribers at the will's QoS with the retain flag clear, and,
  if the will is flagged retain, stored as the topic's retained message. A clean DISCONNECT
  discards it. amqtt does not check the will's topic against the topic plugins: the sign-in check
  here refuses a will on a topic the user could not publish on.
- A message goes to each subscriber at the QoS of its subscription, whatever QoS it was
  published with (Mosquitto delivers at the lower of the two).
- Shared subscriptions (``$share/...``) are not implemented: such a filter is taken literally and
  matches nothing. With the embedded broker a single ingest worker subscribes without ``$share``.

Two amqtt behaviours are corrected in :class:`_GatehouseBroker` (private amqtt methods; amqtt is
pinned to 0.12.1 for that reason):

- amqtt merges a CONNECT into the existing session of the same client id (even deleting it, for a
  clean session) *before* it checks the credentials, so a client with a wrong password could
  replace a gateway's will, take over its connection (firing that will) or wipe its queued
  messages. Here the credentials are checked first, and a client id already held by a session of
  another user is refused.
- On every connect, amqtt sends the connecting client the retained messages matching *every*
  client's subscriptions, so a gateway would receive other gateways' retained ``state``. Here a
  client gets only retained messages matching its own subscriptions.
"""

import asyncio
import contextlib
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BaseContext
from amqtt.errors import AMQTTError, BrokerError, MQTTError, NoDataError
from amqtt.mqtt.connack import IDENTIFIER_REJECTED, NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from amqtt.utils import gen_client_id

from cloud.broker import live
from cloud.broker.authority import RegistryAuthority

log = logging.getLogger(__name__)

_NOISY_LOGGERS = ("amqtt", "transitions")


class BrokerStartError(RuntimeError):
    """The embedded broker could not start (e.g. its port is taken)."""


def _authority_of(plugin: BaseAuthPlugin | BaseTopicPlugin) -> RegistryAuthority:
    authority = getattr(plugin.config, "authority", None)
    if not isinstance(authority, RegistryAuthority):
        raise TypeError(f"{type(plugin).__name__} needs an 'authority' (a RegistryAuthority) in its config")
    return authority


class _AsksAuthority:
    """What both plugins share: a config carrying the RegistryAuthority, read at construction."""

    @dataclass
    class Config:
        authority: Any = None

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)  # type: ignore[call-arg]
        self.authority = _authority_of(self)


class GatehouseAuthPlugin(_AsksAuthority, BaseAuthPlugin):
    """amqtt sign-in plugin: asks the registry; anonymous users and foreign wills are refused."""

    async def authenticate(self, *, session: Session) -> bool | None:
        username = session.username
        if not username:
            return False
        if not await self.authority.check_login(username, session.password):
            log.info("broker sign-in refused for %r (client id %r)", username, session.client_id)
            return False
        if session.will_flag and not self.authority.may_publish(username, session.will_topic or ""):
            log.info(
                "broker sign-in refused for %r: will on forbidden topic %r", username, session.will_topic
            )
            return False
        return True


class GatehouseTopicPlugin(_AsksAuthority, BaseTopicPlugin):
    """amqtt topic plugin: publish, subscribe and delivery rights from ``cloud.broker.acl``."""

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        username = session.username if session else None
        if not topic or not username:
            return False
        if action == Action.PUBLISH:
            allowed = self.authority.may_publish(username, topic)
        elif action == Action.SUBSCRIBE:
            allowed = self.authority.may_subscribe(username, topic)
        elif action == Action.RECEIVE:
            allowed = self.authority.may_receive(username, topic)
        else:
            allowed = False
        if not allowed:
            log.info("broker %s refused for %r on %r", action, username, topic)
        return allowed


class _GatehouseBroker(Broker):
    """amqtt's Broker with credentials checked before session take-over, and no retained leak."""

    async def _initialize_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, incoming = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except MQTTError as exc:
            with contextlib.suppress(Exception):
                await writer.close()
            raise MQTTError(exc) from exc
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc

        existing = self._sessions.get(incoming.client_id or "", (None, None))[0]
        refusal: int | None = None
        if not await self._authenticate(incoming, self.listeners_config["default"]):
            refusal = NOT_AUTHORIZED
        elif existing is not None and existing.username != incoming.username:
            log.warning(
                "client id %r is held by user %r; refused for user %r",
                incoming.client_id,
                existing.username,
                incoming.username,
            )
            refusal = IDENTIFIER_REJECTED
        if refusal is not None:
            with contextlib.suppress(Exception):
                await ConnackPacket.build(0, refusal).to_stream(writer)
                await writer.close()
            raise MQTTError(f"connection from {remote_address}:{remote_port} refused (CONNACK {refusal})")

        # From here on, amqtt 0.12.1's own session handling (which forgot to carry over will_retain).
        if incoming.clean_session:
            if incoming.client_id:
                await self._delete_session(incoming.client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
            session = incoming
        elif existing is not None:
            existing.will_flag = incoming.will_flag
            existing.will_message = incoming.will_message
            existing.will_topic = incoming.will_topic
            existing.will_qos = incoming.will_qos
            existing.will_retain = incoming.will_retain
            existing.keep_alive = incoming.keep_alive
            existing.username = incoming.username
            existing.password = incoming.password
            existing.parent = 1
            session = existing
        else:
            incoming.parent = 0
            session = incoming

        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter = subscription[0]
        subscribers = self._subscriptions.get(topic_filter, [])
        if not any(s.client_id == session.client_id for s, _qos in subscribers):
            return
        await super()._publish_retained_messages_for_subscription(subscription, session)


class EmbeddedBroker:
    """An amqtt broker bound to one loopback address and port, signing in through ``authority``.

    A gateway whose credentials were rotated or revoked is disconnected: at once when the change
    is made through this process (cloud.broker.live), else at the next periodic check."""

    # How often every connected gateway's credentials are checked against the registry again: the
    # bound on how long a gateway re-keyed or revoked by another process (the CLI) stays connected.
    RECHECK_EVERY_S = 10.0

    def __init__(
        self,
        host: str,
        port: int,
        authority: RegistryAuthority,
        *,
        debug: bool = False,
        recheck_every_s: float | None = None,
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, not {port}")
        self.host = host
        self.port = port
        self.authority = authority
        self.debug = debug
        self.recheck_every_s = recheck_every_s or self.RECHECK_EVERY_S
        self._addresses = _loopback_addresses(host, port)
        self._broker: _GatehouseBroker | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def start(self) -> None:
        """Listen on ``host:port``. Raises BrokerStartError if the port is taken."""
        if self._broker is not None:
            raise RuntimeError("the embedded broker is already running")
        if not self.debug:
            for name in _NOISY_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
        # amqtt's listener reports a taken port only through its own error path; other libraries
        # retry a failed bind forever, so the port is checked first and the failure said plainly.
        for family, address in self._addresses:
            _check_free(family, address, self.host, self.port)
        bind_host = f"[{self.host}]" if ":" in self.host else self.host
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{bind_host}:{self.port}"}},
            # Exactly these plugins: no anonymous sign-in, no $SYS publisher, no packet logger.
            "plugins": {
                f"{__name__}.GatehouseAuthPlugin": {"authority": self.authority},
                f"{__name__}.GatehouseTopicPlugin": {"authority": self.authority},
            },
        }
        broker = _GatehouseBroker(config, loop=asyncio.get_running_loop())
        try:
            await broker.start()
        except BrokerError as exc:
            raise BrokerStartError(f"embedded MQTT broker could not start on {self.url}: {exc}") from exc
        self._broker = broker
        self._watch = asyncio.create_task(self._recheck_periodically(), name="embedded-broker-recheck")
        live.register(self)
        log.info("embedded MQTT broker listening on %s", self.url)

    async def stop(self) -> None:
        """Close every connection and the listener. Sessions and retained messages are dropped."""
        live.unregister(self)
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
            log.info("embedded MQTT broker on %s stopped", self.url)

    async def recheck(self, username: str | None = None) -> int:
        """Check the credentials of the connected gateways (``username``'s, or all) against the
        registry again, and disconnect those that no longer hold (a rotated password, a revoked
        gateway). Returns how many were disconnected. An unchanged hash is answered from the
        authority's cache (no PBKDF2 per connection and round); a changed one is checked in full."""
        broker = self._broker
        if broker is None:
            return 0
        if username is not None:
            self.authority.forget(username)  # its verdicts were for the old hash
        kicked = 0
        for client_id, (session, handler) in list(broker._sessions.items()):
            user = session.username
            if not user or user == self.authority.cloud_username or (username and user != username):
                continue
            if not session.transitions.is_connected():
                continue
            if await self.authority.still_valid(user, session.password):
                continue
            log.warning(
                "embedded broker: disconnecting %r (client id %r): its credentials changed", user, client_id
            )
            # As if the connection had dropped: the client's loop publishes its will (the
            # gateway's death message) and stops its handler, which closes the socket.
            await handler.handle_connection_closed()
            kicked += 1
        return kicked

    async def _recheck_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_every_s)
            try:
                await self.recheck()
            except Exception:
                log.exception("embedded broker: the periodic credentials check failed")

    async def __aenter__(self) -> "EmbeddedBroker":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _loopback_addresses(host: str, port: int) -> list[tuple[int, Any]]:
    """The socket addresses ``host`` names; every one must be a loopback address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"embedded broker host {host!r} does not resolve: {exc}") from None
    addresses: list[tuple[int, Any]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if not ip.is_loopback:
            raise ValueError(f"the embedded broker listens on loopback only, and {host!r} is {ip}")
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    return addresses


def _check_free(family: int, address: Any, host: str, port: int) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Same option as the listener amqtt opens: a port in TIME_WAIT is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise BrokerStartError(
                f"cannot listen on {host}:{port} for the embedded MQTT broker: {exc}"
            ) from None
