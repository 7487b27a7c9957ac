"""paho-mqtt driven from the gateway's asyncio loop, with our own reconnect policy.

paho's socket is watched with ``add_reader``/``add_writer`` (as paho's own asyncio example does),
so callbacks run on the event loop and no network thread is needed. The blocking part of a
connect (TCP, TLS handshake) runs in a worker thread so that a dead network never stalls the
outbox. Reconnects use exponential backoff with full jitter, capped low: a thousand gateways
whose broker comes back do not all reconnect in the same second, yet each is back within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
ConnectHandler = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class LinkSettings:
    host: str
    port: int
    client_id: str
    username: str
    password: str
    tls: bool = False
    ca_file: str = ""
    keepalive_s: int = 30
    reconnect_min_s: float = 0.25
    reconnect_max_s: float = 4.0
    max_inflight: int = 64
    connect_timeout_s: float = 5.0


class MqttLink:
    """One MQTT connection with a persistent session (clean_session off, MQTT 3.1.1).

    ``on_connect`` runs (as a task) after every successful CONNACK; ``on_message`` is called on
    the loop for each message. ``run()`` owns the connection until cancelled.
    """

    def __init__(
        self,
        settings: LinkSettings,
        *,
        on_message: MessageHandler,
        on_connect: ConnectHandler | None = None,
        on_disconnect: ConnectHandler | None = None,
        will: tuple[str, bytes, bool] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._rng = rng or random.Random()
        self.connected = asyncio.Event()
        self.connects = 0
        self.last_error = ""
        self._disconnected = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._misc: asyncio.Task[None] | None = None
        self._acked: dict[int, asyncio.Future[None]] = {}  # mid -> waiter, for close()
        self._client = self._make_client(will)

    def _make_client(self, will: tuple[str, bytes, bool] | None) -> mqtt.Client:
        s = self.settings
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=s.client_id, clean_session=False, protocol=mqtt.MQTTv311
        )
        c.username_pw_set(s.username, s.password or None)
        if s.tls:
            # Server-certificate verification is always on with TLS: no option turns it off.
            ctx = ssl.create_default_context(cafile=s.ca_file or None)
            c.tls_set_context(ctx)
        if will:
            c.will_set(will[0], will[1], qos=1, retain=will[2])
        c.max_inflight_messages_set(s.max_inflight)
        c.max_queued_messages_set(0)
        c.connect_timeout = s.connect_timeout_s
        c.on_connect = self._cb_connect
        c.on_disconnect = self._cb_disconnect
        c.on_message = self._cb_message
        c.on_publish = self._cb_publish
        c.on_socket_open = self._cb_socket_open
        c.on_socket_close = self._cb_socket_close
        c.on_socket_register_write = self._cb_register_write
        c.on_socket_unregister_write = self._cb_unregister_write
        return c

    # ------------------------------------------------------------ socket plumbing (paho -> asyncio)

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn on the event loop, whether we are on it already or in the connect thread."""
        assert self._loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _cb_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._watch, sock)

    def _watch(self, sock: Any) -> None:
        assert self._loop is not None
        if sock.fileno() < 0:
            return
        self._loop.add_reader(sock, self._client.loop_read)
        if self._misc is None or self._misc.done():
            self._misc = self._loop.create_task(self._misc_loop(), name="mqtt-misc")

    def _cb_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unwatch, sock)

    def _unwatch(self, sock: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        except (ValueError, OSError):  # the fd is already closed
            pass

    def _cb_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._want_write, sock)

    def _want_write(self, sock: Any) -> None:
        assert self._loop is not None
        if sock.fileno() >= 0:
            self._loop.add_writer(sock, self._client.loop_write)

    def _cb_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._no_write, sock)

    def _no_write(self, sock: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.remove_writer(sock)
        except (ValueError, OSError):
            pass

    async def _misc_loop(self) -> None:
        # Keepalive pings and retry timers; paho asks to be called about once a second.
        while True:
            await asyncio.sleep(1)
            if self._client.loop_misc() != mqtt.MQTT_ERR_SUCCESS and not self.connected.is_set():
                return

    # ------------------------------------------------------------ paho callbacks (on the loop)

    def _cb_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._on_loop(self._connected, reason)

    def _connected(self, reason: Any) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            log.warning("mqtt %s:%s %s", self.settings.host, self.settings.port, self.last_error)
            self._disconnected.set()
            return
        self.connects += 1
        self.last_error = ""
        log.info(
            "mqtt connected to %s:%s as %s", self.settings.host, self.settings.port, self.settings.username
        )
        self.connected.set()
        if self._on_connect:
            assert self._loop is not None
            self._loop.create_task(self._on_connect(), name="mqtt-on-connect")

    def _cb_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._on_loop(self._lost, reason)

    def _lost(self, reason: Any) -> None:
        was_up = self.connected.is_set()
        if was_up:
            log.warning("mqtt connection to %s:%s lost: %s", self.settings.host, self.settings.port, reason)
            self.last_error = f"connection lost: {reason}"
        self.connected.clear()
        if was_up and self._on_disconnect:
            assert self._loop is not None
            self._loop.create_task(self._on_disconnect(), name="mqtt-on-disconnect")
        self._disconnected.set()

    def _cb_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(msg.topic, bytes(msg.payload))
        except Exception:  # a bad message must never take the connection down
            log.exception("handling message on %s failed", msg.topic)

    # ------------------------------------------------------------ public

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [min, min(max, min * 2**attempt)]."""
        s = self.settings
        ceiling = min(s.reconnect_max_s, s.reconnect_min_s * (2 ** min(attempt, 20)))
        return self._rng.uniform(s.reconnect_min_s, max(s.reconnect_min_s, ceiling))

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        failures = 0  # consecutive attempts that never reached CONNACK
        try:
            while True:
                self._disconnected.clear()
                reached = self.connects
                try:
                    await asyncio.to_thread(
                        self._client.connect,
                        self.settings.host,
                        self.settings.port,
                        self.settings.keepalive_s,
                    )
                    self._set_buffers()
                except (OSError, ssl.SSLError, mqtt.WebsocketConnectionError) as e:
                    self.last_error = f"cannot connect to {self.settings.host}:{self.settings.port}: {e}"
                    if failures == 0:
                        log.warning("mqtt %s", self.last_error)
                    self._disconnected.set()
                await self._disconnected.wait()
                self.connected.clear()
                # A connection that reached CONNACK resets the backoff, so the next try comes quickly.
                failures = 0 if self.connects > reached else failures + 1
                delay = self.backoff(failures)
                log.debug("mqtt reconnect in %.2fs", delay)
                await asyncio.sleep(delay)
        finally:
            self.connected.clear()
            if self._misc:
                self._misc.cancel()

    def _set_buffers(self) -> None:
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, topics: list[str], qos: int = 1) -> None:
        self._client.subscribe([(t, qos) for t in topics])

    async def close(self, final: tuple[str, bytes, bool] | None = None, grace_s: float = 2.0) -> None:
        """Publish ``final`` (e.g. an offline state) if connected, wait up to ``grace_s`` for the
        broker's PUBACK, then disconnect cleanly."""
        if self.connected.is_set():
            if final:
                info = self.publish(final[0], final[1], retain=final[2])
                done = asyncio.get_running_loop().create_future()
                self._acked[info.mid] = done
                if info.is_published():
                    done.set_result(None)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done, grace_s)
            self._client.disconnect()
        self.connected.clear()

    def _cb_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._on_loop(self._puback, mid)

    def _puback(self, mid: int) -> None:
        fut = self._acked.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
