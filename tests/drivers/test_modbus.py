"""The Modbus driver against the simulator over real sockets (and a pty pair for RTU).

Deterministic by construction: every wait is a bounded wait on a condition (``until``), and no
assertion is about how long something took.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from drivers.base import FireSystemWriteRefused, RecordingSink
from drivers.modbus import (
    ModbusDeviceConfig,
    ModbusDriver,
    PollRecord,
    WriteRefused,
    inter_frame_delay_s,
)
from drivers.sim.modbus_server import (
    ModbusSim,
    RtuSimBus,
    SimModbusDevice,
    SimPoint,
    bench_points,
    chiller,
    energy_meter,
    io_module,
)
from protocols.configuration import ConfigError, parse_config
from protocols.events import NewEvent
from tests.support.waits import until

FAST = {"timeout_s": 0.25, "retries": 1, "backoff_min_s": 0.05, "backoff_max_s": 0.2}


def device_cfg(dev: SimModbusDevice, points: Iterable[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "name": dev.name,
        "host": dev.host,
        "port": dev.port,
        "unit": dev.unit,
        "points": list(points),
        **kw,
    }


def point(p: SimPoint, **kw: Any) -> dict[str, Any]:
    return p.config(**kw)


@asynccontextmanager
async def running(
    cfgs: list[dict[str, Any]], observer: Callable[[PollRecord], None] | None = None
) -> AsyncIterator[tuple[ModbusDriver, RecordingSink]]:
    sink = RecordingSink()
    drv = ModbusDriver.from_config(cfgs, sink, observer=observer)
    task = asyncio.create_task(drv.run())
    try:
        yield drv, sink
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def readings(sink: RecordingSink, source: str | None = None) -> list[NewEvent]:
    return [e for e in sink.of_kind("telemetry.point") if source is None or e.source == source]


def latest(sink: RecordingSink, source: str) -> Any:
    rs = readings(sink, source)
    return rs[-1].data["value"] if rs else None


def f32(x: float) -> float:
    """``x`` as a float32 holds it."""
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


# ---------------------------------------------------------------------------- values


ORDERS = [("big", "big"), ("little", "big"), ("big", "little"), ("little", "little")]
TYPED_VALUES = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123_456_789,
    "uint32": 3_987_654_321,
    "float32": f32(-1234.5678),
}


async def test_every_type_and_word_and_byte_order_reads_correctly() -> None:
    pts: list[SimPoint] = []
    addr = 0
    for typ, value in TYPED_VALUES.items():
        for wo, bo in ORDERS:
            pts.append(SimPoint(f"{typ}_{wo}_{bo}", "holding_register", addr, typ, value, wo, bo))  # type: ignore[arg-type]
            addr += 2
    pts.append(SimPoint("scaled", "input_register", 0, "int16", -21.5, scale=0.1))
    pts.append(SimPoint("coil_on", "coil", 3, "bool", True))
    pts.append(SimPoint("coil_off", "coil", 4, "bool", False))
    pts.append(SimPoint("input_on", "discrete_input", 7, "bool", True))
    dev = SimModbusDevice("types", pts)
    async with ModbusSim([dev]):
        cfg = device_cfg(dev, [point(p) for p in pts], **FAST)
        # the same register with an offset, to show value = raw * scale + offset
        cfg["points"].append(
            {
                "name": "offset",
                "table": "input_register",
                "address": 0,
                "type": "int16",
                "scale": 0.1,
                "offset": 100.0,
            }
        )
        async with running([cfg]) as (_, sink):
            await until(lambda: len(readings(sink)) == len(pts) + 1, what="every point read")
            for typ, value in TYPED_VALUES.items():
                for wo, bo in ORDERS:
                    assert latest(sink, f"types/{typ}_{wo}_{bo}") == value, (typ, wo, bo)
            assert latest(sink, "types/scaled") == pytest.approx(-21.5)
            assert latest(sink, "types/offset") == pytest.approx(78.5)
            assert latest(sink, "types/coil_on") is True
            assert latest(sink, "types/coil_off") is False
            assert latest(sink, "types/input_on") is True
            # integers stay integers; the unit and quality travel with the value
            assert isinstance(latest(sink, "types/uint32_big_big"), int)
            ev = readings(sink, "types/float32_big_big")[0]
            assert ev.data["quality"] == "good" and ev.time_ms is not None


async def test_meter_counter_rolls_over_and_a_broken_meter_is_a_fault() -> None:
    meter = energy_meter("meter-1")
    async with ModbusSim([meter]):
        cfg = device_cfg(
            meter,
            [
                {
                    "name": "energy_total",
                    "table": "input_register",
                    "address": 0,
                    "type": "float32",
                    "poll_ms": 50,
                },
                {
                    "name": "energy_counter",
                    "table": "input_register",
                    "address": 2,
                    "type": "uint32",
                    "poll_ms": 50,
                },
                {"name": "meter_ok", "table": "discrete_input", "address": 0, "poll_ms": 50},
            ],
            **FAST,
        )
        async with running([cfg]) as (_, sink):
            await until(lambda: latest(sink, "meter-1/energy_counter") == 2**32 - 5000)
            await meter.tick(3600)  # an hour at 18 kW: 18,000 Wh more, past the register's top
            await until(lambda: latest(sink, "meter-1/energy_counter") == 13_000, what="rollover read")
            assert latest(sink, "meter-1/energy_total") == pytest.approx(12_345.5 + 18.0)
            await meter.break_meter()
            await until(lambda: latest(sink, "meter-1/meter_ok") is False)
            await until(lambda: any(e.data["fault"] == "bad_value" for e in sink.of_kind("device.fault")))
            (fault,) = [e for e in sink.of_kind("device.fault") if e.data["fault"] == "bad_value"]
            assert fault.source == "meter-1/energy_total" and "nan" in fault.data["detail"]
            # a NaN is never reported as a value
            assert all(
                not (isinstance(e.data["value"], float) and math.isnan(e.data["value"]))
                for e in readings(sink)
            )


# ---------------------------------------------------------------------------- block planning


async def test_block_planning_request_count_on_the_simulator() -> None:
    pts = bench_points(100)
    dev = SimModbusDevice("planned", pts)
    polls: list[PollRecord] = []
    async with ModbusSim([dev]):
        # A long period: exactly one poll happens during the test.
        cfg = device_cfg(dev, [point(p, poll_ms=600_000) for p in pts], **FAST)
        async with running([cfg], polls.append) as (drv, sink):
            await until(lambda: len(polls) == 1, what="one poll")
            assert len(readings(sink)) == 100
            # one request per table, counted by the device itself: 4 requests for 100 points
            assert {fc: dev.requests(fc) for fc in (1, 2, 3, 4)} == {1: 1, 2: 1, 3: 1, 4: 1}
            assert drv.device("planned").requests_per_poll == 4
            assert drv.counters.requests == 4


async def test_device_limit_is_respected() -> None:
    pts = [SimPoint(f"r{i}", "holding_register", i, "uint16", i) for i in range(40)]
    dev = SimModbusDevice("small", pts)
    polls: list[PollRecord] = []
    async with ModbusSim([dev]):
        cfg = device_cfg(dev, [point(p, poll_ms=600_000) for p in pts], max_registers=16, **FAST)
        async with running([cfg], polls.append) as (_, sink):
            await until(lambda: len(polls) == 1)
            assert dev.requests(3) == 3  # 16 + 16 + 8
            assert [latest(sink, f"small/r{i}") for i in range(40)] == list(range(40))


# ---------------------------------------------------------------------------- faults


async def test_exception_reply_is_retried_then_offline_then_back() -> None:
    dev = chiller("chiller-1")
    async with ModbusSim([dev]):
        cfg = device_cfg(
            dev,
            [
                {
                    "name": "chw_supply_temp",
                    "table": "input_register",
                    "address": 0,
                    "type": "int16",
                    "scale": 0.1,
                    "poll_ms": 50,
                }
            ],
            **FAST,
        )
        async with running([cfg]) as (drv, sink):
            await until(lambda: len(sink.of_kind("device.online")) == 1)
            before = dev.requests(4)
            dev.answer_with(6)  # server device busy
            await until(lambda: len(sink.of_kind("device.offline")) == 1, what="offline")
            off = sink.of_kind("device.offline")[0]
            assert off.source == "chiller-1" and off.data["reason"] == "exception 0x06 (server device busy)"
            assert off.data["stale"] == ["chw_supply_temp"]  # its last value is stale from now on
            assert any(e.data["fault"] == "exception" for e in sink.of_kind("device.fault"))
            # the failing read was tried retries + 1 = 2 times before the device was given up
            assert dev.requests(4) - before >= 2
            assert drv.device("chiller-1").counters.exceptions >= 2
            dev.recover()
            await until(lambda: len(sink.of_kind("device.online")) == 2, what="back online")
            # after its return the value is reported afresh (it did not change), read after the
            # device went offline: a read time is when the request went out, so it may precede
            # the online event by the reply's round trip, never the outage
            after = sink.events.index(sink.of_kind("device.online")[1])
            await until(
                lambda: any(e.kind == "telemetry.point" for e in sink.events[after:]), what="a fresh reading"
            )
            fresh = next(e for e in sink.events[after:] if e.kind == "telemetry.point")
            assert fresh.time_ms is not None and off.time_ms is not None
            assert fresh.time_ms >= off.time_ms


async def test_illegal_address_faults_the_block_not_the_device() -> None:
    dev = io_module("io-1")
    async with ModbusSim([dev]):
        cfg = device_cfg(
            dev,
            [
                {"name": "door_1", "table": "discrete_input", "address": 0, "poll_ms": 50},
                {"name": "missing", "table": "holding_register", "address": 5000, "poll_ms": 50},
            ],
            **FAST,
        )
        async with running([cfg]) as (drv, sink):
            await until(lambda: len(sink.of_kind("device.fault")) == 1, what="fault")
            (fault,) = sink.of_kind("device.fault")
            assert fault.data["fault"] == "unreadable" and "missing" in fault.data["detail"]
            assert "0x02" in fault.data["detail"]
            polls = drv.device("io-1").counters.polls
            await until(lambda: drv.device("io-1").counters.polls >= polls + 3)
            # raised once, not once per poll; the device stays online and its other points are read
            assert len(sink.of_kind("device.fault")) == 1
            assert sink.of_kind("device.offline") == []
            assert latest(sink, "io-1/door_1") is False
            await dev.open_door(1)
            await until(lambda: latest(sink, "io-1/door_1") is True)


async def test_timeout_takes_device_offline_and_it_comes_back() -> None:
    dev = io_module("io-2")
    async with ModbusSim([dev]):
        cfg = device_cfg(
            dev, [{"name": "smoke_1", "table": "discrete_input", "address": 16, "poll_ms": 50}], **FAST
        )
        async with running([cfg]) as (drv, sink):
            await until(lambda: latest(sink, "io-2/smoke_1") is False)
            dev.fail()
            await until(lambda: len(sink.of_kind("device.offline")) == 1, what="offline")
            assert sink.of_kind("device.offline")[0].data["reason"] == "timeout"
            assert drv.device("io-2").counters.timeouts >= 2  # retried before giving up
            assert drv.status()["devices"]["io-2"]["state"] == "offline"
            # while it is offline it is probed (with backoff), and the smoke it raises meanwhile
            # is reported once it answers again
            await dev.raise_smoke(1)
            dev.recover()
            await until(lambda: len(sink.of_kind("device.online")) == 2, what="back online")
            await until(lambda: latest(sink, "io-2/smoke_1") is True)
            kinds = [e.kind for e in sink.events]
            assert kinds.index("device.offline") < len(kinds) - 1 - kinds[::-1].index("device.online")


async def test_a_dead_device_does_not_delay_healthy_ones() -> None:
    healthy = io_module("healthy")
    dead = [io_module(f"dead-{i}") for i in range(3)]
    for d in dead:
        d.fail()
    async with ModbusSim([healthy, *dead]):
        slow = {**FAST, "timeout_s": 1.5}
        cfgs = [
            device_cfg(
                healthy, [{"name": "door_1", "table": "discrete_input", "address": 0, "poll_ms": 20}], **slow
            )
        ]
        cfgs += [
            device_cfg(
                d, [{"name": "door_1", "table": "discrete_input", "address": 0, "poll_ms": 20}], **slow
            )
            for d in dead
        ]
        async with running(cfgs) as (drv, sink):
            h = drv.device("healthy")
            # From the moment the dead devices have a request outstanding to the moment the first
            # of them times out, the healthy device keeps polling on its own period.
            await until(lambda: all(d.requests() >= 1 for d in dead), what="dead devices asked")
            polls_at_first_request = h.counters.polls
            await until(lambda: any(drv.device(d.name).counters.timeouts for d in dead), what="a timeout")
            assert h.counters.polls - polls_at_first_request >= 5
            await until(lambda: len(sink.of_kind("device.offline")) == 3, what="dead devices offline")
            # and it still answers for its own changes while the dead ones are probed
            await healthy.open_door(1)
            await until(lambda: latest(sink, "healthy/door_1") is True)
            assert h.liveness.online and h.counters.timeouts == 0


# ---------------------------------------------------------------------------- reporting


async def test_deadband_and_heartbeat() -> None:
    pts = [
        SimPoint("temp", "input_register", 0, "int16", 20.0, scale=0.1),
        SimPoint("steady", "input_register", 1, "uint16", 7),
    ]
    dev = SimModbusDevice("ahu", pts)
    async with ModbusSim([dev]):
        cfg = device_cfg(
            dev,
            [
                point(pts[0], poll_ms=20, deadband=0.5, heartbeat_s=0),
                point(pts[1], poll_ms=20, heartbeat_s=0.2),
            ],
            **FAST,
        )
        async with running([cfg]) as (drv, sink):
            d = drv.device("ahu")
            await until(lambda: latest(sink, "ahu/temp") == pytest.approx(20.0))

            async def settle() -> None:  # at least two full polls since the last change
                n = d.counters.polls
                await until(lambda: d.counters.polls >= n + 2)

            await dev.set("temp", 20.4)  # within the deadband: not reported
            await settle()
            assert len(readings(sink, "ahu/temp")) == 1
            await dev.set("temp", 20.6)  # 0.6 from the last *reported* 20.0: reported
            await until(lambda: len(readings(sink, "ahu/temp")) == 2)
            assert latest(sink, "ahu/temp") == pytest.approx(20.6)
            await dev.set("temp", 20.2)  # 0.4 from 20.6: not reported
            await settle()
            assert len(readings(sink, "ahu/temp")) == 2
            # the steady point is reported again by its heartbeat, each time as a new reading
            await until(lambda: len(readings(sink, "ahu/steady")) >= 3, what="heartbeats")
            beats = readings(sink, "ahu/steady")
            assert [e.data["value"] for e in beats] == [7] * len(beats)
            times = [e.time_ms for e in beats]
            assert times == sorted(set(times))  # type: ignore[type-var]
            assert d.counters.heartbeats >= 2


async def test_no_reading_is_sent_twice_or_with_another_readings_time() -> None:
    pts = bench_points(40)
    dev = SimModbusDevice("churn", pts, churn=True, record_serves=True)
    async with ModbusSim([dev]):
        cfg = device_cfg(dev, [point(p, poll_ms=20, heartbeat_s=0) for p in pts], **FAST)
        async with running([cfg]) as (drv, sink):
            await until(lambda: drv.device("churn").counters.polls >= 20, what="20 polls")
        served = dict(dev.serves)
        by_point: dict[str, list[NewEvent]] = {}
        for e in readings(sink):
            by_point.setdefault(e.source, []).append(e)
        assert len(by_point) == 40
        for source, evs in by_point.items():
            times = [e.time_ms for e in evs]
            assert times == sorted(set(times)), source  # type: ignore[type-var]
            values = [e.data["value"] for e in evs]
            if isinstance(values[0], bool):
                assert all(a != b for a, b in itertools.pairwise(values)), source
                continue
            assert values == sorted(set(values)), source  # every value new, none repeated
            for e in evs:
                # the value is the generation the device served; its time is when it was read:
                # the request went out, then the device served it, within the poll period
                assert e.time_ms is not None
                assert 0 <= served[int(e.data["value"])] - e.time_ms < 1000


async def test_an_overrunning_poll_is_skipped_and_counted_not_queued() -> None:
    pts = [SimPoint("v", "holding_register", 0, "uint16", 1)]
    dev = SimModbusDevice("slow", pts, churn=True, record_serves=True)
    dev.slow_down(0.12)  # every answer takes longer than the 50 ms period
    async with ModbusSim([dev]):
        cfg = device_cfg(dev, [point(pts[0], poll_ms=50, heartbeat_s=0)], timeout_s=1.0, retries=0)
        async with running([cfg]) as (drv, sink):
            d = drv.device("slow")
            await until(lambda: d.counters.polls >= 6 and d.counters.overruns >= 6, what="overruns")
        assert dev.max_in_flight == 1  # never a second request while one is outstanding
        assert dev.requests(3) == d.counters.requests == d.counters.polls  # no queued catch-up polls
        values = [e.data["value"] for e in readings(sink)]
        assert values == sorted(set(values))  # each reading once, in order
        assert len({e.time_ms for e in readings(sink)}) == len(values)


# ---------------------------------------------------------------------------- writes


async def test_writes_and_the_fire_system_refusal() -> None:
    io = io_module("io-3")
    plant = chiller("ch-2")
    async with ModbusSim([io, plant]):
        cfgs = [
            device_cfg(
                io,
                [
                    {"name": "lock_1", "table": "coil", "address": 0, "writable": True},
                    {"name": "smoke_1", "table": "discrete_input", "address": 16, "fire_system": True},
                    # a fire damper relay on a coil: readable, never writable
                    {"name": "damper", "table": "coil", "address": 3, "fire_system": True},
                    {"name": "lock_2", "table": "coil", "address": 1},
                ],
                **FAST,
            ),
            device_cfg(
                plant,
                [
                    {
                        "name": "setpoint",
                        "table": "holding_register",
                        "address": 0,
                        "type": "int16",
                        "scale": 0.1,
                        "writable": True,
                    }
                ],
                **FAST,
            ),
        ]
        async with running(cfgs) as (drv, sink):
            await until(lambda: len(sink.of_kind("device.online")) == 2)
            before = io.counters[5] + io.counters[15]
            with pytest.raises(FireSystemWriteRefused):
                await drv.write("io-3/damper", True)
            with pytest.raises(FireSystemWriteRefused):
                await drv.write("io-3/smoke_1", False)
            with pytest.raises(WriteRefused):
                await drv.write("io-3/lock_2", False)
            assert io.counters[5] + io.counters[15] == before  # nothing went on the wire
            assert drv.device("io-3").counters.writes_refused == 3
            await drv.write("io-3/lock_1", False)
            assert await _coil(io, "lock_1") is False
            await drv.write("ch-2/setpoint", 5.5)
            await until(
                lambda: latest(sink, "ch-2/setpoint") == pytest.approx(5.5), what="setpoint read back"
            )
            with pytest.raises(ValueError, match="range"):
                await drv.write("ch-2/setpoint", 4000.0)


async def _coil(dev: SimModbusDevice, name: str) -> bool:
    assert dev.server is not None
    p = dev.points[name]
    dev._internal = True
    try:
        (v,) = await dev.server.async_getValues(dev.unit, 1, p.address, 1)
    finally:
        dev._internal = False
    return bool(v)


# ---------------------------------------------------------------------------- config


class _Gateway(BaseModel):
    model_config = ConfigDict(extra="forbid")
    modbus: list[ModbusDeviceConfig]


EXAMPLE = """
[[modbus]]
name = "meter-b1"
host = "127.0.0.1"
port = 5020
unit = 1
[[modbus.points]]
name = "energy_total"
table = "holding_register"
address = 0
type = "float32"
unit = "kWh"
poll_ms = 1000
deadband = 0.1
"""


def test_the_gateway_toml_shape_parses() -> None:
    cfg = parse_config(EXAMPLE, _Gateway, "gateway.toml")
    (dev,) = cfg.modbus
    assert (dev.transport, dev.host, dev.port, dev.unit) == ("tcp", "127.0.0.1", 5020, 1)
    (p,) = dev.points
    assert (p.type, p.unit, p.poll_ms, p.deadband, p.fire_system, p.writable) == (
        "float32",
        "kWh",
        1000,
        0.1,
        False,
        False,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("unit = 1", "unit = 1\ntimeout = 3"), "modbus.0.timeout: unknown key"),
        (('type = "float32"', 'type = "float64"'), "modbus.0.points.0.type: Input should be"),
        (('host = "127.0.0.1"', 'host = ""'), "host: required for transport = 'tcp'"),
        (('table = "holding_register"', 'table = "coil"'), "type: a coil holds one bit"),
        (("deadband = 0.1", "deadband = 0.1\nfire_system = true\nwritable = true"), "never writable"),
        (("deadband = 0.1", "deadband = 0.1\nwritable = true\n"), None),
        (("address = 0", "address = 65535"), "runs past register 65535"),
        (("port = 5020", "port = 5020\nmax_registers = 126"), "modbus.0.max_registers"),
        (('table = "holding_register"', 'table = "input_register"\nwritable = true'), "cannot be written"),
    ],
)
def test_bad_config_names_the_key(change: tuple[str, str], message: str | None) -> None:
    text = EXAMPLE.replace(*change, 1)
    if message is None:
        parse_config(text, _Gateway, "gateway.toml")
        return
    with pytest.raises(ConfigError) as err:
        parse_config(text, _Gateway, "gateway.toml")
    assert message in str(err.value)


def test_rtu_config_and_inter_frame_delay() -> None:
    with pytest.raises(ValueError, match="serial_port: required"):
        ModbusDeviceConfig.model_validate(
            {"name": "x", "transport": "rtu", "points": [{"name": "a", "table": "coil", "address": 0}]}
        )
    assert inter_frame_delay_s(9600, 8, "E", 1) == pytest.approx(3.5 * 11 / 9600)  # ~4.01 ms
    assert inter_frame_delay_s(19200, 8, "N", 2) == pytest.approx(3.5 * 11 / 19200)
    assert inter_frame_delay_s(38400) == pytest.approx(0.00175)
    assert inter_frame_delay_s(115200) == pytest.approx(0.00175)


def test_two_devices_on_one_bus_must_agree_on_its_settings() -> None:
    base = {
        "transport": "rtu",
        "serial_port": "/dev/ttyX",
        "points": [{"name": "a", "table": "coil", "address": 0}],
    }
    a = ModbusDeviceConfig.model_validate({**base, "name": "a", "unit": 1})
    b = ModbusDeviceConfig.model_validate({**base, "name": "b", "unit": 2, "baudrate": 19200})
    with pytest.raises(ValueError, match="already set"):
        ModbusDriver([a, b], RecordingSink())
    c = ModbusDeviceConfig.model_validate({**base, "name": "c", "unit": 1})
    with pytest.raises(ValueError, match="one unit id"):
        ModbusDriver([a, c], RecordingSink())


# ---------------------------------------------------------------------------- RTU


async def test_rtu_bus_over_a_pty_pair() -> None:
    meter = energy_meter("rtu-meter", unit=1)
    io = io_module("rtu-io", unit=2)
    bus = RtuSimBus([meter, io], baudrate=19200, parity="N", stopbits=2)
    await bus.start()
    try:
        common = {
            "transport": "rtu",
            "serial_port": bus.client_port,
            "baudrate": 19200,
            "parity": "N",
            "stopbits": 2,
            **FAST,
        }
        cfgs = [
            {
                "name": "rtu-meter",
                "unit": 1,
                **common,
                "points": [
                    {
                        "name": "energy_counter",
                        "table": "input_register",
                        "address": 2,
                        "type": "uint32",
                        "poll_ms": 30,
                    },
                    {"name": "voltage", "table": "input_register", "address": 6, "scale": 0.1, "poll_ms": 30},
                ],
            },
            {
                "name": "rtu-io",
                "unit": 2,
                **common,
                "points": [
                    {"name": "smoke_1", "table": "discrete_input", "address": 16, "poll_ms": 30},
                    {"name": "lock_1", "table": "coil", "address": 0, "writable": True},
                ],
            },
        ]
        async with running(cfgs) as (drv, sink):
            await until(lambda: latest(sink, "rtu-meter/energy_counter") == 2**32 - 5000)
            assert latest(sink, "rtu-meter/voltage") == pytest.approx(230.0)
            await io.raise_smoke(1)
            await until(lambda: latest(sink, "rtu-io/smoke_1") is True)
            await drv.write("rtu-io/lock_1", False)
            await until(lambda: latest(sink, "rtu-io/lock_1") is False)
            # one bus, one client: every request of both devices went through it, one at a time
            (rtu_bus,) = drv.buses.values()
            assert rtu_bus.gap_s == pytest.approx(inter_frame_delay_s(19200, 8, "N", 2))
            assert rtu_bus.transactions == drv.counters.requests
            # a dead device on the bus goes offline and comes back like a TCP one
            meter.fail()
            await until(lambda: len(sink.of_kind("device.offline")) == 1)
            assert sink.of_kind("device.offline")[0].source == "rtu-meter"
            meter.recover()
            await until(
                lambda: len([e for e in sink.of_kind("device.online") if e.source == "rtu-meter"]) == 2
            )
    finally:
        await bus.stop()


async def test_a_faulted_block_is_reported_once_beside_a_good_block_at_the_same_address() -> None:
    # One register mapped twice at two rates: as uint16 (readable) and as the first half of a
    # float32 that runs past the end of the device's map (ILLEGAL ADDRESS). Both blocks start at
    # the same address; the good one must not clear the bad one's fault every poll.
    dev = SimModbusDevice("edge-of-map", [SimPoint("last", "holding_register", 100, "uint16", 7)])
    async with ModbusSim([dev]):
        end = 100 + 1 + 16 - 1  # the simulator answers up to its last point plus slack
        cfg = device_cfg(
            dev,
            [
                {
                    "name": "word",
                    "table": "holding_register",
                    "address": end,
                    "type": "uint16",
                    "poll_ms": 50,
                },
                {
                    "name": "pair",
                    "table": "holding_register",
                    "address": end,
                    "type": "float32",
                    "poll_ms": 70,
                },
            ],
            **FAST,
        )
        async with running([cfg]) as (drv, sink):
            await until(lambda: len(sink.of_kind("device.fault")) >= 1, what="the float's fault")
            polls = drv.device("edge-of-map").counters.polls
            await until(lambda: drv.device("edge-of-map").counters.polls >= polls + 10, what="ten more polls")
            assert len(sink.of_kind("device.fault")) == 1
            assert latest(sink, "edge-of-map/word") == 0
