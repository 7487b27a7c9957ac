"""One persistent MQTT connection of the cloud, with paho's network thread handed over to asyncio.

paho-mqtt runs its network loop in a thread of its own (``loop_start``); that thread only stamps
each incoming message with its arrival time and hands it to the event loop with
``call_soon_threadsafe``. Everything else (decoding, the database, replies) happens on the event
loop. paho's ``publish`` is thread-safe, so replies are published straight from the loop.

The session is persistent (clean session off), so the broker queues what arrives while the cloud is
away; the subscriptions are renewed on every connect anyway, in case the broker lost the session.
A link that only publishes (the API's commands) uses a clean session and no subscriptions.
"""

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from cloud.config import BrokerAddress

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
QOS = 1


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as it arrived: its topic, its bytes, and when the cloud got it."""

    topic: str
    payload: bytes
    received_time: datetime


@dataclass(frozen=True, slots=True)
class LinkSettings:
    address: BrokerAddress
    client_id: str
    username: str
    password: str
    ca_file: str = ""  # for mqtts: the CA bundle; empty = the system's CAs


class MqttLink:
    """A paho client: connects in the background, reconnects for ever, resubscribes on connect,
    and delivers each message to ``on_message`` on the event loop."""

    def __init__(
        self,
        name: str,
        settings: LinkSettings,
        subscriptions: Sequence[str],
        on_message: Callable[[Inbound], None],
        *,
        clean_session: bool = False,
    ) -> None:
        self.name = name
        self._settings = settings
        self._subscriptions = list(subscriptions)
        self._on_message = on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unreachable = False  # paho's thread only: log a lost broker once, not every retry
        # Set while connected and subscribed (with no subscriptions: while connected); cleared on
        # disconnect. Touched on the loop only.
        self.subscribed = asyncio.Event()

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set(settings.username, settings.password)
        if settings.address.tls:
            # Verification of the server's certificate and host name stays on: the CA bundle
            # only says whom to trust.
            client.tls_set(ca_certs=settings.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        # A returning broker must be used within seconds (the gateways cap their backoff too);
        # a handful of cloud workers reconnecting together is no storm.
        client.reconnect_delay_set(min_delay=0.25, max_delay=2)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_paho_message
        client.on_connect_fail = self._on_connect_fail
        self._client = client

    @property
    def where(self) -> str:
        return f"{self._settings.address.url} as {self._settings.client_id!r}"

    def start(self) -> None:
        """Begin connecting (in paho's thread). Call from the event loop that is to get the messages."""
        self._loop = asyncio.get_running_loop()
        address = self._settings.address
        log.info("%s: connecting to %s", self.name, self.where)
        self._client.connect_async(address.host, address.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()

    async def stop(self) -> None:
        """Disconnect (the broker keeps the session and queues for it) and end paho's thread."""
        self._client.disconnect()
        # loop_stop joins paho's thread: wait for that off the event loop.
        await asyncio.to_thread(self._client.loop_stop)
        self.subscribed.clear()
        log.info("%s: disconnected from %s", self.name, self.where)

    @property
    def connected(self) -> bool:
        """True while paho holds a connection to the broker (any thread may ask)."""
        return bool(self._client.is_connected())

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1. While disconnected paho keeps the message and sends it on reconnect."""
        info = self._client.publish(topic, payload, qos=QOS)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("%s: publish to %s failed: %s", self.name, topic, mqtt.error_string(info.rc))

    # paho's thread from here on: hand over to the loop, do nothing else.

    def _call_in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            # The loop is closed: the process is shutting down, and an unacked message is resent
            # by its gateway.
            pass

    def _on_paho_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        inbound = Inbound(message.topic, bytes(message.payload), datetime.now(UTC))
        self._call_in_loop(self._on_message, inbound)

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason_code: Any, _properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning("%s: %s refused the connection: %s", self.name, self.where, reason_code)
            return
        resumed = bool(getattr(flags, "session_present", False))
        log.info(
            "%s: connected to %s (%s session)",
            self.name,
            self.where,
            "resumed" if resumed else "new",
        )
        self._unreachable = False
        if not self._subscriptions:
            self._call_in_loop(self.subscribed.set)  # a publisher: connected is all it waits for
            return
        client.subscribe([(f, QOS) for f in self._subscriptions])

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reason_codes: list[Any], _properties: Any
    ) -> None:
        failed = [f for f, rc in zip(self._subscriptions, reason_codes, strict=False) if rc.is_failure]
        if failed:
            log.error("%s: the broker refused the subscriptions %s", self.name, failed)
            return
        log.info("%s: subscribed to %s", self.name, ", ".join(self._subscriptions))
        self._call_in_loop(self.subscribed.set)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any
    ) -> None:
        self._call_in_loop(self.subscribed.clear)
        if reason_code.is_failure:
            log.warning("%s: lost %s (%s); reconnecting", self.name, self.where, reason_code)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        if not self._unreachable:
            self._unreachable = True
            log.warning("%s: cannot reach %s; retrying every few seconds", self.name, self.where)
