"""Sensors as meanings: readings of mapped points become smoke, intrusion, door, run and meter events;
an unreadable point is a fault, never quiet."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.base import Reading, RecordingSink
from drivers.sensors import SensorConfig, SensorSink
from protocols.events import Lane, NewEvent, lane_of


def reading(point: str, value: object, t: int = 1_000, quality: str = "good") -> NewEvent:
    dev, name = point.split("/")
    return Reading(dev, name, value, t, quality=quality).event()  # type: ignore[arg-type]


def sensors(*cfgs: dict) -> list[SensorConfig]:
    return [SensorConfig.model_validate(c) for c in cfgs]


SMOKE = {
    "name": "smoke-3f-stair",
    "meaning": "smoke",
    "point": "io-1/di_0",
    "zone": "3F",
    "fire_system": True,
}


async def test_smoke_alarm_once_and_clear_and_lane() -> None:
    rec = RecordingSink()
    s = SensorSink(rec, sensors(SMOKE))
    await s.emit([reading("io-1/di_0", False)])
    await s.emit([reading("io-1/di_0", True, 2000)])
    await s.emit([reading("io-1/di_0", True, 3000)])  # still in alarm: no second alarm
    await s.emit([reading("io-1/di_0", False, 4000)])
    kinds = [e.kind for e in rec.events if e.kind != "telemetry.point"]
    assert kinds == ["smoke.clear", "smoke.alarm", "smoke.clear"]
    alarm = rec.of_kind("smoke.alarm")[0]
    assert alarm.source == "smoke-3f-stair" and alarm.time_ms == 2000
    assert alarm.data["zone"] == "3F" and alarm.data["fire_system"] is True
    assert lane_of(alarm.kind) is Lane.LIFE_SAFETY
    # The meaning goes ahead of the reading it came from.
    i = rec.events.index(alarm)
    assert rec.events[i + 1].kind == "telemetry.point"


async def test_unreadable_detector_is_a_fault_never_quiet() -> None:
    rec = RecordingSink()
    s = SensorSink(rec, sensors(SMOKE))
    await s.emit([reading("io-1/di_0", False)])
    await s.emit([NewEvent("device.offline", "io-1", {"family": "modbus", "reason": "timeout"})])
    await s.emit([NewEvent("device.offline", "io-1", {"family": "modbus", "reason": "timeout"})])
    faults = rec.of_kind("device.fault")
    assert len(faults) == 1 and faults[0].data["fault"] == "unreadable"
    assert faults[0].source == "smoke-3f-stair"
    # Back: the fault clears, and the state is read afresh (clear again, since it was unknown).
    await s.emit([reading("io-1/di_0", False, 5000)])
    assert [e.kind for e in rec.events[-3:]] == ["device.fault_cleared", "smoke.clear", "telemetry.point"]


async def test_stale_reading_is_unreadable() -> None:
    rec = RecordingSink()
    s = SensorSink(rec, sensors(SMOKE))
    await s.emit([reading("io-1/di_0", None, quality="stale")])
    assert rec.of_kind("device.fault")[0].data["fault"] == "unreadable"
    assert not rec.of_kind("smoke.clear")


async def test_normally_closed_pir_and_door_contact() -> None:
    rec = RecordingSink()
    s = SensorSink(
        rec,
        sensors(
            {"name": "pir-b1", "meaning": "pir", "point": "io-1/di_1", "zone": "B1", "active": False},
            {"name": "dc-lobby", "meaning": "door_contact", "point": "io-1/di_2", "door": "door-lobby"},
        ),
    )
    await s.emit([reading("io-1/di_1", True), reading("io-1/di_2", False)])
    await s.emit([reading("io-1/di_1", False), reading("io-1/di_2", True)])
    kinds = [e.kind for e in rec.events if e.kind != "telemetry.point"]
    assert kinds == ["intrusion.clear", "door.closed", "intrusion.detected", "door.opened"]
    assert rec.of_kind("door.opened")[0].data["door"] == "door-lobby"


async def test_meter_use_rollover_and_backwards() -> None:
    rec = RecordingSink()
    s = SensorSink(
        rec,
        sensors(
            {"name": "m-101", "meaning": "meter", "point": "m/energy", "unit": "kWh", "rollover": 100000}
        ),
    )
    for v in (99990.0, 99998.5, 3.5, 10.0, 2.0):
        await s.emit([reading("m/energy", v)])
    uses = [e.data.get("use") for e in rec.of_kind("meter.reading")]
    assert uses == [None, 8.5, 5.0, 6.5]
    assert rec.of_kind("meter.reading")[2].data["rollover"] is True
    fault = rec.of_kind("device.fault")[0]
    assert fault.data["fault"] == "counter_backwards" and fault.source == "m-101"


async def test_run_hours_and_starts_survive_a_restart(tmp_path: Path) -> None:
    cfg = sensors({"name": "pump-1-run", "meaning": "run_signal", "point": "p/run", "asset": "PUMP-1"})
    rec = RecordingSink()
    s = SensorSink(rec, cfg, state_dir=tmp_path)
    await s.emit([reading("p/run", True, 1_000)])
    await s.emit([reading("p/run", False, 3_601_000)])
    await s.emit([reading("p/run", True, 4_000_000)])
    last = rec.of_kind("equipment.status")[-1].data
    assert last == {**last, "running": True, "starts": 2, "run_hours": 1.0, "asset": "PUMP-1"}
    # A restart under a running machine is not a new start.
    rec2 = RecordingSink()
    s2 = SensorSink(rec2, cfg, state_dir=tmp_path)
    await s2.emit([reading("p/run", True, 4_100_000)])
    assert rec2.of_kind("equipment.status")[0].data["starts"] == 2


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ValidationError, match="door"):
        SensorConfig.model_validate({"name": "dc", "meaning": "door_contact", "point": "a/b"})
    with pytest.raises(ValidationError, match="point"):
        SensorConfig.model_validate({"name": "s", "meaning": "smoke", "point": "no-slash"})
    with pytest.raises(ValidationError, match="rollover"):
        SensorConfig.model_validate({"name": "s", "meaning": "smoke", "point": "a/b", "rollover": 10})


async def test_life_safety_states_and_fault_quality() -> None:
    rec = RecordingSink()
    s = SensorSink(
        rec,
        sensors({"name": "sd-1", "meaning": "smoke", "point": "ahu/sd1", "active": ["alarm", "pre-alarm"]}),
    )
    await s.emit([reading("ahu/sd1", "quiet")])
    await s.emit([reading("ahu/sd1", "pre-alarm")])
    await s.emit([reading("ahu/sd1", "alarm")])  # still active: one alarm
    await s.emit([reading("ahu/sd1", "alarm", quality="fault")])
    kinds = [e.kind for e in rec.events if e.kind != "telemetry.point"]
    assert kinds == ["smoke.clear", "smoke.alarm", "device.fault"]
