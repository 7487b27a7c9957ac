"""A simulated BACnet/IP device (bacpypes3) on a real UDP socket: by default an air handler with
its smoke detectors (life-safety points and a zone) and the PIR sensors of its plant room.

It answers ReadProperty, ReadPropertyMultiple, WriteProperty and SubscribeCOV like a controller,
and sends COV notifications (confirmed or not, as subscribed) through bacpypes3's own COV
detection for local objects. Scriptable from a test or from Python::

    async with BacnetDeviceSim("127.0.0.2", 47810) as dev:
        dev.set_value("supply_air_temp", 17.5)
        dev.raise_smoke("smoke_supply_duct")        # life-safety point to alarm, in-alarm flag set
        dev.set_fault("smoke_return_duct")          # reliability + FAULT flag
        dev.refuse_cov = True                       # SubscribeCOV answered with an error
        dev.reject_rpm = True                       # ReadPropertyMultiple rejected (old devices)
        dev.fail(); dev.recover()                   # stop answering, answer again
        dev.requests["subscribe-cov"], dev.subscriptions_expired

Or alone: ``python -m drivers.sim.bacnet_device --address 127.0.0.2:47810``.

Two applications on loopback need different ports: bacpypes3 takes any 127.x on its own port for
itself.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bacpypes3.app import Application
from bacpypes3.errors import ExecutionError, UnrecognizedService
from bacpypes3.ipv4.link import NormalLinkLayer
from bacpypes3.local.analog import AnalogInputObject, AnalogOutputObject, AnalogValueObject
from bacpypes3.local.binary import BinaryInputObject, BinaryOutputObject, BinaryValueObject
from bacpypes3.local.cov import GenericCriteria
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import MultiStateInputObject, MultiStateOutputObject, MultiStateValueObject
from bacpypes3.local.object import Object as LocalObject
from bacpypes3.object import LifeSafetyPointObject, LifeSafetyZoneObject

from drivers.bacnet import attach_ipv4, parse_address

# -- object classes bacpypes3 0.0.110 lacks or gets wrong -------------------------------------


class _LifeSafetyPoint(LocalObject, LifeSafetyPointObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria  # present-value and status-flags, as clause 13.1 lists


class _LifeSafetyZone(LocalObject, LifeSafetyZoneObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


# bacpypes3 gives its local multi-state objects the COV-increment criteria, which need a
# covIncrement they do not have: a subscription fails and breaks the object. Any change counts.
class _MultiStateInput(MultiStateInputObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


class _MultiStateOutput(MultiStateOutputObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


class _MultiStateValue(MultiStateValueObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


CLASSES: dict[str, type[Any]] = {
    "analog-input": AnalogInputObject,
    "analog-output": AnalogOutputObject,
    "analog-value": AnalogValueObject,
    "binary-input": BinaryInputObject,
    "binary-output": BinaryOutputObject,
    "binary-value": BinaryValueObject,
    "multi-state-input": _MultiStateInput,
    "multi-state-output": _MultiStateOutput,
    "multi-state-value": _MultiStateValue,
    "life-safety-point": _LifeSafetyPoint,
    "life-safety-zone": _LifeSafetyZone,
}

# status-flags bit positions (in-alarm, fault, overridden, out-of-service)
IN_ALARM, FAULT = 0, 1


def free_udp_port(host: str) -> int:
    """A UDP port on ``host`` nothing is bound to right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class SimObject:
    name: str
    type: str
    instance: int
    value: Any  # float, bool (binary: active), int (multi-state state), str (life-safety state)
    units: str = "noUnits"  # BACnet engineering units, analog only
    states: int = 0  # multi-state only: number of states


AIR_HANDLER: tuple[SimObject, ...] = (
    SimObject("supply_air_temp", "analog-input", 1, 16.0, "degreesCelsius"),
    SimObject("return_air_temp", "analog-input", 2, 23.5, "degreesCelsius"),
    SimObject("cooling_valve", "analog-output", 1, 35.0, "percent"),
    SimObject("supply_air_setpoint", "analog-value", 1, 16.0, "degreesCelsius"),
    SimObject("supply_fan_status", "binary-input", 1, True),
    SimObject("supply_fan_command", "binary-output", 1, True),
    SimObject("occupied", "binary-value", 1, True),
    SimObject("ahu_mode", "multi-state-input", 1, 2, states=4),
    SimObject("fan_speed", "multi-state-output", 1, 2, states=3),
    SimObject("season", "multi-state-value", 1, 1, states=2),
    SimObject("smoke_supply_duct", "life-safety-point", 1, "quiet"),
    SimObject("smoke_return_duct", "life-safety-point", 2, "quiet"),
    SimObject("fire_zone_plantroom", "life-safety-zone", 1, "quiet"),
    SimObject("pir_plantroom", "binary-input", 11, False),
    SimObject("pir_corridor", "binary-input", 12, False),
)


