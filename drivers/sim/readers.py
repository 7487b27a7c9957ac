"""Simulated card readers on pseudo-terminal pairs: what the reader drivers talk to in tests, the demo
and a site rehearsal.

Each simulator owns a pty pair and publishes the driver's end under a stable path (a symlink,
as udev's ``/dev/serial/by-id`` links are on a real gateway), so "unplug" (both ends closed, the
link removed) and "plug" (a new pty, the link pointed at it) look to the driver like a USB
adapter pulled out and put back.

- ``WiegandConverterSim``: a Wiegand-to-RS-485 converter speaking one framing
  (``wiegand-ascii`` or ``wiegand-stx``): present card N in a format, send a frame with bad
  parity, a frame with a bad checksum or any raw bytes, line garbage, unplug and plug.
- ``OsdpReaderSim``: an OSDP peripheral device (a reader with LED, buzzer and tamper switch),
  libosdp's own ``PeripheralDevice`` on the pty: present a card, raise and clear tamper, and
  everything the control panel commanded (LED, buzzer, key set) is recorded. It holds a configured
  SCBK, or none in install mode; the secure channel refuses a control panel with another key.

All methods are plain (thread-safe where it matters) so tests, the scenario runner and a REPL
can script them.
"""

from __future__ import annotations

import contextlib
import os
import select
import tempfile
import threading
import time
import tty
from typing import Any

import osdp

from drivers.readers.wiegand import FORMATS, Bits, bytes_from_bits, framing_for


class PtyLine:
    """A pty pair; the simulator writes and reads the controlling (master) side, the driver opens
    ``path``, a symlink to the pty's device node."""

    def __init__(self, path: str | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="gh-pty-")
            path = os.path.join(self._tmp.name, "tty")
        self.path = path
        self.master = -1
        self._slave = -1
        self.plug()

    @property
    def plugged(self) -> bool:
        return self.master >= 0

    def plug(self) -> None:
        """A fresh pty behind ``path`` (the same path: the driver must reopen it)."""
        if self.plugged:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line-end translation: a serial line, not a terminal
        os.set_blocking(master, False)
        tmp = f"{self.path}.{os.getpid()}.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.path)  # atomic: the driver never sees a half-made link
        # Keeping our own slave descriptor open keeps the raw settings and lets us write before
        # the driver has opened its end.
        self.master, self._slave = master, slave

    def unplug(self) -> None:
        """Close both ends: the driver's reads fail and its reopen finds no device."""
        if not self.plugged:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.master)
        os.close(self._slave)
        self.master = self._slave = -1

    def write(self, data: bytes, timeout: float = 5.0) -> None:
        """All of ``data``, waiting (bounded) while the driver has not read what is in the pty."""
        if not self.plugged:
            raise OSError(f"{self.path}: unplugged")
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                n = os.write(self.master, view)
                view = view[n:]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.path}: the driver is not reading") from None
                select.select([], [self.master], [], left)

    def read(self, n: int = 4096) -> bytes:
        """What the driver sent, without waiting; b"" when nothing (or unplugged)."""
        if not self.plugged:
            return b""
        try:
            return os.read(self.master, n)
        except (BlockingIOError, OSError):
            return b""

    def close(self) -> None:
        self.unplug()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# --------------------------------------------------------------------------------------------------
# Wiegand converter


class WiegandConverterSim:
    """A Wiegand-to-RS-485 converter; ``framing`` is ``wiegand-ascii`` or ``wiegand-stx``."""

    def __init__(self, framing: str = "wiegand-ascii", path: str | None = None) -> None:
        self.framing = framing_for(framing)
        self.line = PtyLine(path)

    @property
    def path(self) -> str:
        return self.line.path

    @staticmethod
    def card_bits(card: int, facility: int | None = None, fmt: str = "H10301") -> Bits:
        return FORMATS[fmt].encode(card, facility)

    def present_card(self, card: int, facility: int | None = None, fmt: str = "H10301") -> Bits:
        """A card read as the converter sends it; returns the bits."""
        bits = self.card_bits(card, facility, fmt)
        self.send_bits(bits)
        return bits

    def send_bits(self, bits: Bits) -> None:
        self.line.write(self.framing.encode(bits))

    def send_bad_parity(self, card: int, facility: int | None = None, fmt: str = "H10301") -> Bits:
        """The card with its last (odd) parity bit flipped: a noisy Wiegand line."""
        bits = self.card_bits(card, facility, fmt)
        bits = bits[:-1] + ("0" if bits[-1] == "1" else "1")
        self.send_bits(bits)
        return bits

    def send_bad_checksum(self, card: int, facility: int | None = None, fmt: str = "H10301") -> bytes:
        """An STX frame whose checksum is off by one bit (``wiegand-stx`` only)."""
        frame = bytearray(self.framing.encode(self.card_bits(card, facility, fmt)))
        if frame[:1] != b"\x02":
            raise ValueError("bad checksums exist in the wiegand-stx framing only")
        cc = int(frame[-3:-1], 16) ^ 0x01
        frame[-3:-1] = f"{cc:02X}".encode()
        self.line.write(bytes(frame))
        return bytes(frame)

    def send_raw(self, data: bytes) -> None:
        self.line.write(data)

    def send_garbage(self, n: int = 32, seed: int = 7) -> bytes:
        """``n`` bytes of line noise that contain no frame start (so they are all garbage)."""
        import random

        rng = random.Random(seed)
        banned = {0x02, 0x03, ord("W"), ord("\n")}
        noise = bytes(b for b in (rng.randrange(256) for _ in range(n * 2)) if b not in banned)[:n]
        self.line.write(noise)
        return noise

    def unplug(self) -> None:
        self.line.unplug()

    def plug(self) -> None:
        self.line.plug()

    def close(self) -> None:
        self.line.close()


