#!/usr/bin/env python3
"""Local action on the simulated building, end to end over real sockets and ptys; prints ONE JSON
line.

    .venv/bin/python bench/local.py            # 300 cards, 30 fires
    .venv/bin/python bench/local.py --quick    # 60 cards, 10 fires; well within a minute

The building (drivers/sim/building.py) runs in this process with the gateway's real drivers,
sensors and local action (edge/rehearsal.py): Modbus TCP I/O modules, the car-park Wiegand
converter on a pty, the BACnet air handler. The credential store holds 100,000 credentials.

- access_decision_ms_p50 / _p99: a card frame written to the car-park converter's pty (the
  moment the reader's serial port receives it) until the I/O module's lock relay coil is written
  released (the simulator's write hook). Every card is a different credential from the 100,000.
  On the way: the frame parsed, the ``reader.card`` event committed to the outbox (a real one,
  SQLite on this machine's disk), the decision, the relay write.
- fire_release_ms_p50 / _p99: the smoke detector's input changes on the I/O module simulator
  until every egress door's relay is written released. Includes detection: the detector is read
  every 100 ms, so about 50 ms of the median is the wait for the next poll.
- credential_delta_sync_s: 10,000 changed credentials arriving as five ``access.sync`` commands
  (the parts of one delta, 2,000 credentials each, as JSON arguments) through the gateway's
  command executor: argument checking and the store's apply, from the first part to the last
  part's "done" (the gateway's share).
- credential_delta_sync_e2e_s: the whole way, with real processes (``gatehouse cloud serve`` on
  SQLite with its embedded broker, ``gatehouse gateway run``): the 10,000 changed rows of a site
  with 100,000 credentials POSTed as CSV to the cloud's import API, until the cloud's gateway list
  shows the gateway's store at the new version (the import, the delta, MQTT, the gateway's apply,
  its answer recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from drivers.sim.building import Building
from drivers.sim.modbus_server import free_port
from edge.access import CredentialStore
from edge.clock import Clock
from edge.commands import CommandExecutor, Done
from edge.config import GatewayConfig
from edge.local import sync_done
from edge.outbox import Outbox
from edge.rehearsal import local_site
from protocols.access import AccessDelta, AccessLevel, Credential, split_delta
from protocols.envelope import Command

CREDENTIALS = 100_000
CHANGED = 10_000
LEVELS = [
    AccessLevel(id="staff", doors=["door-lobby-east", "door-carpark-1"]),
    AccessLevel(id="plant", doors=["door-plantroom"]),
]


def credential(i: int, version: int = 0) -> Credential:
    return Credential(
        id=f"c{i:06d}",
        # H10301 (26-bit) cards: 16-bit numbers under 8-bit facility codes, as a real site's batches.
        card=str(1000 + i % 60_000),
        facility=1 + i // 60_000,
        holder=f"Resident {i} v{version}",
        levels=["staff"] if i % 4 else ["staff", "plant"],
    )


async def build_store(path: Path) -> CredentialStore:
    store = CredentialStore.open(path)
    delta = AccessDelta(
        base=0, version=1, reset=True, levels=LEVELS, credentials=[credential(i) for i in range(CREDENTIALS)]
    )
    for part in split_delta(delta):
        await store.apply(part, now_ms=Clock.now_ms())
    return store


def _fast(cfg: GatewayConfig) -> GatewayConfig:
    doors = [d.model_copy(update={"strike_s": 0.3, "held_open_s": 0.0}) for d in cfg.doors]
    return cfg.model_copy(update={"doors": doors})


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


class RelayWatch:
    """When the simulated I/O modules' lock coils are written, by (device, point)."""

    def __init__(self, b: Building) -> None:
        self.writes: dict[tuple[str, str], list[tuple[float, Any]]] = {}
        for name in ("io-lobby", "io-plantroom"):
            dev = b.modbus[name]
            dev.on_write.append(
                lambda p, v, n=name: self.writes.setdefault((n, p), []).append((time.perf_counter(), v))
            )

    def first_after(self, key: tuple[str, str], t0: float, value: Any) -> float | None:
        for t, v in self.writes.get(key, []):
            if t >= t0 and v == value:
                return t
        return None


