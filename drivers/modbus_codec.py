"""Turning Modbus registers into point values and back, with pymodbus doing the conversion.

pymodbus's ``convert_from_registers`` / ``convert_to_registers`` handle the types and the word
order (which register holds the high half of a 32-bit value). They do not handle byte order
within a register, which some devices swap ("BADC", "DCBA"): that is one byte swap per register,
applied here before or after pymodbus's conversion. The four layouts of ABCD:

    word_order  byte_order  registers on the wire
    big         big         AB CD   (the Modbus convention)
    little      big         CD AB
    big         little      BA DC
    little      little      DC BA

``scale`` and ``offset`` give engineering units: ``value = raw * scale + offset``. An unscaled
integer point stays an int, so a counter is reported exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

from pymodbus.client.mixin import ModbusClientMixin

from drivers.modbus_config import WIDTH, Order, PointType

_DT = ModbusClientMixin.DATATYPE
DATATYPES: dict[str, ModbusClientMixin.DATATYPE] = {
    "int16": _DT.INT16,
    "uint16": _DT.UINT16,
    "int32": _DT.INT32,
    "uint32": _DT.UINT32,
    "float32": _DT.FLOAT32,
}
_INT_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}
_from_registers = ModbusClientMixin.convert_from_registers
_to_registers = ModbusClientMixin.convert_to_registers


def swap_bytes(registers: Sequence[int]) -> list[int]:
    """Each 16-bit register with its two bytes exchanged (byte_order = "little")."""
    return [((r & 0xFF) << 8) | (r >> 8) for r in registers]


class Codec:
    """Decodes (and encodes, for writes) one point's value. Built once per point."""

    __slots__ = ("_datatype", "_scaled", "_swap", "_word_order", "offset", "scale", "type", "width")

    def __init__(
        self,
        type: PointType,
        word_order: Order = "big",
        byte_order: Order = "big",
        scale: float = 1.0,
        offset: float = 0.0,
    ) -> None:
        self.type = type
        self.width = WIDTH[type]
        self._datatype = DATATYPES.get(type)
        self._word_order: Order = word_order
        self._swap = byte_order == "little"
        self.scale = scale
        self.offset = offset
        self._scaled = not (scale == 1 and offset == 0)

    def decode_bits(self, bits: Sequence[bool], at: int) -> bool:
        return bool(bits[at])

    def decode(self, registers: Sequence[int], at: int) -> int | float:
        """The value of the point whose first register is ``registers[at]``."""
        regs = registers[at : at + self.width]
        if self._swap:
            regs = swap_bytes(regs)
        assert self._datatype is not None, "decode() is for register points"
        raw = _from_registers(regs, self._datatype, word_order=self._word_order)
        assert isinstance(raw, int | float)
        if self._scaled:
            return raw * self.scale + self.offset
        return raw

    def encode(self, value: bool | int | float) -> list[int]:
        """Registers that make the point read ``value``; ValueError if it cannot be represented."""
        if self._datatype is None:
            raise ValueError("encode() is for register points; a bool point is written as a coil")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"a {self.type} point takes a number, not {value!r}")
        raw: int | float = (value - self.offset) / self.scale if self._scaled else value
        if self.type == "float32":
            if not math.isfinite(raw):
                raise ValueError(f"{value!r} is not a finite number")
            raw = float(raw)
        else:
            if isinstance(raw, float):
                if not math.isfinite(raw):
                    raise ValueError(f"{value!r} is not a finite number")
                raw = round(raw)
            lo, hi = _INT_RANGE[self.type]
            if not lo <= raw <= hi:
                raise ValueError(f"{value!r} is outside the range of a {self.type} ({lo}..{hi} raw)")
        regs = _to_registers(raw, self._datatype, word_order=self._word_order)
        return swap_bytes(regs) if self._swap else regs


class BlockDecoder:
    """Decodes every register point of one block with one pymodbus call per layout.

    pymodbus converts a list of registers into a list of values in one call; per call it pays a
    fixed cost (type checks, enum lookups) that dominates for a single value. Points of one
    layout (type, word order, byte order) are gathered into one list and converted together:
    about a third of the cost per value, and still pymodbus doing the conversion.
    """

    __slots__ = ("_groups",)

    def __init__(self, members: Sequence[tuple[int, int, Codec]]) -> None:
        by_layout: dict[tuple[str, Order, bool], list[tuple[int, int, Codec]]] = {}
        for key, at, codec in members:
            if codec._datatype is None:
                raise ValueError("BlockDecoder is for register points")
            by_layout.setdefault((codec.type, codec._word_order, codec._swap), []).append((key, at, codec))
        self._groups = [
            (
                DATATYPES[typ],
                word_order,
                swap,
                WIDTH[typ],
                [m[1] for m in ms],
                [(m[0], m[2]._scaled, m[2].scale, m[2].offset) for m in ms],
            )
            for (typ, word_order, swap), ms in by_layout.items()
        ]

    def decode(self, registers: Sequence[int]) -> list[tuple[int, int | float]]:
        """(key, value) for every member, grouped by layout."""
        out: list[tuple[int, int | float]] = []
        for datatype, word_order, swap, width, offsets, targets in self._groups:
            if width == 1:
                regs = [registers[at] for at in offsets]
            else:
                regs = []
                for at in offsets:
                    regs.extend(registers[at : at + width])
            if swap:
                regs = swap_bytes(regs)
            raw = _from_registers(regs, datatype, word_order=word_order)
            values = cast(list[int | float], raw if isinstance(raw, list) else [raw])
            for (key, scaled, scale, offset), v in zip(targets, values, strict=True):
                out.append((key, v * scale + offset if scaled else v))
        return out
