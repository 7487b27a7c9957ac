"""Local action against the simulated building over real sockets and ptys, with no broker and no
cloud: cards at the readers open (or do not open) the doors' relays on the Modbus I/O module,
doors are supervised, a fire releases the egress doors and keeps them released until a reset,
commands are executed once.
"""

from __future__ import annotations

from pathlib import Path

from edge.clock import Clock
from edge.commands import CommandExecutor
from protocols.envelope import Command
from tests.edge.site import fast_doors, running_site
from tests.support.waits import until


async def test_card_granted_pulses_the_relay_and_denied_card_does_not(tmp_path: Path) -> None:
    async with running_site(tmp_path, configure=fast_doors) as site:
        assert not site.released("door-lobby-east")
        await site.building.act("card", "rdr-lobby-east", card=12345, facility=1)
        (granted,) = await site.wait_kind("access.granted")
        assert granted.data["holder"] == "Zhang Wei" and granted.data["door"] == "door-lobby-east"
        await until(lambda: site.released("door-lobby-east"), what="lobby relay released")
        # The strike time ends: locked again.
        await until(lambda: not site.released("door-lobby-east"), what="lobby relay locked again")

        await site.building.act("card", "rdr-lobby-east", card=31337, facility=7)
        (denied,) = await site.wait_kind("access.denied")
        assert denied.data["reason"] == "unknown"
        # Li Na may use the car park but not the plant room: a wrong door at the car park reader
        # is impossible here, so try her at the lobby (allowed) and the car park (allowed), then
        # check the wrong-door reason against the store directly in test_access.
        assert not site.released("door-lobby-east")


async def test_forced_and_held_open_doors(tmp_path: Path) -> None:
    async with running_site(tmp_path, configure=fast_doors) as site:
        # Forced: the contact opens with no grant and no exit request.
        await site.building.act("open_door", "door-plantroom")
        (forced,) = await site.wait_kind("door.forced")
        assert forced.source == "door-plantroom"
        await site.building.act("close_door", "door-plantroom")
        (secured,) = await site.wait_kind("door.secured")
        assert secured.data["after"] == "forced"

        # Exit request, then open: no alarm; left open: pre-alarm, then held-open alarm.
        await site.building.act("exit_request", "door-lobby-east")
        await site.building.act("open_door", "door-lobby-east")
        await site.wait_kind("door.held_open", state="prealarm")
        await site.wait_kind("door.held_open", state="alarm")
        await site.building.act("close_door", "door-lobby-east")
        await site.wait_kind("door.secured", after="held_open")
        assert [e.source for e in site.kinds("door.forced")] == ["door-plantroom"]

        # A card opens it: no forced alarm either.
        await site.building.act("card", "rdr-carpark-1", card=19876, facility=1)
        await until(lambda: site.released("door-carpark-1"), what="car park relay released")
        await site.building.act("open_door", "door-carpark-1")
        await site.wait_kind("door.opened", within=5)
        await site.building.act("close_door", "door-carpark-1")
        await until(lambda: len(site.kinds("door.closed")) >= 3, what="car park closed")
        assert len(site.kinds("door.forced")) == 1


async def test_smoke_releases_egress_doors_until_a_person_resets(tmp_path: Path) -> None:
    async with running_site(tmp_path, configure=fast_doors) as site:
        # A grant's strike time is running on the plant room door when the smoke comes.
        await site.building.act("card", "rdr-lobby-east", card=12345, facility=1)
        await site.building.act("smoke", "smoke-plantroom")
        await until(
            lambda: site.released("door-plantroom") and site.released("door-lobby-east"),
            what="both egress doors released",
        )
        (released,) = await site.wait_kind("door.egress_released")
        assert sorted(released.data["doors"]) == ["door-lobby-east", "door-plantroom"]
        assert released.data["not_confirmed"] == []
        assert not site.released("door-carpark-1")  # not an egress door

        # The detector clears; nothing re-locks by itself, however long we wait for the strike
        # times and timers to run out.
        await site.building.act("clear_smoke", "smoke-plantroom")
        await site.wait_kind("smoke.clear", n=2)  # the first reading, then the clear
        doors = site.local.doors
        await until(
            lambda: doors["door-lobby-east"].pulse_until < doors["door-lobby-east"]._mono(),
            what="strike over",
        )
        await site.settled()
        assert site.released("door-plantroom") and site.released("door-lobby-east")

        # Reset refused while smoke stands, done once it is gone.
        await site.building.act("smoke", "smoke-lobby-1")
        await site.wait_kind("smoke.alarm", n=2)
        ex = CommandExecutor(None, Clock("yes"), site.local.handlers())
        refused = await ex.execute(Command(id="r1", name="fire.reset", by="guard Chen"))
        assert refused.code == "refused" and "smoke-lobby-1" in refused.detail
        await site.building.act("clear_smoke", "smoke-lobby-1")
        await until(lambda: "smoke-lobby-1" not in site.local.fire.alarms, what="lobby smoke cleared")
        done = await ex.execute(Command(id="r2", name="fire.reset", by="guard Chen"))
        assert done.code == "done", done.detail
        (reset,) = await site.wait_kind("fire.reset")
        assert reset.data["by"] == "guard Chen"
        await until(
            lambda: not site.released("door-plantroom") and not site.released("door-lobby-east"),
            what="doors locked after the reset",
        )


