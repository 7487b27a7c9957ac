"""Running the cloud: ``serve`` (API + ingest + the embedded broker when no broker is configured,
all on one event loop), ``ingest`` alone, and the schema upgrade both do at start.

The API sends commands (and access pushes) through an MQTT link of its own, the command link: a
clean-session publisher signed in as the cloud's MQTT user with a client id of its own, started
with ``serve`` (with or without ingest) and stopped after the API.

SIGINT/SIGTERM stop everything in order: the API stops taking requests and finishes those in
flight, ingest finishes its transaction in progress, then the command link, the broker and the
database pool go.
"""

import asyncio
import contextlib
import gc
import io
import logging
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.api import create_app
from cloud.config import (
    API_TOKEN_FILE,
    CloudConfig,
    api_token,
    broker_address,
    data_dir,
    database_url,
    mqtt_password,
    uses_embedded_broker,
)
from cloud.db import SessionFactory, create_engine, redacted, session_factory
from cloud.ingest import Ingest

if TYPE_CHECKING:
    from cloud.alerts.workers import AlertWorkers
from cloud.mqtt_link import Inbound, LinkSettings, MqttLink
from cloud.registry import get_password_hash, sync_mosquitto_files
from cloud.schema import prepare_database
from protocols.configuration import ConfigError

log = logging.getLogger(__name__)


class StartupFailed(Exception):
    """A part of the cloud could not start; the text says which and why."""


@contextlib.asynccontextmanager
async def open_database(config: CloudConfig) -> AsyncIterator[tuple[AsyncEngine, SessionFactory]]:
    """The engine, upgraded to the latest schema with the coming months' partitions in place."""
    url = database_url(config)
    engine = create_engine(url, command_timeout_s=config.database.command_timeout_s)
    try:
        try:
            revision = await prepare_database(engine)
        except Exception as e:
            raise StartupFailed(f"database {redacted(url)}: {e}") from e
        log.info("database %s at schema revision %s", redacted(url), revision)
        yield engine, session_factory(engine)
    finally:
        await engine.dispose()


def _short_gil_slices() -> None:
    # Ingest shares the GIL between paho's network threads, aiosqlite's thread and the loop. An
    # alarm's path crosses threads several times; with the default 5 ms slices each crossing can
    # wait out a whole slice behind a busy batch decode, which adds up to tens of milliseconds.
    sys.setswitchinterval(0.0005)


async def serve(config: CloudConfig, *, with_ingest: bool = True) -> None:
    """Run the API (and ingest, and the embedded broker if ``mqtt.url`` is empty) until a signal."""
    _short_gil_slices()
    stopping = asyncio.Event()
    async with AsyncExitStack() as stack:
        _engine, sessions = await stack.enter_async_context(open_database(config))
        token = api_token(config)
        async with sessions() as session:
            await sync_mosquitto_files(session, config)

        # Notices go out from here unless a separate `gatehouse cloud notify` sends them.
        workers = _alert_workers(config, sessions)
        ingest: Ingest | None = None
        if with_ingest:
            if uses_embedded_broker(config):
                await _start_embedded_broker(stack, config, sessions)
            ingest = Ingest(config, sessions, notify_wake=workers.wake if workers else None)
        elif uses_embedded_broker(config):
            log.info("no ingest (--no-ingest): the embedded broker is not started either")

        commands = command_link(config)
        commands.start()
        stack.push_async_callback(commands.stop)

        server = _Server(
            uvicorn.Config(
                create_app(config, sessions, token=token, publisher=commands),
                host=config.api.host,
                port=config.api.port,
                log_config=None,  # our logging setup, not uvicorn's
                lifespan="off",
            )
        )

        def request_stop() -> None:
            stopping.set()
            server.should_exit = True
            if ingest is not None:
                ingest.stop()
            if workers is not None:
                workers.stop()

        def on_signal() -> None:
            if stopping.is_set():
                server.force_exit = True  # a second signal: do not wait for slow requests
            log.info("stopping (signal)")
            request_stop()

        failures: list[BaseException] = []
        # Everything built so far (the app, its routes, templates, SQLAlchemy's mappers) lives as
        # long as the process: moved out of the collector's sight, a full collection no longer
        # walks it, which otherwise stalled a request now and then for 150-250 ms
        # (bench/console.py: the SQLite dashboard's p95 went from ~280 to ~43 ms).
        gc.collect()
        gc.freeze()
        with _signals(on_signal):
            async with asyncio.TaskGroup() as tasks:
                if ingest is not None:
                    tasks.create_task(_watch(ingest.run(), request_stop, failures), name="ingest")
                tasks.create_task(_watch(_run_api(server, config), request_stop, failures), name="api")
                if workers is not None:
                    tasks.create_task(_watch(workers.run(), request_stop, failures), name="alert-workers")
                log.info(
                    "API on http://%s:%d (token: api.token in the config or %s)",
                    config.api.host,
                    config.api.port,
                    data_dir(config) / API_TOKEN_FILE,
                )
        if failures:
            raise failures[0]
    log.info("cloud stopped")


