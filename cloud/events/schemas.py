"""The events API's answers."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    gateway_id: str
    store_id: str
    seq: int
    kind: str
    lane: int
    reported_time: datetime
    received_time: datetime
    boot_id: str
    mono_ns: int
    clock_synced: bool
    source: str
    data: dict[str, Any]


class EventPageOut(BaseModel):
    items: list[EventOut]
    next_cursor: str | None
