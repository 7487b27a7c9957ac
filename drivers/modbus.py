"""Modbus TCP and RTU driver: a point map in, normalized events out (pymodbus 3.16).

Config (``ModbusDeviceConfig``, one per device; the gateway's TOML has them as ``[[modbus]]``)::

    [[modbus]]
    name = "meter-b1"
    host = "127.0.0.1"          # transport = "tcp" (the default); "rtu" takes serial_port etc.
    port = 5020
    unit = 1
    [[modbus.points]]
    name = "energy_total"
    table = "holding_register"  # coil | discrete_input | input_register | holding_register
    address = 0                 # protocol address (0-based), as on the wire
    type = "float32"            # bool | int16 | uint16 | int32 | uint32 | float32
    unit = "kWh"
    poll_ms = 1000
    deadband = 0.1

How it polls:

- One asyncio task per device, so a device that does not answer only ever waits on itself.
- The points are planned into block reads (``drivers.modbus_plan``): one request per run of nearby
  points of one table and one poll interval, never over the device's limits.
- Each poll group runs on absolute deadlines (due, due + period, ...). A poll that is still running
  when its group's next deadline passes makes that next poll skip: the skipped polls are counted as
  overruns, and the next poll is the one due now. Nothing is queued, so no reading is ever late,
  merged or sent with a time other than its own.
- A request that times out or gets an exception reply is retried (``retries``). After that, a
  timeout, a refused connection or a "device cannot serve" exception (busy, device failure,
  gateway path or target failed) takes the device offline (``device.offline``); it is then probed
  with exponential backoff, one attempt per probe, and the first answer brings it back
  (``device.online``) with all its values reported afresh. "Illegal function/address/value"
  exceptions mean the device is alive but that block is unreadable: a ``device.fault`` for the
  block, raised once, and its points are reported again when the block reads again.
- RTU: devices on one serial port share one client and one bus lock; between frames the bus is
  left quiet for the inter-frame delay its baud rate needs (3.5 character times; 1.75 ms above
  19,200 baud).
- A value is reported (``Reading.event()``, time = when its response arrived) when it changed by
  more than the deadband since the last value reported, and at least every ``heartbeat_s``. Each
  reading is emitted once, after the read that produced it; a point's state moves on only when the
  sink has taken the reading, so a failed emit leads to a new reading next poll, never a resend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.base import DeviceLiveness, FireSystemWriteRefused, Online, emit_fault, now_ms, point_event
from drivers.modbus_codec import BlockDecoder, Codec
from drivers.modbus_config import FAMILY, ModbusDeviceConfig, ModbusPointConfig
from drivers.modbus_plan import BIT_TABLES, Block, request_count
from protocols.events import NewEvent
from protocols.sink import EventSink

log = logging.getLogger(__name__)

# Exception codes that say "this request is wrong", not "this device is unwell": the device is
# answering, so it stays online and only the block is faulted.
REQUEST_FAULT_CODES = frozenset({1, 2, 3})
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


def inter_frame_delay_s(baudrate: int, bytesize: int = 8, parity: str = "E", stopbits: int = 1) -> float:
    """Modbus RTU's silent interval between frames: 3.5 character times, fixed at 1.75 ms above
    19,200 baud (Modbus over serial line 1.02, 2.5.1.1)."""
    if baudrate > 19200:
        return 0.00175
    bits_per_char = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return 3.5 * bits_per_char / baudrate


# ---------------------------------------------------------------------------- status


@dataclass(slots=True)
class ModbusCounters:
    requests: int = 0  # requests sent, retries included
    timeouts: int = 0  # requests that got no answer in time
    exceptions: int = 0  # exception replies
    connect_failures: int = 0
    polls: int = 0  # polls run (probes of an offline device included)
    overruns: int = 0  # polls skipped because the previous one still ran at their deadline
    values_emitted: int = 0  # readings the sink took (heartbeats included)
    heartbeats: int = 0
    faults: int = 0  # device.fault events raised
    writes: int = 0
    writes_refused: int = 0
    emit_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: ModbusCounters) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


@dataclass(frozen=True, slots=True)
class PollRecord:
    """One finished poll, for observers (benchmarks, status): times are the event loop's clock."""

    device: str
    poll_ms: int
    due: float
    started: float
    finished: float
    requests: int
    values: int
    ok: bool


