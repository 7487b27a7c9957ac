"""Fire release under the conditions a review found wanting: a reset key left turned at a restart,
a detector that cannot be read, a torn or wrong-shaped state file, a welded lock relay, an alarm
zone no door is configured for. On the simulated building, no broker, no cloud."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from drivers.sim.building import Building
from edge.clock import Clock
from edge.commands import CommandExecutor
from edge.config import GatewayConfig
from protocols.envelope import Command
from tests.edge.site import fast_doors, running_site
from tests.support.waits import until


async def test_a_key_left_turned_at_start_resets_nothing(tmp_path: Path) -> None:
    (tmp_path / "fire_release.json").write_text(
        json.dumps({"released": {"door-lobby-east": {"zone": "", "cause": "smoke-lobby-1", "since_ms": 1}}})
    )
    async with Building(seed=3, life=False) as b:
        await b.modbus["io-plantroom"].set("fire_reset_key", True)  # left turned
        async with running_site(tmp_path, configure=fast_doors, building=b) as site:
            assert site.released("door-lobby-east")
            await site.wait_kind("door.egress_released")
            await site.settled()
            assert site.kinds("fire.reset") == [] and site.released("door-lobby-east")
            # Turned back and turned again: that is a person resetting.
            await b.modbus["io-plantroom"].set("fire_reset_key", False)
            await site.wait_kind("fire.reset_input", n=2)
            await b.modbus["io-plantroom"].set("fire_reset_key", True)
            (reset,) = await site.wait_kind("fire.reset")
            assert reset.data["by"] == "local reset key fire-reset-key"
            await until(lambda: not site.released("door-lobby-east"), what="locked after the reset")


async def test_no_reset_while_a_detector_cannot_be_read(tmp_path: Path) -> None:
    async with running_site(tmp_path, configure=fast_doors) as site:
        ex = CommandExecutor(None, Clock("yes"), site.local.handlers())
        await site.building.act("smoke", "smoke-plantroom")
        await until(lambda: site.released("door-plantroom"), what="released")
        await site.building.act("clear_smoke", "smoke-plantroom")
        await until(lambda: "smoke-plantroom" not in site.local.fire.alarms, what="cleared")
        # The plant room's I/O module stops answering: its detector might be in alarm.
        await site.building.act("fail_device", "io-plantroom")
        await site.wait_kind("device.fault", within=30, fault="unreadable", sensor="smoke-plantroom")
        refused = await ex.execute(Command(id="r1", name="fire.reset", by="guard Chen"))
        assert refused.code == "refused" and "smoke-plantroom" in refused.detail, refused.detail
        await site.building.act("restore_device", "io-plantroom")
        await site.wait_kind("device.fault_cleared", within=30, sensor="smoke-plantroom")
        done = await ex.execute(Command(id="r2", name="fire.reset", by="guard Chen"))
        assert done.code == "done", done.detail


async def test_a_wrong_shaped_state_file_releases_every_egress_door(tmp_path: Path) -> None:
    (tmp_path / "fire_release.json").write_text(json.dumps({"released": {"door-lobby-east": None}}))
    async with running_site(tmp_path, configure=fast_doors) as site:
        assert site.released("door-lobby-east") and site.released("door-plantroom")
        assert not site.released("door-carpark-1")
        (ev,) = await site.wait_kind("door.egress_released")
        assert ev.data["restored"] is True


async def test_a_welded_relay_during_a_release_is_a_life_safety_fault(tmp_path: Path) -> None:
    async with Building(seed=3, life=False) as b:
        io = b.modbus["io-plantroom"]

        def welded(point: str, value: object) -> None:
            # The relay's contacts are welded: whatever is written, it stays energised (locked).
            if point == "lock_1" and value is False:
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(io.set("lock_1", True)))

        async with running_site(tmp_path, configure=fast_doors, building=b) as site:
            io.on_write.append(welded)
            await b.act("smoke", "smoke-plantroom")
            (fault,) = await site.wait_kind("fire.release_fault", fault="lock_mismatch")
            assert fault.source == "door-plantroom" and "reads locked" in fault.data["detail"]
            # Reported once, not once per poll.
            await site.wait_kind("smoke.alarm")
            await until(lambda: site.local.doors["door-plantroom"].mismatch, what="mismatch held")
            assert len(site.kinds("fire.release_fault")) == 1


async def test_an_alarm_zone_no_door_knows_releases_every_egress_door(tmp_path: Path) -> None:
    def zoned(cfg: GatewayConfig) -> GatewayConfig:
        cfg = fast_doors(cfg)
        doors = [
            d.model_copy(update={"fire_zones": ["1F lobby"]}) if d.name == "door-lobby-east" else d
            for d in cfg.doors
        ]
        sensors = [
            s.model_copy(update={"zone": "Stair-3"}) if s.name == "smoke-lobby-2" else s for s in cfg.sensors
        ]
        return cfg.model_copy(update={"doors": doors, "sensors": sensors})

    async with running_site(tmp_path, configure=zoned) as site:
        await site.building.act("smoke", "smoke-lobby-2")
        (fault,) = await site.wait_kind("fire.release_fault", fault="zone_unmatched")
        assert fault.data["zone"] == "Stair-3"
        await until(
            lambda: site.released("door-lobby-east") and site.released("door-plantroom"),
            what="all egress released",
        )
