"""Simulated Modbus devices that speak the real protocol (pymodbus servers) on loopback.

One device is one TCP server on its own port, as real devices have their own IPs; an RTU bus is
one serial server behind a pty pair (``PtyLink``), with one or more devices on it. Profiles:

- ``energy_meter`` / ``water_meter``: counters that grow (float32 and uint32 over two registers)
  and roll over; ``break_meter`` makes them read NaN and freeze.
- ``chiller`` / ``pump``: run command (coil), run status and fault (discrete inputs), temperatures
  (int16, x0.1), a run-hour counter (uint32).
- ``io_module``: door contacts, smoke detectors and PIR sensors (discrete inputs), lock relays
  (coils).

Scriptable from tests and Python: ``await dev.set(point, value)``, ``await dev.raise_smoke(n)``,
``dev.fail()`` (stops answering: the client times out), ``dev.answer_with(code)`` (an exception
reply to every request), ``dev.slow_down(s)``, ``dev.recover()``, ``await dev.break_meter()``,
and per-function-code request counters (``dev.requests(3)``) so a test can assert how many
requests a driver needed.

pymodbus 3.16 calls its datastore API experimental (``SimData``/``SimDevice``) and deprecates the
older context classes; both are used only in this module, so a pymodbus upgrade touches one file.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import tty
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.base import now_ms
from drivers.modbus_codec import Codec
from drivers.modbus_config import WIDTH, Order, PointType
from drivers.modbus_plan import BIT_TABLES

Value = bool | int | float

# Function codes as the request counters see them.
FC_READ_COILS, FC_READ_DISCRETE, FC_READ_HOLDING, FC_READ_INPUT = 1, 2, 3, 4
FC_WRITE_COIL, FC_WRITE_REGISTER, FC_WRITE_COILS, FC_WRITE_REGISTERS = 5, 6, 15, 16
READ_CODES = (FC_READ_COILS, FC_READ_DISCRETE, FC_READ_HOLDING, FC_READ_INPUT)
# The function code the server's own setValues uses to reach each table.
_SET_FC = {
    "coil": FC_WRITE_COILS,
    "discrete_input": FC_READ_DISCRETE,
    "holding_register": 16,
    "input_register": 4,
}
_TABLE_OF_FC = {1: "coil", 5: "coil", 15: "coil", 2: "discrete_input", 4: "input_register"}
_TABLE_OF_FC.update({3: "holding_register", 6: "holding_register", 16: "holding_register"})
_TABLE_INDEX = {"coil": 0, "discrete_input": 1, "holding_register": 2, "input_register": 3}


@dataclass
class SimPoint:
    name: str
    table: str
    address: int
    type: PointType = "uint16"
    value: Value = 0
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.table in BIT_TABLES:
            self.type = "bool"
        self.codec = Codec(self.type, self.word_order, self.byte_order, self.scale)

    @property
    def width(self) -> int:
        return WIDTH[self.type]

    def config(self, **more: Any) -> dict[str, Any]:
        """The gateway's ``[[modbus.points]]`` entry that reads this point (defaults left out),
        with ``more`` keys added; a None in ``more`` is left out too."""
        d: dict[str, Any] = {"name": self.name, "table": self.table, "address": self.address}
        if self.type != "bool":
            d["type"] = self.type
            if self.width > 1 and self.word_order != "big":
                d["word_order"] = self.word_order
            if self.byte_order != "big":
                d["byte_order"] = self.byte_order
            if self.scale != 1.0:
                d["scale"] = self.scale
        d.update((k, v) for k, v in more.items() if v is not None)
        return d


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class SimModbusDevice:
    """One simulated device: its points, its behaviour over time and its faults."""

    def __init__(
        self,
        name: str,
        points: Iterable[SimPoint],
        *,
        unit: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: Callable[[SimModbusDevice, float], Iterable[tuple[str, Value]]] | None = None,
        churn: bool = False,
        record_serves: bool = False,
    ) -> None:
        self.name = name
        self.points = {p.name: p for p in points}
        self.unit = unit
        self.host = host
        self.port = port
        self.behaviour = behaviour
        # churn: every read request first advances a generation and writes it into every point of
        # the table read, so each read returns new values (the benchmark's "values that change").
        self.churn = churn
        self.generation = 0
        self._flips: dict[str, int] = {}
        self.record_serves = record_serves
        self.serves: list[tuple[int, int]] = []  # (generation, wall ms) when record_serves
        self.counters: collections.Counter[int] = collections.Counter()
        self.dead = False
        self.exception_code: int | None = None
        self.broken = False
        self.delay_s = 0.0  # a slow device: answers this late (and handles one request at a time)
        self.in_flight = 0
        self.max_in_flight = 0
        self.state: dict[str, Any] = {}  # a profile's own memory (e.g. exact counter values)
        self.server: ModbusTcpServer | ModbusSerialServer | None = None
        # Called with (point, value) when a client writes a point: benchmarks time relays by it.
        self.on_write: list[Callable[[str, Value], None]] = []
        self._internal = False
        self._by_table: dict[str, list[SimPoint]] = {t: [] for t in _TABLE_INDEX}
        for p in self.points.values():
            self._by_table[p.table].append(p)

    # ------------------------------------------------------------ pymodbus wiring

    def simdevice(self) -> SimDevice:
        blocks: list[list[SimData]] = []
        for table in ("coil", "discrete_input", "holding_register", "input_register"):
            pts = self._by_table[table]
            # Every address up to the highest point (plus slack) answers; beyond is ILLEGAL ADDRESS.
            size = max((p.address + p.width for p in pts), default=0) + 16
            if table in BIT_TABLES:
                size = (size + 15) // 16 * 16
                blocks.append([SimData(0, count=size, values=False, datatype=DataType.BITS)])
            else:
                blocks.append([SimData(0, count=size, values=0, datatype=DataType.REGISTERS)])
        return SimDevice(self.unit, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]), action=self._action)

    async def _action(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self._internal:
            return None
        self.counters[fc] += 1
        if self.dead:
            # The request handler sends nothing for an unknown device when ignore_missing_devices
            # is set: the client hears silence, exactly like a dead device on the wire.
            raise NoSuchIdException(f"{self.name} is failed (simulated)")
        if self.exception_code is not None:
            return ExcCodes(self.exception_code)
        if self.delay_s:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay_s)
            finally:
                self.in_flight -= 1
        if values is None and self.churn:
            await self._churn(_TABLE_OF_FC[fc], registers)
        if values is not None:
            self._written(_TABLE_OF_FC[fc], address, values)
        return None

    def _written(self, table: str, address: int, values: list[int] | list[bool]) -> None:
        """A client wrote: the points read back what it wrote, and watchers hear of it (a relay
        module's outputs follow its coils)."""
        for p in self._by_table[table]:
            at = p.address - address
            if 0 <= at and at + p.width <= len(values):
                if p.type == "bool":
                    p.value = bool(values[at])
                else:
                    p.value = p.codec.decode([int(v) for v in values], at)
                for watch in self.on_write:
                    watch(p.name, p.value)

    async def _churn(self, table: str, registers: list[int]) -> None:
        self.generation += 1
        g = self.generation
        if self.record_serves:
            self.serves.append((g, now_ms()))
        pts = self._by_table[table]
        if table in BIT_TABLES:
            # Bits flip on every read of their table (the generation's parity would not: several
            # tables are read per poll).
            flips = self._flips[table] = self._flips.get(table, 0) + 1
            await self._set_many([(p, bool(flips & 1)) for p in pts])
            return
        # Registers are written straight into the block the request is about to read (the same
        # list pymodbus answers from); one encoding per point layout, not per point.
        cache: dict[tuple[str, str, str], list[int]] = {}
        for p in pts:
            key = (p.type, p.word_order, p.byte_order)
            regs = cache.get(key)
            if regs is None:
                regs = cache[key] = p.codec.encode(g)
            registers[p.address : p.address + len(regs)] = regs
            p.value = g

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if not self.port:
            self.port = free_port(self.host)
        self.server = ModbusTcpServer(
            self.simdevice(), address=(self.host, self.port), ignore_missing_devices=True
        )
        await self.server.serve_forever(background=True)
        await self._set_many([(p, p.value) for p in self.points.values()])

    async def attach(self, server: ModbusTcpServer | ModbusSerialServer) -> None:
        """For devices sharing a server (an RTU bus): the server was built with ``simdevice()``."""
        self.server = server
        await self._set_many([(p, p.value) for p in self.points.values()])

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None

    # ------------------------------------------------------------ scripting

    async def set(self, point: str, value: Value) -> None:
        """Make ``point`` read ``value`` (in engineering units, through its scale)."""
        await self._set_many([(self.points[point], value)])

    async def set_many(self, values: dict[str, Value]) -> None:
        await self._set_many([(self.points[k], v) for k, v in values.items()])

    async def _set_many(self, items: Sequence[tuple[SimPoint, Value]]) -> None:
        if self.server is None:
            for p, v in items:
                p.value = v
            return
        self._internal = True
        try:
            for p, v in items:
                if p.type == "bool":
                    regs: list[int] | list[bool] = [bool(v)]
                else:
                    regs = p.codec.encode(v)
                await self.server.async_setValues(self.unit, _SET_FC[p.table], p.address, regs)  # type: ignore[arg-type]
                p.value = v
        finally:
            self._internal = False

    async def set_raw(self, table: str, address: int, registers: list[int]) -> None:
        """Write raw registers (e.g. a NaN pattern a healthy device would never produce)."""
        assert self.server is not None
        self._internal = True
        try:
            await self.server.async_setValues(self.unit, _SET_FC[table], address, registers)  # type: ignore[arg-type]
        finally:
            self._internal = False

    def get(self, point: str) -> Value:
        return self.points[point].value

    async def raise_smoke(self, n: int = 1, active: bool = True) -> None:
        await self.set(f"smoke_{n}", active)

    async def open_door(self, n: int = 1, open_: bool = True) -> None:
        await self.set(f"door_{n}", open_)

    async def motion(self, n: int = 1, active: bool = True) -> None:
        await self.set(f"pir_{n}", active)

    def fail(self) -> None:
        """Stop answering (the connection stays up; requests time out)."""
        self.dead = True

    def answer_with(self, code: int) -> None:
        """Answer every request with Modbus exception ``code`` (e.g. 6 = busy, 2 = illegal address)."""
        self.exception_code = code

    def slow_down(self, seconds: float) -> None:
        """Answer every request ``seconds`` late (0: at once again)."""
        self.delay_s = seconds

    def recover(self) -> None:
        self.delay_s = 0.0
        self.dead = False
        self.exception_code = None
        self.broken = False

    async def break_meter(self) -> None:
        """The meter's electronics fail: its floats read NaN, its counters freeze, and its
        "meter ok" input (if it has one) drops."""
        self.broken = True
        if "meter_ok" in self.points:
            await self.set("meter_ok", False)
        await self._write_nans()

    async def _write_nans(self) -> None:
        for p in self.points.values():
            if p.type == "float32":
                await self.set_raw(p.table, p.address, [0x7FC0, 0x0000])  # a quiet NaN

    def requests(self, fc: int | None = None) -> int:
        """Requests received, for one function code or (None) all reads."""
        if fc is None:
            return sum(self.counters[c] for c in READ_CODES)
        return self.counters[fc]

    def reset_counters(self) -> None:
        self.counters.clear()

    async def tick(self, seconds: float) -> None:
        """Advance the device's behaviour by ``seconds`` of simulated time."""
        if self.behaviour is None:
            return
        changes = list(self.behaviour(self, seconds))
        if changes:
            await self.set_many(dict(changes))
        if self.broken:
            await self._write_nans()


# ---------------------------------------------------------------------------- profiles


def _meter(
    kind: str,
) -> tuple[list[SimPoint], Callable[[SimModbusDevice, float], Iterable[tuple[str, Value]]]]:
    if kind == "energy":
        pts = [
            SimPoint("energy_total", "input_register", 0, "float32", 12_345.5),  # kWh
            # Wh as uint32, started near its top so a test sees the rollover within seconds
            SimPoint("energy_counter", "input_register", 2, "uint32", 2**32 - 5_000),
            SimPoint("power", "input_register", 4, "float32", 18.0),  # kW
            SimPoint("voltage", "input_register", 6, "uint16", 230.0, scale=0.1),  # V x10
            SimPoint("meter_ok", "discrete_input", 0, "bool", True),
        ]
        rate_key, total, counter, per_second = "power", "energy_total", "energy_counter", 1000.0 / 3600.0
    else:
        pts = [
            SimPoint("volume_total", "input_register", 0, "float32", 842.25),  # m3
            SimPoint("volume_counter", "input_register", 2, "uint32", 2**32 - 200),  # litres
            SimPoint("flow", "input_register", 4, "float32", 1.2),  # litres/s
            SimPoint("meter_ok", "discrete_input", 0, "bool", True),
        ]
        rate_key, total, counter, per_second = "flow", "volume_total", "volume_counter", 1.0

    def behave(dev: SimModbusDevice, dt: float) -> Iterable[tuple[str, Value]]:
        if dev.broken:
            return []  # frozen
        # The counter moves in whole units (Wh, litres) and rolls over like the register does;
        # the fraction carries over in the profile's state. The total (kWh, m3) moves with it.
        acc = dev.state.get("acc", 0.0) + float(dev.points[rate_key].value) * per_second * dt
        whole = int(acc)
        dev.state["acc"] = acc - whole
        return [
            (counter, (int(dev.points[counter].value) + whole) % 2**32),
            (total, float(dev.points[total].value) + whole / 1000.0),
        ]

    return pts, behave


def energy_meter(name: str, **kw: Any) -> SimModbusDevice:
    pts, behave = _meter("energy")
    return SimModbusDevice(name, pts, behaviour=behave, **kw)


def water_meter(name: str, **kw: Any) -> SimModbusDevice:
    pts, behave = _meter("water")
    return SimModbusDevice(name, pts, behaviour=behave, **kw)


def chiller(name: str, **kw: Any) -> SimModbusDevice:
    """A chiller (or pump: the same shape). Writing the run coil starts and stops it."""
    pts = [
        SimPoint("run_command", "coil", 0, "bool", True),
        SimPoint("running", "discrete_input", 0, "bool", True),
        SimPoint("fault", "discrete_input", 1, "bool", False),
        SimPoint("chw_supply_temp", "input_register", 0, "int16", 7.0, scale=0.1),
        SimPoint("chw_return_temp", "input_register", 1, "int16", 12.0, scale=0.1),
        SimPoint("run_hours", "input_register", 2, "uint32", 18_250),
        SimPoint("setpoint", "holding_register", 0, "int16", 6.5, scale=0.1),
    ]

    def behave(dev: SimModbusDevice, dt: float) -> Iterable[tuple[str, Value]]:
        running = bool(dev.points["run_command"].value) and not dev.points["fault"].value
        secs = dev.state.get("run_s", 0.0) + (dt if running else 0.0)
        hours = int(secs // 3600)
        dev.state["run_s"] = secs - hours * 3600
        supply = float(dev.points["setpoint"].value) + (0.5 if running else 5.0)
        return [
            ("running", running),
            ("run_hours", int(dev.points["run_hours"].value) + hours),
            ("chw_supply_temp", round(supply, 1)),
            ("chw_return_temp", round(supply + (5.0 if running else 0.5), 1)),
        ]

    return SimModbusDevice(name, pts, behaviour=behave, **kw)


pump = chiller


def io_module(
    name: str, doors: int = 4, detectors: int = 4, pirs: int = 4, fire_panel: bool = False, **kw: Any
) -> SimModbusDevice:
    """Door contacts at inputs 0.., smoke detectors at 16.., PIR at 32.., exit request buttons at
    48..; with ``fire_panel`` the panel's alarm contact at 60 and the fire reset key at 61; lock
    relays at coils 0.. (energised = locked, as a fail-safe maglock)."""
    pts = [SimPoint(f"door_{i + 1}", "discrete_input", i, "bool", False) for i in range(doors)]
    pts += [SimPoint(f"smoke_{i + 1}", "discrete_input", 16 + i, "bool", False) for i in range(detectors)]
    pts += [SimPoint(f"pir_{i + 1}", "discrete_input", 32 + i, "bool", False) for i in range(pirs)]
    pts += [SimPoint(f"rex_{i + 1}", "discrete_input", 48 + i, "bool", False) for i in range(doors)]
    if fire_panel:
        pts += [
            SimPoint("fire_panel_alarm", "discrete_input", 60, "bool", False),
            SimPoint("fire_reset_key", "discrete_input", 61, "bool", False),
        ]
    pts += [SimPoint(f"lock_{i + 1}", "coil", i, "bool", True) for i in range(doors)]
    return SimModbusDevice(name, pts, **kw)


def bench_points(n: int = 100) -> list[SimPoint]:
    """A per-point map of ``n`` points of every type, spread over four tables with small gaps,
    as an installer would list them from a device's manual (no hand-made ranges)."""
    kinds: list[tuple[str, PointType, Order, Order]] = [
        ("input_register", "uint16", "big", "big"),
        ("input_register", "int16", "big", "big"),
        ("input_register", "float32", "big", "big"),
        ("input_register", "float32", "little", "big"),
        ("holding_register", "uint32", "big", "big"),
        ("holding_register", "int32", "little", "little"),
        ("holding_register", "uint16", "big", "little"),
        ("holding_register", "float32", "big", "little"),
        ("discrete_input", "bool", "big", "big"),
        ("coil", "bool", "big", "big"),
    ]
    next_addr: dict[str, int] = collections.defaultdict(int)
    pts = []
    for i in range(n):
        table, typ, wo, bo = kinds[i % len(kinds)]
        addr = next_addr[table]
        pts.append(SimPoint(f"p{i:03d}", table, addr, typ, 0, wo, bo))
        # every fifth point leaves an unmapped register (or bit) after it, as real maps do
        next_addr[table] = addr + WIDTH[typ] + (1 if i % 5 == 4 else 0)
    return pts


# ---------------------------------------------------------------------------- a building


class ModbusSim:
    """Several devices, each on its own loopback port; ``tick_s`` > 0 runs their behaviour."""

    def __init__(self, devices: Iterable[SimModbusDevice], tick_s: float = 0.0) -> None:
        self.devices = {d.name: d for d in devices}
        self.tick_s = tick_s
        self._ticker: asyncio.Task[None] | None = None

    def __getitem__(self, name: str) -> SimModbusDevice:
        return self.devices[name]

    async def start(self) -> None:
        for d in self.devices.values():
            await d.start()
        if self.tick_s > 0:
            self._ticker = asyncio.create_task(self._tick_loop(), name="modbus-sim-tick")

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        for d in self.devices.values():
            await d.stop()

    async def __aenter__(self) -> ModbusSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            for d in self.devices.values():
                await d.tick(now - last)
            last = now

    def ports(self) -> dict[str, int]:
        return {name: d.port for name, d in self.devices.items()}


# ---------------------------------------------------------------------------- RTU over a pty pair


@dataclass
class PtyLink:
    """Two raw pty pairs whose masters are relayed to each other: a null-modem cable between
    ``server_port`` and ``client_port``, both real tty paths that pyserial opens by name."""

    server_port: str = ""
    client_port: str = ""
    _fds: list[int] = field(default_factory=list)

    def open(self) -> PtyLink:
        loop = asyncio.get_running_loop()
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        for fd in (m1, s1, m2, s2):
            tty.setraw(fd)  # no echo, no line discipline: bytes pass as they are
        self._fds = [m1, s1, m2, s2]
        self.server_port, self.client_port = os.ttyname(s1), os.ttyname(s2)
        loop.add_reader(m1, self._relay, m1, m2)
        loop.add_reader(m2, self._relay, m2, m1)
        return self

    def _relay(self, src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except OSError:
            return
        os.write(dst, data)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._fds[0::2]:
            loop.remove_reader(fd)
        for fd in self._fds:
            os.close(fd)
        self._fds = []


class RtuSimBus:
    """An RTU bus: one pymodbus serial server (one per port, as on a real line) with several
    devices (unit ids), reachable at ``client_port``.

    8N2 by default: a Linux pty refuses parity (EINVAL) when pyserial reconfigures it, which
    pymodbus does right after opening; no parity with two stop bits is Modbus's own alternative.
    """

    def __init__(
        self, devices: Iterable[SimModbusDevice], baudrate: int = 19200, parity: str = "N", stopbits: int = 2
    ) -> None:
        self.devices = {d.unit: d for d in devices}
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.link = PtyLink()
        self.server: ModbusSerialServer | None = None

    @property
    def client_port(self) -> str:
        return self.link.client_port

    async def start(self) -> None:
        self.link.open()
        self.server = ModbusSerialServer(
            [d.simdevice() for d in self.devices.values()],
            framer=FramerType.RTU,
            port=self.link.server_port,
            baudrate=self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
            ignore_missing_devices=True,
        )
        await self.server.serve_forever(background=True)
        for d in self.devices.values():
            await d.attach(self.server)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
        self.link.close()


# ---------------------------------------------------------------------------- command line


def building(base_port: int, host: str = "127.0.0.1") -> list[SimModbusDevice]:
    """A small building: two energy meters, a water meter, a chiller, a pump, two I/O modules."""
    specs = [
        ("meter-b1-main", energy_meter),
        ("meter-b1-hvac", energy_meter),
        ("water-b1-main", water_meter),
        ("chiller-1", chiller),
        ("pump-2", pump),
        ("io-lobby", io_module),
        ("io-plantroom", io_module),
    ]
    return [make(name, host=host, port=base_port + i) for i, (name, make) in enumerate(specs)]


async def _serve(args: argparse.Namespace) -> None:
    sim = ModbusSim(building(args.base_port, args.host), tick_s=args.tick_s)
    await sim.start()
    print(json.dumps({"modbus": sim.ports()}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Serve a simulated building's Modbus devices on loopback")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--base-port", type=int, default=15020, help="first device's port; the rest follow")
    ap.add_argument("--tick-s", type=float, default=1.0, help="how often the devices' values move")
    args = ap.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in {"localhost", "::1"}:
        ap.error("the simulator binds loopback addresses only")
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
