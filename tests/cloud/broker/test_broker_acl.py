import pytest

from cloud.broker.acl import may_publish, may_receive, may_subscribe
from protocols.topics import DOWNLINK_CHANNELS, UPLINK_CHANNELS, Channel

CLOUD = "gh-cloud"

PUBLISH = [
    # (username, topic, allowed)
    ("gw-a", "gh/v1/gw-a/events", True),
    ("gw-a", "gh/v1/gw-a/alarms", True),
    ("gw-a", "gh/v1/gw-a/state", True),
    ("gw-a", "gh/v1/gw-a/cmd/result", True),
    ("gw-a", "gh/v1/gw-b/events", False),  # another gateway's channel
    ("gw-a", "gh/v1/gw-a/ack", False),  # a downlink channel
    ("gw-a", "gh/v1/gw-a/cmd", False),
    ("gw-a", "gh/v1/gw-a/config", False),
    ("gw-a", "gh/v1/gw-a/unknown", False),
    ("gw-a", "gh/v1/gw-a/events/extra", False),
    ("gw-a", "gh/v1/gw-a/cmd/", False),
    ("gw-a", "gh/v2/gw-a/events", False),
    ("gw-a", "gh/v1/+/events", False),
    ("gw-a", "gh/v1/gw-a/#", False),
    ("gw-a", "other/topic", False),
    ("gw-a", "", False),
    ("gw-a", "$SYS/broker/uptime", False),
    ("bad id", "gh/v1/bad id/events", False),
    (None, "gh/v1/gw-a/events", False),
    ("", "gh/v1/gw-a/events", False),
    (CLOUD, "gh/v1/gw-a/ack", True),
    (CLOUD, "gh/v1/gw-a/cmd", True),
    (CLOUD, "gh/v1/gw-b/config", True),
    (CLOUD, "gh/v1/gw-a/events", False),  # the cloud does not speak for a gateway
    (CLOUD, "gh/v1/gw-a/state", False),
    (CLOUD, "gh/v1/+/cmd", False),
    (CLOUD, "gh/v1/gw-a/nope", False),
]

SUBSCRIBE = [
    ("gw-a", "gh/v1/gw-a/ack", True),
    ("gw-a", "gh/v1/gw-a/cmd", True),
    ("gw-a", "gh/v1/gw-a/config", True),
    ("gw-a", "gh/v1/gw-b/ack", False),
    ("gw-a", "gh/v1/+/ack", False),
    ("gw-a", "gh/v1/gw-a/#", False),
    ("gw-a", "gh/v1/gw-a/+", False),
    ("gw-a", "gh/v1/#", False),
    ("gw-a", "#", False),
    ("gw-a", "gh/v1/gw-a/events", False),  # its own uplink: only the cloud reads it
    ("gw-a", "$share/g/gh/v1/gw-a/ack", False),
    ("gw-a", "$SYS/#", False),
    (None, "gh/v1/gw-a/ack", False),
    (CLOUD, "gh/v1/+/events", True),
    (CLOUD, "gh/v1/+/alarms", True),
    (CLOUD, "gh/v1/+/state", True),
    (CLOUD, "gh/v1/+/cmd/result", True),
    (CLOUD, "$share/ingest/gh/v1/+/events", True),
    (CLOUD, "$share/ingest/gh/v1/+/cmd/result", True),
    (CLOUD, "gh/v1/gw-a/state", True),  # one gateway's channel, e.g. a console's live view
    (CLOUD, "$share//gh/v1/+/events", False),  # empty share group
    (CLOUD, "$share/ingest", False),
    (CLOUD, "$share/in+/gh/v1/+/events", False),
    (CLOUD, "gh/v1/#", False),
    (CLOUD, "#", False),
    (CLOUD, "gh/v1/+/+", False),
    (CLOUD, "gh/v1/+/unknown", False),
    (CLOUD, "gh/v1/+/cmd/#", False),
    (CLOUD, "other/+/events", False),
    ("", "gh/v1/+/events", False),
]

RECEIVE = [
    ("gw-a", "gh/v1/gw-a/ack", True),
    ("gw-a", "gh/v1/gw-a/cmd", True),
    ("gw-a", "gh/v1/gw-b/cmd", False),
    ("gw-a", "gh/v1/gw-b/state", False),
    ("gw-a", "gh/v1/gw-a/events", False),
    (CLOUD, "gh/v1/gw-a/events", True),
    (CLOUD, "gh/v1/gw-b/cmd/result", True),
    (CLOUD, "other/topic", False),
    (None, "gh/v1/gw-a/ack", False),
]


@pytest.mark.parametrize(("username", "topic", "allowed"), PUBLISH)
def test_may_publish(username: str | None, topic: str, allowed: bool) -> None:
    assert may_publish(username, topic, CLOUD) is allowed


@pytest.mark.parametrize(("username", "topic_filter", "allowed"), SUBSCRIBE)
def test_may_subscribe(username: str | None, topic_filter: str, allowed: bool) -> None:
    assert may_subscribe(username, topic_filter, CLOUD) is allowed


@pytest.mark.parametrize(("username", "topic", "allowed"), RECEIVE)
def test_may_receive(username: str | None, topic: str, allowed: bool) -> None:
    assert may_receive(username, topic, CLOUD) is allowed


def test_every_channel_has_exactly_one_direction() -> None:
    assert UPLINK_CHANNELS | DOWNLINK_CHANNELS == set(Channel)
    for channel in Channel:
        topic = f"gh/v1/gw-a/{channel.value}"
        assert may_publish("gw-a", topic, CLOUD) is (channel in UPLINK_CHANNELS)
        assert may_subscribe("gw-a", topic, CLOUD) is (channel in DOWNLINK_CHANNELS)
        assert may_publish(CLOUD, topic, CLOUD) is (channel in DOWNLINK_CHANNELS)
        assert may_subscribe(CLOUD, f"gh/v1/+/{channel.value}", CLOUD)


def test_an_empty_cloud_username_makes_nobody_the_cloud() -> None:
    assert not may_subscribe("", "gh/v1/+/events", "")
    assert not may_publish("", "gh/v1/gw-a/cmd", "")
