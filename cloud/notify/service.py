"""``gatehouse cloud notify``: the dispatcher in a process of its own (and whatever else the
caller wants beside it, such as the escalator), until SIGTERM or SIGINT."""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from cloud.config import CloudConfig
from cloud.db import SessionFactory
from cloud.notify.dispatcher import Dispatcher
from cloud.server import open_database

log = logging.getLogger(__name__)


@runtime_checkable
class Worker(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


# A worker made once the database is open: given the sessions and the dispatcher (to wake it).
WorkerFactory = Callable[[SessionFactory, Dispatcher], Worker]


async def run_notifier(config: CloudConfig, extra_workers: Sequence[Worker | WorkerFactory] = ()) -> None:
    """Open (and upgrade) the database, then run a Dispatcher and the extra workers until a
    signal. When one of them ends with an error, the others are stopped and the error raised."""
    async with open_database(config) as (_engine, sessions):
        dispatcher = Dispatcher(config, sessions)
        workers: list[Worker] = [dispatcher]
        for extra in extra_workers:
            workers.append(extra if isinstance(extra, Worker) else extra(sessions, dispatcher))
        failures: list[BaseException] = []

        def stop_all() -> None:
            for worker in workers:
                worker.stop()

        async def watch(worker: Worker) -> None:
            try:
                await worker.run()
            except Exception as e:
                log.exception("%s failed", type(worker).__name__)
                failures.append(e)
            finally:
                stop_all()

        with _signals(stop_all):
            await asyncio.gather(*(watch(w) for w in workers))
        if failures:
            raise failures[0]
    log.info("notifier stopped")


@contextlib.contextmanager
def _signals(handler: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
