"""One database writer at a time, urgent writers first.

SQLite has a single writer. Left to itself, a second writer gets SQLITE_BUSY and sleeps in the
busy handler's growing steps (up to 100 ms a step), so an alarm's insert could sleep behind an
events batch far longer than that batch takes. In-process, ingest's writers queue here instead:
an urgent writer (an alarm) is next as soon as the current transaction ends. On PostgreSQL,
which has real concurrent writers, the gate is open (``WriteGate(enabled=False)``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class WriteGate:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._busy = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def hold(self, *, urgent: bool = False) -> AsyncIterator[None]:
        if not self.enabled:
            yield
            return
        if self._busy:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            (self._urgent if urgent else self._normal).append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._release()  # it was handed to us as we were cancelled: pass it on
                else:
                    (self._urgent if urgent else self._normal).remove(fut)
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        for waiters in (self._urgent, self._normal):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)  # handed over: still busy
                    return
        self._busy = False
