"""What every reader produces: a card read (``reader.card``), tamper and rate-limited faults.

``reader.card``: source = the reader's name; data ``{"reader", "format", "bits", "facility", "card",
"raw_hex"}`` with the credential number as a decimal string (``facility`` is None for formats
without one and for ``raw``). The gateway's access logic hooks in with ``on_card``: an async
callable given each ``CardRead`` after its event is stored; it may answer with
``await read.indicate(grant)`` (green LED and a short beep, or red LED and the buzzer) where the
reader can show it.

``reader.tamper`` (OSDP readers): source = the reader's name; data ``{"reader", "tamper",
"power_fail"}``, sent when the tamper switch changes (a first report of "no tamper" is no news).
Faults (``device.fault``, family ``wiegand`` or ``osdp``): ``bad_parity``, ``bad_frame``,
``secure_channel_refused``, ``install_mode_on``, ``key_installed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from drivers.base import emit_fault, now_ms
from drivers.readers.wiegand import Decoded
from protocols.events import NewEvent
from protocols.sink import EventSink

Indicate = Callable[[bool], Awaitable[bool]]


async def _no_indicator(grant: bool) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class CardRead:
    reader: str
    door: str
    format: str
    bits: int
    facility: int | None
    card: str
    raw_hex: str
    read_ms: int
    _indicate: Indicate = field(default=_no_indicator, repr=False, compare=False)

    @classmethod
    def of(cls, reader: str, door: str, d: Decoded, indicate: Indicate = _no_indicator) -> CardRead:
        return cls(reader, door, d.format, d.bits, d.facility, str(d.card), d.raw_hex, now_ms(), indicate)

    async def indicate(self, grant: bool) -> bool:
        """Show the access decision at the reader; False when this reader has no LED/buzzer line
        (a Wiegand converter only listens) or the command could not be queued."""
        return await self._indicate(grant)

    def event(self) -> NewEvent:
        return NewEvent(
            "reader.card",
            self.reader,
            {
                "reader": self.reader,
                "format": self.format,
                "bits": self.bits,
                "facility": self.facility,
                "card": self.card,
                "raw_hex": self.raw_hex,
            },
            time_ms=self.read_ms,
        )


OnCard = Callable[[CardRead], Awaitable[None]]
# Keys pressed on a reader's keypad (reader name, the keys as text: digits, "*", "#"). Never an
# event: a PIN is not history to keep.
OnKeys = Callable[[str, str], Awaitable[None]]


@dataclass
class FaultReporter:
    """Reports a device's faults as ``device.fault``, at most one per fault name per ``interval_s``.

    Faults ride the security lane, which is never evicted: a converter spewing bad frames must not
    fill the store, so repeats within the interval are only counted and the next report says how
    many there were. Every fault is still counted in ``counts``."""

    sink: EventSink
    source: str
    family: str
    interval_s: float = 1.0
    counts: dict[str, int] = field(default_factory=dict)
    _last: dict[str, float] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)

    async def report(self, fault: str, detail: str = "") -> bool:
        """Count the fault; True when it was emitted now (False: held back by the rate limit)."""
        self.counts[fault] = self.counts.get(fault, 0) + 1
        t = time.monotonic()
        last = self._last.get(fault)
        if last is not None and t - last < self.interval_s:
            self._held[fault] = self._held.get(fault, 0) + 1
            return False
        held = self._held.pop(fault, 0)
        if held:
            detail = f"{detail} (+{held} more since the last report)"
        self._last[fault] = t
        await emit_fault(self.sink, self.source, self.family, fault, detail)
        return True


async def call_hook(on_card: OnCard | None, reads: list[CardRead], log_name: str) -> None:
    """Hand reads to the access logic; a failing hook is logged, never takes the reader down."""
    if on_card is None:
        return
    for r in reads:
        try:
            await on_card(r)
        except Exception:
            logging.getLogger(log_name).exception("on_card hook failed for %s card %s", r.reader, r.card)
