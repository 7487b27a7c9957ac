"""The notifications dispatcher and the escalator, run together: inside ``serve`` and ``ingest``
(``[notify] dispatch = true``) or alone (``gatehouse cloud notify``). Several may run against one
database: both claim their rows before acting on them."""

from __future__ import annotations

import asyncio
import threading

from cloud.alerts.escalator import Escalator
from cloud.config import CloudConfig
from cloud.db import SessionFactory
from cloud.notify.dispatcher import Dispatcher


class AlertWorkers:
    def __init__(self, config: CloudConfig, sessions: SessionFactory) -> None:
        self.dispatcher = Dispatcher(config, sessions)
        self.escalator = Escalator(sessions, config.alerts, wake=self.dispatcher.wake)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def wake(self) -> None:
        """Something was enqueued: from any thread (the PostgreSQL alarms worker has its own loop)."""
        if threading.get_ident() == self._thread:
            self.dispatcher.wake()
        else:
            try:
                self._loop.call_soon_threadsafe(self.dispatcher.wake)
            except RuntimeError:  # the loop is closed: the dispatcher's poll finds it at the next start
                pass

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.dispatcher.run(), name="notify-dispatcher")
            tasks.create_task(self.escalator.run(), name="alerts-escalator")

    def stop(self) -> None:
        self.dispatcher.stop()
        self.escalator.stop()
