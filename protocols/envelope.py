"""The versioned envelope (protocol v1) and its codec.

Every message is one JSON object with ``v`` (envelope version) and ``type``. A payload larger than
``COMPRESS_OVER`` is gzip-compressed (recognised by the gzip magic, which no JSON text starts with);
no message is ever over ``MAX_MESSAGE_BYTES`` on the wire, so it fits managed brokers too.

The gateway encodes each event once, when it is accepted, and stores those bytes; a batch is then
those stored bodies joined (``encode_batch``), with no per-send re-encoding.
"""

import zlib
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError, model_validator

from protocols.errors import ProtocolError
from protocols.events import KIND_PATTERN
from protocols.topics import GATEWAY_ID_PATTERN

ENVELOPE_VERSION = 1
# Every envelope version a gateway in the field may still send. Add, never remove, while such
# gateways exist.
SUPPORTED_VERSIONS = (1,)

MAX_MESSAGE_BYTES = 128 * 1024
COMPRESS_OVER = 4 * 1024
# A compressed message may not inflate past this: a small hostile payload must not eat the cloud's memory.
MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024
MAX_EVENTS_PER_BATCH = 10_000
_GZIP_MAGIC = b"\x1f\x8b"

STORE_ID_PATTERN = r"^[0-9a-f]{32}$"
_SEQ = Annotated[int, Field(ge=1, le=2**63 - 1)]
_INT64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class MessageTooLarge(ValueError):
    """An encoded message would exceed MAX_MESSAGE_BYTES; the caller sends fewer events."""


class _Message(BaseModel):
    # Unknown fields are ignored, so a newer sender can add fields without breaking an older reader;
    # known fields are strict: "1" is not an int.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    v: int = ENVELOPE_VERSION

    @model_validator(mode="after")
    def _known_version(self) -> "_Message":
        if self.v not in SUPPORTED_VERSIONS:
            raise ValueError(f"envelope version {self.v} is not supported (supported: {SUPPORTED_VERSIONS})")
        return self


class EventRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    seq: _SEQ
    kind: Annotated[str, Field(pattern=KIND_PATTERN, max_length=64)]
    lane: Annotated[int, Field(ge=0, le=2)]
    time_ms: _INT64  # wall clock when it happened, as the gateway saw it (see clock_synced)
    boot_id: Annotated[str, Field(max_length=64)]
    mono_ns: Annotated[int, Field(ge=0, le=2**63 - 1)]
    clock_synced: bool
    source: Annotated[str, Field(max_length=128)] = ""
    data: dict[str, JsonValue] = Field(default_factory=dict)


_StoreId = Annotated[str, Field(pattern=STORE_ID_PATTERN)]
_GatewayId = Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]
_Range = tuple[_SEQ, _SEQ]


def _check_ranges(ranges: list[tuple[int, int]]) -> None:
    for a, b in ranges:
        if a > b:
            raise ValueError(f"range [{a}, {b}] runs backwards")


class EventBatch(_Message):
    type: Literal["events"] = "events"
    gateway_id: _GatewayId
    store_id: _StoreId
    events: Annotated[list[EventRecord], Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]

    @model_validator(mode="after")
    def _unique_seqs(self) -> "EventBatch":
        if len({e.seq for e in self.events}) != len(self.events):
            raise ValueError("events: a seq appears twice in one batch")
        return self


class Ack(_Message):
    """Sent on ``ack`` after the cloud's transaction holding these events committed."""

    type: Literal["ack"] = "ack"
    store_id: _StoreId
    ranges: Annotated[list[_Range], Field(min_length=1)]

    @model_validator(mode="after")
    def _ordered(self) -> "Ack":
        _check_ranges(self.ranges)
        return self


class Reject(_Message):
    """Sent on ``ack`` for events the cloud will never take; the gateway dead-letters them."""

    type: Literal["reject"] = "reject"
    store_id: _StoreId
    ranges: Annotated[list[_Range], Field(min_length=1)]
    reason: Annotated[str, Field(max_length=1000)]

    @model_validator(mode="after")
    def _ordered(self) -> "Reject":
        _check_ranges(self.ranges)
        return self


class GatewayState(_Message):
    """Retained on ``state``: the birth (online) and, as the MQTT will, the death (offline)."""

    type: Literal["state"] = "state"
    gateway_id: _GatewayId
    online: bool
    version: Annotated[str, Field(max_length=64)] = ""
    config_version: Annotated[str, Field(max_length=64)] = ""
    boot_id: Annotated[str, Field(max_length=64)] = ""
    clock_synced: bool = False
    store_id: Annotated[str, Field(max_length=32)] = ""
    time_ms: _INT64 = 0
    # The version of the credential store the gateway decides from: the cloud sends what is newer.
    access_version: Annotated[int, Field(ge=0)] = 0


class Command(_Message):
    """Sent on ``cmd``. The gateway executes each ``id`` once; a repeated id is answered with the
    first result. ``expires_ms`` (wall clock, 0 = never) and ``by`` (who asked: a user or an API
    token's owner) are checked before anything is done; see protocols/commands.py for the names."""

    type: Literal["cmd"] = "cmd"
    id: Annotated[str, Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.]*$", max_length=64)]
    args: dict[str, JsonValue] = Field(default_factory=dict)
    issued_ms: _INT64 = 0
    expires_ms: _INT64 = 0
    by: Annotated[str, Field(max_length=128)] = ""


