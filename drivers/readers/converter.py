"""A Wiegand-to-RS-485 converter on a serial port: frames in, ``reader.card`` events out.

The converter only talks (it has no line back to the reader's LED or buzzer, which are wired to
the door controller), so ``indicate`` answers False. Online means "the port is open": a converter
says nothing until a card is presented, so silence is not a fault.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from drivers.base import Backoff, DeviceLiveness
from drivers.readers.card import CardRead, FaultReporter, OnCard, call_hook
from drivers.readers.config import ReaderConfig
from drivers.readers.runner import PortLost, PortReader, open_port
from drivers.readers.wiegand import BadFrame, BadParity, decode, formats_by_bits, framing_for
from protocols.sink import EventSink

log = logging.getLogger("gatehouse.readers.wiegand")


@dataclass
class ConverterStats:
    frames: int = 0  # well-formed frames seen
    cards: int = 0  # of which became reader.card
    bad_parity: int = 0
    bad_frame: int = 0
    opens: int = 0
    losses: int = 0


class WiegandConverterReader:
    def __init__(self, cfg: ReaderConfig, sink: EventSink, on_card: OnCard | None = None) -> None:
        if cfg.protocol == "osdp":
            raise ValueError(f"reader {cfg.name}: protocol osdp is not a Wiegand converter")
        self.cfg = cfg
        self.name = cfg.name
        self.sink = sink
        self.on_card = on_card
        self.allowed = formats_by_bits(cfg.formats)
        self.framing = framing_for(cfg.protocol)
        self._garbage_before = 0
        self.liveness = DeviceLiveness(sink, cfg.name, cfg.family)
        self.faults = FaultReporter(sink, cfg.name, cfg.family)
        self.stats = ConverterStats()
        self.backoff = Backoff(cfg.reopen_min_s, cfg.reopen_max_s)

    @property
    def garbage_bytes(self) -> int:
        """Bytes skipped outside frames since start (across reopens)."""
        return self._garbage_before + self.framing.garbage_bytes

    async def indicate(self, grant: bool) -> bool:
        return False

    async def run(self) -> None:
        while True:
            try:
                port = open_port(self.cfg)
            except PortLost as e:
                await self.liveness.failed("open_failed", port=self.cfg.port, detail=str(e))
                await asyncio.sleep(self.backoff.next())
                continue
            self.stats.opens += 1
            reader = PortReader(port)
            try:
                await self.liveness.answered(port=self.cfg.port)
                await self._session(reader)
            except PortLost as e:
                self.stats.losses += 1
                log.warning("reader %s: %s; reopening", self.name, e)
                await self.liveness.failed("port_lost", port=self.cfg.port, detail=str(e))
            finally:
                reader.close()
            # a fresh parser: half a frame from before the loss must not join the next one
            self._garbage_before += self.framing.garbage_bytes
            self.framing = framing_for(self.cfg.protocol)
            await asyncio.sleep(self.backoff.next())

    async def _session(self, reader: PortReader) -> None:
        while True:
            data = await reader.read()
            # the port works: a later loss starts again from the shortest delay
            self.backoff.reset()
            await self.handle(data)

    async def handle(self, data: bytes) -> None:
        """Parse bytes as they came off the wire; emit cards (batched) and faults in wire order."""
        batch: list[CardRead] = []
        for item in self.framing.feed(data):
            if isinstance(item, BadFrame):
                self.stats.bad_frame += 1
                await self._deliver(batch)
                where = f"{self.cfg.protocol} on {self.cfg.port}"
                await self.faults.report("bad_frame", f"{where}: {item.reason}: {item.raw!r}")
                continue
            self.stats.frames += 1
            try:
                d = decode(item, self.allowed)
            except BadParity as e:
                self.stats.bad_parity += 1
                await self._deliver(batch)
                await self.faults.report("bad_parity", f"{e} ({len(item)} bits {item})")
                continue
            read = CardRead.of(self.name, self.cfg.door, d, self.indicate)
            batch.append(read)
        await self._deliver(batch)

    async def _deliver(self, batch: list[CardRead]) -> None:
        if not batch:
            return
        reads = batch[:]
        batch.clear()
        self.stats.cards += len(reads)
        # one emit per chunk read: the outbox commits a batch at the cost of one event
        await self.sink.emit([r.event() for r in reads])
        await call_hook(self.on_card, reads, log.name)
