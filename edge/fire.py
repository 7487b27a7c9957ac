"""Fire release: a fire alarm releases the egress doors at once and keeps them released until a
person resets it.

This is a second line of defence. The fire panel's own hard-wired release (its relay in each
maglock's supply) must be installed and is what the fire code relies on; the gateway adds a release
that also works for doors the panel does not reach and records what happened. It follows the door
release rules of GB 50116 and NFPA 72:

- release at once: a ``smoke.alarm`` (a detector the gateway reads) or ``fire.alarm`` (the panel's
  alarm output) sets every matching egress door's fire flag and wakes its lock reconciler before
  anything else is done with the event (edge/doors.py);
- stay released: only a reset clears the flag — the ``fire.reset`` command carrying the user who
  asked, or the local reset key (a ``fire_reset`` sensor). Never a timer. A reset is refused while
  a detector or the panel still reports an alarm in the zones it would re-lock;
- the release survives a gateway restart: it is kept in ``fire_release.json`` and applied again
  at start, before any door is read;
- never write to the fire system: the panel and the detectors are read-only points
  (``fire_system``), which the drivers refuse to write.

Events (life-safety lane): ``door.egress_released`` once the relays confirm (with the doors that
did not, which also raise ``fire.release_fault``), and ``fire.reset`` with who reset it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge.doors import Door, Doors, Emit
from protocols.events import NewEvent

log = logging.getLogger(__name__)

STATE_FILE = "fire_release.json"
ALARM_KINDS = {"smoke.alarm", "fire.alarm"}
CLEAR_KINDS = {"smoke.clear", "fire.alarm_cleared"}


class FireSection(BaseModel):
    """``[fire]`` of the gateway config."""

    model_config = ConfigDict(extra="forbid")

    # How long to wait for the lock relays to confirm before reporting the release (those that
    # have not confirmed are named, and their reconcilers keep trying).
    confirm_timeout_s: float = Field(default=2.0, gt=0, le=60)


class FireRelease:
    def __init__(
        self,
        doors: Doors,
        emit: Emit,
        cfg: FireSection,
        state_dir: Path | None,
        detectors: dict[str, str] | None = None,
    ) -> None:
        self.doors = doors
        self.emit = emit
        self.cfg = cfg
        self.path = state_dir / STATE_FILE if state_dir else None
        self.egress = [d for d in doors.doors.values() if d.cfg.egress]
        self.alarms: dict[str, str] = {}  # sensor -> zone, while in alarm
        # Every smoke detector and fire-panel input (sensor -> zone) and what is known of it since
        # start: True in alarm, False clear, None not read yet or unreadable. A reset needs every
        # detector of the zones it would re-lock known clear.
        self.detectors = dict(detectors or {})
        self.known: dict[str, bool | None] = dict.fromkeys(self.detectors)
        self.released: dict[str, dict[str, Any]] = {}  # door -> {since_ms, zone, cause}
        self._key: dict[str, bool | None] = {}  # reset key -> last state read
        self._tasks: set[asyncio.Task[None]] = set()
        self.save_error = ""
        self.restored: list[str] = []
        self._restore()

    # ------------------------------------------------------------ persistence

    def _restore(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            saved = json.loads(self.path.read_text())
            released = {
                str(name): {
                    "zone": str(info["zone"]),
                    "cause": str(info["cause"]),
                    "since_ms": int(info["since_ms"] or 0),
                }
                for name, info in dict(saved["released"]).items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            # A torn file must fail safe: release every egress door and say why.
            log.error("fire release state %s unreadable (%s): releasing every egress door", self.path, e)
            released = {
                d.name: {"zone": "", "cause": f"unreadable {STATE_FILE}", "since_ms": 0} for d in self.egress
            }
        for name, info in released.items():
            door = self.doors.doors.get(name)
            if door is not None:
                door.fire_released = True
                self.released[name] = info
        self.restored = sorted(self.released)

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"released": self.released}, f)
            f.flush()
            os.fsync(f.fileno())  # a power cut right after a release must not forget it
        os.replace(tmp, self.path)
        # The rename itself must reach the disk too: the first release ever creates the file.
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def _persist(self) -> None:
        """Keep the release on disk, off the event loop (the relays are written meanwhile); a
        failure is a life-safety fault, retried until it works."""
        delay = 0.5
        while True:
            snapshot = json.dumps(self.released)
            try:
                await asyncio.to_thread(self._save)
            except OSError as e:
                if not self.save_error:
                    self.save_error = str(e)
                    log.error("cannot keep the fire release in %s: %s", self.path, e)
                    detail = f"the release is in force but not kept on disk (a restart would lose it): {e}"
                    await self.emit(
                        [
                            NewEvent(
                                "fire.release_fault",
                                "fire-release",
                                {"fault": "not_persisted", "detail": detail},
                            )
                        ]
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self.save_error:
                self.save_error = ""
                await self.emit(
                    [NewEvent("fire.release_fault_cleared", "fire-release", {"fault": "not_persisted"})]
                )
            if snapshot == json.dumps(self.released):
                return

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ events

    def startup_events(self) -> list[NewEvent]:
        if not self.restored:
            return []
        return [
            NewEvent(
                "door.egress_released",
                "fire-release",
                {"doors": self.restored, "restored": True, "zone": "", "cause": "released before a restart"},
            )
        ]

    def handle(self, e: NewEvent) -> list[NewEvent]:
        if e.kind in ALARM_KINDS:
            zone = str(e.data.get("zone", ""))
            self.alarms[e.source] = zone
            self.known[e.source] = True
            return self.release(zone, e.source, e.time_ms)
        if e.kind in CLEAR_KINDS:
            self.alarms.pop(e.source, None)
            self.known[e.source] = False
        elif e.kind == "device.fault" and e.source in self.detectors and e.data.get("fault") == "unreadable":
            self.known[e.source] = None
        elif e.kind == "fire.reset_input":
            was = self._key.get(e.source)
            now = bool(e.data.get("active"))
            self._key[e.source] = now
            # A turn of the key, not a key found turned: the first reading after a start (or a
            # key left turned) resets nothing.
            if now and was is False:
                ok, detail = self.reset("", f"local reset key {e.source}")
                if not ok:
                    return [NewEvent("fire.reset_refused", e.source, {"by": e.source, "detail": detail})]
        return []

    def _matches(self, door: Door, zone: str) -> bool:
        # An alarm without a zone (the panel's general alarm) releases every egress door.
        return not zone or not door.cfg.fire_zones or zone in door.cfg.fire_zones

    def release(self, zone: str, cause: str, t_ms: int | None = None) -> list[NewEvent]:
        out: list[NewEvent] = []
        doors = [d for d in self.egress if self._matches(d, zone)]
        if not doors and self.egress:
            # An alarm no egress door is configured for (a zone name that matches none): the safe
            # side is every egress door, and someone must fix the config.
            doors = list(self.egress)
            detail = f"alarm zone {zone!r} matches no egress door's fire_zones: released every egress door"
            out.append(
                NewEvent(
                    "fire.release_fault", cause, {"fault": "zone_unmatched", "zone": zone, "detail": detail}
                )
            )
        fresh = [d for d in doors if not d.fire_released]
        for d in fresh:  # first: flags and wake-ups, so the relays are written now
            d.fire_released = True
            d.changed()
        for d in doors:
            self.released.setdefault(d.name, {"zone": zone, "cause": cause, "since_ms": t_ms or 0})
        if fresh:
            self._spawn(self._persist())
            self._spawn(self._confirm(fresh, zone, cause, t_ms))
        return out

    async def _confirm(self, doors: Sequence[Door], zone: str, cause: str, t_ms: int | None) -> None:
        results = await asyncio.gather(*(d.confirmed(self.cfg.confirm_timeout_s) for d in doors))
        done = [d.name for d, ok in zip(doors, results, strict=True) if ok]
        failed = [d.name for d, ok in zip(doors, results, strict=True) if not ok]
        data: dict[str, Any] = {"doors": done, "zone": zone, "cause": cause, "not_confirmed": failed}
        events = [NewEvent("door.egress_released", "fire-release", data, time_ms=None)]
        for d in doors:
            if d.name in failed:
                detail = d.write_error or "the lock relay did not confirm"
                events.append(
                    NewEvent(
                        "fire.release_fault",
                        d.name,
                        {"door": d.name, "fault": "not_released", "detail": detail},
                    )
                )
        await self.emit(events)

    def reset(self, zone: str, by: str) -> tuple[bool, str]:
        """Return the released doors (all, or those of ``zone``) to normal. Refused while an alarm
        that released them still stands."""
        doors = [self.doors.doors[n] for n in self.released if not zone or zone in self._zones_of(n)]
        if not doors:
            return True, "no door is released for a fire"
        standing = [
            f"{sensor} ({z or 'building'})"
            for sensor, z in self.alarms.items()
            if any(self._matches(d, z) for d in doors)
        ]
        if standing:
            return False, "still in alarm: " + ", ".join(sorted(standing))
        # Every detector of those zones must have been read clear: one not read since the start,
        # or unreadable now, might be in alarm.
        unknown = [
            s
            for s, z in self.detectors.items()
            if self.known.get(s) is None and any(self._matches(d, z) for d in doors)
        ]
        if unknown:
            return False, "not known to be clear (not read yet, or unreadable): " + ", ".join(sorted(unknown))
        for d in doors:
            d.fire_released = False
            d.changed()
            self.released.pop(d.name, None)
        self._spawn(self._persist())
        names = sorted(d.name for d in doors)
        self._spawn(
            self.emit([NewEvent("fire.reset", "fire-release", {"by": by, "zone": zone, "doors": names})])
        )
        return True, f"{len(names)} door(s) back to normal: {', '.join(names)}"

    def _zones_of(self, door: str) -> list[str]:
        d = self.doors.doors[door]
        return d.cfg.fire_zones or [str(self.released.get(door, {}).get("zone", ""))]

    def status(self) -> dict[str, Any]:
        return {"released": self.released, "alarms": self.alarms}
