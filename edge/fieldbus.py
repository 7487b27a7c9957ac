"""The gateway's field drivers: built from its config, run under its supervisor, and their device
states written where ``gatehouse gateway status`` reads them.

Driver modules are imported only when their family is configured: a gateway without BACnet
devices never loads bacpypes3, one without Modbus never loads pymodbus (tens of MB on a Pi).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge.config import GatewayConfig
from protocols.sink import EventSink

if TYPE_CHECKING:
    from drivers.readers.card import OnCard, OnKeys

log = logging.getLogger(__name__)

DEVICES_FILE = "devices.json"


class FieldDriver(Protocol):
    async def run(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """``{"devices": {name: {"state": ..., "since_ms": ..., ...}}, ...}`` plus the driver's
        own counters."""
        ...


def build_drivers(
    cfg: GatewayConfig, sink: EventSink, on_card: OnCard | None = None, on_keys: OnKeys | None = None
) -> dict[str, FieldDriver]:
    drivers: dict[str, FieldDriver] = {}
    if cfg.modbus:
        from drivers.modbus import ModbusDriver

        drivers["modbus"] = ModbusDriver.from_config(cfg.modbus, sink)
    if cfg.bacnet:
        from drivers.bacnet import BacnetDriver

        drivers["bacnet"] = BacnetDriver.from_config(cfg.bacnet, sink, cfg.bacnet_local)
    if cfg.readers:
        from drivers.readers import ReaderSet

        # Cards become reader.card events; the access decisions that answer them are the
        # gateway's local logic (edge/local.py), which plugs in as on_card.
        drivers["readers"] = ReaderSet(cfg.readers, sink, on_card, on_keys)
    return drivers


def write_device_status(
    path: Path,
    drivers: dict[str, FieldDriver],
    *,
    running: bool = True,
    local: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """``{"as_of_ms", "running", "families": {family: status}, "local": {...}}``: a reader can tell
    a live picture from the last one a stopped gateway left behind. ``local`` is the local
    action's state (doors, fire release, zones, rules, the credential store)."""
    doc: dict[str, Any] = {
        "as_of_ms": time.time_ns() // 1_000_000,
        "running": running,
        "families": {family: d.status() for family, d in drivers.items()},
    }
    if local is not None:
        doc["local"] = local()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, default=str))
    os.replace(tmp, path)  # a reader never sees half a file


async def publish_device_status(
    path: Path,
    drivers: dict[str, FieldDriver],
    every_s: float = 2.0,
    local: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Keep ``devices.json`` current while the drivers run (read by ``gateway status``)."""
    while True:
        try:
            write_device_status(path, drivers, local=local)
        except OSError as e:  # a full disk must not stop the drivers; the outbox says the rest
            log.warning("cannot write %s: %s", path, e)
        await asyncio.sleep(every_s)


def read_device_status(data_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((data_dir / DEVICES_FILE).read_text()))
    except (OSError, ValueError):
        return None