# --------------------------------------------------------------------------------------------------
# OSDP peripheral device


class _PtyChannel(osdp.Channel):
    """libosdp's channel contract (non-blocking read/write/flush) over the pty's master side."""

    def __init__(self, line: PtyLine) -> None:
        super().__init__()
        self.line = line

    def read(self, max_bytes: int) -> bytes:
        return self.line.read(max_bytes)

    def write(self, buf: bytes) -> int:
        if not self.line.plugged:
            return 0
        try:
            return os.write(self.line.master, buf)
        except (BlockingIOError, OSError):
            return 0

    def flush(self) -> None:
        while self.line.read(4096):
            pass


LED = osdp.Command.LED
BUZZER = osdp.Command.Buzzer
KEYSET = osdp.Command.Keyset


class OsdpReaderSim:
    """An OSDP reader (PD) at ``address`` holding ``scbk``; ``scbk=None`` is a reader fresh from the
    box in install mode, which accepts the default key once and then the key the CP sets."""

    def __init__(
        self,
        address: int = 1,
        scbk: bytes | str | None = None,
        path: str | None = None,
        reader_no: int = 0,
    ) -> None:
        if isinstance(scbk, str):
            scbk = bytes.fromhex(scbk)
        self.address = address
        self.scbk = scbk
        self.reader_no = reader_no
        self.line = PtyLine(path)
        self.commands: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._pd: osdp.PeripheralDevice | None = None

    @property
    def path(self) -> str:
        return self.line.path

    def start(self) -> None:
        if self._pd is not None:
            return
        flags = [osdp.LibFlag.EnforceSecure] if self.scbk is not None else [osdp.LibFlag.InstallMode]
        caps = osdp.PDCapabilities(
            [
                (osdp.Capability.LEDControl, 1, 1),
                (osdp.Capability.AudibleControl, 1, 1),
                (osdp.Capability.CommunicationSecurity, 1, 1),
                (osdp.Capability.CardDataFormat, 1, 1),
            ]
        )
        info = osdp.PDInfo(self.address, _PtyChannel(self.line), scbk=self.scbk, flags=flags)
        pd = osdp.PeripheralDevice(
            info, caps, log_level=osdp.LogLevel.Error, command_handler=self._on_command
        )
        pd.start()
        self._pd = pd

    def _on_command(self, cmd: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        # runs on libosdp's PD thread
        with self._lock:
            self.commands.append(dict(cmd))
        if cmd.get("command") == KEYSET and cmd.get("type") == 1:
            self.scbk = bytes(cmd["data"])  # the reader now holds the key the CP installed
        # the PD wrapper also queues every command for get_command(); nobody reads that here
        if self._pd is not None:
            self._pd.get_command(timeout=-1)
        return 0, None

    def commands_of(self, kind: int) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self.commands if c.get("command") == kind]

    @property
    def leds(self) -> list[dict[str, Any]]:
        return self.commands_of(LED)

    @property
    def buzzers(self) -> list[dict[str, Any]]:
        return self.commands_of(BUZZER)

    @property
    def online(self) -> bool:
        return bool(self._pd is not None and self._pd.is_online())

    @property
    def secure(self) -> bool:
        return bool(self._pd is not None and self._pd.is_sc_active())

    def _submit(self, event: dict[str, Any]) -> bool:
        if self._pd is None:
            raise RuntimeError("start() the reader first")
        return bool(self._pd.submit_event(event))

    def present_card(self, card: int, facility: int | None = None, fmt: str = "H10301") -> Bits:
        """A card read, sent as raw Wiegand bits (the usual osdp_RAW reply); returns the bits."""
        bits = FORMATS[fmt].encode(card, facility)
        self.present_bits(bits)
        return bits

    def present_bits(self, bits: Bits) -> bool:
        return self._submit(
            {
                "event": osdp.Event.CardRead,
                "reader_no": self.reader_no,
                "direction": 0,
                "format": osdp.CardFormat.Wiegand,
                "length": len(bits),
                "data": bytes_from_bits(bits),
            }
        )

    def press_keys(self, keys: str) -> bool:
        """Keys pressed on the reader's keypad (osdp_KEYPPAD): digits, ``*`` and ``#``."""
        return self._submit(
            {"event": osdp.Event.KeyPress, "reader_no": self.reader_no, "data": keys.encode()}
        )

    def tamper(self, on: bool = True, power_fail: bool = False) -> bool:
        """The local status report (osdp_LSTATR): tamper switch and power."""
        return self._submit(
            {
                "event": osdp.Event.Status,
                "type": osdp.StatusReportType.Local,
                "report": bytes([int(on), int(power_fail)]),
            }
        )

    def unplug(self) -> None:
        self.line.unplug()

    def plug(self) -> None:
        self.line.plug()

    def stop(self) -> None:
        if self._pd is not None:
            self._pd.teardown()
            self._pd = None

    def close(self) -> None:
        self.stop()
        self.line.close()
