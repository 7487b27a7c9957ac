"""The simulated building read by a real gateway process, end to end into the cloud.

Every device speaks its real protocol (Modbus TCP, BACnet/IP, Wiegand and OSDP over ptys); the
gateway is configured from the building's own description, as the demo does; the test acts on the
building and waits (bounded) for the cloud to hold what a property manager would expect to see.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.system.harness import GATEHOUSE, BuildingThread, Cloud, Gateway, wait_until

pytestmark = pytest.mark.system


def test_a_gateway_reads_the_whole_building_into_the_cloud(tmp_path: Path, building: BuildingThread) -> None:
    cloud = Cloud(tmp_path)
    cloud.start()
    gw = Gateway(
        tmp_path,
        cloud.add_gateway("hv-tower-gw1"),
        cloud.broker_url,
        sources=building.building.gateway_config(),
    )
    gw.start()
    devices_file = gw.data / "devices.json"

    def states() -> dict[str, str]:
        import json

        try:
            doc = json.loads(devices_file.read_text())
        except (OSError, ValueError):
            return {}
        assert doc["running"] is True
        return {n: d["state"] for f in doc["families"].values() for n, d in f["devices"].items()}

    wait_until(
        lambda: len(states()) == 10 and set(states().values()) == {"online"}, 60, "all 10 devices online"
    )

    def events(kind: str, source: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in cloud.events(gw.id) if e["kind"] == kind and (source is None or e["source"] == source)
        ]

    # Smoke on a Modbus I/O module input and on a BACnet life-safety point: both life-safety alarms.
    building.act("smoke", "smoke-lobby-1")
    building.act("smoke", "smoke-ahu1-supply")
    wait_until(lambda: events("smoke.alarm", "smoke-lobby-1"), 30, "the lobby smoke alarm in the cloud")
    wait_until(lambda: events("smoke.alarm", "smoke-ahu1-supply"), 30, "the duct smoke alarm in the cloud")
    alarm = events("smoke.alarm", "smoke-lobby-1")[0]
    assert alarm["lane"] == 0 and alarm["data"]["zone"] == "1F lobby"

    # A card at each reader: Wiegand H10301 through the converter, OSDP with Secure Channel.
    building.act("card", "rdr-carpark-1", card=12345, facility=1)
    building.act("card", "rdr-lobby-east", card=19876, facility=1)
    wait_until(lambda: len(events("reader.card")) >= 2, 30, "both card reads in the cloud")
    cards = {e["source"]: e["data"] for e in events("reader.card")}
    assert cards["rdr-carpark-1"]["card"] == "12345" and cards["rdr-carpark-1"]["facility"] == 1
    assert cards["rdr-lobby-east"]["card"] == "19876"

    # A bad frame is a fault, never a card.
    building.act("bad_frame", "rdr-carpark-1", card=555)
    wait_until(lambda: events("device.fault", "rdr-carpark-1"), 30, "the bad frame reported")
    assert not [e for e in events("reader.card") if e["data"]["card"] == "555"]

    # The pump's controller stops answering: the device goes offline and its run signal becomes
    # unreadable (a fault, not "stopped"); it comes back online.
    building.act("fail_device", "pump-2")
    wait_until(lambda: events("device.offline", "pump-2"), 30, "pump-2 offline in the cloud")
    wait_until(lambda: events("device.fault", "pump-2-run"), 30, "pump-2's run signal unreadable")
    assert events("device.fault", "pump-2-run")[0]["data"]["fault"] == "unreadable"
    building.act("restore_device", "pump-2")
    wait_until(lambda: len(events("device.online", "pump-2")) >= 2, 30, "pump-2 back online")

    # A reader unplugged and plugged back: offline, then online again.
    building.act("fail_device", "rdr-carpark-1")
    wait_until(lambda: events("device.offline", "rdr-carpark-1"), 30, "the unplugged reader offline")
    building.act("restore_device", "rdr-carpark-1")
    wait_until(lambda: len(events("device.online", "rdr-carpark-1")) >= 2, 60, "the reader back online")

    # Meters: readings with use, from the Modbus meters, in the cloud.
    wait_until(lambda: events("meter.reading", "meter-b1-main"), 30, "an energy meter reading")

    gw.stop()
    # What the stopped gateway left behind says so, and gateway status says it is not running.
    status = subprocess.run(
        [*GATEHOUSE, "gateway", "status", "--config", str(gw.config)], capture_output=True, text=True
    )
    assert status.returncode == 0 and "(it is not running)" in status.stdout, status.stdout
    assert "pump-2" in status.stdout
    cloud.stop()
