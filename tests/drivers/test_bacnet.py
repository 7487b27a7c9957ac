"""The BACnet/IP driver against the simulated device over real UDP on loopback: reads of every
object type, COV notifications and their renewal, a device that refuses COV, a device that stops
answering and comes back, object faults, and writes refused to fire-system points.

The gateway binds 127.0.0.1 and each simulated device another 127.x address, every one on its own
free port (bacpypes3 takes a 127.x address on its own port for itself). Waits are bounded waits
on conditions, never sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from drivers.bacnet import BacnetDevice, BacnetDriver, BacnetLocal, BindError, bind_udp
from drivers.base import FireSystemWriteRefused, RecordingSink
from drivers.sim.bacnet_device import AIR_HANDLER, BacnetDeviceSim, free_udp_port
from protocols.configuration import ConfigError
from protocols.events import NewEvent
from tests.support.waits import until as wait_until

GATEWAY_HOST = "127.0.0.1"
FIRE = {"life-safety-point", "life-safety-zone"}


def device_config(sim: BacnetDeviceSim, **kw: Any) -> BacnetDevice:
    objects = [
        {"name": o.name, "type": o.type, "instance": o.instance, "fire_system": o.type in FIRE}
        for o in AIR_HANDLER
    ]
    return BacnetDevice.model_validate(
        {
            "name": sim.name,
            "address": sim.address,
            "device_instance": sim.device_instance,
            "objects": objects,
            **kw,
        }
    )


def fast_local() -> BacnetLocal:
    # Short APDU timeouts so an unanswering device is declared offline within a second.
    return BacnetLocal(
        bind=f"{GATEWAY_HOST}:{free_udp_port(GATEWAY_HOST)}", apdu_timeout_s=0.3, apdu_retries=1
    )


@asynccontextmanager
async def simulated(
    host: str = "127.0.0.2", name: str = "ahu-1", instance: int = 1001
) -> AsyncIterator[BacnetDeviceSim]:
    async with BacnetDeviceSim(host, free_udp_port(host), instance, name) as sim:
        yield sim


@asynccontextmanager
async def running(driver: BacnetDriver) -> AsyncIterator[BacnetDriver]:
    task = asyncio.create_task(driver.run())
    try:
        await wait_until(lambda: driver.started.is_set() or task.done(), "the driver to bind")
        if task.done():
            task.result()  # raise what stopped it
        yield driver
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


class Events:
    """Queries over a RecordingSink."""

    def __init__(self, sink: RecordingSink) -> None:
        self.sink = sink

    def readings(self, source: str) -> list[NewEvent]:
        return [e for e in self.sink.events if e.kind == "telemetry.point" and e.source == source]

    def last(self, source: str) -> NewEvent | None:
        r = self.readings(source)
        return r[-1] if r else None

    def quality(self, source: str) -> str | None:
        e = self.last(source)
        return e.data["quality"] if e is not None else None

    def value_is(self, source: str, value: Any) -> NewEvent | None:
        e = self.last(source)
        return e if e is not None and e.data["value"] == value else None

    def of(self, kind: str, source: str | None = None, fault: str | None = None) -> list[NewEvent]:
        return [
            e
            for e in self.sink.events
            if e.kind == kind
            and (source is None or e.source == source)
            and (fault is None or e.data.get("fault") == fault)
        ]


async def test_reads_every_object_type() -> None:
    sink = RecordingSink()
    ev = Events(sink)
    async with simulated() as sim, running(BacnetDriver([device_config(sim)], sink, fast_local())):
        await wait_until(
            lambda: all(ev.last(f"ahu-1/{o.name}") for o in AIR_HANDLER), "a reading of every object"
        )
        expected = {
            "supply_air_temp": 16.0,  # analog-input
            "cooling_valve": 35.0,  # analog-output
            "supply_air_setpoint": 16.0,  # analog-value
            "supply_fan_status": True,  # binary-input
            "supply_fan_command": True,  # binary-output
            "occupied": True,  # binary-value
            "pir_corridor": False,  # binary-input (PIR)
            "ahu_mode": 2,  # multi-state-input
            "fan_speed": 2,  # multi-state-output
            "season": 1,  # multi-state-value
            "smoke_supply_duct": "quiet",  # life-safety-point
            "fire_zone_plantroom": "quiet",  # life-safety-zone
        }
        for name, value in expected.items():
            e = ev.last(f"ahu-1/{name}")
            assert e is not None
            assert e.data["value"] == value and type(e.data["value"]) is type(value), name
            assert e.data["quality"] == "good"
            assert e.data["status_flags"] == [] and e.data["reliability"] == "no-fault-detected"
            assert e.time_ms is not None and e.source == f"ahu-1/{name}"
        online = ev.of("device.online", "ahu-1")
        assert len(online) == 1 and sink.events.index(online[0]) == 0  # birth before any value
        # the first read is one ReadPropertyMultiple for all 15 objects, not 45 ReadProperty
        assert sim.requests["read-property-multiple"] == 1


@pytest.mark.parametrize("confirmed", [True, False], ids=["confirmed", "unconfirmed"])
async def test_cov_notifications_arrive_and_subscriptions_are_renewed(confirmed: bool) -> None:
    sink = RecordingSink()
    ev = Events(sink)
    n = len(AIR_HANDLER)
    async with simulated() as sim:
        cfg = device_config(sim, cov_lifetime_s=2, cov_confirmed=confirmed)
        async with running(BacnetDriver([cfg], sink, fast_local())) as drv:
            await wait_until(lambda: sim.active_subscriptions() == n, "every object subscribed")
            reads = sim.requests["read-property-multiple"]

            sim.set_value("supply_air_temp", 17.5)
            sim.raise_smoke("smoke_supply_duct")
            await wait_until(lambda: ev.value_is("ahu-1/supply_air_temp", 17.5), "the COV of 17.5")
            alarm = await wait_until(
                lambda: ev.value_is("ahu-1/smoke_supply_duct", "alarm"), "the smoke alarm"
            )
            assert alarm.data["status_flags"] == ["in-alarm"]

            # Past two renewals (each at half the 2 s lifetime): renewed, never expired.
            first = sim.requests["subscribe-cov"]
            await wait_until(lambda: sim.requests["subscribe-cov"] >= first + 2 * n, "two renewal rounds")
            assert sim.subscriptions_expired == 0
            assert sim.active_subscriptions() == n  # renewed in place, not duplicated
            await wait_until(lambda: drv.counters.cov_renewals >= 2 * n, "the renewals acknowledged")

            sim.set_value("supply_air_temp", 18.0)
            await wait_until(lambda: ev.value_is("ahu-1/supply_air_temp", 18.0), "a COV after renewals")
            assert sim.requests["read-property-multiple"] == reads  # by COV, never polled
            assert not ev.of("device.fault")
            assert drv.status()["devices"]["ahu-1"]["polled"] == []
        # a driver that stops cancels its subscriptions
        assert sim.requests["subscribe-cov-cancel"] == n


async def test_refused_cov_falls_back_to_polling_and_is_reported_once() -> None:
    sink = RecordingSink()
    ev = Events(sink)
    async with simulated() as sim:
        sim.refuse_cov = True
        cfg = device_config(sim, poll_interval_s=0.1)
        async with running(BacnetDriver([cfg], sink, fast_local())) as drv:
            refused = await wait_until(lambda: ev.of("device.fault", "ahu-1", "cov_refused"), "the refusal")
            assert "supply_air_temp" in refused[0].data["detail"]

            sim.set_value("supply_air_temp", 19.0)
            await wait_until(lambda: ev.value_is("ahu-1/supply_air_temp", 19.0), "the polled 19.0")
            polls = sim.requests["read-property-multiple"]
            await wait_until(lambda: sim.requests["read-property-multiple"] >= polls + 3, "three more polls")
            sim.raise_smoke("smoke_return_duct")
            await wait_until(lambda: ev.value_is("ahu-1/smoke_return_duct", "alarm"), "the polled alarm")

            assert len(ev.of("device.fault", "ahu-1", "cov_refused")) == 1
            assert sim.active_subscriptions() == 0
            assert len(drv.status()["devices"]["ahu-1"]["polled"]) == len(AIR_HANDLER)
            assert len(ev.readings("ahu-1/supply_air_temp")) == 2  # polled values are sent on change only


async def test_a_device_without_read_property_multiple_and_a_missing_object() -> None:
    sink = RecordingSink()
    ev = Events(sink)
    async with simulated() as sim:
        sim.reject_rpm = True
        cfg = device_config(sim)
        ghost = {"name": "ghost", "type": "analog-input", "instance": 99}  # not on the device
        cfg = BacnetDevice.model_validate(
            {**cfg.model_dump(), "objects": [*cfg.model_dump()["objects"], ghost]}
        )
        async with running(BacnetDriver([cfg], sink, fast_local())) as drv:
            fault = await wait_until(
                lambda: ev.of("device.fault", "ahu-1/ghost", "unreadable"), "ghost unreadable"
            )
            assert "unknown-object" in fault[0].data["detail"]
            e = ev.last("ahu-1/ghost")
            assert e is not None and e.data["value"] is None and e.data["quality"] == "fault"
            await wait_until(lambda: all(ev.last(f"ahu-1/{o.name}") for o in AIR_HANDLER), "the others read")
            assert ev.value_is("ahu-1/ahu_mode", 2)
            assert sim.requests["read-property-multiple"] == 1  # rejected once, never asked again
            assert sim.requests["read-property"] >= 3 * len(AIR_HANDLER)
            assert drv.status()["devices"]["ahu-1"]["faulted"] == ["ghost"]


async def test_dead_device_goes_offline_and_comes_back_while_the_healthy_one_carries_on() -> None:
    sink = RecordingSink()
    ev = Events(sink)
    fast = {"liveness_interval_s": 0.2, "backoff_min_s": 0.1, "backoff_max_s": 0.4}
    async with simulated("127.0.0.2", "ahu-1", 1001) as dead, simulated("127.0.0.3", "ahu-2", 1002) as live:
        devices = [device_config(dead, **fast), device_config(live, **fast)]
        async with running(BacnetDriver(devices, sink, fast_local())) as drv:
            n = len(AIR_HANDLER)
            await wait_until(
                lambda: dead.active_subscriptions() == n == live.active_subscriptions(), "subscribed"
            )

            dead.fail()
            offline = await wait_until(lambda: ev.of("device.offline", "ahu-1"), "ahu-1 offline")
            assert offline[0].data["family"] == "bacnet" and "no response" in offline[0].data["reason"]
            assert drv.status()["devices"]["ahu-1"]["state"] == "offline"

            live.set_value("return_air_temp", 24.0)  # the healthy device is not held up
            await wait_until(lambda: ev.value_is("ahu-2/return_air_temp", 24.0), "ahu-2 while ahu-1 is dead")
            retries = dead.requests["read-property"]
            dead.set_value("return_air_temp", 30.0)  # changed while unreachable

            dead.recover()
            await wait_until(
                lambda: ev.of("device.online", "ahu-1") and len(ev.of("device.online", "ahu-1")) == 2,
                "ahu-1 back",
            )
            assert dead.requests["read-property"] > retries
            # Read in full on return (the change made while it was away is not lost)...
            await wait_until(
                lambda: ev.value_is("ahu-1/return_air_temp", 30.0), "the value changed while away"
            )
            # ...and subscribed afresh: its changes arrive by COV again.
            await wait_until(lambda: dead.active_subscriptions() == n, "ahu-1 subscribed again")
            dead.set_value("return_air_temp", 31.0)
            await wait_until(lambda: ev.value_is("ahu-1/return_air_temp", 31.0), "a COV after the return")
            assert len(ev.of("device.offline", "ahu-1")) == 1  # one death, not one per retry
            assert not ev.of("device.offline", "ahu-2")


async def test_object_fault_is_reported_and_cleared() -> None:
    sink = RecordingSink()
    ev = Events(sink)
    async with simulated() as sim, running(BacnetDriver([device_config(sim)], sink, fast_local())):
        await wait_until(lambda: sim.active_subscriptions() == len(AIR_HANDLER), "every object subscribed")
        sim.set_fault("smoke_return_duct", "communicationFailure")
        fault = await wait_until(
            lambda: ev.of("device.fault", "ahu-1/smoke_return_duct", "object_fault"), "the object fault"
        )
        assert "communication-failure" in fault[0].data["detail"]
        # A detector in fault is never reported as a good "quiet".
        await wait_until(lambda: ev.quality("ahu-1/smoke_return_duct") == "fault", "a fault reading")
        e = ev.last("ahu-1/smoke_return_duct")
        assert e is not None
        assert e.data["status_flags"] == ["fault"] and e.data["reliability"] == "communication-failure"

        sim.clear_fault("smoke_return_duct")
        await wait_until(
            lambda: ev.of("device.fault_cleared", "ahu-1/smoke_return_duct", "object_fault"),
            "the fault cleared",
        )
        await wait_until(lambda: ev.quality("ahu-1/smoke_return_duct") == "good", "a good reading")
        assert len(ev.of("device.fault", "ahu-1/smoke_return_duct")) == 1


async def test_writes_are_refused_to_fire_system_points() -> None:
    sink = RecordingSink()
    ev = Events(sink)
    async with simulated() as sim, running(BacnetDriver([device_config(sim)], sink, fast_local())) as drv:
        await wait_until(lambda: ev.of("device.online", "ahu-1"), "ahu-1 online")
        with pytest.raises(FireSystemWriteRefused):
            await drv.write("ahu-1", "smoke_supply_duct", 0)
        with pytest.raises(FireSystemWriteRefused):
            await drv.write("ahu-1", "fire_zone_plantroom", 0)
        assert sim.requests["write-property"] == 0  # refused before anything was sent

        with pytest.raises(ValueError, match="no writable present-value"):
            await drv.write("ahu-1", "supply_air_temp", 1.0)
        await drv.write("ahu-1", "supply_air_setpoint", 17.0)
        await drv.write("ahu-1", "supply_fan_command", False, priority=8)
        assert sim.requests["write-property"] == 2
        assert float(sim.value("supply_air_setpoint")) == 17.0
        await wait_until(lambda: ev.value_is("ahu-1/supply_fan_command", False), "the commanded fan off")


def test_bad_config_names_the_key() -> None:
    good: dict[str, Any] = {
        "name": "ahu-1",
        "address": "127.0.0.2:47810",
        "device_instance": 1001,
        "objects": [{"name": "sat", "type": "analog-input", "instance": 1}],
    }
    sink = RecordingSink()

    def problem(device: dict[str, Any], local: dict[str, Any] | None = None) -> str:
        with pytest.raises(ConfigError) as e:
            BacnetDriver.from_config([device], sink, local)
        return str(e.value)

    obj = good["objects"][0]
    assert "bacnet.0.objects.0.type" in problem({**good, "objects": [{**obj, "type": "analog-thing"}]})
    assert "deadband only applies to analog" in problem(
        {**good, "objects": [{**obj, "type": "binary-input", "deadband": 1}]}
    )
    assert "bacnet.0.cov_lifetme_s: unknown key" in problem({**good, "cov_lifetme_s": 60})
    assert "bacnet.0.address" in problem({**good, "address": "ahu.local:47808"})
    assert "used twice" in problem({**good, "objects": [obj, {**obj, "instance": 2}]})
    assert "configured twice" in problem({**good, "objects": [obj, {**obj, "name": "other"}]})
    assert "gateway's own" in problem(good, {"bind": "0.0.0.0:47810"})
    assert "bacnet_local.apdu_timeout_s" in problem(good, {"apdu_timeout_s": 0})
    drv = BacnetDriver.from_config([{**good, "address": "10.0.0.7"}], sink)
    assert drv.devices[0].address == "10.0.0.7:47808"  # the standard port when none is given


async def test_a_taken_port_fails_at_once() -> None:
    port = free_udp_port(GATEWAY_HOST)
    holder = bind_udp(GATEWAY_HOST, port)
    try:
        driver = BacnetDriver([], RecordingSink(), BacnetLocal(bind=f"{GATEWAY_HOST}:{port}"))
        with pytest.raises(BindError, match=f"{GATEWAY_HOST}:{port}"):
            await asyncio.wait_for(driver.run(), timeout=5)
    finally:
        holder.close()
