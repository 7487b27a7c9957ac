"""The ``[[readers]]`` section of the gateway config: one table per card reader.

::

    [[readers]]
    name = "rdr-lobby-in"            # device id in events (source of reader.card)
    door = "door-lobby-east"         # the door it belongs to ("" for an enrolment desk reader)
    port = "/dev/serial/by-id/usb-FTDI_..."  # serial device path (a by-id link survives replugging)
    protocol = "osdp"                # "wiegand-ascii", "wiegand-stx" or "osdp"
    baudrate = 9600
    formats = ["H10301", "H10304"]   # Wiegand card formats accepted (also for OSDP raw card data)
    address = 1                      # OSDP only: the reader's bus address, 0..126
    scbk = "0a1b...(32 hex digits)"  # OSDP only: this reader's Secure Channel base key
    install_mode = false             # OSDP only: true while commissioning, see below

``install_mode = true`` lets the gateway bring up the secure channel with the default key
(SCBK-D) and then install ``scbk`` on the reader. Anybody on the bus can do the same while it is on,
so the driver reports a ``device.fault`` ``install_mode_on`` at every start until it is switched off.

Readers that share an RS-485 bus (one ``port``) must all be OSDP at one baud rate and have distinct
addresses: a Wiegand converter owns its port. ``check_readers`` checks those rules across the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.readers.wiegand import DEFAULT_FORMATS, formats_by_bits

ReaderProtocol = Literal["wiegand-ascii", "wiegand-stx", "osdp"]

# OSDP's well-known default key (SCBK-D, 0x30..0x3F): configuring it as a reader's key would make
# the "secure" channel readable by anyone with the standard.
SCBK_D_HEX = bytes(range(0x30, 0x40)).hex()

_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400)


class ReaderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
    door: Annotated[str, Field(max_length=64)] = ""
    port: Annotated[str, Field(min_length=1)]
    protocol: ReaderProtocol
    baudrate: int = 9600
    formats: list[str] = Field(default_factory=lambda: list(DEFAULT_FORMATS))
    # OSDP only; None means "not given" so a Wiegand reader that sets them is told they do nothing.
    address: Annotated[int, Field(ge=0, le=126)] | None = None
    scbk: str | None = None
    install_mode: bool = False
    # A port that disappears is reopened after reopen_min_s, doubling up to reopen_max_s.
    reopen_min_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    reopen_max_s: Annotated[float, Field(gt=0, le=600)] = 30.0

    @field_validator("baudrate")
    @classmethod
    def _baud(cls, v: int) -> int:
        if v not in _BAUDS:
            raise ValueError(f"{v} is not a serial rate readers use; one of {', '.join(map(str, _BAUDS))}")
        return v

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        formats_by_bits(v)  # raises ValueError naming the unknown or clashing format
        return v

    @field_validator("scbk")
    @classmethod
    def _scbk(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        if len(v) != 32 or v.strip("0123456789abcdef"):
            raise ValueError("must be 32 hex digits (a 16-byte AES key)")
        if v == SCBK_D_HEX:
            raise ValueError("is OSDP's public default key (SCBK-D); give the reader its own key")
        return v

    @model_validator(mode="after")
    def _protocol_fields(self) -> ReaderConfig:
        if self.reopen_max_s < self.reopen_min_s:
            raise ValueError("reopen_max_s must not be below reopen_min_s")
        if self.protocol == "osdp":
            if self.address is None:
                raise ValueError(f"reader {self.name}: protocol osdp needs address (0..126)")
            if self.scbk is None:
                raise ValueError(
                    f"reader {self.name}: protocol osdp needs scbk (32 hex digits); "
                    "with install_mode = true it is the key installed on the reader"
                )
        else:
            given = [k for k in ("address", "scbk") if getattr(self, k) is not None]
            if self.install_mode:
                given.append("install_mode")
            if given:
                raise ValueError(f"reader {self.name}: {', '.join(given)} apply to protocol osdp only")
        return self

    @property
    def scbk_bytes(self) -> bytes:
        return bytes.fromhex(self.scbk or "")

    @property
    def family(self) -> str:
        return "osdp" if self.protocol == "osdp" else "wiegand"


def check_readers(readers: Sequence[ReaderConfig]) -> None:
    """Rules across readers; raises ValueError naming the readers at fault."""
    names: set[str] = set()
    by_port: dict[str, list[ReaderConfig]] = {}
    for r in readers:
        if r.name in names:
            raise ValueError(f"readers: name {r.name!r} is used twice")
        names.add(r.name)
        by_port.setdefault(r.port, []).append(r)
    for port, group in by_port.items():
        if len(group) == 1:
            continue
        who = ", ".join(r.name for r in group)
        if any(r.protocol != "osdp" for r in group):
            raise ValueError(f"readers {who} share port {port}: only OSDP readers can share a bus")
        if len({r.baudrate for r in group}) > 1:
            raise ValueError(f"readers {who} share port {port} at different baud rates")
        seen: dict[int | None, str] = {}
        for r in group:
            if r.address in seen:
                raise ValueError(
                    f"readers {seen[r.address]} and {r.name} on {port} both have address {r.address}"
                )
            seen[r.address] = r.name


class ReadersSection(BaseModel):
    """``readers = [...]`` with the cross-reader rules; for a config schema that wants one field."""

    model_config = ConfigDict(extra="forbid")

    readers: list[ReaderConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _across(self) -> ReadersSection:
        check_readers(self.readers)
        return self
