import pytest

from protocols import Channel, ProtocolError, parse_topic, topic
from protocols.events import Lane, NewEvent, lane_of
from protocols.ranges import to_ranges
from protocols.topics import subscription


def test_topic_round_trip_for_every_channel():
    for ch in Channel:
        assert parse_topic(topic("gw-7.b2", ch)) == ("gw-7.b2", ch)


@pytest.mark.parametrize(
    "bad", ["gh/v2/gw/events", "gh/v1/gw/nope", "gh/v1/+/events", "x", "gh/v1/g w/events"]
)
def test_bad_topics_raise(bad):
    with pytest.raises(ProtocolError):
        parse_topic(bad)


def test_gateway_ids_with_wildcards_are_refused():
    for bad in ("a/b", "a+", "#", "", "-lead"):
        with pytest.raises(ValueError):
            topic(bad, Channel.EVENTS)


def test_shared_subscription():
    assert subscription(Channel.EVENTS, "ingest") == "$share/ingest/gh/v1/+/events"
    assert subscription("alarms") == "gh/v1/+/alarms"


def test_lanes_by_kind_and_unknown_kinds_are_kept_not_evicted():
    assert lane_of("smoke.alarm") is Lane.LIFE_SAFETY
    assert lane_of("fire.something_new") is Lane.LIFE_SAFETY
    assert lane_of("meter.reading") is Lane.TELEMETRY
    assert lane_of("lift.trapped_passenger") is Lane.SECURITY
    assert NewEvent("access.granted", "door-1").lane is Lane.SECURITY
    with pytest.raises(ValueError):
        NewEvent("NoDots", "x")


def test_to_ranges():
    assert to_ranges([7, 1, 2, 3, 3, 9, 8]) == [(1, 3), (7, 9)]
    assert to_ranges([]) == []
