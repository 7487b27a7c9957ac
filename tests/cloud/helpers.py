"""Builders and bounded waits shared by the cloud tests."""

import asyncio
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import REGISTRY

from protocols.access import AccessDelta
from protocols.envelope import Ack, Command, CommandResult, EventBatch, EventRecord, Reject, decode, encode
from protocols.topics import Channel, topic

BASE_MS = int(time.time() * 1000)


def new_gateway_id() -> str:
    return f"gw-test-{secrets.token_hex(5)}"


def new_store_id() -> str:
    return secrets.token_hex(16)


def make_events(
    first_seq: int,
    count: int,
    *,
    kind: str = "telemetry.point",
    time_ms: int | None = None,
    data: dict[str, Any] | None = None,
) -> list[EventRecord]:
    # By default an event's time follows from its seq, so that a resend built again is identical.
    base = BASE_MS + first_seq if time_ms is None else time_ms
    return [
        EventRecord(
            seq=first_seq + i,
            kind=kind,
            lane=2,
            time_ms=base + i,
            boot_id="0b5e7d0c-7e57-4a11-9d5e-000000000001",
            mono_ns=1_000_000 * (first_seq + i),
            clock_synced=True,
            source="modbus:1/40001",
            data={"point": "ahu1.supply_temp", "value": 21.5, "unit": "C"} if data is None else data,
        )
        for i in range(count)
    ]


async def wait_for(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 10.0,
    what: str = "condition",
) -> None:
    """Poll ``condition`` until true; fail after ``within`` seconds. Never a bare sleep in a test."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


class GatewayClient:
    """A stand-in gateway on the broker: publishes on its uplink topics and collects what arrives on
    its ``ack`` topic, decoded. Waits are async and bounded so that an ingest on the same event loop
    keeps running while a test waits for its answer."""

    def __init__(self, port: int, gateway_id: str) -> None:
        self.gateway_id = gateway_id
        self.replies: list[Ack | Reject] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-{gateway_id}", protocol=mqtt.MQTTv311
        )
        self._client.on_connect = lambda c, *_: c.subscribe(topic(gateway_id, Channel.ACK), qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_disconnect = lambda *_: self._subscribed.clear()
        self._client.reconnect_delay_set(1, 1)
        self._client.on_message = self._on_message
        self._port = port

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        reply = decode(bytes(message.payload))
        with self._lock:
            self.replies.append(reply)

    async def connect(self) -> "GatewayClient":
        self._client.connect("127.0.0.1", self._port, keepalive=30)
        self._client.loop_start()
        await self.wait_subscribed()
        return self

    async def wait_subscribed(self, within: float = 15.0) -> None:
        """Until connected (again) and subscribed to its ack topic."""
        if not await asyncio.to_thread(self._subscribed.wait, within):
            raise AssertionError(f"{self.gateway_id}: not subscribed to its ack topic within {within} s")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, channel: Channel, payload: bytes, *, on_topic_of: str | None = None) -> None:
        info = self._client.publish(topic(on_topic_of or self.gateway_id, channel), payload, qos=1)
        info.wait_for_publish(10)

    def send(self, store_id: str, events: list[EventRecord], channel: Channel = Channel.EVENTS) -> None:
        self.publish(
            channel, encode(EventBatch(gateway_id=self.gateway_id, store_id=store_id, events=events))
        )

    def snapshot(self) -> list[Ack | Reject]:
        with self._lock:
            return list(self.replies)

    async def next_reply(self, seen: int, within: float = 15.0) -> Ack | Reject:
        """The reply after the first ``seen`` ones, waiting for it at most ``within`` seconds."""
        await wait_for(
            lambda: len(self.snapshot()) > seen, within, f"a reply on {self.gateway_id}'s ack topic"
        )
        return self.snapshot()[seen]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def acked_ranges(replies: list[Ack | Reject], store_id: str) -> list[tuple[int, int]]:
    return sorted(
        r for reply in replies if isinstance(reply, Ack) and reply.store_id == store_id for r in reply.ranges
    )


Answer = Callable[[Command], CommandResult | None]


def done(command: Command) -> CommandResult:
    return CommandResult(id=command.id, ok=True, detail=f"{command.name} done")


class CommandGateway:
    """A stand-in gateway for commands: keeps every Command that arrives on its ``cmd`` topic and
    answers each on ``cmd/result`` with ``answer(command)`` (None: no answer). It can also publish
    its state, as a gateway's birth does."""

    def __init__(
        self,
        port: int,
        gateway_id: str,
        answer: Answer | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.answer = answer
        self.commands: list[Command] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"cmd-{gateway_id}", protocol=mqtt.MQTTv311
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = lambda c, *_: c.subscribe(topic(gateway_id, Channel.CMD), qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._port = port

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        command = decode(bytes(message.payload), Command)
        with self._lock:
            self.commands.append(command)
        result = self.answer(command) if self.answer is not None else None
        if result is not None:
            self._client.publish(topic(self.gateway_id, Channel.CMD_RESULT), encode(result), qos=1)

    def connect_sync(self, within: float = 15.0) -> "CommandGateway":
        self._client.connect("127.0.0.1", self._port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(within):
            raise AssertionError(f"{self.gateway_id}: not subscribed to its cmd topic within {within} s")
        return self

    async def connect(self) -> "CommandGateway":
        return await asyncio.to_thread(self.connect_sync)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, channel: Channel, payload: bytes) -> None:
        self._client.publish(topic(self.gateway_id, channel), payload, qos=1).wait_for_publish(10)

    def snapshot(self) -> list[Command]:
        with self._lock:
            return list(self.commands)

    async def wait_commands(self, count: int, within: float = 15.0) -> list[Command]:
        """The first ``count`` commands, once that many arrived."""
        await wait_for(
            lambda: len(self.snapshot()) >= count, within, f"{count} command(s) to {self.gateway_id}"
        )
        return self.snapshot()[:count]


class StoreDouble:
    """Answers access.sync as a gateway's credential store does (edge/access.py ``apply``): a
    delta from its version is applied, one it is already past is "current", an empty one at its
    version is "current", any other is a version mismatch saying which version it has."""

    def __init__(self, version: int) -> None:
        self.version = version

    def __call__(self, command: Command) -> CommandResult:
        delta = AccessDelta.model_validate(command.args)
        have = self.version
        if not delta.reset and delta.empty:
            if delta.base == delta.version == have:
                return CommandResult(id=command.id, ok=True, detail="current", data={"version": have})
            return CommandResult(id=command.id, ok=False, code="version_mismatch", data={"version": have})
        if not delta.reset and delta.base < have and delta.version <= have:
            return CommandResult(id=command.id, ok=True, detail="current", data={"version": have})
        if not delta.reset and delta.base != have:
            return CommandResult(id=command.id, ok=False, code="version_mismatch", data={"version": have})
        self.version = delta.version
        return CommandResult(id=command.id, ok=True, detail="applied", data={"version": delta.version})