def _alert_workers(config: CloudConfig, sessions: SessionFactory) -> "AlertWorkers | None":
    if not (config.notify.dispatch and config.alerts.enabled):
        return None
    from cloud.alerts.workers import AlertWorkers

    return AlertWorkers(config, sessions)


def command_link(
    config: CloudConfig,
    name: str = "api",
    subscriptions: Sequence[str] = (),
    on_message: Callable[[Inbound], None] | None = None,
) -> MqttLink:
    """A link to send commands on: the cloud's MQTT user, a clean session, and a client id of its
    own (``{mqtt.client_id}-{name}-{random}``), so that API replicas and CLI runs never take each
    other's (or ingest's) session. The CLI also subscribes to the answers it waits for."""
    mqtt = config.mqtt
    settings = LinkSettings(
        address=broker_address(config),
        client_id=f"{mqtt.client_id[:48]}-{name}-{secrets.token_hex(4)}",
        username=mqtt.username,
        password=mqtt_password(config),
        ca_file=mqtt.ca_file,
    )
    return MqttLink(
        f"{name}-commands", settings, subscriptions, on_message or (lambda _inbound: None), clean_session=True
    )


async def run_ingest(config: CloudConfig) -> None:
    """Run ingest alone against the configured external broker until a signal."""
    _short_gil_slices()
    if uses_embedded_broker(config):
        raise ConfigError(
            "mqtt.url: empty, but `ingest` needs an external broker (mqtt://host:port); "
            "with the embedded broker run `gatehouse cloud serve`"
        )
    async with open_database(config) as (_engine, sessions):
        workers = _alert_workers(config, sessions)
        ingest = Ingest(config, sessions, notify_wake=workers.wake if workers else None)

        def stop() -> None:
            ingest.stop()
            if workers is not None:
                workers.stop()

        with _signals(stop):
            if workers is None:
                await ingest.run()
            else:
                failures: list[BaseException] = []
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(_watch(ingest.run(), stop, failures), name="ingest")
                    tasks.create_task(_watch(workers.run(), stop, failures), name="alert-workers")
                if failures:
                    raise failures[0]
    log.info("ingest stopped")


async def _start_embedded_broker(
    stack: AsyncExitStack, config: CloudConfig, sessions: SessionFactory
) -> None:
    from cloud.broker.authority import RegistryAuthority
    from cloud.broker.embedded import EmbeddedBroker

    async def lookup(username: str) -> str | None:
        async with sessions() as session:
            return await get_password_hash(session, username)

    authority = RegistryAuthority(
        lookup=lookup, cloud_username=config.mqtt.username, cloud_password=mqtt_password(config)
    )
    broker = EmbeddedBroker(config.mqtt.embedded_host, config.mqtt.embedded_port, authority)
    try:
        await broker.start()
    except Exception as e:
        raise StartupFailed(f"embedded MQTT broker on {broker_address(config).url}: {e}") from e
    stack.push_async_callback(broker.stop)
    log.info("embedded MQTT broker on %s", broker_address(config).url)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The signals are handled by serve(), which stops ingest and the broker too; uvicorn's
        # own handling would re-raise them once the API is down and end the process early.
        yield


async def _run_api(server: _Server, config: CloudConfig) -> None:
    try:
        await server.serve()
    except SystemExit:
        # uvicorn exits the process when it cannot bind; make that an ordinary failure so that
        # ingest and the broker are still stopped in order.
        raise StartupFailed(
            f"API on {config.api.host}:{config.api.port}: cannot listen (see above)"
        ) from None


async def _watch(work: Awaitable[None], stop_all: Callable[[], None], failures: list[BaseException]) -> None:
    """Run one part; when it ends, failed or not, stop the others gracefully (a TaskGroup would
    cancel them mid-transaction) and keep the failure for the caller."""
    try:
        await work
    except Exception as e:
        failures.append(e)
    finally:
        stop_all()


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
        loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
        installed.append(signal.SIGUSR1)
    except (NotImplementedError, RuntimeError):  # pragma: no cover
        pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _dump_tasks() -> None:
    """SIGUSR1: log where every task is waiting: what an operator needs when ingest seems stuck."""
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(limit=12, file=out)
        log.warning("task %s:\n%s", task.get_name(), out.getvalue())
