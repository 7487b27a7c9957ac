"""Real processes for system tests and benchmarks: the cloud (`gatehouse cloud serve`), gateways
(`gatehouse gateway run`), a private Mosquitto whose password and ACL files the cloud keeps, and
readers of what each side holds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import orjson

from cloud.broker.mosquitto import write_acl_file, write_password_file
from cloud.broker.passwords import hash_password
from drivers.sim.building import Building
from edge.clock import Clock
from edge.status import OutboxNotReady, read_status
from tests.support.mosquitto import MosquittoProcess, make_broker_dir
from tests.support.ports import free_port

GATEHOUSE = [sys.executable, "-m", "gatehouse"]
CLOUD_USER, CLOUD_PASSWORD = "gatehouse-cloud", "cloud-secret-for-tests"


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``cond`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _q(v: Any) -> str:
    return json.dumps(v)


class Proc:
    """A gatehouse subprocess with its output in a log file. ``kill_all()`` ends every one still
    running (the system tests' teardown calls it, so a failed test leaves nothing behind)."""

    live: ClassVar[set[Proc]] = set()

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv, self.log_path, self.env = argv, log, env
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        env.pop("GATEHOUSE_DATABASE_URL", None)
        with open(self.log_path, "ab") as log:
            self.p = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
            )
        Proc.live.add(self)

    @classmethod
    def kill_all(cls) -> None:
        for proc in list(cls.live):
            proc.kill()
            cls.live.discard(proc)

    @property
    def running(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def kill(self) -> None:
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        return self.p.returncode if self.p else None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Broker:
    """Mosquitto with password + ACL files that the cloud rewrites on `gateway add`."""

    def __init__(self, tmp: Path, persistent: bool = True) -> None:
        self.dir = Path(make_broker_dir())
        self.password_file = str(self.dir / "passwords")
        self.acl_file = str(self.dir / "acl")
        write_password_file(self.password_file, {CLOUD_USER: hash_password(CLOUD_PASSWORD)})
        write_acl_file(self.acl_file, CLOUD_USER)
        self.mosquitto = MosquittoProcess(
            password_file=self.password_file,
            acl_file=self.acl_file,
            persistence_dir=str(self.dir / "data") if persistent else None,
        )

    @property
    def url(self) -> str:
        return self.mosquitto.url

    def __enter__(self) -> Broker:
        self.mosquitto.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mosquitto.close()


@dataclass
class Cloud:
    tmp: Path
    db_url: str = ""  # "" = SQLite under data_dir
    broker: Broker | None = None  # None = the embedded broker, unless external_url is given
    external_url: str = ""  # a broker the cloud does not manage (no password or ACL files)
    embedded_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proc: Proc | None = None
    extra_toml: str = ""  # more sections of the cloud config ([notify], [alerts] ...)

    def __post_init__(self) -> None:
        self.data = self.tmp / "cloud"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = self.tmp / "cloud.toml"
        lines = [
            f"data_dir = {_q(str(self.data))}",
            "[database]",
            f"url = {_q(self.db_url)}",
            "[api]",
            f"port = {self.api_port}",
            "[mqtt]",
            f"url = {_q(self.broker.url if self.broker else self.external_url)}",
            f"embedded_port = {self.embedded_port}",
            f"username = {_q(CLOUD_USER)}",
            f"password = {_q(CLOUD_PASSWORD)}",
        ]
        if self.broker:
            lines += [
                "[mosquitto]",
                f"password_file = {_q(self.broker.password_file)}",
                f"acl_file = {_q(self.broker.acl_file)}",
                f"pid_file = {_q(self.broker.mosquitto.pid_file)}",
            ]
        self.config.write_text("\n".join(lines) + "\n" + self.extra_toml)
        self.proc = Proc([*GATEHOUSE, "cloud", "serve", "--config", str(self.config)], self.tmp / "cloud.log")

    @property
    def broker_url(self) -> str:
        if self.broker:
            return self.broker.url
        return self.external_url or f"mqtt://127.0.0.1:{self.embedded_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 60) -> None:
        assert self.proc
        self.proc.start()
        wait_until(lambda: self._healthy() or not self.proc.running, timeout, "cloud /healthz")  # type: ignore[union-attr]
        assert self.proc.running, f"cloud exited:\n{self.proc.log()[-3000:]}"

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api}/healthz", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        assert self.proc
        self.proc.kill()

    def stop(self) -> None:
        assert self.proc
        self.proc.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def token(self) -> str:
        return (self.data / "api-token").read_text().strip()

    def get(self, path: str) -> Any:
        req = urllib.request.Request(f"{self.api}{path}", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def add_gateway(self, gateway_id: str, site: str = "Test Site") -> dict[str, Any]:
        out = subprocess.run(
            [
                *GATEHOUSE,
                "cloud",
                "gateway",
                "add",
                gateway_id,
                "--site",
                site,
                "--config",
                str(self.config),
                "--mqtt-url",
                self.broker_url,
            ],
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "GATEHOUSE_DATABASE_URL"},
        )
        assert out.returncode == 0, out.stderr
        return tomllib.loads(out.stdout)

    # -------------------------------------------------------------- what the cloud holds

    def events(self, gateway_id: str) -> list[dict[str, Any]]:
        sql = (
            "SELECT store_id, seq, kind, lane, reported_time, received_time, data, source FROM events "
            "WHERE gateway_id = {p} ORDER BY id"
        )
        if not self.db_url:
            con = sqlite3.connect(self.data / "gatehouse.db", timeout=30)
            try:
                rows = con.execute(sql.format(p="?"), (gateway_id,)).fetchall()
            finally:
                con.close()
        else:
            rows = asyncio.run(_pg_fetch(self.db_url, sql.format(p="$1"), gateway_id))
        out = []
        for store_id, seq, kind, lane, reported, received, data, source in rows:
            if isinstance(data, str | bytes):
                data = orjson.loads(data)
            out.append(
                {
                    "store_id": store_id,
                    "seq": seq,
                    "kind": kind,
                    "lane": lane,
                    "reported": reported,
                    "received": received,
                    "data": data,
                    "source": source,
                }
            )
        return out


