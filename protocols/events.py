"""Event kinds and the lanes that order them.

A kind is a dotted lower-case name. The cloud stores kinds it does not know yet (a newer gateway
may speak of things an older cloud does not handle); the lane of a kind decides how the gateway
buffers it: life safety is sent first and never evicted, telemetry goes first when the store is full.
"""

import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Lane(IntEnum):
    LIFE_SAFETY = 0  # smoke, fire, panic: sent alone and at once, never evicted
    SECURITY = 1  # access, doors, intrusion, device and gateway health: never evicted
    TELEMETRY = 2  # readings: the oldest go first when the store is full


KIND_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"
_KIND = re.compile(KIND_PATTERN)

KNOWN_KINDS: dict[str, Lane] = {
    # life safety
    "fire.alarm": Lane.LIFE_SAFETY,
    "fire.reset": Lane.LIFE_SAFETY,
    "smoke.alarm": Lane.LIFE_SAFETY,
    "smoke.clear": Lane.LIFE_SAFETY,
    "panic.alarm": Lane.LIFE_SAFETY,
    "door.egress_released": Lane.LIFE_SAFETY,  # the gateway released egress doors for a fire
    "fire.alarm_cleared": Lane.LIFE_SAFETY,
    "fire.release_fault": Lane.LIFE_SAFETY,  # an egress door the gateway could not release
    "fire.reset_refused": Lane.LIFE_SAFETY,
    "fire.reset_input": Lane.LIFE_SAFETY,
    # security and access
    "access.granted": Lane.SECURITY,
    "access.denied": Lane.SECURITY,
    "door.opened": Lane.SECURITY,
    "door.closed": Lane.SECURITY,
    "door.forced": Lane.SECURITY,
    "door.held_open": Lane.SECURITY,
    "intrusion.detected": Lane.SECURITY,
    "intrusion.clear": Lane.SECURITY,
    "reader.card": Lane.SECURITY,  # a credential presented at a reader (the access rules decide)
    "reader.tamper": Lane.SECURITY,
    "device.online": Lane.SECURITY,
    "device.offline": Lane.SECURITY,
    "device.fault": Lane.SECURITY,
    "device.fault_cleared": Lane.SECURITY,
    "door.lock_state": Lane.SECURITY,
    "door.secured": Lane.SECURITY,  # closed again after a forced or held-open alarm
    "door.exit_request": Lane.SECURITY,
    "door.remote_unlock": Lane.SECURITY,
    "door.mode": Lane.SECURITY,  # scheduled unlock, first person in, back to normal
    "access.store_updated": Lane.SECURITY,
    "intrusion.arming": Lane.SECURITY,
    "intrusion.armed": Lane.SECURITY,
    "intrusion.disarmed": Lane.SECURITY,
    "intrusion.entry_delay": Lane.SECURITY,
    "intrusion.alarm": Lane.SECURITY,
    "intrusion.unconfirmed": Lane.SECURITY,
    "intrusion.bypassed": Lane.SECURITY,
    "intrusion.bypass_ended": Lane.SECURITY,
    "intrusion.supervision_fault": Lane.SECURITY,
    "intrusion.supervision_restored": Lane.SECURITY,
    "intrusion.arm_refused": Lane.SECURITY,
    "equipment.fault": Lane.SECURITY,
    "equipment.fault_cleared": Lane.SECURITY,
    # the gateway's own reports
    "gateway.started": Lane.SECURITY,
    "gateway.evicted": Lane.SECURITY,  # data: {"ranges": [[a, b], ...], "count": n, "bytes": n}
    "gateway.store_full": Lane.SECURITY,
    "gateway.refused": Lane.SECURITY,  # data: {"count": n} telemetry refused while the store was full
    "gateway.config_applied": Lane.SECURITY,
    "gateway.config_rolled_back": Lane.SECURITY,
    "gateway.command": Lane.SECURITY,  # a command from the cloud, who asked, and its result
    # The devices and points the running config sets up, in parts (protocols/inventory.py).
    "gateway.inventory": Lane.SECURITY,
    # telemetry
    "telemetry.point": Lane.TELEMETRY,
    "meter.reading": Lane.TELEMETRY,
    "equipment.status": Lane.TELEMETRY,
}


def valid_kind(kind: str) -> bool:
    return bool(_KIND.match(kind)) and len(kind) <= 64


def lane_of(kind: str) -> Lane:
    """The lane of a known kind; an unknown kind is treated as security (kept, never evicted)
    unless its family says otherwise, so a misspelt alarm is never thrown away as telemetry."""
    lane = KNOWN_KINDS.get(kind)
    if lane is not None:
        return lane
    family = kind.split(".", 1)[0]
    if family in {"fire", "smoke", "panic"}:
        return Lane.LIFE_SAFETY
    if family in {"telemetry", "meter"}:
        return Lane.TELEMETRY
    return Lane.SECURITY


@dataclass(slots=True)
class NewEvent:
    """What a driver hands to an event sink. The outbox adds seq, time, boot id and clock state."""

    kind: str
    source: str
    data: dict[str, Any] = field(default_factory=dict)
    time_ms: int | None = None  # when it happened, if the driver knows better than "now"
    lane: Lane | None = None  # override; normally derived from the kind

    def __post_init__(self) -> None:
        # Drivers make tens of thousands of these a second from a handful of kinds: a kind is
        # checked (and its lane found) once, then looked up.
        lane = _CHECKED_KINDS.get(self.kind)
        if lane is None:
            if not valid_kind(self.kind):
                raise ValueError(f"invalid event kind {self.kind!r}: dotted lower-case name expected")
            lane = lane_of(self.kind)
            if len(_CHECKED_KINDS) < 4096:
                _CHECKED_KINDS[self.kind] = lane
        if self.lane is None:
            self.lane = lane


_CHECKED_KINDS: dict[str, Lane] = {}
