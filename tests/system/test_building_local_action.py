"""Local action end to end: credentials imported into the cloud reach the gateway as a delta, cards
open doors, the cloud unlocks a door and resets a fire release through commands, and with the
cloud and its broker gone the gateway still releases the egress doors and decides cards.

Real processes: ``gatehouse cloud serve`` (embedded broker, SQLite), ``gatehouse gateway run``,
and the simulated building on its own loop (Modbus TCP, BACnet/IP, readers on ptys).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.building import Building
from tests.system.harness import GATEHOUSE, BuildingThread, Cloud, Gateway, wait_until

pytestmark = pytest.mark.system

SITE = "Harbour View Tower"


def post(cloud: Cloud, path: str, body: bytes, content_type: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{cloud.api}{path}",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {cloud.token}", "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(req, timeout=40) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def command(cloud: Cloud, gw: str, name: str, **args: Any) -> dict[str, Any]:
    status, doc = post(
        cloud,
        f"/api/v1/gateways/{gw}/commands",
        json.dumps({"name": name, "args": args, "wait_s": 20}).encode(),
        "application/json",
    )
    assert status in (200, 202), doc
    return dict(doc)


def test_cloud_and_gateway_drive_the_building(tmp_path: Path, building: BuildingThread) -> None:
    b: Building = building.building
    cloud = Cloud(tmp_path)
    cloud.start()
    gw = Gateway(
        tmp_path, cloud.add_gateway("hv-gw-local", site=SITE), cloud.broker_url, sources=b.gateway_config()
    )
    gw.start()
    site = SITE.replace(" ", "%20")

    def events(kind: str, **data: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in cloud.events(gw.id)
            if e["kind"] == kind and all(e["data"].get(k) == v for k, v in data.items())
        ]

    # Access levels and cardholders into the cloud, from CSV; pushed to the gateway.
    status, levels = post(
        cloud, f"/api/v1/sites/{site}/access/levels/import", b.levels_csv().encode(), "text/csv"
    )
    assert status == 200, levels
    status, creds = post(
        cloud, f"/api/v1/sites/{site}/access/credentials/import", b.credentials_csv().encode(), "text/csv"
    )
    assert status == 200 and creds["added"] == 3, creds
    wait_until(
        lambda: cloud.get(f"/api/v1/gateways/{gw.id}")["access_version"] == creds["version"],
        60,
        "the gateway's credential store at the cloud's version",
    )

    # A card: granted by the gateway, the car-park relay on the I/O module released.
    building.act("card", "rdr-carpark-1", card=19876, facility=1)
    wait_until(lambda: events("access.granted", holder="Li Na (李娜), finance"), 30, "the grant in the cloud")
    building.act("card", "rdr-carpark-1", card=31337, facility=7)
    wait_until(lambda: events("access.denied", reason="unknown"), 30, "the unknown card refused")

    # The cloud unlocks the plant room; the answer names who asked.
    unlock = command(cloud, gw.id, "door.unlock", door="door-plantroom", seconds=2)
    assert unlock["status"] == "done", unlock
    assert unlock["requested_by"] == "api"
    wait_until(lambda: events("door.remote_unlock", door="door-plantroom", by="api"), 30, "the remote unlock")

    wait_until(lambda: not b.lock_released("door-carpark-1"), 30, "the car-park gate locked after the strike")
    wait_until(
        lambda: not b.lock_released("door-plantroom"), 30, "the plant room locked after its 2 s unlock"
    )

    # The cloud and its broker go away. Smoke in the lobby: the lobby's egress door is released
    # all the same; the car-park gate (not an egress door) and the plant room (an egress door of
    # another fire zone) stay locked; cards are still decided from the store.
    cloud.stop()
    building.act("smoke", "smoke-lobby-2")
    wait_until(lambda: b.lock_released("door-lobby-east"), 30, "the lobby door released with the cloud down")
    assert not b.lock_released("door-carpark-1") and not b.lock_released("door-plantroom")
    building.act("card", "rdr-lobby-east", card=20001, facility=1)
    building.act("clear_smoke", "smoke-lobby-2")

    # What the installer sees on the gateway meanwhile.
    def status() -> str:
        out = subprocess.run(
            [*GATEHOUSE, "gateway", "status", "--config", str(gw.config)], capture_output=True, text=True
        )
        return out.stdout

    wait_until(lambda: "FIRE RELEASE  door-lobby-east" in status(), 30, "the release in gateway status")
    text = status()
    assert "credentials   3 at version" in text and "door-carpark-1" in text, text

    # Back: what happened meanwhile arrives; the doors are still released; the reset is a
    # person's, sent with the CLI.
    cloud.start()
    wait_until(lambda: events("door.egress_released"), 60, "the release recorded in the cloud")
    wait_until(lambda: events("access.granted", holder="Wang Fang (王芳), security"), 60, "the offline grant")
    assert b.lock_released("door-lobby-east")
    out = subprocess.run(
        [
            *GATEHOUSE,
            "cloud",
            "gateway",
            "command",
            gw.id,
            "fire.reset",
            "--by",
            "guard Chen",
            "--wait",
            "20",
            "--config",
            str(cloud.config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    wait_until(lambda: events("fire.reset", by="guard Chen"), 30, "the reset in the cloud")
    wait_until(lambda: not b.lock_released("door-lobby-east"), 30, "the lobby door locked after the reset")
    assert [
        e for e in cloud.events(gw.id) if e["kind"] == "gateway.command" and e["data"]["name"] == "fire.reset"
    ]

    gw.stop()
    cloud.stop()