async def _pg_fetch(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


class Gateway:
    def __init__(
        self,
        tmp: Path,
        registered: dict[str, Any],
        broker_url: str,
        *,
        sources: str = "",
        outbox: str = "",
        uplink: str = "",
    ) -> None:
        self.id = registered["gateway_id"]
        self.tmp = tmp
        self.data = tmp / f"gw-{self.id}"
        self.password = registered["mqtt"]["password"]
        self.broker_url = broker_url
        self.config = tmp / f"{self.id}.toml"
        self.write_config(sources=sources, outbox=outbox, uplink=uplink)
        self.proc = Proc([*GATEHOUSE, "gateway", "run", "--config", str(self.config)], tmp / f"{self.id}.log")

    def write_config(self, *, sources: str = "", outbox: str = "", uplink: str = "") -> None:
        self.config.write_text(
            f"gateway_id = {_q(self.id)}\ndata_dir = {_q(str(self.data))}\n"
            f"[mqtt]\nurl = {_q(self.broker_url)}\npassword = {_q(self.password)}\n"
            f'[clock]\nsynced = "yes"\n'
            f"[uplink]\nreconnect_min_s = 0.1\nreconnect_max_s = 1.0\nack_timeout_s = 5\n{uplink}\n"
            f"[outbox]\n{outbox}\n{sources}\n"
        )

    def start(self) -> None:
        self.proc.start()
        wait_until(
            lambda: self._ready() or not self.proc.running, 30, f"gateway {self.id} to open its outbox"
        )
        assert self.proc.running, f"gateway {self.id} exited:\n{self.proc.log()[-3000:]}"

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()

    def _ready(self) -> bool:
        try:
            self.status()
        except OutboxNotReady:
            return False
        return True

    def status(self) -> dict[str, Any]:
        return read_status(self.data / "outbox.sqlite3", Clock("yes"))

    def drained(self) -> bool:
        try:
            return self.status()["backlog_total"] == 0
        except Exception:
            return False


def evicted_in(events: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """(store_id, seq) the gateway reported evicted, read from its gateway.evicted events."""
    out = set()
    for e in events:
        if e["kind"] == "gateway.evicted":
            for a, b in e["data"]["ranges"]:
                out.update((e["store_id"], s) for s in range(a, b + 1))
    return out


def assert_exactly_once(cloud_events: list[dict[str, Any]], stores: dict[str, int]) -> None:
    """The cloud holds exactly what the gateway accepted (seqs 1..next_seq-1 of each store it had),
    less the ranges it reported evicted: none twice, none missing."""
    keys = [(e["store_id"], e["seq"]) for e in cloud_events]
    dupes = len(keys) - len(set(keys))
    assert dupes == 0, f"{dupes} events stored twice"
    held = set(keys)
    evicted = evicted_in(cloud_events)
    accepted = {(s, n) for s, nxt in stores.items() for n in range(1, nxt)}
    missing = accepted - evicted - held
    extra = held - accepted
    assert not missing, f"{len(missing)} accepted events missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} events the gateway never accepted, e.g. {sorted(extra)[:5]}"


class BuildingThread:
    """The building on its own event loop in a thread, so a synchronous test can act on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="building")
        self.thread.start()
        self.building = Building(seed=7, life=False)
        self.call(self.building.start())

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def act(self, do: str, target: str, **args: Any) -> str:
        return str(self.call(self.building.act(do, target, **args)))

    def close(self) -> None:
        self.call(self.building.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
