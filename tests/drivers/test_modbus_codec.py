"""The block decoder (struct, one read per layout) agrees with the per-point codec (pymodbus's own
conversion) on every type and word/byte order, with gaps and with points sharing registers."""

import itertools
import math
import random

from drivers.modbus_codec import BlockDecoder, Codec

VALUES = {
    "int16": [-32768, -1234, 0, 32767],
    "uint16": [0, 54321, 65535],
    "int32": [-(2**31), -123456789, 2**31 - 1],
    "uint32": [0, 3123456789, 2**32 - 1],
    "float32": [12.5, -0.0078125, 3.4e38],
}
NAN_REGISTERS = [0x7FC0, 0x0000]  # what a broken meter sends; the codec refuses to encode it


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_block_decoder_agrees_with_the_codec_on_every_layout() -> None:
    rng = random.Random(7)
    members: list[tuple[int, int, Codec]] = []
    registers: list[int] = []
    key = 0
    for typ, values in VALUES.items():
        for (wo, bo), value in itertools.product(
            itertools.product(("big", "little"), ("big", "little")), values
        ):
            scale, offset = (0.1, 5.0) if rng.random() < 0.3 else (1.0, 0.0)
            codec = Codec(typ, wo, bo, scale, offset)  # type: ignore[arg-type]
            members.append((key, len(registers), codec))
            registers += codec.encode(value * scale + offset if scale != 1.0 else value)
            key += 1
            if rng.random() < 0.4:
                registers += [0xBEEF] * rng.randint(1, 3)  # an unmapped gap
    # a second point on the first register (the same value, scaled differently), and a NaN
    members.append((key, 0, Codec("int16", scale=0.5)))
    members.append((key + 1, len(registers), Codec("float32")))
    registers += NAN_REGISTERS
    decoded = dict(BlockDecoder(members).decode(registers))
    assert len(decoded) == len(members)
    for k, at, codec in members:
        assert same(decoded[k], codec.decode(registers, at)), (k, codec.type)