class WriteRefused(PermissionError):
    """A write to a point that is not marked writable."""


class ModbusWriteError(RuntimeError):
    """The device did not take a write (no answer, or an exception reply)."""


# ---------------------------------------------------------------------------- links

ClientOp = Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]


class _TcpLink:
    """One TCP connection per device: real devices have their own IPs, and a connection that
    hangs must hang only its own device."""

    def __init__(self, cfg: ModbusDeviceConfig) -> None:
        self.cfg = cfg
        self.client: AsyncModbusTcpClient | None = None  # made in the loop (pymodbus needs one)

    async def call(self, op: ClientOp) -> ModbusPDU:
        if self.client is None:
            cfg = self.cfg
            # retries=0 and no automatic reconnect: the driver retries, counts and backs off itself.
            self.client = AsyncModbusTcpClient(
                cfg.host, port=cfg.port, timeout=cfg.timeout_s, retries=0, reconnect_delay=0, name=cfg.name
            )
        if not self.client.connected and not await self.client.connect():
            raise ConnectionException(f"cannot connect to {self.cfg.host}:{self.cfg.port}")
        return await op(self.client)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class RtuBus:
    """One serial port and the devices on it. Half-duplex: one transaction at a time, each
    followed by the inter-frame silence, whichever device it was for."""

    def __init__(self, cfg: ModbusDeviceConfig, timeout_s: float) -> None:
        self.cfg = cfg
        self.port = cfg.serial_port
        self.settings = (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits)
        self.timeout_s = timeout_s
        self.client: AsyncModbusSerialClient | None = None  # made in the loop
        self.gap_s = inter_frame_delay_s(cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits)
        self.lock = asyncio.Lock()
        self._quiet_until = 0.0
        self.transactions = 0

    async def call(self, op: ClientOp) -> ModbusPDU:
        loop = asyncio.get_running_loop()
        async with self.lock:
            if self.client is None:
                cfg = self.cfg
                self.client = AsyncModbusSerialClient(
                    cfg.serial_port,
                    framer=FramerType.RTU,
                    baudrate=cfg.baudrate,
                    bytesize=cfg.bytesize,
                    parity=cfg.parity,
                    stopbits=cfg.stopbits,
                    timeout=self.timeout_s,
                    retries=0,
                    reconnect_delay=0,
                )
            if not self.client.connected and not await self.client.connect():
                raise ConnectionException(f"cannot open serial port {self.port}")
            wait = self._quiet_until - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                self.transactions += 1
                return await op(self.client)
            finally:
                self._quiet_until = loop.time() + self.gap_s

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class _SharedBusLink:
    """A device's view of its RTU bus: closing it must not close the bus for the others."""

    def __init__(self, bus: RtuBus) -> None:
        self.bus = bus

    async def call(self, op: ClientOp) -> ModbusPDU:
        return await self.bus.call(op)

    def close(self) -> None:
        pass


_Link = _TcpLink | _SharedBusLink


# ---------------------------------------------------------------------------- polling


class _Point:
    """A point's runtime state: its codec and what was last reported."""

    __slots__ = (
        "bad",
        "cfg",
        "codec",
        "deadband",
        "heartbeat_s",
        "last",
        "last_sent",
        "name",
        "source",
        "unit",
    )

    def __init__(self, cfg: ModbusPointConfig, device: str) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.source = f"{device}/{cfg.name}"  # the events' source, made once
        self.unit = cfg.unit
        self.codec = Codec(cfg.type, cfg.word_order, cfg.byte_order, cfg.scale, cfg.offset)
        self.deadband = cfg.deadband
        self.heartbeat_s = cfg.heartbeat_s
        self.last: bool | int | float | None = None  # None: nothing reported since start/offline
        self.last_sent = 0.0  # loop time of the last report
        self.bad = False  # last value was not a number (NaN/inf): faulted until it is


@dataclass(slots=True)
class _Group:
    poll_ms: int
    period: float
    blocks: tuple[Block, ...]
    due: float = 0.0


