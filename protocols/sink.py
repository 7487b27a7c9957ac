from collections.abc import Sequence
from typing import Protocol

from protocols.events import NewEvent


class EventSink(Protocol):
    """What drivers emit into. ``emit`` returns once the events are durably stored (or raises),
    so a driver that gets control back knows its events will not be lost."""

    async def emit(self, events: Sequence[NewEvent]) -> None: ...
