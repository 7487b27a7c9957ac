"""Scenario files: a bad step is an error when the file is read, naming the file, the step and the
problem; a good one acts on the real simulated building."""

import subprocess
import sys
from pathlib import Path

import pytest

from drivers.sim.building import Building
from drivers.sim.scenario import load_scenario, run_scenario
from protocols.configuration import ConfigError

GATEHOUSE = [sys.executable, "-m", "gatehouse"]


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        (
            '[[step]]\nat_s = 1\ndo = "smoke"\ntarget = "smoke-roof"\n',
            "step.0.target: the building has no 'smoke-roof'",
        ),
        ('[[step]]\nat_s = 1\ndo = "flood"\ntarget = "smoke-lobby-1"\n', "step.0.do: unknown action 'flood'"),
        ('[[step]]\nat_s = -1\ndo = "smoke"\n', "step.0.at_s"),
        ('repeat_every_s = 5\n[[step]]\nat_s = 9\ndo = "smoke"\n', "repeat_every_s"),
    ],
)
def test_a_bad_scenario_is_refused_at_start_naming_the_step(tmp_path: Path, steps: str, problem: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(steps)
    r = subprocess.run(
        [*GATEHOUSE, "sim", "building", "--quiet-life", "--scenario", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert f"{bad}: " in r.stderr and problem in r.stderr


async def test_a_scenario_acts_on_the_building() -> None:
    async with Building(life=False) as b:
        text = '[[step]]\nat_s = 0\ndo = "smoke"\ntarget = "smoke-lobby-1"\n'
        said: list[str] = []
        await run_scenario(b, load_scenario(text, "t.toml", b), on_step=lambda _st, line: said.append(line))
        assert b.modbus["io-lobby"].get("smoke_1") is True
        assert said == ["smoke-lobby-1 (io-lobby/smoke_1) -> active"]
        with pytest.raises(ConfigError, match=r"t\.toml: step\.0\.target"):
            load_scenario('[[step]]\nat_s = 0\ndo = "card"\ntarget = "rdr-roof"\n', "t.toml", b)
