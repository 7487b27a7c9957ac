"""The v1 envelope: round trips, strictness, size limits, and a decoder random bytes cannot crash."""

import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import (
    Ack,
    Command,
    CommandResult,
    EventBatch,
    GatewayState,
    ProtocolError,
    Reject,
    decode,
    encode,
    encode_batch,
    encode_event,
    to_ranges,
)
from protocols.envelope import MAX_MESSAGE_BYTES, MessageTooLarge, salvage_ranges

STORE = "0123456789abcdef0123456789abcdef"

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)

events = st.builds(
    dict,
    kind=st.sampled_from(["telemetry.point", "smoke.alarm", "access.granted", "future.thing_we_do_not_know"]),
    lane=st.integers(0, 2),
    time_ms=st.integers(-(2**40), 2**45),
    boot_id=st.text(max_size=36),
    mono_ns=st.integers(0, 2**62),
    clock_synced=st.booleans(),
    source=st.text(max_size=30),
    data=st.dictionaries(st.text(max_size=10), json_value, max_size=5),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=40), st.integers(1, 2**40))
def test_batch_round_trip(evs, first_seq):
    bodies = [encode_event(seq=first_seq + i, **e) for i, e in enumerate(evs)]
    msg = decode(encode_batch("gw-1", STORE, bodies), EventBatch)
    assert msg.gateway_id == "gw-1" and msg.store_id == STORE
    assert [e.seq for e in msg.events] == list(range(first_seq, first_seq + len(evs)))
    for got, want in zip(msg.events, evs, strict=True):
        assert got.model_dump(exclude={"seq"}) == want


@settings(max_examples=100)
@given(st.lists(st.integers(1, 2**40), min_size=1, max_size=50, unique=True), st.text(max_size=200))
def test_ack_and_reject_round_trip(seqs, reason):
    ranges = to_ranges(seqs)
    assert decode(encode(Ack(store_id=STORE, ranges=ranges))) == Ack(store_id=STORE, ranges=ranges)
    rej = Reject(store_id=STORE, ranges=ranges, reason=reason)
    assert decode(encode(rej)) == rej


def test_other_messages_round_trip():
    for m in (
        GatewayState(gateway_id="gw-1", online=True, version="0.1.0", boot_id="b", clock_synced=False),
        Command(id="c1", name="ping", args={"x": [1, 2]}),
        CommandResult(id="c1", ok=False, detail="unsupported"),
    ):
        assert decode(encode(m)) == m


@settings(max_examples=500)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_decoder(payload):
    try:
        decode(payload)
    except ProtocolError:
        pass


@settings(max_examples=200)
@given(st.binary(max_size=500))
def test_random_gzip_payloads_never_crash_the_decoder(raw):
    c = zlib.compressobj(wbits=31)
    try:
        decode(c.compress(raw) + c.flush())
    except ProtocolError:
        pass


def telemetry(seq: int, data: dict) -> bytes:
    return encode_event(
        seq=seq,
        kind="telemetry.point",
        lane=2,
        time_ms=1,
        boot_id="b",
        mono_ns=1,
        clock_synced=True,
        source="m",
        data=data,
    )


def test_large_batches_are_compressed_and_fit_one_message():
    bodies = [telemetry(i, {"value": i, "unit": "kWh"}) for i in range(1, 2001)]
    payload = encode_batch("gw-1", STORE, bodies)
    assert payload[:2] == b"\x1f\x8b" and len(payload) <= MAX_MESSAGE_BYTES
    assert len(decode(payload).events) == 2000


def test_incompressible_batch_over_the_limit_raises():
    import os

    bodies = [telemetry(i, {"blob": os.urandom(3000).hex()}) for i in range(1, 60)]
    with pytest.raises(MessageTooLarge):
        encode_batch("gw-1", STORE, bodies)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"", "Invalid JSON"),
        (b"[]", "an object"),
        (b'{"v":1,"type":"nope"}', "type"),
        (b'{"v":9,"type":"ack","store_id":"' + STORE.encode() + b'","ranges":[[1,2]]}', "version 9"),
        (b'{"v":1,"type":"ack","store_id":"' + STORE.encode() + b'","ranges":[[5,2]]}', "backwards"),
        (b'{"v":1,"type":"ack","store_id":"xyz","ranges":[[1,2]]}', "store_id"),
        (
            b'{"v":1,"type":"events","gateway_id":"gw/1","store_id":"' + STORE.encode() + b'","events":[]}',
            "gateway_id",
        ),
        (b"\x1f\x8b garbage", "gzip"),
    ],
)
def test_malformed_messages_raise_one_typed_error_saying_what(payload, needle):
    with pytest.raises(ProtocolError) as e:
        decode(payload)
    assert needle in str(e.value)


def test_duplicate_seq_in_one_batch_is_refused():
    body = telemetry(1, {})
    with pytest.raises(ProtocolError, match="twice"):
        decode(encode_batch("gw-1", STORE, [body, body]))


def test_strings_are_not_numbers():
    raw = (
        b'{"v":1,"type":"events","gateway_id":"gw-1","store_id":"'
        + STORE.encode()
        + b'","events":[{"seq":"1","kind":"a.b","lane":2,"time_ms":1,"boot_id":"","mono_ns":1,'
        b'"clock_synced":true}]}'
    )
    with pytest.raises(ProtocolError, match=r"events\.0\.seq"):
        decode(raw)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    raw = b'{"v":1,"type":"ack","store_id":"' + STORE.encode() + b'","ranges":[[1,2]],"new_field":1}'
    assert isinstance(decode(raw), Ack)


def test_decompression_bomb_is_refused():
    c = zlib.compressobj(level=9, wbits=31)
    bomb = c.compress(b"{" + b" " * (32 * 1024 * 1024)) + c.flush()
    with pytest.raises(ProtocolError, match="inflates"):
        decode(bomb)


def test_salvage_names_the_seqs_of_an_invalid_batch():
    raw = b'{"store_id":"' + STORE.encode() + b'","events":[{"seq":3},{"seq":4},{"seq":"x"}]}'
    assert salvage_ranges(raw) == (STORE, [3, 4])
    assert salvage_ranges(b"nonsense") is None
