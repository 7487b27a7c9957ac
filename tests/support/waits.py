"""Bounded waits for tests: poll a condition until it holds, fail naming it if it never does.

Never a bare sleep to let something happen: a test waits for the condition it needs, and a slow
machine makes it slower, not wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


async def until(
    cond: Callable[[], Any], what: str = "condition", within: float = 10.0, interval: float = 0.01
) -> Any:
    """The first truthy value of ``cond()`` (awaited if it returns an awaitable); an
    AssertionError naming ``what`` if there is none within ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = cond()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(interval)
