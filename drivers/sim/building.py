"""A whole simulated building, every device speaking its real protocol: what ``gatehouse demo`` and
``gatehouse sim building`` run, and what an installer rehearses a site on before the hardware comes.

Harbour View Tower's plant room and lobby:

- Modbus TCP (one server per device, each on its own loopback port): two energy meters, a water
  meter, a chiller, a pump, and two I/O modules (lobby, plant room) wired to door contacts, lock
  relays, smoke detectors and PIR sensors;
- BACnet/IP: the air handler AHU-1 with its duct smoke detectors (life-safety points) and the
  plant-room PIR, on 127.0.0.2;
- card readers on pseudo-terminals: the car-park reader behind a Wiegand-to-RS-485 converter,
  the lobby reader on OSDP with Secure Channel.

``gateway_config()`` says how a gateway reaches all of it (the ``[[modbus]]``, ``[[bacnet]]``,
``[[readers]]`` and ``[[sensors]]`` sections, in TOML), so the demo's gateway reads this building
exactly as it would read a real one. Life goes on by itself (meters turn, cards are presented,
people walk past PIRs); ``act`` does what a scenario step says (drivers/sim/scenario.py).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.sim.bacnet_device import AIR_HANDLER, BacnetDeviceSim, free_udp_port
from drivers.sim.modbus_server import (
    ModbusSim,
    SimModbusDevice,
    SimPoint,
    chiller,
    energy_meter,
    io_module,
    pump,
    water_meter,
)
from drivers.sim.readers import OsdpReaderSim, WiegandConverterSim

# The lobby reader's Secure Channel key: a demo key, written into the demo gateway's config. A real
# site's keys come from its commissioning, never from source code.
DEMO_SCBK = "8f1c2a9b5d3e4f60718293a4b5c6d7e8"

# (card number, facility, holder): the people who come and go in the demo.
CARDS = [
    (12345, 1, "Zhang Wei (张伟), facilities"),
    (19876, 1, "Li Na (李娜), finance"),
    (20001, 1, "Wang Fang (王芳), security"),
    (31337, 7, "unknown card"),
]

UNITS = {
    "energy_total": "kWh",
    "energy_counter": "Wh",
    "power": "kW",
    "voltage": "V",
    "volume_total": "m3",
    "volume_counter": "L",
    "flow": "L/s",
    "chw_supply_temp": "degC",
    "chw_return_temp": "degC",
    "setpoint": "degC",
    "run_hours": "h",
}
# How often each kind of device is read: doors and detectors at once (a fire release budget is
# 250 ms from the detector to the relay, detection included), meters at leisure.
POLL_MS = {"io": 100, "meter": 5000, "plant": 2000}
DEADBAND = {"power": 0.5, "flow": 0.1, "voltage": 1.0, "chw_supply_temp": 0.1, "chw_return_temp": 0.1}


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _q(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _table(header: str, values: dict[str, Any]) -> str:
    lines = [header] + [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


@dataclass
class SensorSpec:
    """A sensor of the building: its name in the gateway config, what it means, and where it is."""

    name: str
    meaning: str
    point: str  # device/point
    extra: dict[str, Any]


# The building's doors (``[[doors]]``): the lobby and plant-room doors are on escape routes and
# released in a fire; the car-park gate is not.
DOORS: list[dict[str, Any]] = [
    {
        "name": "door-lobby-east",
        "lock": "io-lobby/lock_1",
        "contact": "door-lobby-east",
        "exit_request": "rex-lobby-east",
        "strike_s": 5.0,
        "held_open_s": 30.0,
        "prealarm_s": 10.0,
        "egress": True,
        "camera": "cam-lobby",
    },
    {
        "name": "door-carpark-1",
        "lock": "io-lobby/lock_2",
        "contact": "door-carpark-1",
        "exit_request": "rex-carpark-1",
        "strike_s": 5.0,
        "held_open_s": 60.0,
        "prealarm_s": 15.0,
    },
    {
        "name": "door-plantroom",
        "lock": "io-plantroom/lock_1",
        "contact": "door-plantroom",
        "exit_request": "rex-plantroom",
        "strike_s": 5.0,
        "held_open_s": 20.0,
        "prealarm_s": 5.0,
        "egress": True,
        "fire_zones": ["B1 plant room"],
    },
]
ZONES: list[dict[str, Any]] = [
    {
        "name": "lobby",
        "sensors": ["pir-lobby", "pir-lobby-lift"],
        "entry_sensors": ["pir-lobby"],
        "entry_delay_s": 30.0,
        "exit_delay_s": 30.0,
    },
    {"name": "plant room", "sensors": ["pir-plantroom"], "entry_delay_s": 20.0, "exit_delay_s": 20.0},
]
RULES: list[dict[str, Any]] = [
    {
        "name": "chiller-1-supply-high",
        "asset": "CH-1",
        "fault": "chw_supply_high",
        "kind": "above",
        "point": "chiller-1/chw_supply_temp",
        "threshold": 10.0,
        "hysteresis": 1.0,
        "min_duration_s": 10.0,
        "skill": "hvac",
    },
    {
        "name": "pump-2-no-run-feedback",
        "asset": "PU-2",
        "fault": "run_feedback_missing",
        "kind": "mismatch",
        "command_point": "pump-2/run_command",
        "feedback_point": "pump-2/running",
        "min_duration_s": 5.0,
        "skill": "plumbing",
    },
]


class Building:
    """The simulated building. ``async with Building() as b:`` starts every device."""

    def __init__(self, seed: int = 1, life: bool = True, bacnet_host: str = "127.0.0.2") -> None:
        self.rng = random.Random(seed)
        self.life = life
        self.modbus = ModbusSim(
            [
                energy_meter("meter-b1-main"),
                energy_meter("meter-b1-hvac"),
                water_meter("water-b1-main"),
                chiller("chiller-1"),
                pump("pump-2"),
                io_module("io-lobby", doors=2, detectors=2, pirs=2),
                io_module("io-plantroom", doors=1, detectors=1, pirs=1, fire_panel=True),
            ],
            tick_s=1.0,
        )
        self.ahu = BacnetDeviceSim(bacnet_host, free_udp_port(bacnet_host), 1001, "ahu-1")
        self.gateway_bacnet_port = free_udp_port("127.0.0.1")
        self.carpark = WiegandConverterSim("wiegand-ascii")
        self.lobby = OsdpReaderSim(address=1, scbk=DEMO_SCBK)
        # reader name -> (simulator, the door it opens)
        self.readers: dict[str, tuple[WiegandConverterSim | OsdpReaderSim, str]] = {
            "rdr-carpark-1": (self.carpark, "door-carpark-1"),
            "rdr-lobby-east": (self.lobby, "door-lobby-east"),
        }
        self.sensors = self._sensors()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.modbus.start()
        await self.ahu.start()
        self.lobby.start()
        if self.life:
            self._tasks.append(asyncio.create_task(self._live(), name="building-life"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.lobby.close()
        self.carpark.close()
        await self.ahu.stop()
        await self.modbus.stop()

    async def __aenter__(self) -> Building:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ what the gateway reads

    def _sensors(self) -> list[SensorSpec]:
        out = [
            SensorSpec(
                "smoke-lobby-1", "smoke", "io-lobby/smoke_1", {"zone": "1F lobby", "fire_system": True}
            ),
            SensorSpec(
                "smoke-lobby-2", "smoke", "io-lobby/smoke_2", {"zone": "1F lobby", "fire_system": True}
            ),
            SensorSpec(
                "smoke-plantroom",
                "smoke",
                "io-plantroom/smoke_1",
                {"zone": "B1 plant room", "fire_system": True},
            ),
            SensorSpec(
                "smoke-ahu1-supply",
                "smoke",
                "ahu-1/smoke_supply_duct",
                {"zone": "B1 plant room", "fire_system": True, "active": ["alarm", "pre-alarm"]},
            ),
            SensorSpec("pir-lobby", "pir", "io-lobby/pir_1", {"zone": "lobby"}),
            SensorSpec("pir-lobby-lift", "pir", "io-lobby/pir_2", {"zone": "lobby"}),
            SensorSpec("pir-plantroom", "pir", "ahu-1/pir_plantroom", {"zone": "plant room"}),
            SensorSpec("door-lobby-east", "door_contact", "io-lobby/door_1", {"door": "door-lobby-east"}),
            SensorSpec("door-carpark-1", "door_contact", "io-lobby/door_2", {"door": "door-carpark-1"}),
            SensorSpec("door-plantroom", "door_contact", "io-plantroom/door_1", {"door": "door-plantroom"}),
            SensorSpec("lock-lobby-east", "lock_relay", "io-lobby/lock_1", {"door": "door-lobby-east"}),
            SensorSpec("lock-carpark-1", "lock_relay", "io-lobby/lock_2", {"door": "door-carpark-1"}),
            SensorSpec("lock-plantroom", "lock_relay", "io-plantroom/lock_1", {"door": "door-plantroom"}),
            SensorSpec("rex-lobby-east", "exit_request", "io-lobby/rex_1", {"door": "door-lobby-east"}),
            SensorSpec("rex-carpark-1", "exit_request", "io-lobby/rex_2", {"door": "door-carpark-1"}),
            SensorSpec("rex-plantroom", "exit_request", "io-plantroom/rex_1", {"door": "door-plantroom"}),
            SensorSpec(
                "fire-panel", "fire_panel", "io-plantroom/fire_panel_alarm", {"zone": "", "fire_system": True}
            ),
            SensorSpec("fire-reset-key", "fire_reset", "io-plantroom/fire_reset_key", {}),
            SensorSpec("chiller-1-run", "run_signal", "chiller-1/running", {"asset": "CH-1"}),
            SensorSpec("pump-2-run", "run_signal", "pump-2/running", {"asset": "PU-2"}),
            SensorSpec(
                "meter-b1-main", "meter", "meter-b1-main/energy_total", {"unit": "kWh", "asset": "EM-B1"}
            ),
            SensorSpec(
                "meter-b1-hvac", "meter", "meter-b1-hvac/energy_total", {"unit": "kWh", "asset": "EM-HVAC"}
            ),
            SensorSpec(
                "water-b1-main",
                "meter",
                "water-b1-main/volume_counter",
                {"unit": "L", "asset": "WM-B1", "rollover": float(2**32)},
            ),
        ]
        return out

    def _modbus_point(self, dev: SimModbusDevice, p: SimPoint) -> dict[str, Any]:
        family = "io" if dev.name.startswith("io-") else "meter" if "meter" in dev.name else "plant"
        fire = p.name.startswith("smoke_")
        return p.config(
            unit=UNITS.get(p.name),
            poll_ms=POLL_MS[family],
            deadband=DEADBAND.get(p.name),
            heartbeat_s=60.0,
            fire_system=fire or None,
            writable=(p.table in ("coil", "holding_register") and not fire) or None,
        )

    def gateway_config(self) -> str:
        """The driver sections of a gateway config that reads this building."""
        parts = ["# Written by `gatehouse sim building`: how a gateway reads the simulated building.\n"]
        for dev in self.modbus.devices.values():
            parts.append(
                _table(
                    "[[modbus]]",
                    {
                        "name": dev.name,
                        "host": dev.host,
                        "port": dev.port,
                        "unit": dev.unit,
                        "timeout_s": 0.5,
                    },
                )
            )
            for p in dev.points.values():
                parts.append(_table("[[modbus.points]]", self._modbus_point(dev, p)))
        parts.append(
            _table(
                "[bacnet_local]",
                {"bind": f"127.0.0.1:{self.gateway_bacnet_port}", "apdu_timeout_s": 1.0, "apdu_retries": 1},
            )
        )
        parts.append(
            _table(
                "[[bacnet]]",
                {
                    "name": self.ahu.name,
                    "address": self.ahu.address,
                    "device_instance": self.ahu.device_instance,
                    "cov_lifetime_s": 120,
                    "liveness_interval_s": 5.0,
                    "backoff_max_s": 10.0,
                },
            )
        )
        for o in AIR_HANDLER:
            unit = {"degreesCelsius": "degC", "percent": "%"}.get(o.units)
            parts.append(
                _table(
                    "[[bacnet.objects]]",
                    {
                        "name": o.name,
                        "type": o.type,
                        "instance": o.instance,
                        "unit": unit,
                        "fire_system": o.type.startswith("life-safety") or None,
                    },
                )
            )
        for name, (sim, door) in self.readers.items():
            reader: dict[str, Any] = {"name": name, "door": door, "port": sim.path, "reopen_max_s": 5.0}
            if isinstance(sim, OsdpReaderSim):
                reader |= {"protocol": "osdp", "address": sim.address, "scbk": DEMO_SCBK}
            else:
                reader["protocol"] = "wiegand-ascii"
            parts.append(_table("[[readers]]", reader))
        for s in self.sensors:
            parts.append(
                _table("[[sensors]]", {"name": s.name, "meaning": s.meaning, "point": s.point, **s.extra})
            )
        parts.append(self.local_config())
        return "\n".join(parts)

    def local_config(self) -> str:
        """The local-action sections: the building's doors, fire release, intrusion zones and
        equipment rules."""
        parts = [_table("[access]", {"timezone": "Asia/Shanghai", "stale_after_s": 7 * 24 * 3600.0})]
        for d in DOORS:
            parts.append(_table("[[doors]]", d))
        for z in ZONES:
            parts.append(_table("[[intrusion_zones]]", z))
        for r in RULES:
            parts.append(_table("[[rules]]", r))
        return "\n".join(parts)

    def lock_released(self, door: str) -> bool:
        """Does the simulated lock relay of ``door`` stand released (its coil off)?"""
        for d in DOORS:
            if d["name"] == door:
                device, point = str(d["lock"]).split("/")
                return not self.modbus[device].points[point].value
        raise KeyError(f"no door {door!r}")

    @staticmethod
    def credentials_csv() -> str:
        """The demo's cardholders, in the cloud's credential import format."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["id", "card", "facility", "holder", "levels", "offline_ok", "first_person_in"])
        for card, facility, holder in CARDS:
            if card == 31337:
                continue  # the unknown card stays unknown
            security = "security" in holder
            levels = "staff;plant" if "facilities" in holder or security else "staff"
            w.writerow([f"c-{card}", card, facility, holder, levels, str(security).lower(), "false"])
        return out.getvalue()

    @staticmethod
    def levels_csv() -> str:
        return (
            "id,name,doors,schedule\n"
            "staff,All staff,door-lobby-east;door-carpark-1,\n"
            "plant,Plant room,door-plantroom,\n"
        )

    # ------------------------------------------------------------------ acting

    def sensor(self, name: str) -> SensorSpec:
        for s in self.sensors:
            if s.name == name:
                return s
        raise KeyError(f"no sensor {name!r}; the building has: {', '.join(s.name for s in self.sensors)}")

    async def set_point(self, point: str, value: Any) -> None:
        device, name = point.split("/", 1)
        if device == self.ahu.name:
            self.ahu.set_value(name, value)
        elif device in self.modbus.devices:
            await self.modbus[device].set(name, value)
        else:
            raise KeyError(f"no device {device!r}")

    async def act(self, do: str, target: str = "", **args: Any) -> str:
        """Do one scenario action; returns a line saying what was done."""
        action = self.actions().get(do)
        if action is None:
            raise ValueError(f"unknown action {do!r}; known: {', '.join(sorted(self.actions()))}")
        return await action(target, **args)

    def actions(self) -> dict[str, Callable[..., Any]]:
        return {
            "smoke": self._smoke,
            "clear_smoke": self._clear_smoke,
            "motion": self._motion,
            "clear_motion": self._clear_motion,
            "open_door": self._open_door,
            "close_door": self._close_door,
            "force_door": self._open_door,  # a door opened with no card: what forced looks like
            "card": self._card,
            "bad_frame": self._bad_frame,
            "tamper": self._tamper,
            "fail_device": self._fail,
            "restore_device": self._restore,
            "break_meter": self._break_meter,
            "set": self._set,
            "exit_request": self._exit_request,
            "keys": self._keys,
            "fire_alarm": self._fire_alarm,
            "clear_fire_alarm": self._clear_fire_alarm,
            "fire_reset_key": self._fire_reset_key,
        }

    async def _binary(self, target: str, meaning: str, on: bool) -> str:
        s = self.sensor(target)
        if s.meaning != meaning:
            raise ValueError(f"{target} is a {s.meaning}, not a {meaning}")
        device, point = s.point.split("/", 1)
        if device == self.ahu.name and meaning == "smoke":
            if on:
                self.ahu.raise_smoke(point)
            else:
                self.ahu.clear_smoke(point)
        else:
            await self.set_point(s.point, on)
        return f"{target} ({s.point}) -> {'active' if on else 'normal'}"

    async def _smoke(self, target: str, **_: Any) -> str:
        return await self._binary(target, "smoke", True)

    async def _clear_smoke(self, target: str, **_: Any) -> str:
        return await self._binary(target, "smoke", False)

    async def _motion(self, target: str, **_: Any) -> str:
        return await self._binary(target, "pir", True)

    async def _clear_motion(self, target: str, **_: Any) -> str:
        return await self._binary(target, "pir", False)

    async def _open_door(self, target: str, **_: Any) -> str:
        return await self._binary(target, "door_contact", True)

    async def _close_door(self, target: str, **_: Any) -> str:
        return await self._binary(target, "door_contact", False)

    def _reader(self, target: str) -> WiegandConverterSim | OsdpReaderSim:
        if target not in self.readers:
            raise KeyError(f"no reader {target!r}; the building has: {', '.join(self.readers)}")
        return self.readers[target][0]

    async def _card(self, target: str, card: int = 12345, facility: int = 1, **_: Any) -> str:
        self._reader(target).present_card(int(card), int(facility))
        return f"card {facility}:{card} presented at {target}"

    async def _bad_frame(self, target: str, card: int = 12345, **_: Any) -> str:
        r = self._reader(target)
        if not isinstance(r, WiegandConverterSim):
            raise ValueError(f"{target} is an OSDP reader: its frames are checked by libosdp")
        r.send_bad_parity(int(card), 1)
        return f"a frame with bad parity sent by {target}"

    def _osdp(self, target: str, what: str) -> OsdpReaderSim:
        r = self._reader(target)
        if not isinstance(r, OsdpReaderSim):
            raise ValueError(f"{target} has no {what} the gateway can read")
        return r

    async def _tamper(self, target: str, on: bool = True, **_: Any) -> str:
        self._osdp(target, "tamper switch").tamper(bool(on))
        return f"{target} tamper {'on' if on else 'off'}"

    async def _fail(self, target: str, **_: Any) -> str:
        if target == self.ahu.name:
            self.ahu.fail()
        elif target in self.modbus.devices:
            self.modbus[target].fail()
        else:
            self._reader(target).unplug()
        return f"{target} stopped answering"

    async def _restore(self, target: str, **_: Any) -> str:
        if target == self.ahu.name:
            self.ahu.recover()
        elif target in self.modbus.devices:
            self.modbus[target].recover()
        else:
            self._reader(target).plug()
        return f"{target} answers again"

    async def _break_meter(self, target: str, **_: Any) -> str:
        if target not in self.modbus.devices or "meter_ok" not in self.modbus[target].points:
            raise KeyError(f"no meter {target!r}")
        await self.modbus[target].break_meter()
        return f"meter {target} broken (NaN, frozen)"

    async def _keys(self, target: str, value: Any = "", **_: Any) -> str:
        self._osdp(target, "keypad").press_keys(str(value))
        return f"keys pressed at {target}"

    async def _exit_request(self, target: str, **_: Any) -> str:
        """Someone presses the exit button of door ``target`` (a momentary press)."""
        s = next(
            (x for x in self.sensors if x.meaning == "exit_request" and x.extra.get("door") == target), None
        )
        if s is None:
            raise KeyError(f"door {target!r} has no exit request button")
        await self.set_point(s.point, True)
        await asyncio.sleep(0.5)
        await self.set_point(s.point, False)
        return f"exit button of {target} pressed"

    async def _fire_alarm(self, target: str = "", **_: Any) -> str:
        await self.set_point("io-plantroom/fire_panel_alarm", True)
        return "fire panel: general alarm"

    async def _clear_fire_alarm(self, target: str = "", **_: Any) -> str:
        await self.set_point("io-plantroom/fire_panel_alarm", False)
        return "fire panel: alarm cleared"

    async def _fire_reset_key(self, target: str = "", **_: Any) -> str:
        """The key switch beside the panel turned to reset and back."""
        await self.set_point("io-plantroom/fire_reset_key", True)
        await asyncio.sleep(0.5)
        await self.set_point("io-plantroom/fire_reset_key", False)
        return "fire reset key turned"

    async def _set(self, target: str, value: Any = None, **_: Any) -> str:
        await self.set_point(target, value)
        return f"{target} = {value!r}"

    # ------------------------------------------------------------------ life

    async def _live(self) -> None:
        """People come and go: cards at the readers with the door opening behind them, someone
        walking past the lobby PIR, the air handler's temperatures drifting."""
        rng = self.rng
        while True:
            await asyncio.sleep(rng.uniform(6, 14))
            card, facility, _ = rng.choice(CARDS)
            reader = rng.choice(sorted(self.readers))
            door = self.readers[reader][1]
            try:
                await self._card(reader, card=card, facility=facility)
                # The holder pulls the door when the lock clicks open, and walks away when not.
                for _ in range(20):
                    await asyncio.sleep(0.1)
                    if self.lock_released(door):
                        break
                if self.lock_released(door):
                    await self._open_door(door)
                    await asyncio.sleep(rng.uniform(2, 5))
                    await self._close_door(door)
                if rng.random() < 0.5:
                    await self._motion("pir-lobby")
                    await asyncio.sleep(3)
                    await self._clear_motion("pir-lobby")
                self.ahu.set_value("supply_air_temp", round(16.0 + rng.uniform(-0.8, 0.8), 1))
                self.ahu.set_value("return_air_temp", round(23.5 + rng.uniform(-0.6, 0.6), 1))
            except (OSError, KeyError, ValueError):
                # A device a scenario has failed or unplugged: life goes on around it.
                continue
