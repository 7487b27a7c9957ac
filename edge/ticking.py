"""The timer loop the local modules share: do what is due, then sleep until the next deadline
(or ``poll_s``, for schedules), woken early when something new starts a shorter delay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from protocols.events import NewEvent


async def tick_forever(
    tick: Callable[[], list[NewEvent]],
    next_deadline: Callable[[], float | None],
    emit: Callable[[Sequence[NewEvent]], Awaitable[None]],
    monotonic: Callable[[], float],
    poll_s: float,
    wake: asyncio.Event,
) -> None:
    while True:
        out = tick()
        if out:
            await emit(out)
        wait = poll_s
        deadline = next_deadline()
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - monotonic()))
        wake.clear()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that arrives
        # as the wait ends (gh-86296), and the task would then never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await wake.wait()
