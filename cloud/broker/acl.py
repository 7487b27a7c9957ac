"""Who may publish, subscribe to and receive which topic: pure functions, no I/O.

The rules (topic layout ``gh/v1/{gateway_id}/{channel}``, see ``protocols.topics``):

- a gateway (its MQTT username is its gateway id) publishes only on its own uplink channels
  (``events``, ``alarms``, ``state``, ``cmd/result``) and subscribes only to its own downlink
  channels (``ack``, ``cmd``, ``config``), by exact filter: no wildcards, no shared subscription;
- the cloud user subscribes to any channel of every gateway (``gh/v1/+/<channel>``), or of one
  gateway (``gh/v1/<id>/<channel>``), optionally as a shared subscription
  (``$share/<group>/gh/v1/+/<channel>``), and publishes on any gateway's downlink channels;
- nobody else gets anything: no anonymous user, no topic outside ``gh/v1/``, no unknown channel.

Mosquitto gets the same rules from the ACL file written by ``cloud.broker.mosquitto`` (its cloud
user is broader there: ``readwrite gh/v1/#``); the embedded broker asks these functions directly.
"""

from protocols.errors import ProtocolError
from protocols.topics import (
    DOWNLINK_CHANNELS,
    PREFIX,
    UPLINK_CHANNELS,
    Channel,
    parse_topic,
    valid_gateway_id,
)

_SHARE = "$share/"
_ALL_GATEWAYS = f"{PREFIX}/+/"


def may_publish(username: str | None, topic: str, cloud_username: str) -> bool:
    """May ``username`` publish a message on ``topic`` (a topic name, never a filter)?"""
    parsed = _parse(topic)
    if parsed is None or not username:
        return False
    gateway_id, channel = parsed
    if _is_cloud(username, cloud_username):
        return channel in DOWNLINK_CHANNELS
    return gateway_id == username and valid_gateway_id(username) and channel in UPLINK_CHANNELS


def may_subscribe(username: str | None, topic_filter: str, cloud_username: str) -> bool:
    """May ``username`` subscribe with ``topic_filter`` (which may be a shared subscription)?"""
    if not username:
        return False
    if _is_cloud(username, cloud_username):
        return _cloud_filter_ok(_strip_share(topic_filter))
    parsed = _parse(topic_filter)
    if parsed is None:
        return False
    gateway_id, channel = parsed
    return gateway_id == username and valid_gateway_id(username) and channel in DOWNLINK_CHANNELS


def may_receive(username: str | None, topic: str, cloud_username: str) -> bool:
    """May a message published on ``topic`` be delivered to ``username``?

    A second line behind ``may_subscribe``: the broker asks it for every delivery, so a
    subscription that slipped through (or a broker quirk that sends messages outside the
    client's subscriptions) still cannot hand a gateway another gateway's traffic.
    """
    parsed = _parse(topic)
    if parsed is None or not username:
        return False
    gateway_id, channel = parsed
    if _is_cloud(username, cloud_username):
        return True
    return gateway_id == username and valid_gateway_id(username) and channel in DOWNLINK_CHANNELS


def _is_cloud(username: str, cloud_username: str) -> bool:
    return bool(cloud_username) and username == cloud_username


def _parse(topic: str) -> tuple[str, Channel] | None:
    """``(gateway_id, channel)`` of a concrete topic, or None for anything else (wildcards included)."""
    if "+" in topic or "#" in topic:
        return None
    try:
        return parse_topic(topic)
    except ProtocolError:
        return None


def _strip_share(topic_filter: str) -> str | None:
    """``$share/<group>/<filter>`` -> ``<filter>``; a plain filter unchanged; a malformed share None."""
    if not topic_filter.startswith(_SHARE):
        return topic_filter
    group, sep, rest = topic_filter[len(_SHARE) :].partition("/")
    if not sep or not group or "+" in group or "#" in group:
        return None
    return rest


def _cloud_filter_ok(topic_filter: str | None) -> bool:
    if not topic_filter:
        return False
    if topic_filter.startswith(_ALL_GATEWAYS):
        rest = topic_filter[len(_ALL_GATEWAYS) :]
        return rest in {c.value for c in Channel}
    return _parse(topic_filter) is not None
