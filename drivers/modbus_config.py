"""The Modbus driver's configuration (``[[modbus]]`` and its ``[[modbus.points]]``), and the point
types and orders the codec and the simulator share.

Apart from drivers/modbus.py so that checking a gateway's config, or running a gateway without
Modbus devices, does not import pymodbus.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.modbus_plan import (
    BIT_TABLES,
    PROTOCOL_MAX_BITS,
    PROTOCOL_MAX_REGISTERS,
    Limits,
    PlanItem,
    PollGroup,
    Table,
    plan,
)

PointType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32"]
Order = Literal["big", "little"]
WIDTH: dict[str, int] = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}

FAMILY = "modbus"
_STRICT = ConfigDict(extra="forbid")
# No "/" in names: events name a point as "<device>/<point>".
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
WRITABLE_TABLES = frozenset({"coil", "holding_register"})

# ---------------------------------------------------------------------------- configuration


class ModbusPointConfig(BaseModel):
    model_config = _STRICT

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    table: Table
    address: Annotated[int, Field(ge=0, le=65535)]
    type: PointType = "uint16"  # bit tables default to (and only take) "bool"
    word_order: Order = "big"  # which register holds the high half of a 32-bit value
    byte_order: Order = "big"  # byte order inside each register
    scale: float = 1.0  # value = raw * scale + offset
    offset: float = 0.0
    unit: Annotated[str, Field(max_length=32)] = ""
    poll_ms: Annotated[int, Field(ge=10, le=86_400_000)] = 1000
    deadband: Annotated[float, Field(ge=0)] = 0.0  # report when |change| > deadband (0: any change)
    heartbeat_s: Annotated[float, Field(ge=0)] = 300.0  # report at least this often; 0 = on change only
    fire_system: bool = False  # part of a fire system: read-only, whatever ``writable`` says
    writable: bool = False

    @model_validator(mode="before")
    @classmethod
    def _bool_for_bits(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" not in data and data.get("table") in BIT_TABLES:
            data = {**data, "type": "bool"}
        return data

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: float) -> float:
        if v == 0 or not math.isfinite(v):
            raise ValueError("must be a finite number other than 0")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ModbusPointConfig:
        bits = self.table in BIT_TABLES
        if bits and self.type != "bool":
            raise ValueError(f"type: a {self.table} holds one bit; its type is bool, not {self.type}")
        if not bits and self.type == "bool":
            raise ValueError(f"type: bool is for coils and discrete inputs, not a {self.table}")
        if self.address + WIDTH[self.type] > 65536:
            raise ValueError(f"address: a {self.type} at {self.address} runs past register 65535")
        if self.fire_system and self.writable:
            raise ValueError("writable: a fire_system point is never writable (fire links are read-only)")
        if self.writable and self.table not in WRITABLE_TABLES:
            raise ValueError(f"writable: a {self.table} cannot be written; only coils and holding registers")
        return self

    @property
    def width(self) -> int:
        return WIDTH[self.type]


class ModbusDeviceConfig(BaseModel):
    model_config = _STRICT

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    transport: Literal["tcp", "rtu"] = "tcp"
    # TCP
    host: str = ""
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    # RTU (pyserial); devices on one serial_port share the bus and must agree on these
    serial_port: str = ""
    baudrate: Annotated[int, Field(ge=300, le=1_000_000)] = 9600
    parity: Literal["N", "E", "O"] = "E"  # the Modbus default is even parity
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    # the device
    unit: Annotated[int, Field(ge=0, le=255)] = 1
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    max_registers: Annotated[int, Field(ge=1, le=PROTOCOL_MAX_REGISTERS)] = PROTOCOL_MAX_REGISTERS
    max_bits: Annotated[int, Field(ge=1, le=PROTOCOL_MAX_BITS)] = PROTOCOL_MAX_BITS
    max_gap: Annotated[int, Field(ge=0, le=PROTOCOL_MAX_REGISTERS)] = 8  # unmapped registers to bridge
    max_gap_bits: Annotated[int, Field(ge=0, le=PROTOCOL_MAX_BITS)] = 64
    backoff_min_s: Annotated[float, Field(gt=0, le=3600)] = 1.0  # first re-probe of an offline device
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    points: Annotated[list[ModbusPointConfig], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> ModbusDeviceConfig:
        if self.transport == "tcp" and not self.host:
            raise ValueError("host: required for transport = 'tcp'")
        if self.transport == "rtu":
            if not self.serial_port:
                raise ValueError("serial_port: required for transport = 'rtu'")
            if not 1 <= self.unit <= 247:
                raise ValueError("unit: an RTU device address is 1..247")
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s: must not be below backoff_min_s")
        seen: set[str] = set()
        for i, p in enumerate(self.points):
            if p.name in seen:
                raise ValueError(f"points.{i}.name: {p.name!r} is used twice in device {self.name!r}")
            seen.add(p.name)
            if p.width > self.max_registers:
                raise ValueError(
                    f"points.{i}.type: a {p.type} needs {p.width} registers;"
                    f" max_registers is {self.max_registers}"
                )
        return self

    @property
    def limits(self) -> Limits:
        return Limits(self.max_registers, self.max_bits, self.max_gap, self.max_gap_bits)

    def plan(self) -> list[PollGroup]:
        return plan(
            [PlanItem(i, p.table, p.address, p.width, p.poll_ms) for i, p in enumerate(self.points)],
            self.limits,
        )