def _bacnet_value(kind: str, value: Any) -> Any:
    if kind.startswith("binary"):
        return "active" if value else "inactive"
    if kind.startswith("analog"):
        return float(value)
    return value


def _make_object(spec: SimObject, cov_increment: float) -> Any:
    kw: dict[str, Any] = {
        "objectIdentifier": (spec.type, spec.instance),
        "objectName": spec.name,
        "presentValue": _bacnet_value(spec.type, spec.value),
        "statusFlags": [0, 0, 0, 0],
        "reliability": "noFaultDetected",
        "eventState": "normal",
        "outOfService": False,
    }
    if spec.type.startswith("analog"):
        kw.update(units=spec.units, covIncrement=cov_increment)
    elif spec.type.startswith("multi-state"):
        kw["numberOfStates"] = spec.states
    elif spec.type.startswith("life-safety"):
        kw.update(trackingValue=spec.value, mode="on", silenced="unsilenced", operationExpected="none")
    return CLASSES[spec.type](**kw)


# -- the application ---------------------------------------------------------------------------


class _GatedLinkLayer(NormalLinkLayer):  # type: ignore[misc]
    """A BACnet/IP link layer that can go deaf and mute: a failed device keeps its socket (as a
    hung controller does) but answers nothing and notifies nothing."""

    answering = True

    async def indication(self, pdu: Any) -> None:  # down: to the wire
        if self.answering:
            await super().indication(pdu)

    async def confirmation(self, pdu: Any) -> None:  # up: from the wire
        if self.answering:
            await super().confirmation(pdu)


