"""Scenario files: what happens in the simulated building, and when, in a small TOML file.

    # raise smoke in the lobby 10 s after start, clear it 40 s later
    [[step]]
    at_s = 10
    do = "smoke"
    target = "smoke-lobby-1"

    [[step]]
    at_s = 50
    do = "clear_smoke"
    target = "smoke-lobby-1"

    [[step]]
    at_s = 12
    do = "card"
    target = "rdr-lobby-east"
    card = 19876
    facility = 1

``repeat_every_s`` at the top level runs the steps again on that period (the demo's loop). Actions
are those of ``Building.act``: smoke, clear_smoke, motion, clear_motion, open_door, close_door,
force_door, card, bad_frame, tamper, fail_device, restore_device, break_meter, set. A step that
names an unknown action or target is an error when the file is read, not when its time comes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from drivers.sim.building import Building
from protocols.configuration import ConfigError, parse_config

log = logging.getLogger(__name__)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at_s: Annotated[float, Field(ge=0)]
    do: str
    target: str = ""
    card: int | None = None
    facility: int | None = None
    value: bool | int | float | str | None = None
    on: bool | None = None

    def args(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={"at_s", "do", "target"}).items() if v is not None}


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repeat_every_s: Annotated[float, Field(ge=0)] = 0.0  # 0: once
    step: list[Step] = Field(default_factory=list)


def load_scenario(text: str, source: str, building: Building) -> Scenario:
    """Parse and check against the building: ConfigError names the file, the step and the problem."""
    sc = parse_config(text, Scenario, source)
    known = {s.name for s in building.sensors} | set(building.modbus.devices) | {building.ahu.name}
    known |= set(building.readers)
    known |= {f"{d}/{p}" for d, dev in building.modbus.devices.items() for p in dev.points}
    actions = building.actions()
    for i, st in enumerate(sc.step):
        if st.do not in actions:
            raise ConfigError(f"{source}: step.{i}.do: unknown action {st.do!r}")
        if st.target and st.target not in known:
            raise ConfigError(f"{source}: step.{i}.target: the building has no {st.target!r}")
    if sc.repeat_every_s and sc.step and sc.repeat_every_s <= max(s.at_s for s in sc.step):
        raise ConfigError(f"{source}: repeat_every_s: must be longer than the last step's at_s")
    return sc


async def run_scenario(building: Building, sc: Scenario, on_step: Any = None) -> None:
    """Run the steps at their times (relative to now); again every ``repeat_every_s`` if set."""
    loop = asyncio.get_running_loop()
    steps = sorted(sc.step, key=lambda s: s.at_s)
    start = loop.time()
    while True:
        for st in steps:
            delay = start + st.at_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                said = await building.act(st.do, st.target, **st.args())
            except (KeyError, ValueError, OSError) as e:
                said = f"step {st.do} {st.target}: failed: {e}"
            log.info("scenario: %s", said)
            if on_step is not None:
                on_step(st, said)
        if not sc.repeat_every_s:
            return
        start += sc.repeat_every_s
        await asyncio.sleep(max(0.0, start - loop.time()))