async def test_fire_panel_alarm_and_the_local_reset_key(tmp_path: Path) -> None:
    async with running_site(tmp_path, configure=fast_doors) as site:
        await site.building.act("fire_alarm")
        await until(
            lambda: site.released("door-plantroom") and site.released("door-lobby-east"), what="released"
        )
        await site.building.act("fire_reset_key")
        (refused,) = await site.wait_kind("fire.reset_refused")
        assert "fire-panel" in refused.data["detail"]
        await site.building.act("clear_fire_alarm")
        await site.wait_kind("fire.alarm_cleared", n=2)  # the first reading, then the clear
        await site.building.act("fire_reset_key")
        (reset,) = await site.wait_kind("fire.reset")
        assert reset.data["by"] == "local reset key fire-reset-key"
        await until(lambda: not site.released("door-lobby-east"), what="locked after the reset")


async def test_a_release_survives_a_gateway_restart_and_a_relay_reset_behind_its_back(tmp_path: Path) -> None:
    from drivers.sim.building import Building

    async with Building(seed=3, life=False) as b:
        async with running_site(tmp_path, configure=fast_doors, building=b) as site:
            await b.act("smoke", "smoke-plantroom")
            await until(lambda: site.released("door-plantroom"), what="released")
            await site.wait_kind("door.egress_released")
        # The gateway is gone; the I/O module restarts with its outputs at their defaults.
        await b.modbus["io-plantroom"].set("lock_1", True)
        await b.modbus["io-lobby"].set("lock_1", True)
        await b.act("clear_smoke", "smoke-plantroom")
        async with running_site(tmp_path, configure=fast_doors, building=b) as site:
            # Released again at start, before any reset.
            assert site.released("door-plantroom") and site.released("door-lobby-east")
            restored = await site.wait_kind("door.egress_released")
            assert restored[0].data["restored"] is True
            # A relay that switches back behind the gateway's back is released again.
            await b.modbus["io-lobby"].set("lock_1", True)
            await until(lambda: site.released("door-lobby-east"), what="released again")


async def test_commands_once_expired_unauthorised(tmp_path: Path) -> None:
    async with running_site(tmp_path, configure=fast_doors) as site:
        ex = CommandExecutor(tmp_path / "commands.sqlite3", Clock("yes"), site.local.handlers())
        cmd = Command(
            id="u1", name="door.unlock", args={"door": "door-plantroom", "seconds": 1}, by="manager Liu"
        )
        first = await ex.execute(cmd)
        assert first.ok and first.code == "done", first.detail
        (unlock,) = await site.wait_kind("door.remote_unlock")
        assert unlock.data["by"] == "manager Liu" and unlock.data["command"] == "u1"
        again = await ex.execute(cmd)
        assert again == first and ex.executed == 1
        assert len(site.kinds("door.remote_unlock")) == 1
        ex.close()
        # ...also after a restart of the gateway.
        ex = CommandExecutor(tmp_path / "commands.sqlite3", Clock("yes"), site.local.handlers())
        assert await ex.execute(cmd) == first and ex.executed == 0

        now = Clock.now_ms()
        expired = await ex.execute(
            Command(
                id="u2", name="door.unlock", args={"door": "door-plantroom"}, by="x", expires_ms=now - 1000
            )
        )
        assert expired.code == "expired" and not expired.ok
        nobody = await ex.execute(Command(id="u3", name="door.unlock", args={"door": "door-plantroom"}))
        assert nobody.code == "unauthorised"
        bad = await ex.execute(
            Command(id="u4", name="door.unlock", args={"door": "door-plantroom", "seconds": -1}, by="x")
        )
        assert bad.code == "bad_args" and "seconds" in bad.detail
        unknown = await ex.execute(Command(id="u5", name="door.explode", by="x"))
        assert unknown.code == "unknown_command"
        snapshot = await ex.execute(
            Command(id="u6", name="camera.snapshot", args={"camera": "cam-lobby"}, by="x")
        )
        assert snapshot.code == "unsupported"
        assert len(site.kinds("door.remote_unlock")) == 1
        ex.close()