class CommandResult(_Message):
    """Sent on ``cmd/result``. ``code`` says why a command was not done (protocols/commands.py
    ``ResultCode``); ``data`` carries what the command returns (e.g. the credential store version)."""

    type: Literal["cmd_result"] = "cmd_result"
    id: Annotated[str, Field(min_length=1, max_length=64)]
    ok: bool
    detail: Annotated[str, Field(max_length=1000)] = ""
    code: Annotated[str, Field(max_length=32)] = "done"
    data: dict[str, JsonValue] = Field(default_factory=dict)
    done_ms: _INT64 = 0


Message = EventBatch | Ack | Reject | GatewayState | Command | CommandResult
_MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(
    Annotated[Message, Field(discriminator="type")]  # type: ignore[arg-type]
)

_MESSAGE_TYPES = {"events", "ack", "reject", "state", "cmd", "cmd_result"}

M = TypeVar("M", bound=_Message)


def _compress(raw: bytes) -> bytes:
    # Level 1: the batches are repetitive JSON, so even the fastest level shrinks them 5-10x,
    # and a Raspberry Pi has little CPU to spare.
    c = zlib.compressobj(level=1, wbits=31)
    return c.compress(raw) + c.flush()


def _frame(raw: bytes) -> bytes:
    out = _compress(raw) if len(raw) > COMPRESS_OVER else raw
    if len(out) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"message is {len(out)} bytes on the wire, over {MAX_MESSAGE_BYTES}")
    return out


def encode(message: _Message) -> bytes:
    return _frame(message.model_dump_json().encode())


def encode_event(
    *,
    seq: int,
    kind: str,
    lane: int,
    time_ms: int,
    boot_id: str,
    mono_ns: int,
    clock_synced: bool,
    source: str,
    data: dict[str, Any],
) -> bytes:
    """One event's JSON body, as it will stand inside a batch. The gateway stores these bytes."""
    return orjson.dumps(
        {
            "seq": seq,
            "kind": kind,
            "lane": lane,
            "time_ms": time_ms,
            "boot_id": boot_id,
            "mono_ns": mono_ns,
            "clock_synced": clock_synced,
            "source": source,
            "data": data,
        }
    )


def batch_overhead(gateway_id: str, store_id: str) -> int:
    return len(_batch_head(gateway_id, store_id)) + 2


def _batch_head(gateway_id: str, store_id: str) -> bytes:
    return b'{"v":%d,"type":"events","gateway_id":"%s","store_id":"%s","events":[' % (
        ENVELOPE_VERSION,
        gateway_id.encode(),
        store_id.encode(),
    )


def encode_batch(gateway_id: str, store_id: str, bodies: list[bytes]) -> bytes:
    """A batch from stored event bodies. Raises MessageTooLarge if it would not fit one message."""
    raw = _batch_head(gateway_id, store_id) + b",".join(bodies) + b"]}"
    return _frame(raw)


def _unframe(payload: bytes) -> bytes:
    if payload[:2] != _GZIP_MAGIC:
        return payload
    d = zlib.decompressobj(wbits=31)
    try:
        raw = d.decompress(payload, MAX_DECOMPRESSED_BYTES)
    except zlib.error as e:
        raise ProtocolError(f"gzip payload does not decompress: {e}") from None
    if d.unconsumed_tail:
        raise ProtocolError(f"payload inflates past {MAX_DECOMPRESSED_BYTES} bytes")
    if not d.eof:
        raise ProtocolError("gzip payload is truncated")
    return raw


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        loc = list(e["loc"])
        if loc and loc[0] in _MESSAGE_TYPES:  # the union's tag ("events"), not a field
            loc = loc[1:]
        where = ".".join(str(x) for x in loc) or "message"
        parts.append(f"{where}: {e['msg']}")
    more = err.error_count() - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def decode(payload: bytes, expect: type[M] | None = None) -> Any:
    """Decode any v1 message; with ``expect``, insist on that type. Raises ProtocolError only."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ProtocolError("payload is not bytes")
    raw = _unframe(bytes(payload))
    try:
        msg = _MESSAGE_ADAPTER.validate_json(raw)
    except ValidationError as e:
        raise ProtocolError(_describe(e)) from None
    except (ValueError, RecursionError) as e:  # pragma: no cover - defensive: pydantic wraps most
        raise ProtocolError(f"payload does not decode: {e}") from None
    if expect is not None and not isinstance(msg, expect):
        raise ProtocolError(f"expected a {expect.__name__} message, got {type(msg).__name__}")
    return msg


def salvage_ranges(payload: bytes) -> tuple[str, list[int]] | None:
    """Best effort for a batch that fails validation: its store_id and the seqs it carried, so the
    cloud can reject exactly those and the gateway can dead-letter them instead of resending forever."""
    try:
        doc = orjson.loads(_unframe(bytes(payload)))
        store_id = doc["store_id"]
        seqs = [e["seq"] for e in doc["events"]]
    except Exception:
        return None
    if not isinstance(store_id, str) or len(store_id) != 32:
        return None
    good = [s for s in seqs if isinstance(s, int) and not isinstance(s, bool) and 1 <= s < 2**63]
    return (store_id, good) if good else None