async def _until(cond: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: a condition never came")
        await asyncio.sleep(0.002)


async def access_decisions(
    b: Building, watch: RelayWatch, site: Any, n: int, rng: random.Random
) -> list[float]:
    converter = b.readers["rdr-carpark-1"][0]
    door = site.local.doors["door-carpark-1"]
    relay = ("io-lobby", "lock_2")
    out = []
    for i in rng.sample(range(CREDENTIALS), n):
        await _until(lambda: door.written is True and not door.wake.is_set())
        t0 = time.perf_counter()
        converter.present_card(1000 + i % 60_000, 1 + i // 60_000)
        await _until(lambda t0=t0: watch.first_after(relay, t0, False) is not None)
        t1 = watch.first_after(relay, t0, False)
        assert t1 is not None
        out.append((t1 - t0) * 1000)
        # The relay saw the write before the gateway saw the answer: wait for the gateway too,
        # so the next card finds the door locked again.
        await _until(lambda: door.written is False)
    return out


async def fire_releases(b: Building, watch: RelayWatch, site: Any, n: int, rng: random.Random) -> list[float]:
    relays = [("io-lobby", "lock_1"), ("io-plantroom", "lock_1")]
    fire = site.local.fire
    out = []
    for _ in range(n):
        await _until(lambda: all(d.written is True for d in site.local.doors.doors.values()))
        # Smoke comes at any moment, not just after a poll of the detector.
        await asyncio.sleep(rng.uniform(0, 0.1))
        t0 = time.perf_counter()
        await b.act("smoke", "smoke-plantroom")
        await _until(lambda t0=t0: all(watch.first_after(r, t0, False) is not None for r in relays))
        t1 = max(t for r in relays if (t := watch.first_after(r, t0, False)) is not None)
        out.append((t1 - t0) * 1000)
        await b.act("clear_smoke", "smoke-plantroom")
        await _until(lambda: "smoke-plantroom" not in fire.alarms)
        ok, detail = fire.reset("", "bench")
        assert ok, detail
    return out


async def delta_sync(store: CredentialStore) -> float:
    base = store.version
    changed = [credential(i, version=base) for i in range(0, CREDENTIALS, CREDENTIALS // CHANGED)][:CHANGED]
    parts = split_delta(AccessDelta(base=base, version=base + 1, credentials=changed))
    commands = [
        Command(id=f"sync-{base}-{p.part}", name="access.sync", args=p.model_dump(mode="json"), by="bench")
        for p in parts
    ]

    async def apply(args: Any, cmd: Command) -> Done:
        return sync_done(await store.apply(args, now_ms=Clock.now_ms()))

    ex = CommandExecutor(None, Clock("yes"), {"access.sync": apply})
    t0 = time.perf_counter()
    results = [await ex.execute(c) for c in commands]
    elapsed = time.perf_counter() - t0
    ex.close()
    assert results[-1].code == "done" and store.version == base + 1, results[-1]
    return elapsed


async def run(quick: bool) -> dict[str, Any]:
    cards, fires, syncs = (60, 10, 1) if quick else (300, 30, 3)
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="gh-bench-local-") as tmp:
        data = Path(tmp)
        t_build = time.perf_counter()
        store = await build_store(data / "access.sqlite3")
        build_s = time.perf_counter() - t_build
        try:
            async with Building(seed=1, life=False) as b:
                watch = RelayWatch(b)
                outbox = await Outbox.open(data / "outbox.sqlite3", Clock("yes"))
                try:
                    async with local_site(b, store, data, configure=_fast, outbox=outbox) as site:
                        access = await access_decisions(b, watch, site, cards, rng)
                        fire = await fire_releases(b, watch, site, fires, rng)
                finally:
                    await outbox.close()
            sync = [await delta_sync(store) for _ in range(syncs)]
        finally:
            store.close()
    return {
        "bench": "local",
        "quick": quick,
        "credentials": CREDENTIALS,
        "access_decision_ms_p50": _pct(access, 0.5),
        "access_decision_ms_p99": _pct(access, 0.99),
        "access_decision_ms_max": round(max(access), 2),
        "fire_release_ms_p50": _pct(fire, 0.5),
        "fire_release_ms_p99": _pct(fire, 0.99),
        "credential_delta_sync_s": round(statistics.median(sync), 3),
        "cards": cards,
        "fires": fires,
        "store_build_s": round(build_s, 2),
    }


def _post(url: str, token: str, body: bytes, content_type: str) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        return dict(json.load(r))


def _credentials_csv(ids: range, version: int) -> bytes:
    rows = ["id,card,facility,holder,levels"]
    rows += [
        f"{c.id},{c.card},{c.facility},{c.holder},{';'.join(c.levels)}"
        for c in (credential(i, version) for i in ids)
    ]
    return ("\n".join(rows) + "\n").encode()


def delta_sync_end_to_end(tmp: Path) -> float:
    """A cloud and a gateway process; a CSV import changing 10,000 credentials; seconds until the
    gateway reports the new version."""
    port_api, port_mqtt = free_port(), free_port()
    exe = [sys.executable, "-m", "gatehouse"]
    cloud_toml = tmp / "cloud.toml"
    cloud_toml.write_text(
        f'data_dir = "{tmp / "cloud"}"\n[api]\nport = {port_api}\n'
        f'[mqtt]\nurl = ""\nembedded_host = "127.0.0.1"\nembedded_port = {port_mqtt}\n'
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("GATEHOUSE_DATABASE_URL", None)
    logs = open(tmp / "processes.log", "w")  # closed below
    procs: list[subprocess.Popen[bytes]] = []
    api = f"http://127.0.0.1:{port_api}"
    try:
        procs.append(
            subprocess.Popen(
                [*exe, "cloud", "serve", "--config", str(cloud_toml)], env=env, stdout=logs, stderr=logs
            )
        )
        _wait(lambda: _get(f"{api}/healthz") is not None, 60)
        add = subprocess.run(
            [
                *exe,
                "cloud",
                "gateway",
                "add",
                "gw-bench",
                "--site",
                "Bench",
                "--config",
                str(cloud_toml),
                "--mqtt-url",
                f"mqtt://127.0.0.1:{port_mqtt}",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        password = tomllib.loads(add.stdout)["mqtt"]["password"]
        gw_toml = tmp / "gateway.toml"
        gw_toml.write_text(
            f'gateway_id = "gw-bench"\ndata_dir = "{tmp / "gw"}"\n[mqtt]\nurl = "mqtt://127.0.0.1:{port_mqtt}"\n'
            f'password = "{password}"\n[clock]\nsynced = "yes"\n'
        )
        procs.append(
            subprocess.Popen(
                [*exe, "gateway", "run", "--config", str(gw_toml)], env=env, stdout=logs, stderr=logs
            )
        )
        token = (tmp / "cloud" / "api-token").read_text().strip()

        def gateway_version() -> int:
            g = _get(f"{api}/api/v1/gateways/gw-bench", token)
            return int(g["access_version"]) if g and g["online"] else -1

        _wait(lambda: gateway_version() >= 0, 60)
        levels = Building.levels_csv().encode()
        _post(f"{api}/api/v1/sites/Bench/access/levels/import", token, levels, "text/csv")
        imports = f"{api}/api/v1/sites/Bench/access/credentials/import"
        first = _post(imports, token, _credentials_csv(range(CREDENTIALS), 0), "text/csv")
        _wait(lambda: gateway_version() == first["version"], 120)
        # The office uploads the 10,000 changed rows (merge: the others stay as they are).
        body = _credentials_csv(range(0, CREDENTIALS, CREDENTIALS // CHANGED), 1)
        t0 = time.perf_counter()
        second = _post(imports, token, body, "text/csv")
        assert second["changed"] == CHANGED, second
        _wait(lambda: gateway_version() == second["version"], 120, interval=0.01)
        return time.perf_counter() - t0
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()


def _get(url: str, token: str = "") -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _wait(cond: Any, within: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: a condition never came")
        time.sleep(interval)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="fewer trials: finishes well within a minute")
    args = p.parse_args()
    figures = asyncio.run(run(args.quick))
    with tempfile.TemporaryDirectory(prefix="gh-bench-local-e2e-") as tmp:
        figures["credential_delta_sync_e2e_s"] = round(delta_sync_end_to_end(Path(tmp)), 3)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
