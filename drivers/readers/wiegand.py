"""Wiegand card formats and the framings Wiegand-to-RS-485 converters put them in, as data.

A Wiegand frame is a string of bits (``"0101..."``, first bit on the wire first). A card *format*
says which bits are the facility code, which the card number and which bits are parity over which
others; a *framing* says how a converter carries those bits over a serial line. Both are tables, so a
site with another format or another converter adds a row, not code.

Formats shipped (``FORMATS``):

- ``H10301``, 26 bits: bit 0 even parity over bits 1-12, facility code bits 1-8, card number bits
  9-24, bit 25 odd parity over bits 13-24.
- ``H10304``, 37 bits: bit 0 even parity over bits 1-18, facility code bits 1-16, card number bits
  17-35, bit 36 odd parity over bits 18-35.
- ``H10302``, 37 bits: the same parity layout, no facility code, a 35-bit card number (bits 1-35).
  Not allowed by default: it shares its bit count with H10304 and a reader may allow only one.

A bit count that no allowed format has is reported as format ``raw``: no facility, the card
number is the whole frame read as one binary number, so a new credential type still reaches the
access rules (which decide) instead of being dropped. A frame of a known bit count whose parity is
wrong is *never* taken as a card: it is counted and reported as a fault.

Framings shipped (``FRAMINGS``), both ASCII on the wire:

``wiegand-ascii`` -- one line per frame::

    W<n>:<bits>\\r\\n          e.g.  W26:10000000100110000001110011\\r\\n  (H10301, facility 1, card 12345)

  ``W``, the bit count ``n`` in decimal (1-3 digits, 1..255), ``:``, exactly ``n`` characters
  ``0``/``1`` (first bit first), then ``\\n`` (a ``\\r`` before it is optional).

``wiegand-stx`` -- one STX...ETX frame per card::

    STX <nn> <data> <cc> ETX     e.g.  02 "1A" "02026073" "09" 03  (the same card)

  STX (0x02); ``nn`` the bit count as 2 hex digits (01..FF); ``data`` the bits right-aligned in
  ``ceil(n/8)`` big-endian bytes written as 2 hex digits each (the unused leading bits are 0);
  ``cc`` the XOR of the bit-count byte and every data byte, as 2 hex digits; ETX (0x03). Hex
  digits may be upper or lower case.

Bytes outside a frame (line noise, a converter's banner) are skipped and counted as garbage; a
frame that starts but is malformed (wrong length, bad digit, bad checksum, no end) is a bad frame.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Bits = str  # "0101...": first bit on the wire first


# --------------------------------------------------------------------------------------------------
# Card formats


@dataclass(frozen=True, slots=True)
class Parity:
    """One parity bit at ``position`` making the bits ``over`` (with itself) even or odd."""

    position: int
    kind: Literal["even", "odd"]
    over: tuple[int, ...]

    def holds_value(self, value: int, nbits: int) -> bool:
        """The same on the frame read as a number (bit 0 is the most significant): a mask and a
        popcount per parity, since a converter can deliver thousands of frames a second."""
        ones = (value & _mask((*self.over, self.position), nbits)).bit_count()
        return ones % 2 == (0 if self.kind == "even" else 1)

    def value_for(self, bits: Bits) -> str:
        """The parity bit that makes ``bits`` hold (ignoring what is at ``position`` now)."""
        ones = sum(1 for i in self.over if bits[i] == "1")
        want_odd = self.kind == "odd"
        return "1" if (ones % 2 == 0) == want_odd else "0"


@functools.lru_cache(maxsize=256)
def _mask(positions: tuple[int, ...], nbits: int) -> int:
    return sum(1 << (nbits - 1 - i) for i in set(positions))


def span(first: int, last: int) -> tuple[int, ...]:
    """Bit positions ``first`` to ``last`` inclusive, as format tables write them."""
    return tuple(range(first, last + 1))


@dataclass(frozen=True, slots=True)
class WiegandFormat:
    name: str
    bits: int
    card: tuple[int, int]  # (first bit, bit length) of the card number
    facility: tuple[int, int] | None  # same, or None when the format has no facility code
    parities: tuple[Parity, ...]

    def check(self, bits: Bits) -> str | None:
        """None when ``bits`` is a good frame of this format, else what is wrong."""
        if len(bits) != self.bits:
            return f"{len(bits)} bits, {self.name} has {self.bits}"
        value = int(bits, 2)
        for p in self.parities:
            if not p.holds_value(value, self.bits):
                return f"{p.kind} parity at bit {p.position} fails"
        return None

    def fields(self, bits: Bits) -> tuple[int | None, int]:
        fac = None
        if self.facility is not None:
            start, n = self.facility
            fac = int(bits[start : start + n], 2)
        start, n = self.card
        return fac, int(bits[start : start + n], 2)

    def encode(self, card: int, facility: int | None = None) -> Bits:
        """The frame a reader would send for this card (for simulators and tests)."""
        out = ["0"] * self.bits
        for value, where, what in ((card, self.card, "card"), (facility, self.facility, "facility")):
            if where is None:
                continue
            start, n = where
            v = value or 0
            if not 0 <= v < (1 << n):
                raise ValueError(f"{self.name}: {what} {v} does not fit in {n} bits")
            out[start : start + n] = format(v, f"0{n}b")
        text = "".join(out)
        for p in self.parities:
            text = text[: p.position] + p.value_for(text) + text[p.position + 1 :]
        return text


FORMATS: dict[str, WiegandFormat] = {
    f.name: f
    for f in (
        WiegandFormat(
            "H10301",
            26,
            card=(9, 16),
            facility=(1, 8),
            parities=(Parity(0, "even", span(1, 12)), Parity(25, "odd", span(13, 24))),
        ),
        WiegandFormat(
            "H10304",
            37,
            card=(17, 19),
            facility=(1, 16),
            parities=(Parity(0, "even", span(1, 18)), Parity(36, "odd", span(18, 35))),
        ),
        WiegandFormat(
            "H10302",
            37,
            card=(1, 35),
            facility=None,
            parities=(Parity(0, "even", span(1, 18)), Parity(36, "odd", span(18, 35))),
        ),
    )
}

DEFAULT_FORMATS = ("H10301", "H10304")
RAW = "raw"


@dataclass(frozen=True, slots=True)
class Decoded:
    format: str
    bits: int
    facility: int | None
    card: int
    raw_hex: str


class BadParity(ValueError):
    def __init__(self, fmt: str, detail: str) -> None:
        super().__init__(f"{fmt}: {detail}")
        self.format = fmt


def raw_hex(bits: Bits) -> str:
    """The frame right-aligned in whole bytes, as hex: what a technician compares with a converter's log."""
    if not bits:
        return ""
    return format(int(bits, 2), f"0{2 * ((len(bits) + 7) // 8)}x")


