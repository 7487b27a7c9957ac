"""Intrusion zones on a fake clock: delays, cross-zoning, bypass, supervision, schedules, restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from drivers.base import RecordingSink, point_event
from drivers.sensors import Meaning, SensorConfig, SensorSink
from edge.intrusion import (
    STATE_FILE,
    ArmRefused,
    Intrusion,
    IntrusionZoneConfig,
    UnknownSensor,
    UnknownZone,
    check_intrusion_zones,
)
from protocols.access import Interval
from protocols.events import NewEvent
from tests.support.waits import until

SITE = timezone(timedelta(hours=8))
FRIDAY_EVENING = datetime(2026, 5, 8, 21, 0, tzinfo=SITE)  # a Friday


class FakeTime:
    """One clock for both: monotonic seconds and the site's wall time move together."""

    def __init__(self, wall: datetime = FRIDAY_EVENING) -> None:
        self.mono = 1000.0
        self.local = wall

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> datetime:
        return self.local

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.local += timedelta(seconds=seconds)

    def set_wall(self, local: datetime) -> None:
        self.advance((local - self.local).total_seconds())


class Emitted:
    def __init__(self) -> None:
        self.events: list[NewEvent] = []

    async def __call__(self, events: Sequence[NewEvent]) -> None:
        self.events.extend(events)


def zone(**kw: Any) -> IntrusionZoneConfig:
    base: dict[str, Any] = {
        "name": "office",
        "sensors": ["pir-entrance", "pir-hall", "pir-store"],
        "entry_sensors": ["pir-entrance"],
        "entry_delay_s": 30,
        "exit_delay_s": 60,
    }
    base.update(kw)
    return IntrusionZoneConfig(**base)


def make(
    tmp_path: Path, clock: FakeTime, *zones: IntrusionZoneConfig, holidays: set[date] | None = None
) -> Intrusion:
    return Intrusion(
        zones or [zone()],
        Emitted(),
        tmp_path,
        monotonic=clock.monotonic,
        wall=clock.wall,
        holidays=lambda: holidays or set(),
    )


def detected(sensor: str, zone: str = "office") -> NewEvent:
    data = {"sensor": sensor, "meaning": "pir", "point": f"io/{sensor}", "zone": zone}
    return NewEvent("intrusion.detected", sensor, data, time_ms=1)


def unreadable(sensor: str) -> NewEvent:
    data = {"sensor": sensor, "meaning": "pir", "point": f"io/{sensor}", "fault": "unreadable", "detail": "x"}
    return NewEvent("device.fault", sensor, data)


def readable(sensor: str) -> NewEvent:
    data = {"sensor": sensor, "meaning": "pir", "point": f"io/{sensor}", "fault": "unreadable"}
    return NewEvent("device.fault_cleared", sensor, data)


def kinds(events: Sequence[NewEvent]) -> list[str]:
    return [e.kind for e in events]


def armed(ix: Intrusion, clock: FakeTime, name: str = "office") -> None:
    ix.arm(name, "alice")
    clock.advance(ix.zones[name].cfg.exit_delay_s)
    assert kinds(ix.tick()) == ["intrusion.armed"]


# ------------------------------------------------------------------ arming, delays, alarms


