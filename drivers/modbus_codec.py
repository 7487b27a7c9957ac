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
import struct
from collections.abc import Sequence

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


_STRUCT_CODE = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}


class BlockDecoder:
    """Decodes every register point of one block with a handful of ``struct`` calls.

    The block's registers are packed into bytes once, as they came off the wire (and once more
    with each register's two bytes exchanged, if any point needs that); each of the four layouts
    of a 32-bit value is then a plain big- or little-endian read of one of those two buffers:

        ABCD (big, big)       big-endian read of the wire bytes
        DCBA (little, little) little-endian read of the wire bytes
        BADC (big, little)    big-endian read of the byte-swapped registers
        CDAB (little, big)    little-endian read of the byte-swapped registers

    All points read the same way go into one precompiled ``struct.Struct`` whose format skips the
    bytes between them, so a block costs one C call per layout present, not one per point: at
    50,000 values a second on a Raspberry Pi that is the difference that matters. The per-point
    ``Codec`` (pymodbus's conversion) remains the reference: the tests decode every type and order
    both ways against the simulator, which encodes with pymodbus.
    """

    __slots__ = ("_needs_swap", "_reads")

    def __init__(self, members: Sequence[tuple[int, int, Codec]]) -> None:
        # (buffer: 0 wire / 1 swapped, endianness) -> [(byte offset, code, key, scaled, scale, offset)]
        plans: dict[tuple[int, str], list[tuple[int, str, int, bool, float, float]]] = {}
        for key, at, codec in members:
            if codec._datatype is None:
                raise ValueError("BlockDecoder is for register points")
            code = _STRUCT_CODE[codec.type]
            if codec.width == 1:
                # One register: only the byte order matters.
                layout = (0, "<" if codec._swap else ">")
            else:
                swapped = codec._swap != (codec._word_order == "little")  # BADC or CDAB
                layout = (1 if swapped else 0, "<" if codec._word_order == "little" else ">")
            plans.setdefault(layout, []).append((2 * at, code, key, codec._scaled, codec.scale, codec.offset))
        reads = []
        for (buffer, endian), fields in plans.items():
            fields.sort()
            # A struct reads forwards: two points on the same registers (one register, two
            # scalings) go into separate reads.
            runs: list[tuple[list[str], list[int], list[tuple[int, bool, float, float]]]] = []
            for byte_at, code, key, scaled, scale, offset in fields:
                run = next((r for r in runs if r[1][0] <= byte_at), None)
                if run is None:
                    run = ([endian], [0], [])
                    runs.append(run)
                fmt, pos, targets = run
                if byte_at > pos[0]:
                    fmt.append(f"{byte_at - pos[0]}x")
                fmt.append(code)
                pos[0] = byte_at + struct.calcsize(code)
                targets.append((key, scaled, scale, offset))
            reads += [(buffer, struct.Struct("".join(fmt)), targets) for fmt, _, targets in runs]
        self._reads = reads
        self._needs_swap = any(buffer == 1 for buffer, _, _ in reads)

    def decode(self, registers: Sequence[int]) -> list[tuple[int, int | float]]:
        """(key, value) for every member, grouped by layout."""
        n = len(registers)
        buffers = [struct.pack(f">{n}H", *registers), b""]
        if self._needs_swap:
            buffers[1] = struct.pack(f"<{n}H", *registers)
        out: list[tuple[int, int | float]] = []
        for buffer, reader, targets in self._reads:
            for (key, scaled, scale, offset), v in zip(
                targets, reader.unpack_from(buffers[buffer]), strict=True
            ):
                out.append((key, v * scale + offset if scaled else v))
        return out
