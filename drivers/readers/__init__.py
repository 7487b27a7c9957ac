"""Card readers: Wiegand-to-RS-485 converters and OSDP readers, as ``reader.card`` events.

``build_readers(configs, sink, on_card)`` makes the drivers for a ``[[readers]]`` list: one
``WiegandConverterReader`` per converter, one ``OsdpBus`` per serial port carrying OSDP readers.
Each has ``run()`` (until cancelled) and finds a reader's ``indicate`` through ``indicator(name)``.
See card.py for the event shapes, wiegand.py for formats and framings, config.py for the config.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from drivers.readers.card import CardRead, Indicate, OnCard, OnKeys
from drivers.readers.config import ReaderConfig, ReadersSection, check_readers
from protocols.sink import EventSink

# The drivers are imported when readers are built, not with this package: the gateway's config
# check reads drivers.readers.config, and a gateway without OSDP readers never loads libosdp.
if TYPE_CHECKING:
    from drivers.readers.converter import WiegandConverterReader
    from drivers.readers.osdp import OsdpBus, OsdpReader

    ReaderDriver = WiegandConverterReader | OsdpBus


def build_readers(
    configs: Sequence[ReaderConfig],
    sink: EventSink,
    on_card: OnCard | None = None,
    on_keys: OnKeys | None = None,
) -> list[ReaderDriver]:
    from drivers.readers.converter import WiegandConverterReader

    check_readers(configs)
    out: list[ReaderDriver] = []
    buses: dict[str, list[ReaderConfig]] = {}
    for c in configs:
        if c.protocol == "osdp":
            buses.setdefault(c.port, []).append(c)
        else:
            out.append(WiegandConverterReader(c, sink, on_card))
    if buses:
        from drivers.readers.osdp import OsdpBus

        # Keypads are OSDP's: a Wiegand converter passes card bits only.
        out.extend(OsdpBus(group, sink, on_card, on_keys) for group in buses.values())
    return out


def indicator(drivers: Sequence[ReaderDriver], name: str) -> Indicate:
    """The ``indicate(grant)`` of the reader called ``name``."""
    for d in drivers:
        for r in _readers_of(d):
            if r.name == name:
                return r.indicate
    raise KeyError(f"no reader {name!r}")


def _readers_of(d: Any) -> list[Any]:
    return list(getattr(d, "readers", None) or [d])


class ReaderSet:
    """All of a gateway's readers as one field driver: ``run`` and ``status`` like the others."""

    def __init__(
        self,
        configs: Sequence[ReaderConfig],
        sink: EventSink,
        on_card: OnCard | None = None,
        on_keys: OnKeys | None = None,
    ):
        self.drivers = build_readers(configs, sink, on_card, on_keys)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for d in self.drivers:
                tg.create_task(d.run(), name=f"reader-{getattr(d, 'name', None) or getattr(d, 'port', '')}")

    def indicator(self, name: str) -> Indicate:
        return indicator(self.drivers, name)

    def status(self) -> dict[str, Any]:
        devices = {}
        for d in self.drivers:
            for r in _readers_of(d):
                devices[r.name] = {
                    "state": r.liveness.state.value,
                    "since_ms": r.liveness.since_ms,
                    "protocol": r.cfg.protocol,
                    "port": r.cfg.port,
                    "stats": asdict(r.stats),
                }
        return {"devices": devices}


__all__ = [
    "CardRead",
    "Indicate",
    "OnCard",
    "OsdpBus",
    "OsdpReader",
    "ReaderConfig",
    "ReaderSet",
    "ReadersSection",
    "WiegandConverterReader",
    "build_readers",
    "check_readers",
    "indicator",
]
