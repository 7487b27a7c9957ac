"""A gateway's inventory: the field devices and points its running config sets up.

The gateway sends it as ``gateway.inventory`` events (security lane: kept, never evicted, in
order with the other events) when it starts and after a config change, so the cloud's device and
point registry always follows the config that is really running, through the same outbox, acks
and resends as every event: nothing is lost while the gateway is offline, and no second channel
or retained message has to be kept consistent with the first.

One inventory can be large (a plant room of BACnet controllers has thousands of points), so it is
split into parts of at most ``PART_MAX_BYTES`` of JSON each: every part fits one message with room
to spare, whatever else shares its batch. Each part names the inventory's ``version`` (a hash of
its content), its number and the number of parts; all parts carry the same time, and the cloud
replaces the gateway's registry only once it holds every part of one version.
"""

import hashlib
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

INVENTORY_KIND = "gateway.inventory"
# All parts have this source: the cloud finds the parts of one inventory through the events
# index on (gateway, source, time) without wading through the gateway's other events.
INVENTORY_SOURCE = "inventory"
# A part's data as JSON, uncompressed: an eighth of a message (protocols/envelope.py,
# MAX_MESSAGE_BYTES), so a part never crowds a batch or comes near the limit.
PART_MAX_BYTES = 16 * 1024
MAX_PARTS = 1000
VERSION_PATTERN = r"^[0-9a-f]{16}$"

_STRICT = ConfigDict(extra="ignore", strict=True, frozen=True)


class InventoryDevice(BaseModel):
    model_config = _STRICT

    name: Annotated[str, Field(min_length=1, max_length=64)]
    protocol: Annotated[str, Field(min_length=1, max_length=32)]  # modbus, bacnet, wiegand, osdp, ...
    description: Annotated[str, Field(max_length=200)] = ""


class InventoryPoint(BaseModel):
    model_config = _STRICT

    source: Annotated[str, Field(min_length=1, max_length=128)]  # "device/point", as events carry it
    device: Annotated[str, Field(min_length=1, max_length=64)]
    unit: Annotated[str, Field(max_length=32)] = ""


class InventoryPart(BaseModel):
    """The data of one ``gateway.inventory`` event."""

    model_config = _STRICT

    version: Annotated[str, Field(pattern=VERSION_PATTERN)]
    part: Annotated[int, Field(ge=1, le=MAX_PARTS)]
    parts: Annotated[int, Field(ge=1, le=MAX_PARTS)]
    devices: list[InventoryDevice] = Field(default_factory=list)
    points: list[InventoryPoint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _in_range(self) -> "InventoryPart":
        if self.part > self.parts:
            raise ValueError(f"part {self.part} of {self.parts}")
        return self


def inventory_version(devices: Sequence[InventoryDevice], points: Sequence[InventoryPoint]) -> str:
    """A hash of the content: the same config gives the same version after every restart."""
    doc = {"devices": [d.model_dump() for d in devices], "points": [p.model_dump() for p in points]}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def split_inventory(
    devices: Iterable[InventoryDevice], points: Iterable[InventoryPoint], *, max_bytes: int = PART_MAX_BYTES
) -> list[InventoryPart]:
    """The inventory in parts of at most ``max_bytes`` of JSON each, devices first. An empty
    inventory is one empty part (it tells the cloud that the gateway has no devices now)."""
    devices = sorted(devices, key=lambda d: d.name)
    points = sorted(points, key=lambda p: p.source)
    version = inventory_version(devices, points)
    # Room for the part's own keys, with numbers at their widest.
    overhead = len(_json(InventoryPart(version=version, part=MAX_PARTS, parts=MAX_PARTS)))
    chunks: list[tuple[list[InventoryDevice], list[InventoryPoint]]] = [([], [])]
    size = overhead
    items: list[InventoryDevice | InventoryPoint] = [*devices, *points]
    for item in items:
        item_size = len(_json(item)) + 1  # and its comma
        if item_size + overhead > max_bytes:
            raise ValueError(f"one inventory entry is {item_size} bytes, more than a part holds")
        if size + item_size > max_bytes:
            chunks.append(([], []))
            size = overhead
        chunk_devices, chunk_points = chunks[-1]
        if isinstance(item, InventoryDevice):
            chunk_devices.append(item)
        else:
            chunk_points.append(item)
        size += item_size
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"the inventory needs {len(chunks)} parts, more than {MAX_PARTS}")
    return [
        InventoryPart(version=version, part=i + 1, parts=len(chunks), devices=d, points=p)
        for i, (d, p) in enumerate(chunks)
    ]


def parse_part(data: dict[str, Any]) -> InventoryPart | None:
    """An event's data as an inventory part; None if it is not one."""
    try:
        return InventoryPart.model_validate(data)
    except ValidationError:
        return None


def assemble(
    parts: Iterable[InventoryPart], version: str
) -> tuple[list[InventoryDevice], list[InventoryPoint]] | None:
    """The devices and points of inventory ``version`` if ``parts`` hold every one of its parts
    (a part received twice counts once); None while some are missing."""
    mine = {p.part: p for p in parts if p.version == version}
    if not mine:
        return None
    total = next(iter(mine.values())).parts
    if any(p.parts != total for p in mine.values()) or set(mine) != set(range(1, total + 1)):
        return None
    devices = [d for n in sorted(mine) for d in mine[n].devices]
    points = [p for n in sorted(mine) for p in mine[n].points]
    return devices, points


def _json(model: BaseModel) -> bytes:
    return orjson.dumps(model.model_dump())