@dataclass(frozen=True, slots=True)
class _Failure:
    """A request that failed after its retries."""

    kind: str  # "timeout" | "unreachable" | "exception"
    code: int = 0
    detail: str = ""

    @property
    def device_level(self) -> bool:
        return not (self.kind == "exception" and self.code in REQUEST_FAULT_CODES)

    @property
    def reason(self) -> str:
        if self.kind == "exception":
            return f"exception 0x{self.code:02x} ({EXCEPTION_NAMES.get(self.code, 'unknown')})"
        return self.kind


_READERS: dict[str, str] = {
    "coil": "read_coils",
    "discrete_input": "read_discrete_inputs",
    "input_register": "read_input_registers",
    "holding_register": "read_holding_registers",
}


class ModbusDevice:
    """One device: its plan, its link, its liveness and its poll loop."""

    def __init__(
        self,
        cfg: ModbusDeviceConfig,
        sink: EventSink,
        link: _Link,
        observer: Callable[[PollRecord], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.sink = sink
        self.link = link
        self.observer = observer
        self.unit = cfg.unit
        self.points = [_Point(p, cfg.name) for p in cfg.points]
        self.by_name = {p.name: p for p in self.points}
        plan = cfg.plan()
        self.groups = [_Group(g.poll_ms, g.poll_ms / 1000, g.blocks) for g in plan]
        self.requests_per_poll = request_count(plan)
        # Keyed by the block's identity: the blocks live as long as the groups, and hashing a
        # block (up to 125 items) on every decode is a cost the hot path need not pay.
        self.decoders: dict[int, BlockDecoder] = {
            id(b): BlockDecoder([(k, at, self.points[k].codec) for k, at in b.items])
            for g in self.groups
            for b in g.blocks
            if b.table not in BIT_TABLES
        }
        self.liveness = DeviceLiveness(sink, cfg.name, FAMILY)
        self.counters = ModbusCounters()
        # By block, not by (table, start): two poll groups may each read from one address (a
        # register mapped twice, at two rates), and one block's fault is not the other's.
        self.faulted_blocks: dict[Block, _Failure] = {}
        self.stopping = False  # set by the driver on shutdown: see ModbusDriver.run
        # Values that were not numbers, found while decoding (a synchronous loop): raised as
        # faults after the poll's readings.
        self._pending_faults: list[tuple[str, str]] = []

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        return {
            "state": self.liveness.state.value,
            "since_ms": self.liveness.since_ms,
            "reason": self.liveness.last_reason,
            "points": len(self.points),
            "requests_per_poll": self.requests_per_poll,
            "faulted_blocks": len(self.faulted_blocks),
            **self.counters.as_dict(),
        }

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Poll until cancelled. Unexpected errors propagate to the driver's supervisor."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for g in self.groups:
            g.due = now  # first poll at once: the gateway wants values, not a phase
        try:
            while not self.stopping:
                if self.liveness.state is Online.OFFLINE:
                    await self._recover()
                await self._poll_next()
        finally:
            self.link.close()

    async def _poll_next(self) -> None:
        loop = asyncio.get_running_loop()
        g = min(self.groups, key=lambda x: x.due)
        now = loop.time()
        if g.due > now:
            await asyncio.sleep(g.due - now)
            now = loop.time()
        late = now - g.due
        if late >= g.period:
            # The polls due while the last one still ran are skipped, never queued: the next poll
            # is the one due now, and it reads (and stamps) fresh values.
            missed = int(late // g.period)
            self.counters.overruns += missed
            g.due += missed * g.period
        await self._poll(g, probing=False)
        g.due += g.period

    async def _recover(self) -> None:
        """Probe an offline device with exponential backoff (jittered, so a gateway's dead devices
        do not all knock at once) until it answers."""
        loop = asyncio.get_running_loop()
        delay = self.cfg.backoff_min_s
        fastest = self.groups[0]
        while not self.stopping:
            await asyncio.sleep(delay * random.uniform(0.9, 1.1))
            fastest.due = loop.time()
            if await self._poll(fastest, probing=True):
                now = loop.time()
                fastest.due += fastest.period
                for g in self.groups[1:]:
                    g.due = now
                return
            delay = min(delay * 2, self.cfg.backoff_max_s)

    async def _poll(self, g: _Group, *, probing: bool) -> bool:
        """Read every block of ``g`` once and report what changed. False if the device failed."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        requests_before = self.counters.requests
        self.counters.polls += 1
        events: list[NewEvent] = []
        updates: list[tuple[_Point, bool | int | float, bool]] = []
        failure: _Failure | None = None
        heard = False
        for block in g.blocks:
            # A probe tries once: an offline device should cost one timeout per backoff step.
            attempts = 1 if probing and not heard else self.cfg.retries + 1
            result = await self._read(block, attempts)
            if isinstance(result, _Failure) and result.device_level:
                failure = result
                break
            heard = True
            if self.liveness.state is not Online.ONLINE:
                await self.liveness.answered(unit=self.unit)
            key = block
            if isinstance(result, _Failure):
                await self._block_fault(key, block, result)
                continue
            if key in self.faulted_blocks:
                del self.faulted_blocks[key]
                for k, _ in block.items:
                    self.points[k].last = None  # readable again: report afresh
            data, read_ms = result
            self._collect(block, data, read_ms, loop.time(), events, updates)
        if events:
            try:
                await self.sink.emit(events)
            except Exception:
                # Not taken: the states stay, so the next poll reports a new reading (never this one).
                self.counters.emit_failures += 1
                log.exception("%s: the event sink refused %d readings", self.name, len(events))
                events = []
            else:
                for p, v, beat in updates:
                    p.last = v
                    p.last_sent = started
                    self.counters.heartbeats += beat
                self.counters.values_emitted += len(events)
        while self._pending_faults:
            name, detail = self._pending_faults.pop(0)
            self.counters.faults += 1
            await emit_fault(self.sink, f"{self.name}/{name}", FAMILY, "bad_value", detail)
        if failure is not None:
            await self._went_offline(failure)
        if self.observer is not None:
            self.observer(
                PollRecord(
                    self.name,
                    g.poll_ms,
                    g.due,
                    started,
                    loop.time(),
                    self.counters.requests - requests_before,
                    len(events),
                    failure is None,
                )
            )
        return failure is None

    def _collect(
        self,
        block: Block,
        data: Sequence[int] | Sequence[bool],
        read_ms: int,
        now: float,
        events: list[NewEvent],
        updates: list[tuple[_Point, bool | int | float, bool]],
    ) -> None:
        """Readings for one block's points that changed beyond their deadband or are due a
        heartbeat. The hot path of the driver: kept flat."""
        points = self.points
        bits = block.table in BIT_TABLES
        decoded: Iterable[tuple[int, bool | int | float]]
        if bits:
            decoded = [(key, bool(data[at])) for key, at in block.items]
        else:
            decoded = self.decoders[id(block)].decode(data)
        for key, value in decoded:
            p = points[key]
            if not bits:
                if isinstance(value, float) and not math.isfinite(value):
                    if not p.bad:  # a fault on entering the bad state, not on every poll
                        p.bad = True
                        self._pending_faults.append((p.name, f"read {value!r}: not a number"))
                    continue
                if p.bad:
                    p.bad = False
                    p.last = None
            last = p.last
            beat = False
            if last is not None:
                if p.deadband == 0 or bits:
                    changed = value != last
                else:
                    changed = abs(value - last) > p.deadband
                if not changed:
                    if not p.heartbeat_s or now - p.last_sent < p.heartbeat_s:
                        continue
                    beat = True
            events.append(point_event(p.source, value, read_ms, p.unit))
            updates.append((p, value, beat))

    async def _read(self, block: Block, attempts: int) -> tuple[Sequence[Any], int] | _Failure:
        """One block, with retries: (values, read_ms) or the last failure."""
        method = _READERS[block.table]
        start, count, unit = block.start, block.count, self.unit

        sent_ms = 0

        def op(client: ModbusBaseClient) -> Awaitable[ModbusPDU]:
            # The reading's time is when the request went out (after any wait for the bus): the
            # device samples its registers between that and its reply, and a reply handled late by
            # a busy loop (or one taking 270 ms to cross a 9,600-baud line) must not make a value
            # look newer than it is.
            nonlocal sent_ms
            sent_ms = now_ms()
            return getattr(client, method)(start, count=count, device_id=unit)

        failure = _Failure("timeout")
        for _ in range(attempts):
            self.counters.requests += 1
            try:
                rsp = await self.link.call(op)
            except (ModbusIOException, TimeoutError) as e:
                self.counters.timeouts += 1
                failure = _Failure("timeout", detail=str(e))
                continue
            except (ModbusException, OSError) as e:
                self.counters.connect_failures += 1
                failure = _Failure("unreachable", detail=str(e))
                continue
            if rsp.isError():
                self.counters.exceptions += 1
                failure = _Failure("exception", int(getattr(rsp, "exception_code", 0) or 0))
                continue
            data = rsp.bits if block.table in BIT_TABLES else rsp.registers
            if len(data) < count:
                failure = _Failure("exception", 0, f"short reply: {len(data)} of {count}")
                self.counters.exceptions += 1
                continue
            return data, sent_ms
        return failure

    async def _block_fault(self, key: Block, block: Block, failure: _Failure) -> None:
        if key in self.faulted_blocks:
            return  # raised once, not once per poll
        self.faulted_blocks[key] = failure
        names = ", ".join(self.points[k].name for k, _ in block.items)
        detail = f"{failure.reason} reading {block.table} {block.start}..{block.end - 1} ({names})"
        self.counters.faults += 1
        await emit_fault(self.sink, self.name, FAMILY, "unreadable", detail)

    async def _went_offline(self, failure: _Failure) -> None:
        self.link.close()  # a half-open connection must not outlive the device's silence
        stale = [p.name for p in self.points if p.last is not None]
        for p in self.points:
            p.last = None  # the first values after its return are all reported
        if failure.kind == "exception":
            self.counters.faults += 1
            await emit_fault(self.sink, self.name, FAMILY, "exception", failure.reason)
        # The death names the points whose last values are stale from now on, so the cloud marks
        # them so without a flood of per-point events.
        await self.liveness.failed(failure.reason, unit=self.unit, detail=failure.detail[:200], stale=stale)

    # ------------------------------------------------------------ writes

    async def write(self, point: str, value: bool | int | float) -> None:
        """Write a coil or holding-register point. Refuses fire-system and non-writable points."""
        p = self.by_name.get(point)
        if p is None:
            raise KeyError(f"{self.name}: no point {point!r}")
        if p.cfg.fire_system:
            self.counters.writes_refused += 1
            raise FireSystemWriteRefused(self.name, point)
        if not p.cfg.writable:
            self.counters.writes_refused += 1
            raise WriteRefused(f"{self.name}/{point}: not marked writable")
        address, unit = p.cfg.address, self.unit
        op: ClientOp
        if p.cfg.table == "coil":
            if not isinstance(value, bool):
                raise ValueError(f"{self.name}/{point}: a coil takes true or false, not {value!r}")
            flag = value

            def op(c: ModbusBaseClient) -> Awaitable[ModbusPDU]:
                return c.write_coil(address, flag, device_id=unit)

        else:
            regs = p.codec.encode(value)

            def op(c: ModbusBaseClient) -> Awaitable[ModbusPDU]:
                if len(regs) == 1:
                    return c.write_register(address, regs[0], device_id=unit)
                return c.write_registers(address, regs, device_id=unit)

        # One attempt: a write that timed out may still have been applied, and the caller (a rule,
        # an operator) is the one to decide whether to send it again.
        self.counters.requests += 1
        try:
            rsp = await self.link.call(op)
        except (ModbusException, OSError, TimeoutError) as e:
            self.counters.timeouts += 1
            raise ModbusWriteError(f"{self.name}/{point}: write not confirmed: {e}") from e
        if rsp.isError():
            self.counters.exceptions += 1
            code = int(getattr(rsp, "exception_code", 0) or 0)
            raise ModbusWriteError(f"{self.name}/{point}: {_Failure('exception', code).reason}")
        self.counters.writes += 1


# ---------------------------------------------------------------------------- the driver


class ModbusDriver:
    """All Modbus devices of a gateway (drivers.base.Driver): ``await run()`` until cancelled."""

    family = FAMILY

    def __init__(
        self,
        devices: Sequence[ModbusDeviceConfig],
        sink: EventSink,
        *,
        observer: Callable[[PollRecord], None] | None = None,
    ) -> None:
        _quiet_pymodbus()
        self.sink = sink
        self.devices: dict[str, ModbusDevice] = {}
        self.buses: dict[str, RtuBus] = {}
        for cfg in devices:
            if cfg.name in self.devices:
                raise ValueError(f"modbus device name {cfg.name!r} is used twice")
            link: _Link
            if cfg.transport == "rtu":
                link = _SharedBusLink(self._bus_for(cfg, devices))
            else:
                link = _TcpLink(cfg)
            self.devices[cfg.name] = ModbusDevice(cfg, sink, link, observer)

    def _bus_for(self, cfg: ModbusDeviceConfig, all_cfgs: Sequence[ModbusDeviceConfig]) -> RtuBus:
        bus = self.buses.get(cfg.serial_port)
        settings = (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits)
        if bus is None:
            on_port = [c for c in all_cfgs if c.transport == "rtu" and c.serial_port == cfg.serial_port]
            units = [c.unit for c in on_port]
            if len(set(units)) != len(units):
                raise ValueError(f"serial port {cfg.serial_port}: two devices with one unit id")
            bus = self.buses[cfg.serial_port] = RtuBus(cfg, max(c.timeout_s for c in on_port))
        elif bus.settings != settings:
            raise ValueError(
                f"modbus device {cfg.name!r}: serial port {cfg.serial_port} is already set to "
                f"baudrate/bytesize/parity/stopbits {bus.settings}, not {settings}"
            )
        return bus

    @classmethod
    def from_config(
        cls,
        devices: Iterable[ModbusDeviceConfig | Mapping[str, Any]],
        sink: EventSink,
        *,
        observer: Callable[[PollRecord], None] | None = None,
    ) -> ModbusDriver:
        """From the gateway config's ``modbus`` list (models, or plain mappings to validate)."""
        cfgs = [
            d if isinstance(d, ModbusDeviceConfig) else ModbusDeviceConfig.model_validate(d) for d in devices
        ]
        return cls(cfgs, sink, observer=observer)

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._supervise(d), name=f"modbus:{d.name}") for d in self.devices.values()
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            # On Python 3.11 a cancel that arrives as a response completes can be swallowed by the
            # asyncio.wait_for inside pymodbus (gh-86296): the loops also stop on a flag, and the
            # tasks are cancelled until they are done.
            for d in self.devices.values():
                d.stopping = True
            while pending := [t for t in tasks if not t.done()]:
                for t in pending:
                    t.cancel()
                await asyncio.wait(pending, timeout=0.1)
            for bus in self.buses.values():
                bus.close()

    async def _supervise(self, dev: ModbusDevice) -> None:
        """A bug met by one device's loop restarts that loop (with backoff); it never stops the
        others, and it is reported as a fault."""
        delay = 1.0
        while not dev.stopping:
            try:
                await dev.run()
            except Exception as e:
                log.exception("modbus device %s: poll loop failed; restarting in %.0f s", dev.name, delay)
                with contextlib.suppress(Exception):
                    await emit_fault(self.sink, dev.name, FAMILY, "driver_error", repr(e)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    def device(self, name: str) -> ModbusDevice:
        return self.devices[name]

    async def write(self, point: str, value: bool | int | float) -> None:
        """Write ``"<device>/<point>"`` (the source name its readings carry)."""
        device, sep, name = point.partition("/")
        if not sep or device not in self.devices:
            raise KeyError(f"no modbus point {point!r} (expected '<device>/<point>')")
        await self.devices[device].write(name, value)

    @property
    def counters(self) -> ModbusCounters:
        total = ModbusCounters()
        for dev in self.devices.values():
            total.add(dev.counters)
        return total

    def status(self) -> dict[str, Any]:
        return {
            "family": FAMILY,
            "devices": {name: dev.status() for name, dev in self.devices.items()},
            "totals": self.counters.as_dict(),
        }


def _quiet_pymodbus() -> None:
    """pymodbus logs every timeout at ERROR with a dump of recent frames. The driver counts
    timeouts and reports devices going offline as events, so those lines are noise in the
    gateway's log; an operator who set pymodbus's level explicitly keeps it."""
    lg = logging.getLogger("pymodbus")
    if lg.level == logging.NOTSET:
        lg.setLevel(logging.CRITICAL)


__all__ = [
    "FAMILY",
    "ModbusCounters",
    "ModbusDevice",
    "ModbusDeviceConfig",
    "ModbusDriver",
    "ModbusPointConfig",
    "ModbusWriteError",
    "PollRecord",
    "RtuBus",
    "WriteRefused",
    "inter_frame_delay_s",
]
