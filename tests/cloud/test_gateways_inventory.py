"""A gateway's inventory: built from its config (edge/inventory.py), split into events that fit
a message (protocols/inventory.py), and, end to end, a real gateway process telling the real
cloud its devices and points at start and again after a config change."""

import json
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.config import GatewayConfig
from edge.inventory import inventory_events, inventory_of
from protocols.envelope import MAX_MESSAGE_BYTES, encode_batch, encode_event
from protocols.events import Lane, lane_of
from protocols.inventory import (
    INVENTORY_KIND,
    INVENTORY_SOURCE,
    PART_MAX_BYTES,
    InventoryPart,
    assemble,
    parse_part,
)
from tests.support.ports import free_port
from tests.system.harness import Cloud, Gateway, Proc, wait_until


def modbus(name: str, port: int, points: int, unit: str = "degC") -> str:
    out = f'[[modbus]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {port}\ntimeout_s = 0.2\nretries = 0\n'
    for p in range(points):
        out += (
            f'[[modbus.points]]\nname = "p{p}"\ntable = "holding_register"\naddress = {p}\nunit = "{unit}"\n'
        )
    return out


def config(sections: str) -> GatewayConfig:
    doc = tomllib.loads(f'gateway_id = "gw-inv"\n[mqtt]\nurl = "mqtt://127.0.0.1:1"\n{sections}')
    return GatewayConfig.model_validate(doc)


def test_the_inventory_follows_the_config() -> None:
    cfg = config(
        modbus("meter-b1", 1502, 2, unit="kWh")
        + '[[bacnet]]\nname = "ahu-1"\naddress = "10.0.0.5"\ndevice_instance = 1001\n'
        + '[[bacnet.objects]]\nname = "supply_temp"\ntype = "analog-input"\ninstance = 1\nunit = "degC"\n'
        + '[[readers]]\nname = "rdr-lobby"\ndoor = ""\nport = "/dev/ttyUSB0"\nprotocol = "wiegand-ascii"\n'
    )
    devices, points = inventory_of(cfg)
    assert {(d.name, d.protocol) for d in devices} == {
        ("meter-b1", "modbus"),
        ("ahu-1", "bacnet"),
        ("rdr-lobby", "wiegand"),
    }
    assert "127.0.0.1:1502" in next(d.description for d in devices if d.name == "meter-b1")
    assert {(p.source, p.device, p.unit) for p in points} == {
        ("meter-b1/p0", "meter-b1", "kWh"),
        ("meter-b1/p1", "meter-b1", "kWh"),
        ("ahu-1/supply_temp", "ahu-1", "degC"),
    }

    (event,) = inventory_events(cfg, 1_700_000_000_000)
    assert (event.kind, event.source, event.time_ms) == (INVENTORY_KIND, INVENTORY_SOURCE, 1_700_000_000_000)
    assert event.lane is Lane.SECURITY and lane_of(INVENTORY_KIND) is Lane.SECURITY  # never evicted
    part = parse_part(orjson.loads(orjson.dumps(event.data)))
    assert part is not None and (part.part, part.parts) == (1, 1)
    # The same config gives the same version after a restart; another config another one.
    assert inventory_events(cfg, 1)[0].data["version"] == part.version
    assert inventory_events(config(modbus("meter-b1", 1502, 1)), 1)[0].data["version"] != part.version
    # No devices at all is said too (the cloud then forgets the old ones).
    (empty,) = inventory_events(config(""), 1)
    assert empty.data["devices"] == [] and empty.data["points"] == []


def test_a_large_inventory_is_split_into_parts_that_each_fit_a_message() -> None:
    cfg = config("".join(modbus(f"plc-{d}", 1502, 120) for d in range(20)))
    events = inventory_events(cfg, 42)
    assert len(events) > 5
    parts: list[InventoryPart] = []
    for seq, e in enumerate(events, 1):
        body = encode_event(
            seq=seq,
            kind=e.kind,
            lane=int(e.lane or 0),
            time_ms=42,
            boot_id="b" * 36,
            mono_ns=1,
            clock_synced=True,
            source=e.source,
            data=e.data,
        )
        assert len(body) < PART_MAX_BYTES + 512  # the part's data plus the event's own fields
        assert len(encode_batch("gw-inv", "0" * 32, [body])) < MAX_MESSAGE_BYTES // 4
        part = parse_part(orjson.loads(body)["data"])
        assert part is not None
        parts.append(part)
    assembled = assemble(parts, parts[0].version)
    assert assembled is not None
    devices, points = assembled
    assert len(devices) == 20 and len(points) == 20 * 120
    assert assemble(parts[:-1], parts[0].version) is None  # one missing: not yet


# -- end to end: a real gateway process, the real cloud (embedded broker), its API


@pytest.fixture
def no_process_left_behind() -> Iterator[None]:
    yield
    Proc.kill_all()


def api(cloud: Cloud, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{cloud.api}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {cloud.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=40) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@pytest.mark.system
def test_a_gateway_tells_the_cloud_its_devices_and_points(
    tmp_path: Path, no_process_left_behind: None
) -> None:
    cloud = Cloud(tmp_path)
    cloud.start()
    unused = free_port()  # nothing listens: the devices go offline, which the cloud shows too
    gw = Gateway(tmp_path, cloud.add_gateway("inv-gw1"), cloud.broker_url, sources=modbus("plc-1", unused, 3))
    gw.start()

    def detail() -> dict[str, Any]:
        status, doc = api(cloud, "GET", f"/api/v1/gateways/{gw.id}")
        assert status == 200, doc
        return dict(doc)

    wait_until(lambda: detail()["devices"], 60, "the gateway's devices in the cloud")
    first = detail()
    assert [(d["device"], d["protocol"]) for d in first["devices"]] == [("plc-1", "modbus")]
    assert [p["source"] for p in first["points"]] == ["plc-1/p0", "plc-1/p1", "plc-1/p2"]
    wait_until(
        lambda: any(
            v["kind"] == "device.offline" and v["source"] == "plc-1" for v in detail()["latest_values"]
        ),
        60,
        "the device's offline state among the latest values",
    )

    # A config change through the cloud: the inventory follows the config that now runs.
    gw.write_config(sources=modbus("plc-2", unused, 1, unit="kPa"))
    status, answer = api(
        cloud,
        "POST",
        f"/api/v1/gateways/{gw.id}/commands",
        {"name": "config.apply", "args": {"toml": gw.config.read_text(), "version": "v2"}, "wait_s": 20},
    )
    assert status == 200 and answer["status"] == "done", answer
    wait_until(
        lambda: [d["device"] for d in detail()["devices"]] == ["plc-2"], 60, "the new config's inventory"
    )
    assert [(p["source"], p["unit"]) for p in detail()["points"]] == [("plc-2/p0", "kPa")]
    status, page = api(cloud, "GET", "/api/v1/gateways")
    assert status == 200 and gw.id in [g["id"] for g in page["items"]]
    gw.stop()
    cloud.stop()
