"""An event as a row of the console's tables (the site view's live stream, the event search):
its time, where it came from, what it was, a one-line summary of its data, and the link to its
trend for a telemetry reading."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from cloud.models import Event

SUMMARY_LENGTH = 120
POINT_KIND = "telemetry.point"


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    reported_time: datetime
    gateway_id: str
    kind: str
    source: str
    summary: str
    trend_url: str  # "" unless the event is a point's reading

    @property
    def family(self) -> str:
        """``door`` of ``door.forced``: the row's colour in the tables."""
        return self.kind.split(".", 1)[0]


def trend_url(gateway_id: str, source: str, hours: int | None = None) -> str:
    params: dict[str, Any] = {"gateway": gateway_id, "source": source}
    if hours is not None:
        params["hours"] = hours
    return f"/trend?{urlencode(params)}"


def value_text(value: Any) -> str:
    """A reading as people read it: floats to six significant digits (a float32 register's
    23.399999618 is 23.4), booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def summary(kind: str, data: dict[str, Any]) -> str:
    """What the event says, in one short line: a reading's value and unit, a door's name, else
    its data as compact JSON (cut to SUMMARY_LENGTH)."""
    if kind == POINT_KIND and "value" in data:
        text = value_text(data["value"])
        if data.get("unit"):
            text += f" {data['unit']}"
        quality = data.get("quality", "good")
        if quality != "good":
            text += f" ({quality})"
        return text
    if kind.startswith("door.") and isinstance(data.get("door"), str):
        rest = {k: v for k, v in data.items() if k != "door"}
        text = data["door"] + (f" {_compact(rest)}" if rest else "")
        return text[:SUMMARY_LENGTH]
    return _compact(data)[:SUMMARY_LENGTH] if data else ""


def _compact(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def event_row(event: Event) -> EventRow:
    return EventRow(
        id=event.id,
        reported_time=event.reported_time,
        gateway_id=event.gateway_id,
        kind=event.kind,
        source=event.source,
        summary=summary(event.kind, event.data or {}),
        trend_url=trend_url(event.gateway_id, event.source) if event.kind == POINT_KIND else "",
    )
