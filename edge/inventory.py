"""The gateway's inventory (protocols/inventory.py) as its config describes it, and the events
that carry it to the cloud.

Devices are the configured Modbus and BACnet devices and card readers; points are every
``device/point`` the drivers read, with its unit. The synthetic sources of the demo are left out:
they stand in for devices and name no points.
"""

import logging

from edge.config import GatewayConfig
from protocols.events import NewEvent
from protocols.inventory import (
    INVENTORY_KIND,
    INVENTORY_SOURCE,
    InventoryDevice,
    InventoryPoint,
    split_inventory,
)

log = logging.getLogger(__name__)

# The limits of protocols/inventory.py: a long host name or unit is cut, not refused.
_DESCRIPTION, _UNIT, _SOURCE = 200, 32, 128


def inventory_of(cfg: GatewayConfig) -> tuple[list[InventoryDevice], list[InventoryPoint]]:
    devices: list[InventoryDevice] = []
    points: list[InventoryPoint] = []
    for m in cfg.modbus:
        where = f"{m.host}:{m.port}" if m.transport == "tcp" else f"{m.serial_port} at {m.baudrate} baud"
        devices.append(_device(m.name, "modbus", f"Modbus {m.transport} {where}, unit {m.unit}"))
        points += [_point(m.name, p.name, p.unit) for p in m.points if _fits(m.name, p.name)]
    for b in cfg.bacnet:
        devices.append(_device(b.name, "bacnet", f"BACnet/IP {b.address}, device {b.device_instance}"))
        points += [_point(b.name, o.name, o.unit) for o in b.objects if _fits(b.name, o.name)]
    for r in cfg.readers:
        door = f", door {r.door}" if r.door else ""
        devices.append(_device(r.name, r.family, f"{r.protocol} reader on {r.port}{door}"))
    return devices, points


def _device(name: str, protocol: str, description: str) -> InventoryDevice:
    return InventoryDevice(name=name, protocol=protocol, description=description[:_DESCRIPTION])


def _point(device: str, point: str, unit: str) -> InventoryPoint:
    return InventoryPoint(source=f"{device}/{point}", device=device, unit=unit[:_UNIT])


def _fits(device: str, point: str) -> bool:
    # A source too long for an event (protocols/envelope.py) never reports anything either.
    return len(device) + 1 + len(point) <= _SOURCE


def inventory_events(cfg: GatewayConfig, time_ms: int) -> list[NewEvent]:
    """The inventory of ``cfg`` as ``gateway.inventory`` events, every part stamped ``time_ms``
    (the cloud finds an inventory's parts by that time)."""
    devices, points = inventory_of(cfg)
    try:
        parts = split_inventory(devices, points)
    except ValueError as e:
        # Not worth failing a start or a config change for: the cloud keeps the last inventory.
        log.error("inventory not sent: %s", e)
        return []
    return [NewEvent(INVENTORY_KIND, INVENTORY_SOURCE, part.model_dump(), time_ms=time_ms) for part in parts]
