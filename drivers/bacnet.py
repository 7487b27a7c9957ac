"""BACnet/IP field driver (bacpypes3): present-value, status-flags and reliability of configured
objects, by change-of-value subscription where the device accepts it and by polling where not.

The gateway runs one BACnet application of its own (a device object, one UDP socket) and speaks
unicast to configured addresses: no Who-Is broadcasts, which do not cross routers or loopback.

Per device, one task (``_DeviceSession``):

1. reads every configured object (ReadPropertyMultiple, falling back to ReadProperty for devices
   that reject it); the first answer takes the device online (``device.online``);
2. subscribes to COV for each object (SubscribeCOV, confirmed or unconfirmed notifications as
   configured) and renews every subscription at half its lifetime, with the same subscriber
   process id, so the device renews rather than duplicates it;
3. polls, every ``poll_interval_s``, the objects whose subscription the device refused (reported
   once as ``device.fault`` with fault ``cov_refused``) and those configured ``cov = false``;
4. checks a device that only sends COV is still there every ``liveness_interval_s`` (a read of its
   device object, which also proves it is the configured device instance).

A request with no answer after the gateway's APDU retries takes the device offline
(``device.offline``); it is then tried again with exponential backoff, and on its first answer it
is online again, read in full and subscribed afresh (a rebooted device has lost its
subscriptions). A dead device costs only its own task: every request is asynchronous.

Status-flags and reliability. Every ``telemetry.point`` from this driver carries, besides the
shared fields, ``status_flags`` (the names of the flags set: in-alarm, fault, overridden,
out-of-service) and ``reliability`` (``None`` when the object has no such property). An object in
fault (its FAULT flag set or its reliability other than no-fault-detected) is reported with
quality ``fault``: its value is not to be trusted, so a smoke detector in fault is never taken as
quiet (drivers/sensors.py treats any quality other than ``good`` as unreadable). On the edge into
fault the driver also emits ``device.fault`` with the object as source (fault ``object_fault``,
the reliability in the detail), and ``device.fault_cleared`` on the way out. An object that cannot
be read at all (an error reply for its present-value) is a reading with value ``None`` and quality
``fault`` plus ``device.fault`` (fault ``unreadable``), once per episode, and
``device.fault_cleared`` when it can be read again.

Values: analog objects give floats, binary objects booleans (active is True), multi-state
objects the state number, life-safety objects the state's BACnet name (``quiet``, ``alarm``,
``pre-alarm``, ``fault``...).

Writes go to present-value of output and value objects only, and never to an object marked
``fire_system``: those raise ``FireSystemWriteRefused`` before anything is sent.

APDU timeout and retries are gateway-wide (``BacnetLocal``) rather than per device: BACnet puts
them on the local device object, and bacpypes3 applies them to every request it sends.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from bacpypes3.apdu import (
    AbortPDU,
    AbortReason,
    ErrorRejectAbortNack,
    ErrorType,
    RejectPDU,
    SimpleAckPDU,
    SubscribeCOVRequest,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import BinaryPV, Reliability
from bacpypes3.errors import ServicesError
from bacpypes3.ipv4.link import NormalLinkLayer
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import Address, IPv4Address
from bacpypes3.primitivedata import Enumerated, ObjectIdentifier, Real
from bacpypes3.vendor import get_vendor_info
from pydantic import BaseModel, ValidationError

from drivers.bacnet_config import (
    FAMILY,
    WRITABLE,
    BacnetDevice,
    BacnetLocal,
    BacnetObject,
    check_devices,
    parse_address,
)
from drivers.base import (
    Backoff,
    DeviceLiveness,
    FireSystemWriteRefused,
    Reading,
    Value,
    emit_fault,
    fault_event,
    now_ms,
)
from protocols.configuration import ConfigError, first_problem
from protocols.events import NewEvent
from protocols.sink import EventSink

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The gateway's BACnet application
# ---------------------------------------------------------------------------------------------

CovRoute = Callable[[ObjectIdentifier, Sequence[Any]], Awaitable[None]]


class _GatewayApplication(Application):  # type: ignore[misc]
    """bacpypes3's Application with COV notifications routed to the driver by (address, process id).

    bacpypes3's own ``change_of_value`` context manager renews on a timer in a task nobody awaits,
    so a failed renewal would go unnoticed; the driver sends SubscribeCOV itself and takes the
    notifications here (bacpypes3 dispatches each service to ``do_<Request>``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cov_routes: dict[tuple[Address, int], CovRoute] = {}

    async def do_ConfirmedCOVNotificationRequest(self, apdu: Any) -> None:
        route = self.cov_routes.get((apdu.pduSource, apdu.subscriberProcessIdentifier))
        if route is None:  # the device should drop a subscription we no longer hold
            raise ServicesError(errorCode="unknownSubscription")
        # Acked only once the sink has the events: a notification we failed to store is resent.
        await route(apdu.monitoredObjectIdentifier, apdu.listOfValues)
        await self.response(SimpleAckPDU(context=apdu))

    async def do_UnconfirmedCOVNotificationRequest(self, apdu: Any) -> None:
        route = self.cov_routes.get((apdu.pduSource, apdu.subscriberProcessIdentifier))
        if route is not None:
            await route(apdu.monitoredObjectIdentifier, apdu.listOfValues)


class BindError(OSError):
    """The gateway's BACnet/IP address is taken or not local."""


def bind_udp(host: str, port: int) -> socket.socket:
    """A UDP socket bound to ``host:port``, or BindError at once: bacpypes3 binding by itself
    retries a taken port forever without a word (and with SO_REUSEPORT would share it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
    except OSError as e:
        s.close()
        raise BindError(e.errno, f"cannot bind BACnet/IP on {host}:{port}: {e.strerror}") from None
    return s


def attach_ipv4(app: Any, host: str, port: int, link_layer: type[Any] = NormalLinkLayer) -> Any:
    """Give a bacpypes3 application a BACnet/IP link layer on a socket bound here (see bind_udp).
    This is what ``Application.add_object`` does for a network-port object, minus the blind bind."""
    sock = bind_udp(host, port)
    address = IPv4Address(f"{host}:{port}")  # a /32: no broadcast socket, none is needed
    layer = link_layer(address, bind_socket=sock)
    app.link_layers[ObjectIdentifier("network-port,1")] = layer  # app.close() closes it
    app.nsap.bind(layer, address=address)
    return layer


def open_gateway_application(local: BacnetLocal) -> _GatewayApplication:
    device = DeviceObject(
        objectIdentifier=("device", local.device_instance),
        objectName=local.device_name,
        # The local device object's properties are what bacpypes3's client state machines use.
        apduTimeout=max(1, round(local.apdu_timeout_s * 1000)),
        numberOfApduRetries=local.apdu_retries,
    )
    app = _GatewayApplication.from_object_list([device])
    host, port = local.host_port
    attach_ipv4(app, host, port)
    return app


# ---------------------------------------------------------------------------------------------
# Requests and values
# ---------------------------------------------------------------------------------------------


class Unreachable(Exception):
    """No answer after the APDU retries: the device is offline."""


class RequestFailed(Exception):
    """The device answered with an error, reject or abort."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.reason = reason


def _explain(e: ErrorRejectAbortNack) -> str:
    if isinstance(e, (RejectPDU, AbortPDU)):
        kind = "reject" if isinstance(e, RejectPDU) else "abort"
        return f"{kind}: {e.apduAbortRejectReason}"
    return _error_text(e)


async def _ask(what: str, aw: Awaitable[Any]) -> Any:
    """Await a bacpypes3 request, turning its BaseException replies into Unreachable/RequestFailed
    (bacpypes3 raises ErrorPDU, RejectPDU and AbortPDU, which derive from BaseException)."""
    try:
        return await aw
    except ErrorRejectAbortNack as e:
        if isinstance(e, AbortPDU) and not e.apduSrv and e.apduAbortRejectReason == AbortReason.noResponse:
            raise Unreachable(f"{what}: no response") from None
        raise RequestFailed(what, _explain(e)) from None


_FLAG_NAMES = ("in-alarm", "fault", "overridden", "out-of-service")
_NO_FAULT = "no-fault-detected"


def flag_names(flags: Any) -> list[str]:
    return [n for n, bit in zip(_FLAG_NAMES, list(flags or ()), strict=False) if bit]


def plain_value(value: Any) -> Value:
    """A BACnet present-value as JSON: analog float, binary bool, multi-state int, enumerations
    (life-safety states) by their BACnet name."""
    if value is None:
        return None
    if isinstance(value, BinaryPV):
        return bool(value == BinaryPV.active)
    if isinstance(value, Enumerated):
        return str(value)
    if isinstance(value, (Real, float)):
        return float(value)
    if isinstance(value, bool | int):
        return int(value)
    return str(value)


def decode_property_values(object_type: Any, values: Sequence[Any]) -> dict[str, Any]:
    """A COV notification's list of values, cast to their types by the standard object classes."""
    cls = get_vendor_info(0).get_object_class(object_type)
    out: dict[str, Any] = {}
    for pv in values:
        ptype = cls.get_property_type(pv.propertyIdentifier) if cls else None
        if ptype is None:
            continue
        out[str(pv.propertyIdentifier)] = pv.value.cast_out(ptype)
    return out


# ---------------------------------------------------------------------------------------------
# Points and devices
# ---------------------------------------------------------------------------------------------


@dataclass
class BacnetCounters:
    requests: int = 0
    no_response: int = 0  # requests unanswered after the retries
    errors: int = 0  # error, reject or abort replies
    readings: int = 0  # telemetry.point events emitted
    faults: int = 0  # device.fault events emitted
    cov_notifications: int = 0
    cov_subscribes: int = 0  # accepted SubscribeCOV, first time and renewals
    cov_renewals: int = 0
    cov_refused: int = 0  # objects whose subscription a device refused
    polls: int = 0  # poll cycles of refused or cov=false objects


class _Point:
    """What the driver knows of one object: how it is followed and what was last reported."""

    def __init__(self, cfg: BacnetObject, proc_id: int) -> None:
        self.cfg = cfg
        self.oid = ObjectIdentifier(cfg.object_id)
        self.proc_id = proc_id  # stable for the driver's life: a renewal must reuse it
        self.use_cov = cfg.cov
        self.subscribed = False
        self.has_reliability: bool | None = None  # None: not known yet
        self.value: Value = None
        self.flags: list[str] = []
        self.reliability: str | None = None
        self.sent = False
        self.sent_at = 0.0  # monotonic time of the last reading sent
        self.faulted = False  # in fault (flags or reliability) as last reported
        self.unreadable = False

    def changed(self, value: Value) -> bool:
        if not self.sent:
            return True
        if self.cfg.deadband and isinstance(value, float) and isinstance(self.value, float):
            return abs(value - self.value) >= self.cfg.deadband
        return value != self.value


class _DeviceSession:
    def __init__(self, driver: BacnetDriver, cfg: BacnetDevice) -> None:
        self.driver = driver
        self.cfg = cfg
        self.address = Address(cfg.address)
        self.liveness = DeviceLiveness(driver.sink, cfg.name, FAMILY)
        self.points = [_Point(o, driver.next_proc_id()) for o in cfg.objects]
        self.by_name = {p.cfg.name: p for p in self.points}
        self.rpm = True  # ReadPropertyMultiple until the device rejects it
        self.cov_refusal_reported = False
        self.identity_reported = False
        self.last_error = ""
        self.backoff = Backoff(cfg.backoff_min_s, cfg.backoff_max_s)

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self._serve()
            except Unreachable as e:
                self._drop_routes()
                await self.liveness.failed(
                    str(e), address=self.cfg.address, stale=[p.cfg.name for p in self.points]
                )
                await asyncio.sleep(self.backoff.next())
            except (Exception, ErrorRejectAbortNack) as e:  # nothing unexpected ends this device's loop
                log.exception("bacnet %s: unexpected failure", self.cfg.name)
                self._drop_routes()
                if repr(e) != self.last_error:  # the same failure again is logged, not re-reported
                    self.last_error = repr(e)
                    await self._fault(self.cfg.name, "driver_error", repr(e))
                await asyncio.sleep(self.backoff.next())

    async def _serve(self) -> None:
        await self._check_identity()  # raises Unreachable while the device is away
        await self.liveness.answered(address=self.cfg.address)
        self.backoff.reset()
        await self._read(self.points)
        await self._subscribe()
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self.cfg.cov_lifetime_s / 2
        poll_at = loop.time() + self.cfg.poll_interval_s
        check_at = loop.time() + self.cfg.liveness_interval_s
        while True:
            polled = [p for p in self.points if not p.subscribed]
            subscribed = len(polled) < len(self.points)
            due = [check_at]
            if subscribed:
                due.append(renew_at)
            if polled:
                due.append(poll_at)
            await asyncio.sleep(max(0.0, min(due) - loop.time()))
            now = loop.time()
            if subscribed and now >= renew_at:
                await self._subscribe(renewal=True)
                renew_at = now + self.cfg.cov_lifetime_s / 2
            if polled and now >= poll_at:
                await self._read(polled)
                self.driver.counters.polls += 1
                check_at = now + self.cfg.liveness_interval_s  # a poll answered is proof enough
                # A poll that overran its period is not made up for: the next is one period on.
                poll_at = max(poll_at + self.cfg.poll_interval_s, loop.time())
            if now >= check_at:
                await self._check_identity()
                check_at = now + self.cfg.liveness_interval_s

    # -- requests ---------------------------------------------------------------------------

    async def request(self, what: str, aw: Awaitable[Any]) -> Any:
        c = self.driver.counters
        c.requests += 1
        try:
            return await _ask(what, aw)
        except Unreachable:
            c.no_response += 1
            raise
        except RequestFailed:
            c.errors += 1
            raise

    async def _check_identity(self) -> None:
        """Reads the device object: an answer proves the device is there, an unknown-object error
        that another device answers at the configured address."""
        app = self.driver.app
        oid = ObjectIdentifier(f"device,{self.cfg.device_instance}")
        try:
            await self.request("read device", app.read_property(self.address, oid, "system-status"))
        except RequestFailed as e:
            if not self.identity_reported:
                self.identity_reported = True
                await self._fault(
                    self.cfg.name,
                    "device_identity",
                    f"device,{self.cfg.device_instance} at {self.cfg.address}: {e.reason}",
                )

    async def _read(self, points: Sequence[_Point]) -> None:
        results: dict[ObjectIdentifier, dict[str, Any]] = {}
        if self.rpm:
            try:
                results = await self._read_multiple(points)
            except RequestFailed as e:
                # Devices without ReadPropertyMultiple reject it; a device that errs on the whole
                # request is read per property too, so one bad object cannot hide the others.
                log.info(
                    "bacnet %s: ReadPropertyMultiple failed (%s), reading per property", self.cfg.name, e
                )
                if "reject" in e.reason or "unrecognized" in e.reason:
                    self.rpm = False
        read_ms = now_ms()
        times: dict[ObjectIdentifier, int] = {}
        for p in points:
            if p.oid not in results:
                results[p.oid] = await self._read_single(p)
                times[p.oid] = now_ms()  # read one by one: each at its own time
        for p in points:
            r = results[p.oid]
            await self._update(
                p,
                r.get("present-value"),
                r.get("status-flags"),
                r.get("reliability"),
                times.get(p.oid, read_ms),
            )

    async def _read_multiple(self, points: Sequence[_Point]) -> dict[ObjectIdentifier, dict[str, Any]]:
        out: dict[ObjectIdentifier, dict[str, Any]] = {}
        # Chunks keep each answer within one unsegmented APDU (1476 bytes on BACnet/IP).
        for i in range(0, len(points), 16):
            args: list[Any] = []
            for p in points[i : i + 16]:
                props = ["present-value", "status-flags"]
                if p.has_reliability is not False:
                    props.append("reliability")
                args += [p.oid, props]
            rows = await self.request("read", self.driver.app.read_property_multiple(self.address, args))
            for oid, prop, _index, value in rows or ():
                out.setdefault(oid, {})[str(prop)] = value
        return out

    async def _read_single(self, p: _Point) -> dict[str, Any]:
        out: dict[str, Any] = {}
        props = ["present-value", "status-flags"] + (
            ["reliability"] if p.has_reliability is not False else []
        )
        for prop in props:
            try:
                out[prop] = await self.request(
                    "read", self.driver.app.read_property(self.address, p.oid, prop)
                )
            except RequestFailed as e:
                out[prop] = e
        return out

    async def _subscribe(self, renewal: bool = False) -> None:
        refused: list[str] = []
        app = self.driver.app
        for p in self.points:
            if not p.use_cov:
                continue
            self.driver.app.cov_routes[(self.address, p.proc_id)] = self._route(p)
            request = SubscribeCOVRequest(
                subscriberProcessIdentifier=p.proc_id,
                monitoredObjectIdentifier=p.oid,
                issueConfirmedNotifications=self.cfg.cov_confirmed,
                lifetime=self.cfg.cov_lifetime_s,
                destination=self.address,
            )
            try:
                await self.request("subscribe", app.request(request))
            except RequestFailed as e:
                # Refused (or not supported): this object is polled from now on.
                app.cov_routes.pop((self.address, p.proc_id), None)
                p.use_cov = p.subscribed = False
                self.driver.counters.cov_refused += 1
                refused.append(f"{p.cfg.name} ({e.reason})")
                continue
            self.driver.counters.cov_subscribes += 1
            if renewal and p.subscribed:
                self.driver.counters.cov_renewals += 1
            p.subscribed = True
        if refused and not self.cov_refusal_reported:
            self.cov_refusal_reported = True  # once per device: a technician needs to hear it once
            await self._fault(self.cfg.name, "cov_refused", "polled instead: " + ", ".join(refused))

    def _route(self, p: _Point) -> CovRoute:
        async def notified(oid: ObjectIdentifier, values: Sequence[Any]) -> None:
            read_ms = now_ms()
            if oid != p.oid:
                return
            self.driver.counters.cov_notifications += 1
            decoded = decode_property_values(oid[0], values)
            flags = decoded.get("status-flags")
            reliability: Any = p.reliability
            if flags is not None and flag_names(flags) != p.flags and p.has_reliability is not False:
                # Notifications carry present-value and status-flags only; the reliability that
                # explains a fault flag (or its end) is read at once.
                try:
                    reliability = await self.request(
                        "read", self.driver.app.read_property(self.address, p.oid, "reliability")
                    )
                except (RequestFailed, Unreachable) as e:
                    reliability = e if isinstance(e, RequestFailed) else p.reliability
            await self._update(p, decoded.get("present-value"), flags, reliability, read_ms)

        return notified

    def _drop_routes(self) -> None:
        for p in self.points:
            self.driver.app.cov_routes.pop((self.address, p.proc_id), None)
            p.subscribed = False
            p.use_cov = p.cfg.cov  # a returning device is asked for COV again

    async def unsubscribe(self) -> None:
        """Best effort at shutdown, so the device stops notifying a gateway that is gone."""
        app = self.driver.app
        for p in self.points:
            if p.subscribed:
                p.subscribed = False
                app.cov_routes.pop((self.address, p.proc_id), None)
                cancel = SubscribeCOVRequest(
                    subscriberProcessIdentifier=p.proc_id,
                    monitoredObjectIdentifier=p.oid,
                    destination=self.address,
                )
                try:
                    await _ask("unsubscribe", app.request(cancel))
                except (Unreachable, RequestFailed):
                    return

    # -- values and events ------------------------------------------------------------------

    async def _update(self, p: _Point, raw: Any, raw_flags: Any, raw_rel: Any, read_ms: int) -> None:
        events: list[NewEvent] = []
        source = f"{self.cfg.name}/{p.cfg.name}"
        if isinstance(raw, (RequestFailed, ErrorType)) or (raw is None and not p.subscribed):
            # The present-value itself could not be read: never leave the last value standing.
            if not p.unreadable:
                p.unreadable = True
                detail = raw.reason if isinstance(raw, RequestFailed) else _error_text(raw)
                events.append(self._fault_event(source, "unreadable", detail))
                events.append(self._reading(p, None, read_ms, quality="fault"))
                p.sent, p.value = False, None
            await self._emit(events)
            return
        if p.unreadable:
            p.unreadable = False
            events.append(self._cleared_event(source, "unreadable"))
        if raw_flags is not None and not isinstance(raw_flags, (RequestFailed, ErrorType)):
            flags = flag_names(raw_flags)
        else:
            flags = p.flags
        reliability = self._reliability(p, raw_rel)
        value = plain_value(raw) if raw is not None else p.value
        faulted = "fault" in flags or (reliability is not None and reliability != _NO_FAULT)
        if faulted != p.faulted:
            p.faulted = faulted
            detail = f"reliability {reliability}, status-flags {flags}"
            if faulted:
                events.append(self._fault_event(source, "object_fault", detail))
            else:
                events.append(self._cleared_event(source, "object_fault", detail))
        loop = asyncio.get_running_loop()
        heartbeat = self.cfg.heartbeat_s and loop.time() - p.sent_at >= self.cfg.heartbeat_s
        if p.changed(value) or flags != p.flags or reliability != p.reliability or heartbeat:
            p.value, p.flags, p.reliability = value, flags, reliability
            p.sent, p.sent_at = True, loop.time()
            events.append(self._reading(p, value, read_ms, quality="fault" if faulted else "good"))
        await self._emit(events)

    def _reliability(self, p: _Point, raw: Any) -> str | None:
        if raw is None:
            return p.reliability
        if isinstance(raw, (RequestFailed, ErrorType)):
            text = raw.reason if isinstance(raw, RequestFailed) else _error_text(raw)
            if "unknown-property" in text:
                p.has_reliability = False  # optional in most object types; not asked again
            return None
        p.has_reliability = True
        return str(Reliability(raw)) if not isinstance(raw, Reliability) else str(raw)

    def _reading(self, p: _Point, value: Value, read_ms: int, quality: str) -> NewEvent:
        event = Reading(self.cfg.name, p.cfg.name, value, read_ms, p.cfg.unit, quality).event()
        event.data["status_flags"] = list(p.flags)
        event.data["reliability"] = p.reliability
        event.data["object"] = p.cfg.object_id
        self.driver.counters.readings += 1
        return event

    def _fault_event(self, source: str, fault: str, detail: str) -> NewEvent:
        self.driver.counters.faults += 1
        return fault_event(source, FAMILY, fault, detail)

    @staticmethod
    def _cleared_event(source: str, fault: str, detail: str = "") -> NewEvent:
        return NewEvent("device.fault_cleared", source, {"family": FAMILY, "fault": fault, "detail": detail})

    async def _fault(self, source: str, fault: str, detail: str) -> None:
        self.driver.counters.faults += 1
        await emit_fault(self.driver.sink, source, FAMILY, fault, detail)

    async def _emit(self, events: list[NewEvent]) -> None:
        if events:
            await self.driver.sink.emit(events)

    def status(self) -> dict[str, Any]:
        return {
            "state": self.liveness.state.value,
            "since_ms": self.liveness.since_ms,
            "address": self.cfg.address,
            "cov": sorted(p.cfg.name for p in self.points if p.subscribed),
            "polled": sorted(p.cfg.name for p in self.points if not p.subscribed),
            "faulted": sorted(p.cfg.name for p in self.points if p.faulted or p.unreadable),
        }


def _error_text(e: Any) -> str:
    return f"{getattr(e, 'errorClass', '?')}: {getattr(e, 'errorCode', '?')}"


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


class BacnetDriver:
    """BACnet/IP devices into an EventSink. ``run()`` until cancelled; ``write()`` for commands."""

    def __init__(
        self, devices: Sequence[BacnetDevice], sink: EventSink, local: BacnetLocal | None = None
    ) -> None:
        self.local = local or BacnetLocal()
        check_devices(devices, self.local)
        self.devices = list(devices)
        self.sink = sink
        self.counters = BacnetCounters()
        self.started = asyncio.Event()  # set once the gateway's socket is bound
        self._app: _GatewayApplication | None = None
        self._next_proc = 1
        self.sessions = {d.name: _DeviceSession(self, d) for d in self.devices}

    @classmethod
    def from_config(
        cls,
        devices: Iterable[BacnetDevice | Mapping[str, Any]],
        sink: EventSink,
        local: BacnetLocal | Mapping[str, Any] | None = None,
        source: str = "bacnet",
    ) -> BacnetDriver:
        """From ``[[bacnet]]`` entries (models or plain TOML tables) and the optional gateway-side
        settings; ConfigError names the key (``bacnet.0.objects.2.type: ...``)."""
        checked: list[BacnetDevice] = []
        for i, d in enumerate(devices):
            checked.append(_validate(BacnetDevice, d, f"{source}.{i}"))
        loc = _validate(BacnetLocal, local or {}, f"{source}_local")
        try:
            return cls(checked, sink, loc)
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None

    def next_proc_id(self) -> int:
        pid = self._next_proc
        self._next_proc += 1
        return pid

    @property
    def app(self) -> _GatewayApplication:
        if self._app is None:
            raise RuntimeError("the BACnet driver is not running")
        return self._app

    async def run(self) -> None:
        self._app = open_gateway_application(self.local)  # BindError at once if the port is taken
        self.started.set()
        try:
            async with asyncio.TaskGroup() as tg:
                for s in self.sessions.values():
                    tg.create_task(s.run(), name=f"bacnet:{s.cfg.name}")
        finally:
            online = [s for s in self.sessions.values() if s.liveness.online]
            if online:
                tasks = [asyncio.ensure_future(s.unsubscribe()) for s in online]
                _, pending = await asyncio.wait(tasks, timeout=self.local.apdu_timeout_s)
                for t in pending:  # a device that does not answer now lets its subscription lapse
                    t.cancel()
            self._app.close()
            self._app = None
            self.started.clear()

    async def write(
        self, device: str, point: str, value: bool | int | float, priority: int | None = None
    ) -> None:
        """Write present-value of an output or value object. A fire-system point is refused
        before anything is sent (FireSystemWriteRefused)."""
        session = self.sessions.get(device)
        p = session.by_name.get(point) if session else None
        if session is None or p is None:
            raise KeyError(f"{device}/{point}: no such BACnet point")
        if p.cfg.fire_system:
            raise FireSystemWriteRefused(device, point)
        if p.cfg.type not in WRITABLE:
            raise ValueError(f"{device}/{point}: a {p.cfg.type} has no writable present-value")
        if priority is not None and not 1 <= priority <= 16:
            raise ValueError("priority must be 1..16")
        if p.cfg.type.startswith("binary"):
            bacnet_value: Any = BinaryPV.active if value else BinaryPV.inactive
        elif p.cfg.type.startswith("multi-state"):
            bacnet_value = int(value)
        else:
            bacnet_value = float(value)
        await session.request(
            "write",
            self.app.write_property(session.address, p.oid, "present-value", bacnet_value, priority=priority),
        )

    def status(self) -> dict[str, Any]:
        return {
            "counters": asdict(self.counters),
            "devices": {name: s.status() for name, s in self.sessions.items()},
        }


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], value: M | Mapping[str, Any], where: str) -> M:
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError as e:
        key, problem = first_problem(e, where)
        raise ConfigError(f"{key}: {problem}") from None


__all__ = [
    "BacnetCounters",
    "BacnetDevice",
    "BacnetDriver",
    "BacnetLocal",
    "BacnetObject",
    "BindError",
    "RequestFailed",
    "Unreachable",
    "attach_ipv4",
    "bind_udp",
    "parse_address",
]
