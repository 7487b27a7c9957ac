"""A small blocking MQTT 3.1.1 test client over paho-mqtt 2.x (the library the gateway uses).

Every wait is bounded and waits on a condition (CONNACK, SUBACK, PUBACK, a matching message).
Inside an asyncio test whose loop runs the broker, call the blocking methods through
``asyncio.to_thread`` so the broker keeps running.
"""

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

TIMEOUT = 10.0


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool = False
    mid: int = 0


class TestClient:
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        *,
        clean_session: bool = True,
        will: tuple[str, bytes, int, bool] | None = None,
        manual_ack: bool = False,
    ) -> None:
        self.port = port
        self.client_id = client_id
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
            manual_ack=manual_ack,  # True: no PUBACK until ack() is called
        )
        self._client.reconnect_delay_set(30, 30)  # a refused client must not retry during a test
        if username is not None:
            self._client.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain = will
            self._client.will_set(topic, payload, qos, retain)
        self._cond = threading.Condition()
        self._connack: ReasonCode | None = None
        self.session_present: bool | None = None
        self._subacks: dict[int, list[ReasonCode]] = {}
        self.received: list[Received] = []
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._started = False

    # -- paho callbacks (paho's thread) ----------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            self._connack = reason_code
            self.session_present = bool(flags.session_present)
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            self._subacks[mid] = list(reason_codes)
            self._cond.notify_all()

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            self.received.append(
                Received(
                    message.topic,
                    bytes(message.payload),
                    message.qos,
                    bool(message.retain),
                    bool(message.dup),
                    message.mid,
                )
            )
            self._cond.notify_all()

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.client_id}: no {what} within {timeout} s")
                self._cond.wait(left)

    # -- API ---------------------------------------------------------------------------------------

    def connect(self, timeout: float = TIMEOUT) -> ReasonCode:
        """Connect and return the CONNACK's reason code; a refused client is left stopped."""
        self._client.connect("127.0.0.1", self.port, keepalive=30)
        self._client.loop_start()
        self._started = True
        self._wait(lambda: self._connack is not None, "CONNACK", timeout)
        assert self._connack is not None
        if self._connack.is_failure:
            self.close()
        return self._connack

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = TIMEOUT) -> ReasonCode:
        """Subscribe and return the SUBACK's code for this filter (``is_failure`` when refused)."""
        result, mid = self._client.subscribe(topic_filter, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS, result
        self._wait(lambda: mid in self._subacks, f"SUBACK for {topic_filter}", timeout)
        return self._subacks[mid][0]

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = TIMEOUT
    ) -> None:
        """Publish and, for QoS 1, wait for the broker's PUBACK (which says nothing of delivery)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"{self.client_id}: no PUBACK for {topic} within {timeout} s")

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float = TIMEOUT) -> Received:
        """The first received message matching ``predicate``, waiting up to ``timeout`` for it."""
        found: list[Received] = []

        def ready() -> bool:
            found[:] = [m for m in self.received if predicate(m)][:1]
            return bool(found)

        self._wait(ready, "matching message", timeout)
        return found[0]

    def wait_for_payload(self, payload: bytes, timeout: float = TIMEOUT) -> Received:
        return self.wait_for(lambda m: m.payload == payload, timeout)

    def ack(self, message: Received) -> None:
        """PUBACK a message received with ``manual_ack=True``."""
        self._client.ack(message.mid, message.qos)

    @property
    def connected(self) -> bool:
        """True while paho holds the connection (False once the broker closed it)."""
        return bool(self._client.is_connected())

    def payloads(self) -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.received]

    def disconnect(self) -> None:
        """A clean DISCONNECT (the broker discards the will)."""
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False

    def drop(self) -> None:
        """Vanish without DISCONNECT, as a gateway losing power would (the broker sends the will)."""
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # FIN to the broker, no DISCONNECT packet
        self.close()

    def close(self) -> None:
        """Stop the network thread and close the socket, whatever the state."""
        # disconnect() first: it also ends paho's reconnect wait, so loop_stop() returns at once.
        with contextlib.suppress(Exception):
            self._client.disconnect()
        if self._started:
            self._client.loop_stop()
            self._started = False
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