def formats_by_bits(names: Sequence[str]) -> dict[int, WiegandFormat]:
    """The allowed formats keyed by bit count; two allowed formats of one length are refused,
    since a frame could then not be told apart."""
    out: dict[int, WiegandFormat] = {}
    for name in names:
        fmt = FORMATS.get(name)
        if fmt is None:
            raise ValueError(f"unknown card format {name!r}; known: {', '.join(sorted(FORMATS))}")
        if fmt.bits in out:
            raise ValueError(f"formats {out[fmt.bits].name} and {name} both have {fmt.bits} bits; allow one")
        out[fmt.bits] = fmt
    return out


def decode(bits: Bits, allowed: dict[int, WiegandFormat]) -> Decoded:
    """Decode one frame; raises BadParity for a frame of a known length that fails its parity."""
    fmt = allowed.get(len(bits))
    if fmt is None:
        return Decoded(RAW, len(bits), None, int(bits, 2) if bits else 0, raw_hex(bits))
    problem = fmt.check(bits)
    if problem is not None:
        raise BadParity(fmt.name, problem)
    fac, card = fmt.fields(bits)
    return Decoded(fmt.name, len(bits), fac, card, raw_hex(bits))


# --------------------------------------------------------------------------------------------------
# Converter framings


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that started but could not be read; ``raw`` is what was seen (for the fault's detail)."""

    reason: str
    raw: bytes


Parsed = Bits | BadFrame


class Framing(Protocol):
    name: str
    garbage_bytes: int  # bytes skipped outside any frame, since this parser was made

    def feed(self, data: bytes) -> list[Parsed]: ...

    def encode(self, bits: Bits) -> bytes: ...


MAX_BITS = 255


def _excerpt(raw: bytes, limit: int = 48) -> bytes:
    return raw if len(raw) <= limit else raw[:limit] + b"..."


@dataclass
class AsciiLineFraming:
    """``W<n>:<bits>\\r\\n`` (see the module doc). Prefix and separator are fields so a converter
    that writes, say, ``WG26=`` is a new instance rather than new code."""

    name: str = "wiegand-ascii"
    prefix: bytes = b"W"
    separator: bytes = b":"
    garbage_bytes: int = 0
    _buf: bytearray = field(default_factory=bytearray, repr=False)

    @property
    def _max_line(self) -> int:
        return len(self.prefix) + 3 + len(self.separator) + MAX_BITS + 2

    def encode(self, bits: Bits) -> bytes:
        return self.prefix + str(len(bits)).encode() + self.separator + bits.encode() + b"\r\n"

    def feed(self, data: bytes) -> list[Parsed]:
        buf = self._buf
        buf += data
        out: list[Parsed] = []
        pos = 0
        while True:
            start = buf.find(self.prefix, pos)
            if start < 0:
                # keep a tail that could be the start of a split prefix; the rest is garbage
                keep = len(self.prefix) - 1
                cut = max(pos, len(buf) - keep)
                self.garbage_bytes += cut - pos
                pos = cut
                break
            self.garbage_bytes += start - pos
            pos = start
            header_end = self._header_end(buf, start)
            if header_end == -1:  # not a header: the prefix byte was noise
                self.garbage_bytes += 1
                pos = start + 1
                continue
            if header_end == -2:  # header still arriving
                break
            count = int(buf[start + len(self.prefix) : header_end - len(self.separator)])
            end = buf.find(b"\n", header_end)
            if end < 0:
                if len(buf) - start > self._max_line:
                    out.append(BadFrame("no end of line", _excerpt(bytes(buf[start:]))))
                    pos = len(buf)
                break
            body = bytes(buf[header_end:end]).rstrip(b"\r")
            raw = bytes(buf[start : end + 1])
            pos = end + 1
            if body.strip(b"01"):
                # a character that is no bit: resync right after the header, so a frame that
                # was cut short and followed by the next one loses only itself
                out.append(BadFrame("not a 0/1 bit string", _excerpt(raw)))
                nxt = buf.find(self.prefix, header_end)
                if 0 <= nxt < end:
                    pos = nxt
                continue
            if len(body) != count:
                out.append(BadFrame(f"says {count} bits, carries {len(body)}", _excerpt(raw)))
                continue
            out.append(body.decode())
        del buf[:pos]
        return out

    def _header_end(self, buf: bytearray, start: int) -> int:
        """Index just past ``W<n>:``; -1 when the bytes there are not a header, -2 when incomplete."""
        i = start + len(self.prefix)
        digits = 0
        while i < len(buf) and 0x30 <= buf[i] <= 0x39 and digits < 3:
            i += 1
            digits += 1
        if i >= len(buf):
            return -2
        if digits == 0:
            return -1
        sep = self.separator
        have = bytes(buf[i : i + len(sep)])
        if len(have) < len(sep):
            return -2 if sep.startswith(have) else -1
        if have != sep:
            return -1
        count = int(buf[start + len(self.prefix) : i])
        if not 1 <= count <= MAX_BITS:
            return -1
        return i + len(sep)


_HEX = b"0123456789abcdefABCDEF"


@dataclass
class StxEtxFraming:
    """``STX nn data cc ETX`` with an XOR checksum (see the module doc)."""

    name: str = "wiegand-stx"
    stx: int = 0x02
    etx: int = 0x03
    garbage_bytes: int = 0
    _buf: bytearray = field(default_factory=bytearray, repr=False)

    # STX + count + up to 32 data bytes + checksum + ETX, as hex
    _max_frame: int = 1 + 2 + 2 * ((MAX_BITS + 7) // 8) + 2 + 1

    def encode(self, bits: Bits) -> bytes:
        n = len(bits)
        if not 1 <= n <= MAX_BITS:
            raise ValueError(f"{n} bits: this framing carries 1..{MAX_BITS}")
        data = int(bits, 2).to_bytes((n + 7) // 8, "big")
        cc = n
        for b in data:
            cc ^= b
        body = f"{n:02X}{data.hex().upper()}{cc:02X}".encode()
        return bytes([self.stx]) + body + bytes([self.etx])

    def feed(self, data: bytes) -> list[Parsed]:
        buf = self._buf
        buf += data
        out: list[Parsed] = []
        pos = 0
        while pos < len(buf):
            start = buf.find(self.stx, pos)
            if start < 0:
                self.garbage_bytes += len(buf) - pos
                pos = len(buf)
                break
            self.garbage_bytes += start - pos
            end = buf.find(self.etx, start + 1)
            restart = buf.find(self.stx, start + 1)
            if 0 <= restart and (end < 0 or restart < end):
                # a new STX before this frame ended: the converter restarted mid-frame
                out.append(BadFrame("frame cut short by a new STX", _excerpt(bytes(buf[start:restart]))))
                pos = restart
                continue
            if end < 0:
                if len(buf) - start > self._max_frame:
                    out.append(BadFrame("no ETX", _excerpt(bytes(buf[start:]))))
                    pos = len(buf)
                else:
                    pos = start
                break
            raw = bytes(buf[start : end + 1])
            pos = end + 1
            out.append(self._frame(raw))
        del buf[:pos]
        return out

    def _frame(self, raw: bytes) -> Parsed:
        body = raw[1:-1]
        if len(body) < 6 or len(body) % 2 or body.strip(_HEX):
            return BadFrame("not an even run of at least 6 hex digits", _excerpt(raw))
        n = int(body[:2], 16)
        data = bytes.fromhex(body[2:-2].decode())
        cc = int(body[-2:], 16)
        if n == 0 or len(data) != (n + 7) // 8:
            return BadFrame(f"says {n} bits, carries {len(data)} bytes", _excerpt(raw))
        x = n
        for b in data:
            x ^= b
        if x != cc:
            return BadFrame(f"checksum {cc:02X}, computed {x:02X}", _excerpt(raw))
        value = int.from_bytes(data, "big")
        if value >> n:
            return BadFrame(f"data has bits set beyond the {n} it says", _excerpt(raw))
        return format(value, f"0{n}b")


FRAMINGS: dict[str, type[AsciiLineFraming] | type[StxEtxFraming]] = {
    "wiegand-ascii": AsciiLineFraming,
    "wiegand-stx": StxEtxFraming,
}


def framing_for(protocol: str) -> Framing:
    """A fresh parser (with its own buffer) for a converter protocol name."""
    try:
        return FRAMINGS[protocol]()
    except KeyError:
        raise ValueError(f"no Wiegand framing {protocol!r}; known: {', '.join(sorted(FRAMINGS))}") from None


def bits_from_bytes(data: bytes, nbits: int) -> Bits:
    """The first ``nbits`` of ``data``, most significant bit first (how OSDP carries raw card bits)."""
    if nbits > 8 * len(data):
        raise ValueError(f"{nbits} bits asked of {len(data)} bytes")
    return format(int.from_bytes(data, "big"), f"0{8 * len(data)}b")[:nbits] if data else ""


def bytes_from_bits(bits: Bits) -> bytes:
    """``bits`` left-aligned in whole bytes (the inverse of bits_from_bytes)."""
    if not bits:
        return b""
    n = (len(bits) + 7) // 8
    return int(bits.ljust(8 * n, "0"), 2).to_bytes(n, "big")
