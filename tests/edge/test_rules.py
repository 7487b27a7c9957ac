"""Equipment rules on a fake clock: one fault and one clear for a flapping value, hysteresis,
minimum durations, pump command against feedback, unreadable readings, config errors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.base import point_event
from edge.rules import EquipmentRuleConfig, EquipmentRules, check_rules
from protocols.events import NewEvent
from tests.support.waits import until


class FakeClock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Emitted:
    def __init__(self) -> None:
        self.events: list[NewEvent] = []

    async def __call__(self, events: Sequence[NewEvent]) -> None:
        self.events.extend(events)


def chw_high(**kw: Any) -> EquipmentRuleConfig:
    base: dict[str, Any] = {
        "name": "chiller-1-supply-high",
        "asset": "chiller-1",
        "fault": "chw_supply_high",
        "kind": "above",
        "point": "plant/chw_supply",
        "threshold": 9.0,
        "hysteresis": 0.5,
        "min_duration_s": 60,
        "clear_after_s": 120,
    }
    base.update(kw)
    return EquipmentRuleConfig(**base)


def pump_mismatch(**kw: Any) -> EquipmentRuleConfig:
    base: dict[str, Any] = {
        "name": "pump-2-run",
        "asset": "pump-2",
        "fault": "run_feedback_mismatch",
        "kind": "mismatch",
        "command_point": "plc/pump2_cmd",
        "feedback_point": "plc/pump2_run",
        "min_duration_s": 15,
        "severity": "critical",
    }
    base.update(kw)
    return EquipmentRuleConfig(**base)


def make(*rules: EquipmentRuleConfig) -> tuple[EquipmentRules, FakeClock]:
    clock = FakeClock()
    return EquipmentRules(rules or [chw_high()], Emitted(), clock, now_ms=lambda: 42), clock


def reading(value: Any, point: str = "plant/chw_supply", quality: str = "good") -> NewEvent:
    return point_event(point, value, 1000, "degC", quality)


def feed(
    rules: EquipmentRules, value: Any, point: str = "plant/chw_supply", quality: str = "good"
) -> list[NewEvent]:
    return rules.handle(reading(value, point, quality))


def kinds(events: Sequence[NewEvent]) -> list[str]:
    return [e.kind for e in events]


def test_a_value_flapping_around_the_threshold_gives_one_fault_and_one_clear():
    rules, clock = make(chw_high(hysteresis=0.0, min_duration_s=60, clear_after_s=60))
    out: list[NewEvent] = []
    # Flapping before any fault: never above long enough.
    for i in range(100):
        out += feed(rules, 9.2 if i % 2 == 0 else 8.8)
        clock.advance(5)
        out += rules.tick()
    assert out == []
    # High long enough: the fault.
    out += feed(rules, 9.6)
    clock.advance(60)
    out += rules.tick()
    # Flapping 100 times while faulted: never normal long enough.
    for i in range(100):
        out += feed(rules, 8.8 if i % 2 == 0 else 9.2)
        clock.advance(5)
        out += rules.tick()
    # Normal long enough: the clear. Then flapping again: nothing more.
    out += feed(rules, 8.0)
    clock.advance(60)
    out += rules.tick()
    for i in range(100):
        out += feed(rules, 9.2 if i % 2 == 0 else 8.8)
        clock.advance(5)
        out += rules.tick()
    assert kinds(out) == ["equipment.fault", "equipment.fault_cleared"]


def test_fault_and_clear_events_carry_the_rule_asset_value_and_threshold():
    rules, clock = make()
    assert feed(rules, 9.4) == []
    assert rules.status()["chiller-1-supply-high"]["state"] == "pending_fault"
    clock.advance(60)
    (fault,) = rules.tick()
    assert fault.kind == "equipment.fault" and fault.source == "chiller-1"
    assert fault.data == {
        "rule": "chiller-1-supply-high",
        "asset": "chiller-1",
        "fault": "chw_supply_high",
        "severity": "major",
        "value": 9.4,
        "threshold": 9.0,
        "point": "plant/chw_supply",
        "since_ms": 1000,  # the reading that began it
    }
    feed(rules, 8.0)
    clock.advance(120)
    (clear,) = rules.tick()
    assert clear.kind == "equipment.fault_cleared"
    assert clear.data["value"] == 8.0 and clear.data["fault_since_ms"] == 1000
    assert rules.status()["chiller-1-supply-high"]["state"] == "normal"


def test_hysteresis_a_value_in_the_dead_band_does_not_clear():
    rules, clock = make(chw_high(hysteresis=0.5, min_duration_s=0, clear_after_s=10))
    assert kinds(feed(rules, 9.1)) == ["equipment.fault"]  # min_duration 0: at once
    feed(rules, 8.6)  # below the threshold but above 9.0 - 0.5
    clock.advance(3600)
    assert rules.tick() == []
    assert rules.status()["chiller-1-supply-high"]["state"] == "fault"
    feed(rules, 8.5)  # at threshold - hysteresis: normal
    assert rules.status()["chiller-1-supply-high"]["state"] == "pending_clear"
    feed(rules, 8.7)  # back in the dead band: the clear has to start over
    clock.advance(10)
    assert rules.tick() == []
    feed(rules, 8.4)
    clock.advance(10)
    assert kinds(rules.tick()) == ["equipment.fault_cleared"]


def test_below_mirrors_above():
    rule = chw_high(
        name="cw-low", kind="below", threshold=2.0, hysteresis=0.5, min_duration_s=10, clear_after_s=10
    )
    rules, clock = make(rule)
    feed(rules, 2.0)  # at the threshold is not below it
    clock.advance(20)
    assert rules.tick() == []
    feed(rules, 1.9)
    clock.advance(10)
    assert kinds(rules.tick()) == ["equipment.fault"]
    feed(rules, 2.4)  # dead band
    clock.advance(20)
    assert rules.tick() == []
    feed(rules, 2.5)
    clock.advance(10)
    assert kinds(rules.tick()) == ["equipment.fault_cleared"]


def test_min_duration_not_reached_gives_nothing():
    rules, clock = make()
    feed(rules, 12.0)
    clock.advance(59.9)
    assert rules.tick() == []
    assert feed(rules, 8.9) == []  # back under the threshold: cancelled silently
    clock.advance(600)
    assert rules.tick() == []
    assert rules.status()["chiller-1-supply-high"]["state"] == "normal"


def test_a_condition_holding_without_new_readings_still_completes():
    rules, clock = make()
    feed(rules, 12.0)  # one reading, then the value stops changing (change-of-value devices)
    clock.advance(60)
    assert kinds(rules.tick()) == ["equipment.fault"]


def test_a_duration_completed_before_a_late_tick_is_not_lost():
    rules, clock = make()
    feed(rules, 12.0)
    clock.advance(90)  # the tick is late; the next reading is normal
    out = feed(rules, 8.0)
    assert kinds(out) == ["equipment.fault"]
    assert out[0].data["value"] == 12.0  # the value that held, not the new one
    assert rules.status()["chiller-1-supply-high"]["state"] == "pending_clear"


def test_pump_command_against_feedback():
    rules, clock = make(pump_mismatch())
    name = "pump-2-run"
    feed(rules, False, "plc/pump2_cmd")
    feed(rules, False, "plc/pump2_run")
    # Commanded on, running 8 s later: a normal start.
    feed(rules, True, "plc/pump2_cmd")
    clock.advance(8)
    assert feed(rules, 1, "plc/pump2_run") == []  # a register's 1 is running
    clock.advance(60)
    assert rules.tick() == []
    # Tripped while commanded on.
    feed(rules, 0, "plc/pump2_run")
    clock.advance(15)
    (fault,) = rules.tick()
    assert fault.kind == "equipment.fault" and fault.source == "pump-2"
    assert fault.data["command"] is True and fault.data["feedback"] is False
    assert fault.data["severity"] == "critical" and "threshold" not in fault.data
    # Stopped by command: command and feedback agree again; clear_after defaults to min_duration.
    feed(rules, False, "plc/pump2_cmd")
    clock.advance(14)
    assert rules.tick() == []
    clock.advance(1)
    assert kinds(rules.tick()) == ["equipment.fault_cleared"]
    assert rules.status()[name]["state"] == "normal"


def test_a_mismatch_needs_both_sides_read():
    rules, clock = make(pump_mismatch(min_duration_s=0))
    assert feed(rules, True, "plc/pump2_cmd") == []  # feedback never read
    clock.advance(60)
    assert rules.tick() == []


def test_stale_readings_neither_start_nor_clear():
    rules, clock = make()
    name = "chiller-1-supply-high"
    assert feed(rules, 12.0, quality="stale") == []
    clock.advance(600)
    assert rules.tick() == []
    assert rules.status()[name]["unreadable"] == ["plant/chw_supply"]

    # A pending fault goes back when the value becomes unknown...
    feed(rules, 12.0)
    assert rules.status()[name]["unreadable"] == []
    clock.advance(30)
    feed(rules, 12.0, quality="fault")
    clock.advance(600)
    assert rules.tick() == []
    assert rules.status()[name]["state"] == "normal"

    # ...and a fault is not cleared by readings that cannot be trusted, nor by a missing value.
    feed(rules, 12.0)
    clock.advance(60)
    assert kinds(rules.tick()) == ["equipment.fault"]
    feed(rules, 8.0)
    clock.advance(60)
    feed(rules, 8.0, quality="stale")
    feed(rules, None)
    feed(rules, "n/a")  # not a number
    clock.advance(600)
    assert rules.tick() == []
    assert rules.status()[name]["state"] == "fault"


def test_device_offline_makes_the_points_unreadable():
    rules, clock = make(pump_mismatch())
    feed(rules, True, "plc/pump2_cmd")
    feed(rules, False, "plc/pump2_run")
    assert rules.status()["pump-2-run"]["state"] == "pending_fault"
    rules.handle(NewEvent("device.offline", "plc", {"family": "modbus", "reason": "timeout"}))
    clock.advance(60)
    assert rules.tick() == []
    assert rules.status()["pump-2-run"]["unreadable"] == ["plc/pump2_cmd", "plc/pump2_run"]
    assert rules.handle(NewEvent("device.offline", "other", {})) == []


def test_source_is_the_rule_name_without_an_asset():
    rules, _ = make(chw_high(asset="", min_duration_s=0))
    (e,) = feed(rules, 10.0)
    assert e.source == "chiller-1-supply-high" and e.data["asset"] == ""


def test_two_rules_on_one_point_are_independent():
    warn = chw_high(name="chw-warn", fault="chw_supply_warm", threshold=8.0, severity="minor")
    rules, clock = make(chw_high(), warn)
    feed(rules, 8.5)
    clock.advance(60)
    out = rules.tick()
    assert [e.data["rule"] for e in out] == ["chw-warn"]


def test_unrelated_events_are_ignored():
    rules, _ = make()
    assert rules.handle(point_event("plant/other", 99.0, 1)) == []
    assert rules.handle(NewEvent("smoke.alarm", "smoke-1", {})) == []


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"threshold": None}, "rule 'chiller-1-supply-high': an above rule needs a threshold"),
        ({"point": None}, "needs the point it watches"),
        ({"command_point": "plc/x"}, "for mismatch rules only"),
        ({"hysteresis": -1}, "greater than or equal to 0"),
        ({"kind": "sideways"}, "kind"),
        ({"severity": "apocalyptic"}, "severity"),
        ({"unknown_field": 1}, "extra"),
    ],
)
def test_threshold_rule_config_errors(kw, message):
    with pytest.raises(ValidationError, match=message):
        chw_high(**kw)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"feedback_point": None},
            "rule 'pump-2-run': a mismatch rule needs both command_point and feedback_point",
        ),
        ({"command_point": None}, "needs both"),
        ({"feedback_point": "plc/pump2_cmd"}, "the same point"),
        ({"threshold": 1.0}, "do not apply"),
        ({"command_point": "no-slash"}, "pattern"),
    ],
)
def test_mismatch_rule_config_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        pump_mismatch(**kw)


def test_check_rules_names_duplicates_and_unknown_points():
    with pytest.raises(ValueError, match="rule 'chiller-1-supply-high' is configured twice"):
        check_rules([chw_high(), chw_high()])
    with pytest.raises(ValueError, match="configured twice"):
        EquipmentRules([chw_high(), chw_high()], Emitted())
    with pytest.raises(
        ValueError, match="rule 'pump-2-run': no configured device has the point 'plc/pump2_run'"
    ):
        check_rules([chw_high(), pump_mismatch()], {"plant/chw_supply", "plc/pump2_cmd"})
    check_rules([chw_high(), pump_mismatch()], {"plant/chw_supply", "plc/pump2_cmd", "plc/pump2_run"})


def test_clear_after_defaults_to_min_duration():
    assert chw_high(clear_after_s=None, min_duration_s=45).clear_after == 45
    assert chw_high(clear_after_s=0).clear_after == 0


# ------------------------------------------------------------------ run() with real time


async def test_run_completes_a_duration_on_a_real_short_timer():
    emitted = Emitted()
    rules = EquipmentRules([chw_high(min_duration_s=0.05, clear_after_s=0.05)], emitted, poll_s=5.0)
    task = asyncio.create_task(rules.run())
    try:
        await until(lambda: rules._wake is not None, "run() to start")
        assert rules.handle(reading(12.0)) == []
        # Woken by the pending fault, not by the 5 s poll.
        await until(lambda: kinds(emitted.events) == ["equipment.fault"], "the fault", within=2)
        rules.handle(reading(7.0))
        await until(
            lambda: kinds(emitted.events) == ["equipment.fault", "equipment.fault_cleared"],
            "the clear",
            within=2,
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
