"""Wiegand formats and converter framings, and the converter driver against the simulator over a pty."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from drivers.base import Online, RecordingSink
from drivers.readers import build_readers, indicator
from drivers.readers.card import CardRead, FaultReporter
from drivers.readers.config import ReaderConfig, ReadersSection, check_readers
from drivers.readers.converter import WiegandConverterReader
from drivers.readers.wiegand import (
    DEFAULT_FORMATS,
    FORMATS,
    AsciiLineFraming,
    BadFrame,
    BadParity,
    StxEtxFraming,
    bits_from_bytes,
    bytes_from_bits,
    decode,
    formats_by_bits,
)
from drivers.sim.readers import WiegandConverterSim
from tests.support.waits import until

ALLOWED = formats_by_bits(DEFAULT_FORMATS)
# H10301, facility 1, card 12345, worked out by hand: P | 00000001 | 0011000000111001 | P, where the
# first 12 data bits hold 3 ones (even parity -> 1) and the last 12 hold 4 ones (odd parity -> 1).
H10301_1_12345 = "1" + "00000001" + "0011000000111001" + "1"


def flip(bits: str, i: int) -> str:
    return bits[:i] + ("0" if bits[i] == "1" else "1") + bits[i + 1 :]


# ---------------------------------------------------------------------------------------- formats


def test_h10301_decodes_a_known_frame() -> None:
    d = decode(H10301_1_12345, ALLOWED)
    assert (d.format, d.bits, d.facility, d.card) == ("H10301", 26, 1, 12345)
    assert d.raw_hex == "02026073"
    assert FORMATS["H10301"].encode(12345, 1) == H10301_1_12345


def test_h10304_round_trip_and_field_limits() -> None:
    bits = FORMATS["H10304"].encode(524287, 65535)  # both fields at their maximum
    d = decode(bits, ALLOWED)
    assert (d.format, d.bits, d.facility, d.card) == ("H10304", 37, 65535, 524287)
    with pytest.raises(ValueError, match="card 524288 does not fit in 19 bits"):
        FORMATS["H10304"].encode(524288, 1)


@pytest.mark.parametrize("fmt", ["H10301", "H10304"])
def test_every_single_bit_error_is_refused(fmt: str) -> None:
    good = FORMATS[fmt].encode(4242, 17)
    for i in range(len(good)):
        with pytest.raises(BadParity):
            decode(flip(good, i), ALLOWED)


def test_bad_parity_names_the_format_and_the_bit() -> None:
    with pytest.raises(BadParity, match=r"H10301: even parity at bit 0 fails"):
        decode(flip(H10301_1_12345, 0), ALLOWED)
    with pytest.raises(BadParity, match=r"H10301: odd parity at bit 25 fails"):
        decode(flip(H10301_1_12345, 25), ALLOWED)


def test_unknown_bit_count_is_raw() -> None:
    d = decode("1011" * 8, ALLOWED)  # 32 bits: no allowed format
    assert (d.format, d.bits, d.facility, d.card, d.raw_hex) == ("raw", 32, None, 0xBBBBBBBB, "bbbbbbbb")


def test_a_format_not_allowed_is_raw_too() -> None:
    d = decode(H10301_1_12345, formats_by_bits(["H10304"]))
    assert d.format == "raw" and d.card == int(H10301_1_12345, 2)


def test_formats_table_refuses_clashes_and_unknowns() -> None:
    with pytest.raises(ValueError, match="H10304 and H10302 both have 37 bits"):
        formats_by_bits(["H10304", "H10302"])
    with pytest.raises(ValueError, match="unknown card format 'H99999'"):
        formats_by_bits(["H99999"])
    d = decode(FORMATS["H10302"].encode(12_345_678_901), formats_by_bits(["H10302"]))
    assert (d.facility, d.card) == (None, 12_345_678_901)


def test_bits_bytes_round_trip() -> None:
    assert bytes_from_bits(H10301_1_12345) == bytes([0x80, 0x98, 0x1C, 0xC0])
    assert bits_from_bytes(bytes_from_bits(H10301_1_12345), 26) == H10301_1_12345


# ---------------------------------------------------------------------------------------- framings


def test_ascii_frames_garbage_and_split_reads() -> None:
    f = AsciiLineFraming()
    card = f.encode(H10301_1_12345)
    assert card == b"W26:" + H10301_1_12345.encode() + b"\r\n"
    stream = b"\x00\xffnoise" + card + b"Wx" + card + b"W26" + b"zz\n" + card
    got: list[object] = []
    for i in range(len(stream)):  # one byte per read: every split point
        got += f.feed(stream[i : i + 1])
    assert got == [H10301_1_12345, H10301_1_12345, H10301_1_12345]
    # noise: 7 leading bytes, "Wx" (2), and "W26zz\n" (6, no ':' so no header)
    assert f.garbage_bytes == 7 + 2 + 6


def test_ascii_bad_frames() -> None:
    f = AsciiLineFraming()
    good = f.encode(H10301_1_12345)
    out = f.feed(b"W26:0101\r\n" + b"W26:01012\r\n" + b"W26:0101" + good)
    assert isinstance(out[0], BadFrame) and "says 26 bits, carries 4" in out[0].reason
    assert isinstance(out[1], BadFrame) and "not a 0/1" in out[1].reason
    # a frame cut short by the next one loses only itself
    assert isinstance(out[2], BadFrame)
    assert out[3:] == [H10301_1_12345]


def test_ascii_line_without_end_is_bounded() -> None:
    f = AsciiLineFraming()
    out = f.feed(b"W26:" + b"0" * 400)
    assert len(out) == 1 and isinstance(out[0], BadFrame) and out[0].reason == "no end of line"
    assert f.feed(f.encode(H10301_1_12345)) == [H10301_1_12345]


def test_stx_frames_garbage_and_split_reads() -> None:
    f = StxEtxFraming()
    card = f.encode(H10301_1_12345)
    assert card == b"\x021A0202607309\x03"  # count 0x1A, data 02026073, 1A^02^02^60^73 = 09
    stream = b"junk\x03" + card + b"\xff\xfe" + card.lower() + card
    got: list[object] = []
    for i in range(0, len(stream), 3):
        got += f.feed(stream[i : i + 3])
    assert got == [H10301_1_12345] * 3
    assert f.garbage_bytes == 5 + 2


def test_stx_bad_frames() -> None:
    f = StxEtxFraming()
    good = f.encode(H10301_1_12345)
    bad_cc = good[:-3] + b"08" + good[-1:]
    out = f.feed(bad_cc + b"\x021A02" + good + b"\x02ZZ0000\x03" + b"\x02" + b"0" * 80)
    assert isinstance(out[0], BadFrame) and out[0].reason == "checksum 08, computed 09"
    assert isinstance(out[1], BadFrame) and "cut short" in out[1].reason
    assert out[2] == H10301_1_12345
    assert isinstance(out[3], BadFrame) and "hex" in out[3].reason
    assert isinstance(out[4], BadFrame) and out[4].reason == "no ETX"
    bits_beyond = b"\x02" + b"0482" + b"86" + b"\x03"  # 4 bits said, 0x82 has bit 7 set
    assert isinstance(f.feed(bits_beyond)[0], BadFrame)


# ---------------------------------------------------------------------------------------- config


def cfg(**kw: object) -> ReaderConfig:
    base: dict[str, object] = {"name": "rdr-1", "port": "/dev/ttyUSB0", "protocol": "wiegand-ascii"}
    base.update(kw)
    return ReaderConfig.model_validate(base)


def test_config_errors_name_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="protocol osdp needs scbk"):
        cfg(protocol="osdp", address=1)
    with pytest.raises(ValidationError, match="32 hex digits"):
        cfg(protocol="osdp", address=1, scbk="abc")
    with pytest.raises(ValidationError, match="public default key"):
        cfg(protocol="osdp", address=1, scbk="303132333435363738393a3b3c3d3e3f")
    with pytest.raises(ValidationError, match="scbk apply to protocol osdp only"):
        cfg(scbk="00112233445566778899aabbccddeeff")
    with pytest.raises(ValidationError, match="unknown card format"):
        cfg(formats=["H10301", "nope"])
    with pytest.raises(ValidationError, match="baud"):
        cfg(baudrate=1234)
    with pytest.raises(ValidationError, match="Extra inputs"):
        cfg(colour="red")


def test_readers_across_the_list() -> None:
    a = cfg(name="a", protocol="osdp", address=1, scbk="00" * 16)
    b = cfg(name="b", protocol="osdp", address=1, scbk="11" * 16)
    with pytest.raises(ValueError, match="a and b on /dev/ttyUSB0 both have address 1"):
        check_readers([a, b])
    with pytest.raises(ValueError, match="only OSDP readers can share a bus"):
        check_readers([a, cfg(name="w")])
    with pytest.raises(ValueError, match="name 'a' is used twice"):
        check_readers([a, cfg(name="a", port="/dev/ttyUSB1")])
    section = ReadersSection.model_validate(
        {"readers": [a.model_dump(), {**b.model_dump(), "address": 2}, cfg(port="/dev/ttyS1").model_dump()]}
    )
    drivers = build_readers(section.readers, RecordingSink())
    assert sorted(type(d).__name__ for d in drivers) == ["OsdpBus", "WiegandConverterReader"]
    assert callable(indicator(drivers, "b")) and callable(indicator(drivers, "rdr-1"))
    with pytest.raises(KeyError, match="no reader 'zz'"):
        indicator(drivers, "zz")


async def test_faults_are_rate_limited_but_counted() -> None:
    sink = RecordingSink()
    f = FaultReporter(sink, "rdr", "wiegand", interval_s=3600)
    assert await f.report("bad_frame", "one")
    assert not await f.report("bad_frame", "two")
    assert await f.report("bad_parity", "other kind")
    assert f.counts == {"bad_frame": 2, "bad_parity": 1}
    assert [e.data["fault"] for e in sink.events] == ["bad_frame", "bad_parity"]


# ---------------------------------------------------------------------------------------- over a pty


@dataclass
class Rig:
    sim: WiegandConverterSim
    reader: WiegandConverterReader
    sink: RecordingSink
    cards: list[CardRead]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.sink.events]

    def card_events(self) -> list[dict[str, object]]:
        return [e.data for e in self.sink.of_kind("reader.card")]


@pytest.fixture(params=["wiegand-ascii", "wiegand-stx"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    sim = WiegandConverterSim(request.param)
    sink = RecordingSink()
    cards: list[CardRead] = []

    async def on_card(read: CardRead) -> None:
        cards.append(read)

    c = ReaderConfig(
        name="rdr-lobby",
        door="door-lobby",
        port=sim.path,
        protocol=request.param,
        reopen_min_s=0.02,
        reopen_max_s=0.1,
    )
    reader = WiegandConverterReader(c, sink, on_card)
    task = asyncio.create_task(reader.run())
    try:
        await until(lambda: reader.liveness.online, "the reader to open its port")
        yield Rig(sim, reader, sink, cards)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)  # bounded: a driver that ignores cancel fails the test
        sim.close()


async def test_good_frames_become_card_events(rig: Rig) -> None:
    rig.sim.present_card(12345, 1)
    rig.sim.present_card(99, 7, "H10304")
    await until(lambda: len(rig.card_events()) == 2, "two card events")
    assert rig.card_events() == [
        {
            "reader": "rdr-lobby",
            "format": "H10301",
            "bits": 26,
            "facility": 1,
            "card": "12345",
            "raw_hex": "02026073",
        },
        {
            "reader": "rdr-lobby",
            "format": "H10304",
            "bits": 37,
            "facility": 7,
            "card": "99",
            "raw_hex": "10007000c7",
        },
    ]
    ev = rig.sink.of_kind("reader.card")[0]
    assert ev.source == "rdr-lobby" and ev.time_ms is not None
    await until(lambda: len(rig.cards) == 2, "the on_card hook")
    assert rig.cards[0].door == "door-lobby"
    assert await rig.cards[0].indicate(True) is False  # a converter has no line back to the reader


async def test_bad_parity_is_a_fault_never_a_card(rig: Rig) -> None:
    rig.sim.send_bad_parity(12345, 1)
    rig.sim.present_card(1, 1)
    await until(lambda: len(rig.card_events()) == 1, "the good card after the bad one")
    faults = rig.sink.of_kind("device.fault")
    assert [f.data["fault"] for f in faults] == ["bad_parity"]
    assert faults[0].source == "rdr-lobby" and "H10301: odd parity at bit 25" in faults[0].data["detail"]
    assert rig.card_events()[0]["card"] == "1"
    assert rig.reader.stats.bad_parity == 1 and rig.reader.stats.cards == 1


async def test_garbage_is_skipped_and_counted(rig: Rig) -> None:
    noise = rig.sim.send_garbage(64)
    rig.sim.present_card(4242, 3)
    rig.sim.send_garbage(10, seed=3)
    rig.sim.present_card(4243, 3)
    await until(lambda: len(rig.card_events()) == 2, "both cards through the noise")
    await until(lambda: rig.reader.garbage_bytes == len(noise) + 10, "the noise to be counted")
    assert "device.fault" not in rig.kinds()


async def test_malformed_frame_is_a_bad_frame_fault(rig: Rig) -> None:
    if rig.sim.framing.name == "wiegand-stx":
        rig.sim.send_bad_checksum(12345, 1)
        expect = "checksum"
    else:
        rig.sim.send_raw(b"W26:0101\r\n")
        expect = "says 26 bits, carries 4"
    rig.sim.present_card(5, 5)
    await until(lambda: len(rig.card_events()) == 1, "the good card after the bad frame")
    (fault,) = rig.sink.of_kind("device.fault")
    assert fault.data["fault"] == "bad_frame" and expect in fault.data["detail"]


async def test_unplugged_port_goes_offline_and_comes_back(rig: Rig) -> None:
    rig.sim.unplug()
    await until(lambda: rig.reader.liveness.state is Online.OFFLINE, "offline after the unplug")
    rig.sim.plug()
    await until(lambda: rig.reader.liveness.online, "online after the plug")
    rig.sim.present_card(777, 2)
    await until(lambda: len(rig.card_events()) == 1, "a card after reopening")
    assert rig.kinds() == ["device.online", "device.offline", "device.online", "reader.card"]
    offline = rig.sink.of_kind("device.offline")[0]
    assert offline.data["reason"] == "port_lost" and offline.data["family"] == "wiegand"
    assert rig.reader.stats.opens == 2


async def test_missing_port_is_offline_with_the_reason() -> None:
    sink = RecordingSink()
    c = ReaderConfig(
        name="rdr-x", port="/nonexistent/tty", protocol="wiegand-stx", reopen_min_s=0.01, reopen_max_s=0.02
    )
    reader = WiegandConverterReader(c, sink)
    task = asyncio.create_task(reader.run())
    try:
        await until(lambda: bool(sink.of_kind("device.offline")), "the offline event")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)  # bounded: a driver that ignores cancel fails the test
    (ev,) = sink.of_kind("device.offline")
    assert ev.data["reason"] == "open_failed" and "/nonexistent/tty" in ev.data["detail"]