class _SimApplication(Application):  # type: ignore[misc]
    """Counts the requests it serves and can refuse COV subscriptions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: Counter[str] = Counter()
        self.refuse_cov = False
        self.reject_rpm = False
        self.subscriptions_expired = 0
        self._cancelling = False

    async def do_ReadPropertyRequest(self, apdu: Any) -> None:
        self.requests["read-property"] += 1
        await super().do_ReadPropertyRequest(apdu)

    async def do_ReadPropertyMultipleRequest(self, apdu: Any) -> None:
        self.requests["read-property-multiple"] += 1
        if self.reject_rpm:  # as an old controller without the service does
            raise UnrecognizedService("read-property-multiple is not supported here")
        await super().do_ReadPropertyMultipleRequest(apdu)

    async def do_WritePropertyRequest(self, apdu: Any) -> None:
        self.requests["write-property"] += 1
        await super().do_WritePropertyRequest(apdu)

    async def do_SubscribeCOVRequest(self, apdu: Any) -> None:
        cancel = apdu.issueConfirmedNotifications is None and apdu.lifetime is None
        self.requests["subscribe-cov-cancel" if cancel else "subscribe-cov"] += 1
        if self.refuse_cov and not cancel:
            raise ExecutionError(errorClass="services", errorCode="covSubscriptionFailed")
        self._cancelling = cancel
        try:
            await super().do_SubscribeCOVRequest(apdu)
        finally:
            self._cancelling = False

    def cancel_subscription(self, cov: Any) -> None:
        # Called by a subscription's own timer when its lifetime ends without a renewal, and by
        # a cancelling SubscribeCOV; only the first is an expiry.
        if not self._cancelling:
            self.subscriptions_expired += 1
        super().cancel_subscription(cov)

    def active_subscriptions(self) -> int:
        return sum(len(d.cov_subscriptions) for d in self._cov_detections.values())


class BacnetDeviceSim:
    """One simulated BACnet/IP device on ``host:port``."""

    def __init__(
        self,
        host: str = "127.0.0.2",
        port: int = 47810,
        device_instance: int = 1001,
        name: str = "ahu-1",
        objects: tuple[SimObject, ...] = AIR_HANDLER,
        cov_increment: float = 0.1,
    ) -> None:
        self.host, self.port = host, port
        self.device_instance = device_instance
        self.name = name
        self.specs = {o.name: o for o in objects}
        self.cov_increment = cov_increment
        self._app: _SimApplication | None = None
        self._link: _GatedLinkLayer | None = None
        self._objects: dict[str, Any] = {}
        self._refuse_cov = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        device = DeviceObject(
            objectIdentifier=("device", self.device_instance),
            objectName=self.name,
            vendorIdentifier=999,
        )
        self._objects = {name: _make_object(spec, self.cov_increment) for name, spec in self.specs.items()}
        app = _SimApplication.from_object_list([device, *self._objects.values()])
        app.refuse_cov = self._refuse_cov
        self._link = attach_ipv4(app, self.host, self.port, _GatedLinkLayer)  # BindError if taken
        self._app = app

    async def stop(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None
            # let the transport's close callbacks run before the port is reused
            await asyncio.sleep(0)

    async def __aenter__(self) -> BacnetDeviceSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- scripting ------------------------------------------------------------------------------

    @property
    def app(self) -> _SimApplication:
        if self._app is None:
            raise RuntimeError("the simulated device is not started")
        return self._app

    @property
    def requests(self) -> Counter[str]:
        return self.app.requests

    @property
    def subscriptions_expired(self) -> int:
        return self.app.subscriptions_expired

    def active_subscriptions(self) -> int:
        return self.app.active_subscriptions()

    @property
    def reject_rpm(self) -> bool:
        return self.app.reject_rpm

    @reject_rpm.setter
    def reject_rpm(self, reject: bool) -> None:
        self.app.reject_rpm = reject

    @property
    def refuse_cov(self) -> bool:
        return self._refuse_cov

    @refuse_cov.setter
    def refuse_cov(self, refuse: bool) -> None:
        self._refuse_cov = refuse
        if self._app is not None:
            self._app.refuse_cov = refuse

    def obj(self, name: str) -> Any:
        try:
            return self._objects[name]
        except KeyError:
            raise KeyError(f"{self.name} has no object {name!r}") from None

    def set_value(self, name: str, value: Any) -> None:
        """Change a present-value as the field would (a COV notification follows if it counts)."""
        self.obj(name).presentValue = _bacnet_value(self.specs[name].type, value)

    def value(self, name: str) -> Any:
        return self.obj(name).presentValue

    # bacpypes3 derives a local object's status-flags from its event-state, reliability and
    # out-of-service, and ignores writes to them; but its COV detection watches assignments to
    # statusFlags. So the flags are assigned first (the notification carries them) and the state
    # they derive from right after, in the same loop turn, so reads agree with notifications.

    def raise_smoke(self, detector: str, state: str = "alarm") -> None:
        """A life-safety point (or zone) to an alarm state, with its in-alarm flag."""
        o = self.obj(detector)
        self._set_flag(o, IN_ALARM, True)
        o.eventState = "lifeSafetyAlarm"
        o.trackingValue = state
        o.presentValue = state

    def clear_smoke(self, detector: str) -> None:
        o = self.obj(detector)
        self._set_flag(o, IN_ALARM, False)
        o.eventState = "normal"
        o.trackingValue = "quiet"
        o.presentValue = "quiet"

    def set_fault(self, name: str, reliability: str = "communicationFailure") -> None:
        """Reliability other than no-fault-detected, and so the FAULT status flag."""
        o = self.obj(name)
        self._set_flag(o, FAULT, True)
        o.reliability = reliability

    def clear_fault(self, name: str) -> None:
        o = self.obj(name)
        self._set_flag(o, FAULT, False)
        o.reliability = "noFaultDetected"

    @staticmethod
    def _set_flag(o: Any, bit: int, on: bool) -> None:
        flags = list(o.statusFlags)
        flags[bit] = 1 if on else 0
        o.statusFlags = flags

    def fail(self) -> None:
        """Stop answering (and notifying), keeping the socket: a hung controller or a cut cable."""
        if self._link is not None:
            self._link.answering = False

    def recover(self) -> None:
        if self._link is not None:
            self._link.answering = True

    @property
    def failed(self) -> bool:
        return self._link is not None and not self._link.answering


async def _serve(address: str, instance: int, name: str) -> None:
    host, port = parse_address(address)
    async with BacnetDeviceSim(host, port, instance, name):
        print(f"BACnet/IP device {name} (device,{instance}) on {host}:{port}; Ctrl-C to stop", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--address", default="127.0.0.2:47810")
    ap.add_argument("--instance", type=int, default=1001)
    ap.add_argument("--name", default="ahu-1")
    args = ap.parse_args(argv)
    try:
        asyncio.run(_serve(args.address, args.instance, args.name))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
