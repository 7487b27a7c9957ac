"""A new config sent by the cloud (command config.apply) to a running gateway, with no broker
anywhere: checked before it takes effect, applied as a whole, rolled back when it does not start,
and the doors keep working throughout."""

from __future__ import annotations

import asyncio
import json
import socket
import tomllib
from pathlib import Path

from drivers.sim.building import Building
from edge.config import load_gateway_config
from edge.gateway import Gateway
from protocols.envelope import Command
from protocols.events import Lane
from tests.edge.site import CREDENTIALS, LEVELS
from tests.support.waits import until


def gateway_toml(b: Building, data: Path, version: str, bacnet_bind: str | None = None) -> str:
    text = (
        f'gateway_id = "gw-apply"\ndata_dir = "{data}"\nconfig_version = "{version}"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:9"\n[clock]\nsynced = "yes"\n' + b.gateway_config()
    )
    if bacnet_bind is not None:
        old = f'bind = "127.0.0.1:{b.gateway_bacnet_port}"'
        assert old in text
        text = text.replace(old, f'bind = "{bacnet_bind}"')
    return text


async def security_events(gw: Gateway) -> list[dict]:
    assert gw.outbox is not None
    rows = await gw.outbox.fetch(int(Lane.SECURITY), 0, 10_000)
    return [json.loads(r.body) for r in rows]


async def test_config_checked_applied_and_rolled_back(tmp_path: Path) -> None:
    data = tmp_path / "gw"
    path = tmp_path / "gateway.toml"
    async with Building(seed=5, life=False) as b:
        path.write_text(gateway_toml(b, data, "v1"))
        gw = Gateway(load_gateway_config(str(path)), config_path=path)
        stop = asyncio.Event()
        run = asyncio.create_task(gw.run(stop))
        try:
            await until(
                lambda: gw.field is not None and gw.commands is not None, what="gateway up", within=30
            )
            from protocols.access import AccessDelta

            await gw.store.apply(
                AccessDelta(base=0, version=1, reset=True, levels=LEVELS, credentials=CREDENTIALS), now_ms=0
            )
            gw.store.mark_current(gw.clock.now_ms())
            await until(
                lambda: gw.field is not None and gw.field.local.doors["door-lobby-east"].written is True,
                what="doors locked",
                within=30,
            )

            def apply(cid: str, toml: str, version: str) -> Command:
                return Command(
                    id=cid, name="config.apply", args={"toml": toml, "version": version}, by="installer"
                )

            # Not a config at all: refused before anything changes.
            bad = await gw.commands.execute(apply("c1", "gateway_id = [", "v2"))
            assert bad.code == "bad_args" and "not valid TOML" in bad.detail
            wrong = await gw.commands.execute(
                apply("c2", gateway_toml(b, data, "v2").replace("strike_s = 5.0", "strike_s = -1"), "v2")
            )
            assert wrong.code == "bad_args" and "strike_s" in wrong.detail

            # Valid, but it cannot start: its BACnet port is taken. Rolled back to v1.
            taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            taken.bind(("127.0.0.1", 0))
            try:
                port = taken.getsockname()[1]
                failed = await gw.commands.execute(
                    apply("c3", gateway_toml(b, data, "v3", f"127.0.0.1:{port}"), "v3")
                )
            finally:
                taken.close()
            assert failed.code == "failed" and "rolled back" in failed.detail, failed.detail
            assert gw.cfg.config_version == "v1"
            assert tomllib.loads(path.read_text())["config_version"] == "v1"
            rolled = [e for e in await security_events(gw) if e["kind"] == "gateway.config_rolled_back"]
            assert rolled and rolled[0]["data"]["tried"] == "v3"
            # The old config runs again: a card still opens the lobby door.
            await b.act("card", "rdr-lobby-east", card=12345, facility=1)
            await until(lambda: b.lock_released("door-lobby-east"), what="lobby released after rollback")

            # The broker's address is the installer's to change, not the cloud's.
            moved = await gw.commands.execute(
                apply(
                    "c4",
                    gateway_toml(b, data, "v4").replace("mqtt://127.0.0.1:9", "mqtt://127.0.0.1:10"),
                    "v4",
                )
            )
            assert moved.code == "refused" and "mqtt" in moved.detail

            # A good one: a longer strike time. Applied, kept on disk, the old file beside it.
            good = await gw.commands.execute(
                apply("c5", gateway_toml(b, data, "v5").replace("strike_s = 5.0", "strike_s = 7.0"), "v5")
            )
            assert good.code == "done", good.detail
            assert gw.cfg.config_version == "v5" and gw.cfg.doors[0].strike_s == 7.0
            assert tomllib.loads(path.read_text())["config_version"] == "v5"
            assert tomllib.loads(path.with_suffix(".previous").read_text())["config_version"] == "v1"
            assert load_gateway_config(str(path)).doors[0].strike_s == 7.0
            applied = [e for e in await security_events(gw) if e["kind"] == "gateway.config_applied"]
            assert applied[-1]["data"] == {"version": "v5", "previous": "v1", "by": "installer"}
            # The same command again is answered from the log, not applied twice.
            again = await gw.commands.execute(apply("c5", "ignored", "v9"))
            assert again == good
        finally:
            stop.set()
            await asyncio.wait_for(run, 30)


async def test_door_config_mistakes_are_refused_naming_the_door(tmp_path: Path) -> None:
    from edge.config import GatewayConfig
    from protocols.configuration import ConfigError, parse_config

    async with Building(seed=5, life=False) as b:
        base = gateway_toml(b, tmp_path, "v1")
    cases = {
        # Two doors on one lock: one door's strike ending would lock the other's fire release.
        'lock = "io-lobby/lock_2"': ('lock = "io-lobby/lock_1"', "already drives door"),
        # A fire zone spelt differently from every detector's zone.
        'fire_zones = ["B1 plant room"]': (
            'fire_zones = ["b1 plantroom"]',
            "no smoke or fire_panel sensor has zone",
        ),
        # A smoke detector's point is not writable: a lock on it is refused.
        'lock = "io-plantroom/lock_1"': ('lock = "io-plantroom/smoke_1"', "not writable"),
    }
    for old, (new, problem) in cases.items():
        assert old in base, old
        try:
            parse_config(base.replace(old, new, 1), GatewayConfig, "gateway.toml")
        except ConfigError as e:
            assert "doors." in str(e) and problem in str(e), str(e)
        else:
            raise AssertionError(f"{new} was accepted")
