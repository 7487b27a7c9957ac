"""Topic names: ``gh/v1/{gateway_id}/{channel}``.

Gateway ids are globally unique, so a topic never carries a site or tenant: the cloud's registry
maps a gateway to its site. A new channel is added here, with the version that introduced it.
"""

import re
from enum import StrEnum

from protocols.errors import ProtocolError

PREFIX = "gh/v1"

# A gateway id is also its MQTT username and a topic level, so it may not contain MQTT wildcards,
# separators or anything a password or ACL file would choke on.
GATEWAY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_GATEWAY_ID = re.compile(GATEWAY_ID_PATTERN)


class Channel(StrEnum):
    """Every channel of protocol v1. Direction in the comment."""

    EVENTS = "events"  # gateway -> cloud: batches of events, lanes in priority order
    ALARMS = "alarms"  # gateway -> cloud: life-safety events, sent alone and at once
    STATE = "state"  # gateway -> cloud: retained birth/death (the death is the MQTT will)
    CMD_RESULT = "cmd/result"  # gateway -> cloud: outcome of a command
    ACK = "ack"  # cloud -> gateway: acks and rejects, sent after the cloud's commit
    CMD = "cmd"  # cloud -> gateway: typed commands
    CONFIG = "config"  # cloud -> gateway: configuration pushes


UPLINK_CHANNELS = frozenset({Channel.EVENTS, Channel.ALARMS, Channel.STATE, Channel.CMD_RESULT})
DOWNLINK_CHANNELS = frozenset({Channel.ACK, Channel.CMD, Channel.CONFIG})


def valid_gateway_id(gateway_id: str) -> bool:
    return bool(_GATEWAY_ID.match(gateway_id))


def topic(gateway_id: str, channel: Channel | str) -> str:
    if not valid_gateway_id(gateway_id):
        raise ValueError(f"invalid gateway id {gateway_id!r}: letters, digits, '.', '_' and '-' only")
    return f"{PREFIX}/{gateway_id}/{Channel(channel).value}"


def subscription(channel: Channel | str, share_group: str | None = None) -> str:
    """The cloud-side filter for one channel of every gateway, optionally as a shared subscription."""
    filt = f"{PREFIX}/+/{Channel(channel).value}"
    return f"$share/{share_group}/{filt}" if share_group else filt


def parse_topic(name: str) -> tuple[str, Channel]:
    """``gh/v1/gw-1/events`` -> ``("gw-1", Channel.EVENTS)``; anything else raises ProtocolError."""
    parts = name.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise ProtocolError(f"topic {name!r} is not under {PREFIX}/")
    gateway_id, rest = parts[2], "/".join(parts[3:])
    if not valid_gateway_id(gateway_id):
        raise ProtocolError(f"topic {name!r} names an invalid gateway id")
    try:
        return gateway_id, Channel(rest)
    except ValueError:
        raise ProtocolError(f"topic {name!r} names an unknown channel {rest!r}") from None