def test_arm_runs_the_exit_delay_then_arms(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    out = ix.arm("office", "alice")
    assert kinds(out) == ["intrusion.arming"]
    e = out[0]
    assert e.source == "office"
    assert e.data["zone"] == "office" and e.data["state"] == "exit_delay" and e.data["by"] == "alice"
    assert e.data["exit_delay_s"] == 60 and e.data["bypassed"] == []
    assert ix.status()["office"]["state"] == "exit_delay"

    clock.advance(59.9)
    assert ix.tick() == []
    clock.advance(0.1)
    out = ix.tick()
    assert kinds(out) == ["intrusion.armed"]
    assert out[0].data["state"] == "armed" and out[0].data["by"] == "alice"
    assert ix.status()["office"]["state"] == "armed"
    assert ix.arm("office", "bob") == []  # already armed: nothing changes


def test_detections_during_the_exit_delay_are_the_people_leaving(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    ix.arm("office", "alice")
    clock.advance(10)
    assert ix.handle(detected("pir-hall")) == []
    assert ix.handle(detected("pir-entrance")) == []
    clock.advance(50)
    assert kinds(ix.tick()) == ["intrusion.armed"]


def test_entry_sensor_starts_the_entry_delay_and_no_disarm_means_alarm(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    armed(ix, clock)
    out = ix.handle(detected("pir-entrance"))
    assert kinds(out) == ["intrusion.entry_delay"]
    assert out[0].data["sensor"] == "pir-entrance" and out[0].data["entry_delay_s"] == 30
    assert out[0].data["state"] == "entry_delay"

    clock.advance(29)
    assert ix.tick() == []
    assert ix.handle(detected("pir-entrance")) == []  # the entry route, still walking in
    clock.advance(1)
    out = ix.tick()
    assert kinds(out) == ["intrusion.alarm"]
    assert out[0].data["sensors"] == ["pir-entrance"]
    assert out[0].data["cause"] == "entry_delay_expired"
    assert ix.status()["office"]["state"] == "alarm"

    out = ix.disarm("office", "guard-7")
    assert kinds(out) == ["intrusion.disarmed"]
    assert out[0].data == {
        "zone": "office",
        "state": "disarmed",
        "by": "guard-7",
        "was": "alarm",
        "bypassed": [],
        "faulted": [],
    }


def test_disarm_within_the_entry_delay_gives_no_alarm(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    armed(ix, clock)
    ix.handle(detected("pir-entrance"))
    clock.advance(20)
    out = ix.disarm("office", "alice")
    assert kinds(out) == ["intrusion.disarmed"]
    assert out[0].data["was"] == "entry_delay" and out[0].data["by"] == "alice"
    clock.advance(60)
    assert ix.tick() == []
    assert ix.status()["office"]["state"] == "disarmed"
    assert ix.status()["office"]["by"] == "alice"


def test_a_disarm_after_the_entry_delay_ran_out_still_reports_the_alarm(tmp_path):
    # The tick that raises the alarm may be a moment late; the disarm must not hide it.
    clock = FakeTime()
    ix = make(tmp_path, clock)
    armed(ix, clock)
    ix.handle(detected("pir-entrance"))
    clock.advance(31)
    assert kinds(ix.disarm("office", "alice")) == ["intrusion.alarm", "intrusion.disarmed"]


def test_a_non_entry_sensor_while_armed_is_an_alarm_at_once(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    armed(ix, clock)
    out = ix.handle(detected("pir-store"))
    assert kinds(out) == ["intrusion.alarm"]
    assert out[0].data["sensors"] == ["pir-store"] and out[0].data["cause"] == "detection"
    assert out[0].time_ms == 1  # when the PIR saw it, not when the event was made
    assert ix.handle(detected("pir-hall")) == []  # already in alarm


def test_another_sensor_during_the_entry_delay_is_an_alarm(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    armed(ix, clock)
    ix.handle(detected("pir-entrance"))
    clock.advance(5)
    out = ix.handle(detected("pir-store"))
    assert kinds(out) == ["intrusion.alarm"]
    assert out[0].data["sensors"] == ["pir-entrance", "pir-store"]
    assert out[0].data["entry_sensor"] == "pir-entrance"


def test_detections_while_disarmed_do_nothing(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    assert ix.handle(detected("pir-store")) == []
    assert ix.handle(detected("pir-elsewhere")) == []  # not in any zone
    assert ix.disarm("office", "alice") == []  # already disarmed


def test_a_zero_exit_delay_arms_at_once(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock, zone(exit_delay_s=0))
    assert kinds(ix.arm("office", "alice")) == ["intrusion.arming", "intrusion.armed"]


def test_unknown_zone_and_sensor_are_named(tmp_path):
    ix = make(tmp_path, FakeTime())
    with pytest.raises(UnknownZone, match="no intrusion zone 'lobby'"):
        ix.arm("lobby", "alice")
    with pytest.raises(KeyError):
        ix.disarm("lobby", "alice")
    with pytest.raises(UnknownSensor, match="'pir-9' is not in intrusion zone 'office'"):
        ix.bypass("office", "pir-9", True, "alice")


# ------------------------------------------------------------------ cross-zoning


def test_cross_zone_one_sensor_alone_is_unconfirmed(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock, zone(cross_zone=True, cross_window_s=60))
    armed(ix, clock)
    out = ix.handle(detected("pir-store"))
    assert kinds(out) == ["intrusion.unconfirmed"]
    assert out[0].data["sensor"] == "pir-store" and out[0].data["state"] == "armed"
    clock.advance(10)
    # The same sensor again is still one sensor.
    assert kinds(ix.handle(detected("pir-store"))) == ["intrusion.unconfirmed"]
    assert ix.status()["office"]["state"] == "armed"


def test_cross_zone_two_sensors_within_the_window_alarm(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock, zone(cross_zone=True, cross_window_s=60))
    armed(ix, clock)
    ix.handle(detected("pir-store"))
    clock.advance(60)  # the window is inclusive
    out = ix.handle(detected("pir-hall"))
    assert kinds(out) == ["intrusion.alarm"]
    assert out[0].data["sensors"] == ["pir-store", "pir-hall"] and out[0].data["cause"] == "cross_zone"


def test_cross_zone_two_sensors_outside_the_window_do_not_alarm(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock, zone(cross_zone=True, cross_window_s=60))
    armed(ix, clock)
    ix.handle(detected("pir-store"))
    clock.advance(60.5)
    assert kinds(ix.handle(detected("pir-hall"))) == ["intrusion.unconfirmed"]
    assert ix.status()["office"]["state"] == "armed"


def test_cross_zone_entry_sensor_and_another_within_the_window_alarm_during_the_entry_delay(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock, zone(cross_zone=True, cross_window_s=10, entry_delay_s=30))
    armed(ix, clock)
    assert kinds(ix.handle(detected("pir-entrance"))) == ["intrusion.entry_delay"]
    clock.advance(11)  # outside the window: one sensor, and the entry delay runs on
    assert kinds(ix.handle(detected("pir-store"))) == ["intrusion.unconfirmed"]
    clock.advance(5)
    out = ix.handle(detected("pir-hall"))  # pir-store 5 s ago: two sensors
    assert kinds(out) == ["intrusion.alarm"]
    assert out[0].data["sensors"] == ["pir-store", "pir-hall"]


def test_cross_zone_entry_delay_running_out_is_still_an_alarm(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock, zone(cross_zone=True))
    armed(ix, clock)
    ix.handle(detected("pir-entrance"))
    clock.advance(30)
    assert kinds(ix.tick()) == ["intrusion.alarm"]


# ------------------------------------------------------------------ bypass


def test_bypass_is_reported_and_the_sensor_ignored(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    out = ix.bypass("office", "pir-store", True, "tech-1")
    assert kinds(out) == ["intrusion.bypassed"]
    assert out[0].data["sensor"] == "pir-store" and out[0].data["by"] == "tech-1"
    assert out[0].data["bypassed"] == ["pir-store"]
    assert ix.bypass("office", "pir-store", True, "tech-1") == []  # already bypassed

    arming = ix.arm("office", "alice")
    assert arming[0].data["bypassed"] == ["pir-store"]
    clock.advance(60)
    assert ix.tick()[0].data["bypassed"] == ["pir-store"]
    assert ix.handle(detected("pir-store")) == []
    assert ix.status()["office"]["bypassed"] == ["pir-store"]

    out = ix.bypass("office", "pir-store", False, "tech-1")
    assert kinds(out) == ["intrusion.bypass_ended"]
    assert out[0].data["bypassed"] == [] and out[0].data["state"] == "armed"
    assert kinds(ix.handle(detected("pir-store"))) == ["intrusion.alarm"]


# ------------------------------------------------------------------ supervision


def test_a_sensor_unreadable_while_armed_raises_a_supervision_fault_at_once(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    armed(ix, clock)
    out = ix.handle(unreadable("pir-hall"))
    assert kinds(out) == ["intrusion.supervision_fault"]
    assert out[0].data["sensor"] == "pir-hall" and out[0].data["sensor_bypassed"] is False
    assert out[0].data["faulted"] == ["pir-hall"] and out[0].data["state"] == "armed"
    assert ix.status()["office"]["faulted"] == ["pir-hall"]
    assert ix.handle(unreadable("pir-hall")) == []  # raised once

    out = ix.handle(readable("pir-hall"))
    assert kinds(out) == ["intrusion.supervision_restored"]
    assert out[0].data["faulted"] == []


def test_a_bypassed_sensor_unreadable_while_arming_is_still_reported_flagged_bypassed(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    ix.bypass("office", "pir-hall", True, "tech-1")
    ix.arm("office", "alice")  # exit delay: supervised already
    out = ix.handle(unreadable("pir-hall"))
    assert kinds(out) == ["intrusion.supervision_fault"]
    assert out[0].data["sensor_bypassed"] is True


def test_a_sensor_unreadable_while_disarmed_is_not_a_supervision_fault(tmp_path):
    ix = make(tmp_path, FakeTime())
    assert ix.handle(unreadable("pir-hall")) == []
    assert ix.handle(readable("pir-hall")) == []
    # A device's own fault (no sensor named) or another fault is not this module's business.
    assert ix.handle(NewEvent("device.fault", "io", {"family": "modbus", "fault": "bad_frame"})) == []


def test_arming_with_an_unreadable_sensor_is_refused_naming_it(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    ix.handle(unreadable("pir-hall"))
    with pytest.raises(ArmRefused, match="pir-hall") as refused:
        ix.arm("office", "alice")
    assert refused.value.sensors == ["pir-hall"]
    ev = refused.value.event
    assert ev.kind == "intrusion.arm_refused" and ev.source == "office"
    assert ev.data["sensors"] == ["pir-hall"] and ev.data["by"] == "alice"
    assert ev.data["state"] == "disarmed"
    assert ix.status()["office"]["state"] == "disarmed"

    # Bypassed, it may be armed; the unreadable sensor is supervised from the arming on.
    ix.bypass("office", "pir-hall", True, "alice")
    out = ix.arm("office", "alice")
    assert kinds(out) == ["intrusion.arming", "intrusion.supervision_fault"]
    assert out[1].data["sensor_bypassed"] is True


def test_arm_refuses_faulted_off_arms_and_reports_the_fault(tmp_path):
    ix = make(tmp_path, FakeTime(), zone(arm_refuses_faulted=False))
    ix.handle(unreadable("pir-hall"))
    out = ix.arm("office", "alice")
    assert kinds(out) == ["intrusion.arming", "intrusion.supervision_fault"]
    assert out[1].data["sensor_bypassed"] is False


async def test_the_contract_with_sensor_sink(tmp_path):
    """The events drivers/sensors.py really makes drive the zone: detection and unreadable."""
    sensors = [
        SensorConfig(name=n, meaning=Meaning.PIR, point=f"io/{n}", zone="office")
        for n in ("pir-entrance", "pir-hall", "pir-store")
    ]
    check_intrusion_zones([zone()], sensors)
    inner = RecordingSink()
    sink = SensorSink(inner, sensors)
    clock = FakeTime()
    ix = make(tmp_path, clock)
    armed(ix, clock)

    async def feed(*events: NewEvent) -> list[NewEvent]:
        inner.events.clear()
        await sink.emit(list(events))
        out: list[NewEvent] = []
        for e in inner.events:
            out.extend(ix.handle(e))
        return out

    assert await feed(point_event("io/pir-hall", False, 1)) == []
    assert kinds(await feed(point_event("io/pir-hall", None, 2, quality="stale"))) == [
        "intrusion.supervision_fault"
    ]
    assert kinds(await feed(point_event("io/pir-hall", False, 3))) == ["intrusion.supervision_restored"]
    out = await feed(point_event("io/pir-store", True, 4))
    assert kinds(out) == ["intrusion.alarm"] and out[0].data["sensors"] == ["pir-store"]


# ------------------------------------------------------------------ schedules


NIGHTS = [Interval(start="22:00", end="06:00")]


def test_the_schedule_arms_and_disarms_across_midnight(tmp_path):
    clock = FakeTime(datetime(2026, 5, 8, 21, 59, tzinfo=SITE))
    ix = make(tmp_path, clock, zone(armed_schedule=NIGHTS))
    assert ix.tick() == []
    assert ix.status()["office"]["schedule_open"] is False

    clock.set_wall(datetime(2026, 5, 8, 22, 0, tzinfo=SITE))
    out = ix.tick()
    assert kinds(out) == ["intrusion.arming"] and out[0].data["by"] == "schedule"
    clock.advance(60)
    assert kinds(ix.tick()) == ["intrusion.armed"]

    clock.set_wall(datetime(2026, 5, 9, 0, 30, tzinfo=SITE))  # past midnight: still armed
    assert ix.tick() == []
    clock.set_wall(datetime(2026, 5, 9, 5, 59, tzinfo=SITE))
    assert ix.tick() == []
    assert ix.status()["office"]["state"] == "armed"

    clock.set_wall(datetime(2026, 5, 9, 6, 0, tzinfo=SITE))
    out = ix.tick()
    assert kinds(out) == ["intrusion.disarmed"]
    assert out[0].data["by"] == "schedule" and out[0].data["was"] == "armed"


def test_a_command_overrides_the_schedule_until_its_next_boundary(tmp_path):
    clock = FakeTime(datetime(2026, 5, 8, 22, 0, tzinfo=SITE))
    ix = make(tmp_path, clock, zone(armed_schedule=NIGHTS))
    assert kinds(ix.tick()) == ["intrusion.arming"]  # first look: inside the window
    clock.set_wall(datetime(2026, 5, 8, 23, 0, tzinfo=SITE))
    ix.tick()
    assert kinds(ix.disarm("office", "night-cleaner")) == ["intrusion.disarmed"]
    clock.set_wall(datetime(2026, 5, 9, 3, 0, tzinfo=SITE))
    assert ix.tick() == []  # stays disarmed inside the window
    clock.set_wall(datetime(2026, 5, 9, 6, 0, tzinfo=SITE))
    assert ix.tick() == []  # the window closes: already disarmed

    clock.set_wall(datetime(2026, 5, 9, 12, 0, tzinfo=SITE))
    assert kinds(ix.arm("office", "alice")) == ["intrusion.arming"]  # armed by hand at noon
    clock.set_wall(datetime(2026, 5, 9, 21, 0, tzinfo=SITE))
    assert kinds(ix.tick()) == ["intrusion.armed"]
    clock.set_wall(datetime(2026, 5, 9, 22, 0, tzinfo=SITE))
    assert ix.tick() == []  # the window opens: already armed
    clock.set_wall(datetime(2026, 5, 10, 6, 0, tzinfo=SITE))
    assert kinds(ix.tick()) == ["intrusion.disarmed"]


def test_holidays_use_the_holiday_intervals(tmp_path):
    clock = FakeTime(datetime(2026, 5, 1, 9, 0, tzinfo=SITE))  # a Friday, and a holiday
    all_day = [Interval(start="00:00", end="24:00")]
    ix = make(
        tmp_path,
        clock,
        zone(armed_schedule=NIGHTS, holiday_intervals=all_day),
        holidays={date(2026, 5, 1)},
    )
    assert kinds(ix.tick()) == ["intrusion.arming"]


def test_a_refused_schedule_arming_is_reported_once_and_retried_in_the_window(tmp_path):
    clock = FakeTime(datetime(2026, 5, 8, 21, 59, tzinfo=SITE))
    ix = make(tmp_path, clock, zone(armed_schedule=NIGHTS))
    ix.tick()
    ix.handle(unreadable("pir-hall"))
    clock.set_wall(datetime(2026, 5, 8, 22, 0, tzinfo=SITE))
    out = ix.tick()
    assert kinds(out) == ["intrusion.arm_refused"]
    assert out[0].data["by"] == "schedule" and out[0].data["sensors"] == ["pir-hall"]
    clock.advance(30)
    assert ix.tick() == []  # not reported again
    ix.handle(readable("pir-hall"))
    out = ix.tick()
    assert kinds(out) == ["intrusion.arming"] and out[0].data["by"] == "schedule"


# ------------------------------------------------------------------ restarts


def test_an_armed_zone_stays_armed_after_a_restart(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    ix.bypass("office", "pir-store", True, "tech-1")
    armed(ix, clock)

    clock.advance(300)
    again = make(tmp_path, clock)
    st = again.status()["office"]
    assert st["state"] == "armed" and st["by"] == "alice" and st["bypassed"] == ["pir-store"]
    out = again.startup_events()
    assert kinds(out) == ["intrusion.armed"] and out[0].data["restored"] is True
    assert again.tick() == []  # reported once
    assert again.handle(detected("pir-store")) == []  # still bypassed
    assert kinds(again.handle(detected("pir-hall"))) == ["intrusion.alarm"]


def test_a_delay_running_at_a_restart_starts_again_in_full(tmp_path):
    clock = FakeTime()
    ix = make(tmp_path, clock)
    ix.arm("office", "alice")
    clock.advance(50)
    again = make(tmp_path, clock)
    assert kinds(again.tick()) == ["intrusion.arming"]  # the restore report, via the first tick
    clock.advance(59)
    assert again.tick() == []
    clock.advance(1)
    assert kinds(again.tick()) == ["intrusion.armed"]


def test_a_schedule_boundary_crossed_while_down_is_applied_at_start(tmp_path):
    clock = FakeTime(datetime(2026, 5, 8, 22, 0, tzinfo=SITE))
    ix = make(tmp_path, clock, zone(armed_schedule=NIGHTS))
    ix.tick()
    clock.advance(60)
    ix.tick()
    assert ix.status()["office"]["state"] == "armed"

    clock.set_wall(datetime(2026, 5, 9, 7, 0, tzinfo=SITE))  # the window closed while down
    again = make(tmp_path, clock, zone(armed_schedule=NIGHTS))
    out = again.tick()
    assert kinds(out) == ["intrusion.armed", "intrusion.disarmed"]
    assert out[1].data["by"] == "schedule"


def test_a_disarm_by_command_survives_a_restart_inside_the_window(tmp_path):
    clock = FakeTime(datetime(2026, 5, 8, 22, 0, tzinfo=SITE))
    ix = make(tmp_path, clock, zone(armed_schedule=NIGHTS))
    ix.tick()
    ix.disarm("office", "night-cleaner")
    clock.advance(600)
    again = make(tmp_path, clock, zone(armed_schedule=NIGHTS))
    assert again.tick() == []
    assert again.status()["office"]["state"] == "disarmed"


@pytest.mark.parametrize(
    "content",
    [
        '{"version": 1, "zones": {"office": {"state": "arm',  # torn mid-write
        "",
        '{"version": 1, "zones": {"office": {"state": "sleeping", "by": "", "since_ms": 0, "bypassed": {}}}}',
        '{"version": 1, "zones": []}',
    ],
)
def test_a_torn_state_file_starts_disarmed_and_says_so(tmp_path, content):
    (tmp_path / STATE_FILE).write_text(content)
    ix = make(tmp_path, FakeTime())
    assert ix.status()["office"]["state"] == "disarmed"
    out = ix.startup_events()
    assert kinds(out) == ["intrusion.disarmed"]
    assert out[0].data["by"] == "restart" and "unreadable" in out[0].data["reason"]
    # The next change writes a good file again.
    ix.arm("office", "alice")
    assert json.loads((tmp_path / STATE_FILE).read_text())["zones"]["office"]["state"] == "exit_delay"


def test_no_state_dir_keeps_state_in_memory_only(tmp_path):
    clock = FakeTime()
    ix = Intrusion([zone()], Emitted(), None, monotonic=clock.monotonic, wall=clock.wall)
    assert kinds(ix.arm("office", "alice")) == ["intrusion.arming"]
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ config


def pir(name: str, meaning: str = "pir") -> SensorConfig:
    return SensorConfig(name=name, meaning=Meaning(meaning), point=f"io/{name}")


SENSORS = [pir("pir-entrance"), pir("pir-hall"), pir("pir-store"), pir("smoke-1", "smoke")]


def test_check_accepts_a_good_config():
    check_intrusion_zones(
        [zone(), zone(name="yard", sensors=["pir-x"], entry_sensors=[])], [*SENSORS, pir("pir-x")]
    )


@pytest.mark.parametrize(
    ("zones", "message"),
    [
        ([zone(sensors=["pir-entrance", "pir-9"])], "zone 'office': no sensor 'pir-9'"),
        (
            [zone(sensors=["pir-entrance", "smoke-1"])],
            "zone 'office': sensor 'smoke-1' is a smoke, not a pir",
        ),
        (
            [zone(), zone(name="yard", sensors=["pir-hall"], entry_sensors=[])],
            "zone 'yard': sensor 'pir-hall' is already in zone 'office'",
        ),
        ([zone(), zone()], "zone 'office' is configured twice"),
    ],
)
def test_check_names_the_zone_and_sensor(zones, message):
    with pytest.raises(ValueError, match=message):
        check_intrusion_zones(zones, SENSORS)


def test_zone_names_may_have_inner_spaces_only():
    assert zone(name="plant room").name == "plant room"
    for bad in (" lobby", "lobby ", "", "a/b"):
        with pytest.raises(ValueError, match="name"):
            zone(name=bad)


def test_entry_sensors_must_be_sensors_of_the_zone():
    with pytest.raises(ValueError, match="zone 'office': entry sensor 'pir-door' is not one of its sensors"):
        zone(entry_sensors=["pir-door"])
    with pytest.raises(ValueError, match="extra"):
        zone(bogus=1)


def test_the_intrusion_object_refuses_overlapping_zones(tmp_path):
    with pytest.raises(ValueError, match="already in zone"):
        make(tmp_path, FakeTime(), zone(), zone(name="yard", sensors=["pir-hall"], entry_sensors=[]))


# ------------------------------------------------------------------ run() with real time


async def test_run_arms_on_a_real_short_exit_delay(tmp_path):
    emitted = Emitted()
    ix = Intrusion([zone(exit_delay_s=0.05, entry_delay_s=0.05)], emitted, tmp_path, poll_s=5.0)
    task = asyncio.create_task(ix.run())
    try:
        await until(lambda: ix._wake is not None, "run() to start")
        assert kinds(ix.arm("office", "alice")) == ["intrusion.arming"]
        # Woken by the arming, not by the 5 s poll.
        await until(lambda: "intrusion.armed" in kinds(emitted.events), "armed", within=2)
        ix.handle(detected("pir-entrance"))
        await until(lambda: "intrusion.alarm" in kinds(emitted.events), "alarm", within=2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
