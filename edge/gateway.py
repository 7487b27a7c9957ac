"""The gateway process: outbox, uplink and event sources, owned by one supervisor.

Every task belongs to the TaskGroup that started it; on SIGTERM/SIGINT the sources stop first,
then the outbox commits what producers already handed over, then the uplink says goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from drivers.sensors import SensorSink
from drivers.sim.synthetic import from_config
from edge import systemd
from edge.access import CredentialStore
from edge.clock import Clock
from edge.commands import CommandExecutor, Done, Handler, Refused
from edge.config import GatewayConfig
from edge.fieldbus import DEVICES_FILE, build_drivers, publish_device_status, write_device_status
from edge.inventory import inventory_events
from edge.local import LocalAction
from edge.outbox import Outbox
from edge.uplink import Uplink
from protocols.commands import ConfigApply, ResultCode
from protocols.configuration import ConfigError, parse_config
from protocols.envelope import Command
from protocols.events import NewEvent
from protocols.sink import EventSink

ACCESS_FILE = "access.sqlite3"
COMMANDS_FILE = "commands.sqlite3"

log = logging.getLogger(__name__)


def gateway_version() -> str:
    try:
        return version("gatehouse")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0+src"


class FieldSet:
    """What a config brings up: the drivers, the sensors' meanings and the local action, with
    their tasks. A config change replaces the whole set; the outbox, the uplink, the credential
    store and the command log stay."""

    def __init__(self, cfg: GatewayConfig, outbox: Outbox, clock: Clock, store: CredentialStore) -> None:
        self.cfg = cfg
        state_dir = Path(cfg.data_dir)
        # Drivers emit through the sensors' meanings and the local action into the outbox: a smoke
        # detector's reading becomes a smoke alarm, and the alarm releases the egress doors.
        self.local = LocalAction(cfg, outbox, clock, store, state_dir=state_dir)
        sink: EventSink = self.local
        if cfg.sensors:
            sink = SensorSink(self.local, cfg.sensors, state_dir=state_dir)
        self.sink = sink
        self.drivers = build_drivers(
            cfg,
            sink,
            on_card=self.local.on_card if cfg.doors else None,
            on_keys=self.local.on_keys if cfg.doors else None,
        )
        self.local.writer.bind(self.drivers)
        self.devices_file = state_dir / DEVICES_FILE
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        cfg, sink = self.cfg, self.sink
        # Local action first: doors released for a fire before a restart are released again
        # before any driver reads anything.
        self.tasks.append(asyncio.create_task(self.local.run(), name="local-action"))
        self.tasks += [
            asyncio.create_task(from_config(sink, s).run(), name=f"source-{i}")
            for i, s in enumerate(cfg.sources)
        ]
        self.tasks += [asyncio.create_task(d.run(), name=f"driver-{f}") for f, d in self.drivers.items()]
        if self.drivers:
            self.tasks.append(
                asyncio.create_task(
                    publish_device_status(self.devices_file, self.drivers, local=self.local.status)
                )
            )

    def failure(self) -> BaseException | None:
        """The first task that stopped with an error (none of them is meant to stop)."""
        for t in self.tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                return t.exception()
        return None

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.drivers:
            try:
                write_device_status(self.devices_file, self.drivers, running=False, local=self.local.status)
            except Exception as e:  # a full disk must not stop a config change or a shutdown
                log.warning("cannot write %s: %s", self.devices_file, e)


class Gateway:
    # A new config counts as started when nothing in it failed for this long.
    PROBATION_S = 3.0

    def __init__(
        self, cfg: GatewayConfig, clock: Clock | None = None, config_path: Path | None = None
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.clock = clock or Clock(cfg.clock.synced)
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        self.field: FieldSet | None = None
        self._field_lock = asyncio.Lock()
        self._stop: asyncio.Event | None = None
        self.exit_code = 0

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        cfg = self.cfg
        data_dir = Path(cfg.data_dir)
        self.outbox = outbox = await Outbox.open(
            cfg.outbox_path,
            self.clock,
            max_bytes=cfg.outbox.max_bytes,
            commit_interval_ms=cfg.outbox.commit_interval_ms,
            commit_max_events=cfg.outbox.commit_max_events,
        )
        self.store = store = CredentialStore.open(data_dir / ACCESS_FILE)
        self.commands = CommandExecutor(
            data_dir / COMMANDS_FILE,
            self.clock,
            self._handlers(),
            allowed=set(cfg.commands.allowed),
            record=outbox.emit,
        )
        self.uplink = uplink = Uplink(
            cfg,
            outbox,
            version=gateway_version(),
            commands=self.commands,
            access_version=lambda: store.version,
        )
        log.info(
            "gateway %s: store %s, next seq %d, backlog %d bytes, broker %s, credentials v%d",
            cfg.gateway_id,
            outbox.store_id,
            (await outbox.stats()).next_seq,
            outbox.backlog_bytes,
            cfg.mqtt.url,
            store.version,
        )
        try:
            await outbox.accept(
                [
                    NewEvent(
                        "gateway.started",
                        "gateway",
                        {
                            "version": gateway_version(),
                            "store_id": outbox.store_id,
                            "clock_synced": self.clock.synced(),
                            "config_version": cfg.config_version,
                            "access_version": store.version,
                        },
                    ),
                    # The cloud's device and point registry follows the config that runs.
                    *inventory_events(cfg, self.clock.now_ms()),
                ]
            )
            self.field = FieldSet(cfg, outbox, self.clock, store)
            self.field.start()
            # What start-up made lives as long as the process: out of the collector's way, so a
            # full collection (which holds every thread) does not stall a card or a release.
            gc.freeze()
            async with asyncio.TaskGroup() as tg:
                link = tg.create_task(uplink.run(), name="uplink")
                watchdog = tg.create_task(self._watchdog(), name="watchdog")
                watch = tg.create_task(self._watch_field(), name="field-watch")
                systemd.notify("READY=1")
                await stop.wait()
                systemd.notify("STOPPING=1")
                # Order matters: producers stop first; the uplink says goodbye and stops reading
                # the outbox; only then does the outbox commit what it was handed and close.
                async with self._field_lock:
                    await self.field.stop()
                await uplink.close()
                link.cancel()
                watchdog.cancel()
                watch.cancel()
        finally:
            await outbox.close()
            self.commands.close()
            store.close()
        log.info("gateway %s stopped", cfg.gateway_id)

    def _handlers(self) -> dict[str, Handler]:
        # The local action's handlers belong to whichever field set runs now.
        def current(name: str) -> Handler:
            async def call(args: Any, cmd: Command) -> Done:
                if self.field is None:
                    raise Refused(ResultCode.REFUSED, "the gateway is starting")
                if self._field_lock.locked():
                    # Mid config change the running set is the stopped old one: acting on it
                    # (a fire reset from a frozen picture) would be wrong. Say so; the cloud retries.
                    raise Refused(
                        ResultCode.REFUSED, "a config change is in progress; try again in a few seconds"
                    )
                return await self.field.local.handlers()[name](args, cmd)

            return call

        handlers = {n: current(n) for n in LocalAction.COMMANDS}
        # The store is the gateway's, not the field set's: a sync is taken during a config change.
        handlers["access.sync"] = self._access_sync
        handlers["config.apply"] = self._config_apply
        return handlers

    async def _access_sync(self, args: Any, cmd: Command) -> Done:
        assert self.field is not None
        result = await self.field.local.handlers()["access.sync"](args, cmd)
        if self.uplink is not None and result.code is ResultCode.DONE:
            self.uplink.announce()  # the birth carries the store's version
        return result

    # ------------------------------------------------------------ config changes

    async def _config_apply(self, args: ConfigApply, cmd: Command) -> Done:
        """Check the new config, swap the field set to it, and roll back if it does not start."""
        try:
            new = parse_config(args.toml, GatewayConfig, f"config {args.version}")
        except ConfigError as e:
            raise Refused(ResultCode.BAD_ARGS, str(e)) from None
        new = new.model_copy(update={"config_version": args.version})
        old = self.cfg
        for key in ("gateway_id", "data_dir", "mqtt", "outbox", "uplink"):
            if getattr(new, key) != getattr(old, key):
                raise Refused(
                    ResultCode.REFUSED,
                    f"{key} differs: changing it needs the installer (restart the gateway)",
                )
        assert self.outbox is not None and self.uplink is not None
        async with self._field_lock:
            assert self.field is not None
            await self.field.stop()
            failure = await self._try_start(new)
            if failure is not None:
                restored = await self._try_start(old)
                await self.outbox.accept(
                    [
                        NewEvent(
                            "gateway.config_rolled_back",
                            "gateway",
                            {
                                "tried": args.version,
                                "running": old.config_version,
                                "error": failure,
                                "by": cmd.by,
                            },
                        )
                    ]
                )
                if restored is not None:
                    # The old config no longer starts either: nothing would drive the doors. Stop
                    # with an error, so that systemd starts the gateway again from the config file
                    # on disk (still the old one) rather than leaving it running blind.
                    log.critical("the previous config does not start again either: %s; exiting", restored)
                    self._fatal(f"neither config {args.version} nor the previous one starts: {restored}")
                previous = old.config_version or "the previous config"
                raise Refused(
                    ResultCode.FAILED,
                    f"config {args.version} did not start ({failure}); rolled back to {previous}",
                )
            self.cfg = new
            self.uplink.cfg = new
            self.commands.allowed = set(new.commands.allowed)
            if self.config_path is not None:
                self._keep(args.toml, args.version)
        await self.outbox.accept(
            [
                NewEvent(
                    "gateway.config_applied",
                    "gateway",
                    {"version": args.version, "previous": old.config_version, "by": cmd.by},
                ),
                *inventory_events(new, self.clock.now_ms()),
            ]
        )
        self.uplink.announce()
        return Done(f"config {args.version} running", {"config_version": args.version})

    async def _try_start(self, cfg: GatewayConfig) -> str | None:
        assert self.outbox is not None
        try:
            field = FieldSet(cfg, self.outbox, self.clock, self.store)
            field.start()
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        # Give it a moment to fail (a port that cannot be bound, a bug met at start).
        deadline = asyncio.get_running_loop().time() + self.PROBATION_S
        while asyncio.get_running_loop().time() < deadline:
            if (err := field.failure()) is not None:
                await field.stop()
                return f"{type(err).__name__}: {err}"
            await asyncio.sleep(0.05)
        self.field = field
        return None

    def _fatal(self, why: str) -> None:
        self.exit_code = 1
        log.critical("gateway stopping: %s", why)
        if self._stop is not None:
            self._stop.set()

    async def _watch_field(self) -> None:
        """A field set's task that stopped with an error (a driver that died, a port lost for good)
        means points nobody reads: report it, and start the set again."""
        delay = 1.0
        while True:
            await asyncio.sleep(0.5)
            field = self.field
            if field is None or self._field_lock.locked():
                continue
            err = field.failure()
            if err is None:
                continue
            log.error("field set failed (%r); starting it again in %.0f s", err, delay)
            assert self.outbox is not None
            data = {"fault": "field_set_failed", "detail": repr(err)[:200]}
            with contextlib.suppress(Exception):
                await self.outbox.accept([NewEvent("device.fault", "gateway", data)])
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
            async with self._field_lock:
                await field.stop()
                failure = await self._try_start(self.cfg)
                if failure is not None:
                    log.error("the field set does not start again: %s", failure)
                    self.field = field  # stopped; the next round tries again
                else:
                    delay = 1.0

    def _keep(self, toml: str, version: str) -> None:
        """The running config becomes the file the gateway starts from; the old one is kept
        beside it (``.previous``)."""
        assert self.config_path is not None
        path = self.config_path
        # The version the cloud named is the one the gateway reports, also after a restart.
        line = f"config_version = {json.dumps(version)}"
        text, n = re.subn(r"(?m)^config_version\s*=.*$", line, toml, count=1)
        if n == 0:
            text = line + "\n" + toml
        tmp = path.with_suffix(".new")
        tmp.write_text(text)
        if path.exists():
            os.replace(path, path.with_suffix(".previous"))
        os.replace(tmp, path)

    async def _watchdog(self) -> None:
        interval = systemd.watchdog_interval_s()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            systemd.notify("WATCHDOG=1")


def run_forever(cfg: GatewayConfig, config_path: Path | None = None) -> int:
    # The loop and aiosqlite's thread share the GIL; short slices keep an alarm's commit from
    # waiting out 5 ms slices behind the uplink's batch encoding.
    sys.setswitchinterval(0.0005)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        gw = Gateway(cfg, config_path=config_path)
        await gw.run(stop)
        return gw.exit_code

    return asyncio.run(main())
