"""Which events make, clear or annotate alerts, on which track, with which key, skill and severity.

A pure function of one event, so the whole table is unit-tested without a database. Kinds not
named here raise nothing (telemetry above all: the engine never sees it).

Life safety (smoke, fire, panic, an intrusion alarm, a forced door while armed, duress, an egress
door the gateway could not release): every event is its own alert, never grouped or deduplicated
beyond the event itself. Their "clear" events (smoke.clear, fire.alarm_cleared, fire.reset) only
note on the open alerts of the same source that the condition is gone: a person still resolves it.

Maintenance: one alert per key ``<gateway>|<source>|<fault>``; the matching clear resolves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cloud.alerts.models import LIFE_SAFETY, MAINTENANCE
from cloud.oncall.schemas import SKILLS  # one list: the rotas', the rules' (tested) and ours


class Effect(StrEnum):
    RAISE = "raise"
    CLEAR = "clear"  # maintenance: resolves the key's alert; life safety: notes it on the source's alerts


@dataclass(frozen=True, slots=True)
class Meaning:
    effect: Effect
    track: str
    fault: str
    skill: str
    severity: str

    def key(self, gateway_id: str, source: str, event_key: str) -> str:
        if self.track == LIFE_SAFETY:
            return f"ls|{event_key}" if self.effect is Effect.RAISE else ""
        return f"{gateway_id}|{source}|{self.fault}"


LIFE_SAFETY_RAISE = {
    "smoke.alarm": "smoke",
    "fire.alarm": "fire",
    "panic.alarm": "panic",
    "intrusion.alarm": "intrusion",
    "fire.release_fault": "release_fault",
    "access.duress": "duress",
}
LIFE_SAFETY_CLEAR = {"smoke.clear", "fire.alarm_cleared", "fire.reset"}

# kind -> (fault code or None to take it from data["fault"], skill, clearing kind)
_MAINTENANCE_RAISE: dict[str, tuple[str | None, str]] = {
    "equipment.fault": (None, "general"),
    "device.fault": (None, "electrical"),
    "device.offline": ("offline", "electrical"),
    "intrusion.supervision_fault": ("supervision", "security"),
    "reader.tamper": ("tamper", "security"),
    "camera.fault": (None, "security"),
    "camera.offline": ("offline", "security"),
}
_MAINTENANCE_CLEAR: dict[str, str | None] = {
    "equipment.fault_cleared": None,
    "device.fault_cleared": None,
    "device.online": "offline",
    "intrusion.supervision_restored": "supervision",
    "camera.fault_cleared": None,
    "camera.online": "offline",
    "door.secured": "door_forced",
}

KINDS = frozenset(
    set(LIFE_SAFETY_RAISE)
    | LIFE_SAFETY_CLEAR
    | set(_MAINTENANCE_RAISE)
    | set(_MAINTENANCE_CLEAR)
    | {"door.forced"}
)
SEVERITIES = ("critical", "major", "minor")


def _fault(data: dict[str, Any], fixed: str | None) -> str:
    if fixed is not None:
        return fixed
    value = data.get("fault")
    return value if isinstance(value, str) and value else "fault"


def _skill(data: dict[str, Any], default: str) -> str:
    value = data.get("skill")
    return value if isinstance(value, str) and value in SKILLS else default


def meaning(kind: str, data: dict[str, Any]) -> Meaning | None:
    """What an event means for alerting, or None."""
    code = LIFE_SAFETY_RAISE.get(kind)
    if code is not None:
        return Meaning(Effect.RAISE, LIFE_SAFETY, code, "security", "critical")
    if kind == "door.forced":
        # A forced door is life safety while its area is armed (the intrusion module says so in
        # the event); otherwise it is the security team's maintenance-track alert.
        if data.get("armed") is True:
            return Meaning(Effect.RAISE, LIFE_SAFETY, "door_forced", "security", "critical")
        return Meaning(Effect.RAISE, MAINTENANCE, "door_forced", "security", "major")
    if kind in LIFE_SAFETY_CLEAR:
        return Meaning(Effect.CLEAR, LIFE_SAFETY, "", "security", "critical")
    raise_rule = _MAINTENANCE_RAISE.get(kind)
    if raise_rule is not None:
        fixed, skill = raise_rule
        severity = data.get("severity")
        return Meaning(
            Effect.RAISE,
            MAINTENANCE,
            _fault(data, fixed),
            _skill(data, skill),
            severity if isinstance(severity, str) and severity in SEVERITIES else "major",
        )
    if kind in _MAINTENANCE_CLEAR:
        return Meaning(Effect.CLEAR, MAINTENANCE, _fault(data, _MAINTENANCE_CLEAR[kind]), "", "major")
    return None


GATEWAY_OFFLINE_KIND = "gateway.offline"
GATEWAY_SOURCE = "gateway"


def gateway_offline_key(gateway_id: str) -> str:
    return f"{gateway_id}|{GATEWAY_SOURCE}|offline"
