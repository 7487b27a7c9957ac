"""OSDP v2 readers over RS-485, the gateway as control panel (CP), through libosdp's Python binding.

libosdp does the protocol: polling, the secure channel (AES-128 with each reader's SCBK), retries,
taking a silent reader offline and trying it again. This module gives it a serial line, turns its
events into ours and its online bitmask into device liveness:

- one ``OsdpBus`` per serial port (an RS-485 bus may carry several readers at distinct addresses),
  running one ``osdp.ControlPanel`` whose thread polls the readers (libosdp refreshes every 20 ms);
- card reads (raw Wiegand bits, decoded with the reader's allowed formats, or ASCII) become
  ``reader.card``; a card whose parity fails is a ``bad_parity`` fault, never a card;
- the local status report's tamper bit becomes ``reader.tamper`` (on each change);
- a reader is online while libosdp has it online, which with ``EnforceSecure`` means "answering
  over a secure channel"; a reader that answers but refuses the secure channel (the wrong key, or
  a reader still on the default key) is a ``secure_channel_refused`` fault and stays offline.
  libosdp then waits 300 s before it tries that reader again;
- ``install_mode`` lets the CP use the default key (SCBK-D) and install the configured SCBK on the
  reader (osdp_KEYSET); the bus reports ``install_mode_on`` at every start so it is switched off;
- ``indicate(grant)``: green LED and a short beep, or red LED and three beeps (osdp_LED, osdp_BUZ).

The serial port is opened with pyserial; the channel reads and writes its descriptor without
blocking, from libosdp's thread. A port that fails is closed, every reader on it reported offline,
and reopened with backoff (drivers.readers.runner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import osdp
import serial

from drivers.base import Backoff, DeviceLiveness, Online, now_ms
from drivers.readers.card import CardRead, FaultReporter, OnCard, OnKeys, call_hook
from drivers.readers.config import ReaderConfig
from drivers.readers.runner import PortLost, open_port
from drivers.readers.wiegand import BadParity, bits_from_bytes, decode, formats_by_bits
from protocols.events import NewEvent
from protocols.sink import EventSink

log = logging.getLogger("gatehouse.readers.osdp")

# How a decision is shown at the reader. OSDP units: on/off/timer counts are 100 ms; LED control
# code 2 = "set the temporary state and start its timer" (the permanent state returns after);
# buzzer tone code 2 = the reader's default tone.


@dataclass(frozen=True, slots=True)
class Indication:
    led_color: int
    led_on: int
    led_off: int
    led_timer: int
    beep_on: int
    beep_off: int
    beeps: int

    def commands(self, reader_no: int = 0) -> list[dict[str, Any]]:
        led = {
            "command": osdp.Command.LED,
            "reader": reader_no,
            "led_number": 0,
            "temporary": True,
            "control_code": 2,
            "on_count": self.led_on,
            "off_count": self.led_off,
            "on_color": self.led_color,
            "off_color": osdp.CommandLEDColor.Black,
            "timer_count": self.led_timer,
        }
        buzzer = {
            "command": osdp.Command.Buzzer,
            "reader": reader_no,
            "control_code": 2,
            "on_count": self.beep_on,
            "off_count": self.beep_off,
            "rep_count": self.beeps,
        }
        return [led, buzzer]


GRANT = Indication(
    osdp.CommandLEDColor.Green, led_on=10, led_off=0, led_timer=30, beep_on=2, beep_off=0, beeps=1
)
DENY = Indication(osdp.CommandLEDColor.Red, led_on=3, led_off=2, led_timer=30, beep_on=3, beep_off=2, beeps=3)

# libosdp notification types (Event.Notification) and local status report layout
_NOTIFY_COMMAND = osdp.EventNotification.Command
_NOTIFY_SC = osdp.EventNotification.SecureChannelStatus
_NOTIFY_PD = osdp.EventNotification.PeripheralDeviceStatus
_CARD_FORMAT_ASCII = osdp.CardFormat.ASCII
_HUP = select.POLLHUP | select.POLLERR | select.POLLNVAL


class _SerialChannel(osdp.Channel):
    """libosdp's channel over an open pyserial port. Called on libosdp's thread; never raises into
    C (an exception there would be lost): a failed read or write marks the channel lost instead."""

    def __init__(self, port: serial.Serial, on_lost: Callable[[str], None]) -> None:
        super().__init__()
        self.fd = port.fileno()
        self.name = port.port
        self.lost: str | None = None
        self.rx_bytes = 0
        self._on_lost = on_lost
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    def _fail(self, what: str, e: BaseException) -> None:
        if self.lost is None:
            self.lost = f"{what} failed on {self.name}: {getattr(e, 'strerror', None) or e}"
            self._on_lost(self.lost)

    def read(self, max_bytes: int) -> bytes:
        if self.lost is not None:
            return b""
        try:
            data = os.read(self.fd, max_bytes)
        except BlockingIOError:
            return b""
        except OSError as e:
            self._fail("read", e)
            return b""
        if not data:
            # A tty in raw mode (VMIN=0) reads 0 bytes both when idle and when the line is gone;
            # only a hangup on poll tells them apart.
            if any(ev & _HUP for _, ev in self._poll.poll(0)):
                self._fail("read", EOFError("hang-up (device gone)"))
            return b""
        self.rx_bytes += len(data)
        return data

    def write(self, buf: bytes) -> int:
        if self.lost is not None:
            return 0
        try:
            return os.write(self.fd, buf)
        except BlockingIOError:
            return 0
        except OSError as e:
            self._fail("write", e)
            return 0

    def flush(self) -> None:
        while self.read(4096):
            pass


@dataclass
class OsdpStats:
    cards: int = 0
    bad_parity: int = 0
    tampers: int = 0
    indications: int = 0
    sc_refused: int = 0


@dataclass
class OsdpReader:
    """One reader on a bus: its config, liveness and what the access logic calls."""

    cfg: ReaderConfig
    bus: OsdpBus
    liveness: DeviceLiveness
    faults: FaultReporter
    stats: OsdpStats = field(default_factory=OsdpStats)
    tamper: bool | None = None
    secure: bool = False
    # secure channel came up since the reader's last online/offline change (install mode goes
    # through a deliberate SC drop while it changes keys; that is no refusal)
    sc_up_since_change: bool = False

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def address(self) -> int:
        return self.cfg.address or 0

    @property
    def flags(self) -> list[int]:
        # EnforceSecure: never fall back to plain text, never accept SCBK-D; install mode instead
        # lets libosdp use SCBK-D once and then set the configured key.
        base = [osdp.LibFlag.InstallMode] if self.cfg.install_mode else [osdp.LibFlag.EnforceSecure]
        return [*base, osdp.LibFlag.EnableNotification]

    async def indicate(self, grant: bool) -> bool:
        """Green + short beep, or red + buzzer; False when the reader is offline or refused it."""
        ok = self.bus.submit(self, (GRANT if grant else DENY).commands())
        if ok:
            self.stats.indications += 1
        return ok


class OsdpBus:
    """All OSDP readers on one serial port, polled by one libosdp control panel."""

    def __init__(
        self,
        readers: Sequence[ReaderConfig],
        sink: EventSink,
        on_card: OnCard | None = None,
        on_keys: OnKeys | None = None,
        status_period_s: float = 0.25,
        answer_grace_s: float = 5.0,
    ) -> None:
        if not readers:
            raise ValueError("an OSDP bus needs at least one reader")
        ports = {r.port for r in readers}
        if len(ports) != 1 or any(r.protocol != "osdp" for r in readers):
            raise ValueError("an OSDP bus is the OSDP readers of one port")
        self.cfg = readers[0]  # port, baudrate and backoff of the bus
        self.sink = sink
        self.on_card = on_card
        self.on_keys = on_keys
        self.status_period_s = status_period_s
        self.answer_grace_s = answer_grace_s
        self.readers = [
            OsdpReader(r, self, DeviceLiveness(sink, r.name, r.family), FaultReporter(sink, r.name, r.family))
            for r in readers
        ]
        self._by_addr = {r.address: r for r in self.readers}
        self._allowed = {r.name: formats_by_bits(r.cfg.formats) for r in self.readers}
        self.backoff = Backoff(self.cfg.reopen_min_s, self.cfg.reopen_max_s)
        self._cp: osdp.ControlPanel | None = None
        self._cp_lock = threading.Lock()

    @property
    def port(self) -> str:
        return self.cfg.port

    # ---- running

    async def run(self) -> None:
        await self._warn_install_mode()
        while True:
            try:
                port = open_port(self.cfg)
            except PortLost as e:
                await self._all_failed("open_failed", str(e))
                await asyncio.sleep(self.backoff.next())
                continue
            try:
                await self._session(port)
            except PortLost as e:
                log.warning("OSDP bus %s: %s; reopening", self.port, e)
                await self._all_failed("port_lost", str(e))
            finally:
                self._stop_cp()
                try:
                    port.close()
                except (OSError, serial.SerialException):
                    pass
            await asyncio.sleep(self.backoff.next())

    async def _warn_install_mode(self) -> None:
        for r in self.readers:
            if r.cfg.install_mode:
                log.warning(
                    "READER %s IS IN OSDP INSTALL MODE: anyone on the bus can set its key. "
                    "Set install_mode = false once the reader is commissioned.",
                    r.name,
                )
                await r.faults.report(
                    "install_mode_on",
                    f"install_mode is on for address {r.address} on {self.port}: the reader accepts the "
                    "default key; switch it off after commissioning",
                )

    async def _session(self, port: serial.Serial) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, dict[str, Any]] | str] = asyncio.Queue()

        def lost(why: str) -> None:  # libosdp's thread
            loop.call_soon_threadsafe(queue.put_nowait, why)

        channel = _SerialChannel(port, lost)
        infos = [
            osdp.PDInfo(r.address, channel, scbk=r.cfg.scbk_bytes, name=r.name, flags=r.flags)
            for r in self.readers
        ]
        addresses = [r.address for r in self.readers]
        cp: osdp.ControlPanel

        def on_event(pd: int, event: dict[str, Any]) -> int:  # libosdp's thread, lock held
            address = addresses[pd]
            # the wrapper also queues every event for get_event(); take it back out, or that
            # queue grows for as long as the gateway runs
            cp.get_event(address, timeout=-1)
            loop.call_soon_threadsafe(queue.put_nowait, (address, event))
            return 0

        cp = osdp.ControlPanel(infos, log_level=osdp.LogLevel.Error, event_handler=on_event)
        for r in self.readers:
            r.sc_up_since_change = False
        with self._cp_lock:
            self._cp = cp
        cp.start()
        started = time.monotonic()
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
            # races with a completed get, and this loop would then never end
            item: tuple[int, dict[str, Any]] | str | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.status_period_s):
                    item = await queue.get()
            if isinstance(item, str):
                raise PortLost(item)
            if item is not None:
                await self._on_event(*item)
            await self._reconcile(cp, channel, time.monotonic() - started)

    def _stop_cp(self) -> None:
        with self._cp_lock:
            cp, self._cp = self._cp, None
        if cp is not None:
            # Joins libosdp's thread (it sleeps 20 ms between refreshes). Done inline, not in an
            # executor: a cancellation must not leave the thread polling a port we then close.
            cp.stop()

    async def _all_failed(self, reason: str, detail: str) -> None:
        for r in self.readers:
            r.secure = False
            await r.liveness.failed(reason, port=self.port, detail=detail)

    # ---- libosdp's state and events

    async def _reconcile(self, cp: osdp.ControlPanel, channel: _SerialChannel, up_s: float) -> None:
        mask = cp.status()
        sc_mask = cp.sc_status()
        for i, r in enumerate(self.readers):
            online = bool(mask & (1 << i))
            r.secure = bool(sc_mask & (1 << i))
            if online:
                if await r.liveness.answered(address=r.address, secure=r.secure):
                    self.backoff.reset()
            elif r.liveness.state is Online.ONLINE:
                await r.liveness.failed("no_answer", address=r.address)
            elif r.liveness.state is Online.UNKNOWN and up_s > self.answer_grace_s:
                why = "no_answer" if channel.rx_bytes == 0 else "not_online"
                await r.liveness.failed(why, address=r.address, port=self.port)

    async def _on_event(self, address: int, ev: dict[str, Any]) -> None:
        r = self._by_addr.get(address)
        if r is None:
            return
        kind = ev.get("event")
        if kind == osdp.Event.CardRead:
            await self._card(r, ev)
        elif kind == osdp.Event.Status:
            await self._status(r, ev)
        elif kind == osdp.Event.Notification:
            await self._notification(r, ev)
        elif kind == osdp.Event.KeyPress:
            await self._keys(r, ev)
        else:
            log.debug("reader %s: event %r not used", r.name, ev)

    async def _card(self, r: OsdpReader, ev: dict[str, Any]) -> None:
        data: bytes = ev.get("data", b"")
        if ev.get("format") == _CARD_FORMAT_ASCII:
            text = data.decode("ascii", "replace")
            read = CardRead(
                r.name, r.cfg.door, "ascii", 8 * len(data), None, text, data.hex(), now_ms(), r.indicate
            )
        else:
            try:
                bits = bits_from_bytes(data, int(ev.get("length", 8 * len(data))))
            except ValueError as e:
                await r.faults.report("bad_frame", f"card data from address {r.address}: {e}")
                return
            try:
                d = decode(bits, self._allowed[r.name])
            except BadParity as e:
                r.stats.bad_parity += 1
                await r.faults.report("bad_parity", f"{e} ({len(bits)} bits {bits})")
                return
            read = CardRead.of(r.name, r.cfg.door, d, r.indicate)
        r.stats.cards += 1
        await self.sink.emit([read.event()])
        await call_hook(self.on_card, [read], log.name)

    async def _keys(self, r: OsdpReader, ev: dict[str, Any]) -> None:
        if self.on_keys is None:
            return
        keys = bytes(ev.get("data", b"")).decode("ascii", "replace")
        try:
            await self.on_keys(r.name, keys)
        except Exception:
            log.exception("on_keys hook failed for %s", r.name)

    async def _status(self, r: OsdpReader, ev: dict[str, Any]) -> None:
        if ev.get("type") != osdp.StatusReportType.Local:
            return
        report: bytes = ev.get("report", b"")
        tamper = bool(report[0]) if report else False
        power_fail = bool(report[1]) if len(report) > 1 else False
        if tamper == r.tamper:
            return
        first = r.tamper is None
        r.tamper = tamper
        if first and not tamper:
            return  # a first report of "all well" is no news
        r.stats.tampers += int(tamper)
        await self.sink.emit(
            [
                NewEvent(
                    "reader.tamper", r.name, {"reader": r.name, "tamper": tamper, "power_fail": power_fail}
                )
            ]
        )

    async def _notification(self, r: OsdpReader, ev: dict[str, Any]) -> None:
        kind, arg0, arg1 = ev.get("type"), ev.get("arg0"), ev.get("arg1")
        if kind == _NOTIFY_SC:
            if arg0:
                r.sc_up_since_change = True
            elif not r.sc_up_since_change:
                # the handshake failed before the channel ever came up: the reader answered but
                # proved it does not hold our key (or we do not hold its)
                r.stats.sc_refused += 1
                await r.faults.report(
                    "secure_channel_refused",
                    f"address {r.address} on {self.port}: secure channel handshake failed; the reader's "
                    "key is not the configured scbk (or it still has the default key: install mode)",
                )
                await r.liveness.failed("secure_channel_refused", address=r.address)
        elif kind == _NOTIFY_PD:
            r.sc_up_since_change = False
            if not arg0 and r.liveness.state is not Online.OFFLINE:
                await r.liveness.failed("no_answer", address=r.address)
        elif kind == _NOTIFY_COMMAND and arg0 == osdp.Command.Keyset and arg1:
            log.warning("reader %s took its new key; set install_mode = false now", r.name)
            await r.faults.report(
                "key_installed",
                f"the reader at address {r.address} took the configured scbk; switch install_mode off",
            )

    # ---- commands

    def submit(self, r: OsdpReader, commands: list[dict[str, Any]]) -> bool:
        with self._cp_lock:
            cp = self._cp
            if cp is None or not r.liveness.online:
                return False
            return all(bool(cp.submit_command(r.address, c)) for c in commands)
