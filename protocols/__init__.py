"""The contract between gateway and cloud: topics, event kinds, envelopes and their codec.

Pure functions and data, no I/O. Both sides import this package and nothing of each other,
which is what keeps an old gateway talking to a newer cloud.
"""

from protocols.envelope import (
    ENVELOPE_VERSION,
    MAX_MESSAGE_BYTES,
    Ack,
    Command,
    CommandResult,
    EventBatch,
    EventRecord,
    GatewayState,
    Reject,
    decode,
    encode,
    encode_batch,
    encode_event,
)
from protocols.errors import ProtocolError
from protocols.events import KNOWN_KINDS, Lane, NewEvent, lane_of
from protocols.ranges import Ranges, to_ranges
from protocols.sink import EventSink
from protocols.topics import Channel, parse_topic, topic

__all__ = [
    "ENVELOPE_VERSION",
    "KNOWN_KINDS",
    "MAX_MESSAGE_BYTES",
    "Ack",
    "Channel",
    "Command",
    "CommandResult",
    "EventBatch",
    "EventRecord",
    "EventSink",
    "GatewayState",
    "Lane",
    "NewEvent",
    "ProtocolError",
    "Ranges",
    "Reject",
    "decode",
    "encode",
    "encode_batch",
    "encode_event",
    "lane_of",
    "parse_topic",
    "to_ranges",
    "topic",
]
