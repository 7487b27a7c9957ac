"""The BACnet driver's configuration (``[[bacnet]]`` and ``[bacnet_local]`` in the gateway's TOML).

Apart from drivers/bacnet.py so that checking a gateway's config, or running a gateway without
BACnet devices, does not import bacpypes3 (about 20 MB on a Raspberry Pi).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FAMILY = "bacnet"
BACNET_PORT = 47808  # 0xBAC0, the standard BACnet/IP port
MAX_INSTANCE = 4194302  # 4194303 is the "any device" wildcard, never a real instance

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid")
_NAME = r"^[A-Za-z0-9_.:-]+$"  # no "/": sources are <device>/<point>

ObjectType = Literal[
    "analog-input",
    "analog-output",
    "analog-value",
    "binary-input",
    "binary-output",
    "binary-value",
    "multi-state-input",
    "multi-state-output",
    "multi-state-value",
    "life-safety-point",
    "life-safety-zone",
]
ANALOG = {"analog-input", "analog-output", "analog-value"}
WRITABLE = {
    "analog-output",
    "analog-value",
    "binary-output",
    "binary-value",
    "multi-state-output",
    "multi-state-value",
}


def parse_address(text: str, default_port: int = BACNET_PORT) -> tuple[str, int]:
    """``"ip"`` or ``"ip:port"`` (IPv4) to ``(ip, port)``; ValueError says what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = text.strip(), str(default_port)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"{text!r}: expected an IPv4 address, optionally with :port") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: port must be 1..65535")
    return host, int(port_text)


class BacnetObject(BaseModel):
    """One BACnet object of a device, as the gateway reports it (``<device>/<name>``)."""

    model_config = _STRICT

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME)]
    type: ObjectType
    instance: Annotated[int, Field(ge=0, le=MAX_INSTANCE)]
    unit: str = ""
    # Analog only: a change smaller than this is not reported (the device's own COV increment
    # decides which changes it notifies; this filters further, and applies to polled values).
    deadband: Annotated[float, Field(ge=0)] = 0.0
    fire_system: bool = False  # part of a fire system: read-only, the gateway never writes to it
    cov: bool = True  # false: always poll this object (a device known to misbehave with COV)

    @model_validator(mode="after")
    def _deadband_is_analog(self) -> BacnetObject:
        if self.deadband and self.type not in ANALOG:
            raise ValueError(f"deadband only applies to analog objects, not {self.type}")
        return self

    @property
    def object_id(self) -> str:
        return f"{self.type},{self.instance}"


class BacnetDevice(BaseModel):
    """A ``[[bacnet]]`` entry: one BACnet/IP device and the objects read from it."""

    model_config = _STRICT

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME)]
    address: str = Field(description="ip or ip:port of the device (port 47808 if left out)")
    device_instance: Annotated[int, Field(ge=0, le=MAX_INSTANCE)]
    cov_lifetime_s: Annotated[int, Field(ge=2, le=86_400)] = 300  # renewed at half of it
    cov_confirmed: bool = True  # confirmed notifications: the device knows when one was lost
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 10.0  # objects without COV
    liveness_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0  # a COV-only device's check
    heartbeat_s: Annotated[float, Field(ge=0)] = 300.0  # resend an unchanged value; 0 = never
    backoff_min_s: Annotated[float, Field(gt=0, le=3600)] = 1.0  # retry of an offline device...
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0  # ...doubling up to this
    objects: Annotated[list[BacnetObject], Field(min_length=1)]

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        host, port = parse_address(v)
        return f"{host}:{port}"

    @model_validator(mode="after")
    def _consistent(self) -> BacnetDevice:
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must not be below backoff_min_s")
        names: set[str] = set()
        ids: set[str] = set()
        for i, o in enumerate(self.objects):
            if o.name in names:
                raise ValueError(f"objects.{i}.name: {o.name!r} is used twice")
            if o.object_id in ids:
                raise ValueError(f"objects.{i}: {o.object_id} is configured twice")
            names.add(o.name)
            ids.add(o.object_id)
        return self

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_address(self.address)


class BacnetLocal(BaseModel):
    """The gateway's own BACnet application (one for all devices)."""

    model_config = _STRICT

    bind: str = Field(default=f"0.0.0.0:{BACNET_PORT}", description="ip:port the gateway listens on")
    device_instance: Annotated[int, Field(ge=0, le=MAX_INSTANCE)] = MAX_INSTANCE
    device_name: Annotated[str, Field(min_length=1, max_length=64)] = "gatehouse-gateway"
    # Per request: wait this long for an answer, then resend up to apdu_retries times; a request
    # unanswered after that takes the device offline.
    apdu_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    apdu_retries: Annotated[int, Field(ge=0, le=10)] = 2

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        host, port = parse_address(v)
        return f"{host}:{port}"

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_address(self.bind)


def check_devices(devices: Sequence[BacnetDevice], local: BacnetLocal) -> None:
    """What one device cannot check alone; ValueError names the device."""
    seen: set[str] = set()
    local_host, local_port = local.host_port
    for d in devices:
        if d.name in seen:
            raise ValueError(f"bacnet device name {d.name!r} is used twice")
        seen.add(d.name)
        host, port = d.host_port
        # bacpypes3 takes any 127.x on its own port, or its own address, for itself.
        if port == local_port and (host == local_host or host.startswith("127.")):
            raise ValueError(
                f"bacnet device {d.name!r}: address {d.address} is the gateway's own ({local.bind})"
            )
