"""The commands a cloud sends a gateway on ``cmd`` (envelope ``Command``), their arguments, and
the codes of their results (``CommandResult.code``).

A gateway executes each command id once and answers a repeated id with the first result. Before
anything is done it refuses a command that has expired (``expires_ms`` passed on the gateway's
clock, when that clock is synchronised), that names no user (``by``), that its config does not
allow, or whose arguments do not fit the models below.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from protocols.access import AccessDelta


class ResultCode(StrEnum):
    DONE = "done"
    EXPIRED = "expired"
    UNAUTHORISED = "unauthorised"  # no user named, or not allowed on this gateway or door
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGS = "bad_args"
    REFUSED = "refused"  # understood and allowed, but the state forbids it (e.g. reset while smoke)
    FAILED = "failed"  # tried and did not work (a write not confirmed, a config that did not start)
    UNSUPPORTED = "unsupported"  # this gateway has nothing to do it with (e.g. no camera)
    PENDING = "pending"  # a part of a multi-part command: taken, waiting for the rest
    # access.sync: the delta's base is not the store's version; ``data.version`` says what it is,
    # and the cloud answers with a delta from there (or a reset).
    VERSION_MISMATCH = "version_mismatch"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_NAME = Annotated[str, Field(min_length=1, max_length=64)]


class Ping(_Args):
    pass


class DoorUnlock(_Args):
    """Unlock ``door`` for ``seconds`` (default: the door's strike time), then lock it again."""

    door: _NAME
    seconds: Annotated[float, Field(gt=0, le=3600)] | None = None


class ZoneArgs(_Args):
    zone: _NAME


class ZoneBypass(_Args):
    zone: _NAME
    sensor: _NAME
    bypass: bool = True  # false ends the bypass


class FireReset(_Args):
    """Return doors released for a fire to normal: all of them, or those of ``zone``."""

    zone: str = ""


class CameraSnapshot(_Args):
    camera: _NAME


class ConfigApply(_Args):
    """A whole new gateway config (TOML), checked before it takes effect and rolled back if it
    does not start."""

    toml: Annotated[str, Field(min_length=1, max_length=1_000_000)]
    version: Annotated[str, Field(min_length=1, max_length=64)]


COMMANDS: dict[str, type[BaseModel]] = {
    "ping": Ping,
    "door.unlock": DoorUnlock,
    "intrusion.arm": ZoneArgs,
    "intrusion.disarm": ZoneArgs,
    "intrusion.bypass": ZoneBypass,
    "fire.reset": FireReset,
    "access.sync": AccessDelta,
    "camera.snapshot": CameraSnapshot,
    "config.apply": ConfigApply,
}
