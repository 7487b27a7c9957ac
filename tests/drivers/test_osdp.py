"""The OSDP control panel driver against libosdp's own peripheral device, over a pty."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import osdp
import pytest

from drivers.base import Online, RecordingSink
from drivers.readers.card import CardRead
from drivers.readers.config import ReaderConfig
from drivers.readers.osdp import OsdpBus, OsdpReader
from drivers.readers.wiegand import FORMATS
from drivers.sim.readers import OsdpReaderSim, PtyLine
from tests.support.waits import until

KEY = "8f4e2c1a9b7d6e5f0a1b2c3d4e5f6071"
OTHER_KEY = "00112233445566778899aabbccddeeff"


@dataclass
class Rig:
    sim: OsdpReaderSim
    bus: OsdpBus
    sink: RecordingSink
    cards: list[CardRead]

    @property
    def reader(self) -> OsdpReader:
        return self.bus.readers[0]

    def of(self, kind: str) -> list[dict[str, object]]:
        return [e.data for e in self.sink.of_kind(kind)]


@contextlib.asynccontextmanager
async def rig(pd_key: str | None, install_mode: bool = False) -> AsyncIterator[Rig]:
    sim = OsdpReaderSim(address=5, scbk=pd_key)
    sim.start()
    sink = RecordingSink()
    cards: list[CardRead] = []

    async def on_card(read: CardRead) -> None:
        cards.append(read)

    c = ReaderConfig(
        name="rdr-gate",
        door="door-gate",
        port=sim.path,
        protocol="osdp",
        baudrate=115200,
        address=5,
        scbk=KEY,
        install_mode=install_mode,
        reopen_min_s=0.05,
        reopen_max_s=0.2,
    )
    bus = OsdpBus([c], sink, on_card)
    task = asyncio.create_task(bus.run())
    try:
        yield Rig(sim, bus, sink, cards)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)  # bounded: a driver that ignores cancel fails the test
        sim.close()


@pytest.fixture
async def online() -> AsyncIterator[Rig]:
    async with rig(KEY) as r:
        await until(lambda: r.reader.liveness.online, "the reader online")
        yield r


async def test_secure_channel_comes_up_with_the_reader_key(online: Rig) -> None:
    assert online.reader.secure and online.sim.secure
    (ev,) = online.of("device.online")
    assert ev["family"] == "osdp" and ev["address"] == 5 and ev["secure"] is True
    assert online.sink.of_kind("device.online")[0].source == "rdr-gate"
    assert online.of("device.fault") == []


async def test_card_read_becomes_a_card_event(online: Rig) -> None:
    online.sim.present_card(12345, 1)
    online.sim.present_card(99, 7, "H10304")
    await until(lambda: len(online.of("reader.card")) == 2, "two card events")
    assert online.of("reader.card") == [
        {
            "reader": "rdr-gate",
            "format": "H10301",
            "bits": 26,
            "facility": 1,
            "card": "12345",
            "raw_hex": "02026073",
        },
        {
            "reader": "rdr-gate",
            "format": "H10304",
            "bits": 37,
            "facility": 7,
            "card": "99",
            "raw_hex": "10007000c7",
        },
    ]
    await until(lambda: len(online.cards) == 2, "the on_card hook")
    assert online.cards[0].door == "door-gate"


async def test_bad_parity_card_is_a_fault(online: Rig) -> None:
    good = FORMATS["H10301"].encode(12345, 1)
    online.sim.present_bits(good[:-1] + ("0" if good[-1] == "1" else "1"))
    online.sim.present_card(1, 1)
    await until(lambda: len(online.of("reader.card")) == 1, "the good card")
    faults = online.of("device.fault")
    assert [f["fault"] for f in faults] == ["bad_parity"]
    assert online.of("reader.card")[0]["card"] == "1"


async def test_grant_and_deny_reach_the_reader(online: Rig) -> None:
    online.sim.present_card(12345, 1)
    await until(lambda: len(online.cards) == 1, "a card to answer")
    assert await online.cards[0].indicate(True)
    await until(lambda: len(online.sim.leds) == 1 and len(online.sim.buzzers) == 1, "grant LED and beep")
    assert await online.reader.indicate(False)
    await until(lambda: len(online.sim.leds) == 2 and len(online.sim.buzzers) == 2, "deny LED and buzzer")
    grant_led, deny_led = online.sim.leds
    grant_beep, deny_beep = online.sim.buzzers
    assert grant_led["on_color"] == osdp.CommandLEDColor.Green and grant_led["temporary"] is True
    assert deny_led["on_color"] == osdp.CommandLEDColor.Red
    assert grant_beep["rep_count"] == 1 and deny_beep["rep_count"] == 3


async def test_tamper_and_its_clearing(online: Rig) -> None:
    online.sim.tamper(True)
    await until(lambda: len(online.of("reader.tamper")) == 1, "the tamper event")
    online.sim.tamper(False)
    await until(lambda: len(online.of("reader.tamper")) == 2, "tamper cleared")
    assert online.of("reader.tamper") == [
        {"reader": "rdr-gate", "tamper": True, "power_fail": False},
        {"reader": "rdr-gate", "tamper": False, "power_fail": False},
    ]
    assert online.sink.of_kind("reader.tamper")[0].source == "rdr-gate"


async def test_wrong_key_is_refused_and_stays_offline() -> None:
    async with rig(OTHER_KEY) as r:
        await until(lambda: bool(r.of("device.fault")), "the refusal fault")
        await until(lambda: r.reader.liveness.state is Online.OFFLINE, "offline")
        (fault,) = r.of("device.fault")
        assert fault["fault"] == "secure_channel_refused" and "address 5" in str(fault["detail"])
        assert r.of("device.online") == [] and not r.sim.secure
        assert r.of("device.offline")[0]["reason"] == "secure_channel_refused"
        r.sim.present_card(12345, 1)  # the reader holds it; the CP never takes it in the clear
        assert await r.reader.indicate(True) is False
        assert r.of("reader.card") == []


async def test_install_mode_installs_the_key_and_warns() -> None:
    async with rig(None, install_mode=True) as r:
        await until(lambda: r.reader.liveness.online, "online through install mode")
        faults = [f["fault"] for f in r.of("device.fault")]
        assert faults[0] == "install_mode_on"
        assert r.sim.scbk == bytes.fromhex(KEY)  # the reader now holds the configured key
        assert r.reader.secure
        await until(lambda: "key_installed" in [f["fault"] for f in r.of("device.fault")], "key installed")


async def test_unplugged_bus_goes_offline_and_comes_back(online: Rig) -> None:
    online.sim.unplug()
    await until(lambda: online.reader.liveness.state is Online.OFFLINE, "offline after unplug")
    assert online.of("device.offline")[0]["reason"] == "port_lost"
    online.sim.plug()
    await until(lambda: online.reader.liveness.online, "online after plug")
    online.sim.present_card(777, 2)
    await until(lambda: len(online.of("reader.card")) == 1, "a card after reopening")
    assert [e.kind for e in online.sink.events if e.kind.startswith("device.")] == [
        "device.online",
        "device.offline",
        "device.online",
    ]


async def test_a_silent_reader_is_reported_offline() -> None:
    line = PtyLine()  # a bus with nothing on it
    sink = RecordingSink()
    c = ReaderConfig(name="rdr-none", port=line.path, protocol="osdp", address=9, scbk=KEY)
    bus = OsdpBus([c], sink, answer_grace_s=0.5)
    task = asyncio.create_task(bus.run())
    try:
        await until(lambda: bool(sink.events), "an event about the silent reader")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        line.close()
    (ev,) = sink.events
    assert (ev.kind, ev.source, ev.data["reason"], ev.data["address"]) == (
        "device.offline",
        "rdr-none",
        "no_answer",
        9,
    )
