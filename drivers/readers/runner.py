"""Keeping a reader's serial port open: open, use, notice it vanish, reopen with backoff.

A USB-RS-485 adapter that is unplugged makes ``open`` fail (the device node is gone) or a read
fail (EIO on the open descriptor). Either way the reader is reported offline once, the port is
closed, and it is tried again after a delay that doubles from ``reopen_min_s`` up to
``reopen_max_s``; it is reported online again when it opens (and, for OSDP, answers).

Reading is done on the event loop: pyserial opens and configures the port (non-blocking), and
the loop's readiness callback reads the descriptor, so a reader costs no thread and no CPU while
the line is quiet.
"""

from __future__ import annotations

import asyncio
import os

import serial

from drivers.readers.config import ReaderConfig


class PortLost(Exception):
    """The port went away under us (unplugged, or the peer end of a pty closed)."""


def open_port(cfg: ReaderConfig) -> serial.Serial:
    """Open and configure the reader's port; raises PortLost naming the port and the reason."""
    try:
        # timeout=0: non-blocking; exclusive: a second process on one RS-485 adapter garbles both
        return serial.Serial(cfg.port, cfg.baudrate, timeout=0, write_timeout=0, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as e:
        raise PortLost(f"cannot open {cfg.port}: {e}") from None


class PortReader:
    """The bytes arriving on an open port, as an async iterator; raises PortLost when it dies."""

    def __init__(self, port: serial.Serial, chunk: int = 65536) -> None:
        self.port = port
        self.fd = port.fileno()
        self.chunk = chunk
        self._q: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._watching = True
        self._loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, self.chunk)
        except BlockingIOError:
            return
        except OSError as e:  # EIO: the other end of the line is gone
            self._stop_watching()
            self._q.put_nowait(PortLost(f"read failed on {self.port.port}: {e.strerror or e}"))
            return
        if not data:
            self._stop_watching()
            self._q.put_nowait(PortLost(f"end of file on {self.port.port}"))
            return
        self._q.put_nowait(data)

    def _stop_watching(self) -> None:
        if self._watching:
            self._watching = False
            self._loop.remove_reader(self.fd)

    async def read(self) -> bytes:
        """The next chunk (everything that has arrived, joined); PortLost when the port died."""
        item = await self._q.get()
        if isinstance(item, BaseException):
            raise item
        if self._q.empty():
            return item
        parts = [item]
        while not self._q.empty():
            nxt = self._q.get_nowait()
            if isinstance(nxt, BaseException):
                self._q.put_nowait(nxt)  # deliver the data first, the loss on the next read
                break
            parts.append(nxt)
        return b"".join(parts)

    def close(self) -> None:
        self._stop_watching()
        try:
            self.port.close()
        except (OSError, serial.SerialException):
            pass
