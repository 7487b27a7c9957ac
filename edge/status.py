"""``gatehouse gateway status``: what the outbox holds and how the uplink fares, read from the
outbox file itself (read-only), so it works whether or not the gateway is running."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from edge.clock import Clock
from protocols.events import Lane


class OutboxNotReady(FileNotFoundError):
    """No outbox yet at that path, or the gateway is creating it right now."""


def read_status(outbox_path: Path, clock: Clock) -> dict[str, Any]:
    if not outbox_path.exists():
        raise OutboxNotReady(f"no outbox at {outbox_path}: has this gateway ever run?")
    con = sqlite3.connect(f"file:{outbox_path}?mode=ro", uri=True, timeout=5)
    try:
        try:
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                raise OutboxNotReady(f"outbox at {outbox_path} is still being created") from None
            raise
        if "store_id" not in meta:
            raise OutboxNotReady(f"outbox at {outbox_path} is still being created")
        backlog = {lane.name.lower(): 0 for lane in Lane}
        backlog_bytes = 0
        for lane, n, size in con.execute(
            "SELECT lane, COUNT(*), COALESCE(SUM(size),0) FROM events GROUP BY lane"
        ):
            backlog[Lane(lane).name.lower()] = n
            backlog_bytes += size
        oldest = con.execute("SELECT MIN(seq) FROM events").fetchone()[0]
        dead = con.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
        dead_reasons = con.execute(
            "SELECT reason, COUNT(*) FROM dead_letter GROUP BY reason ORDER BY COUNT(*) DESC LIMIT 5"
        ).fetchall()
    finally:
        con.close()
    last_ack = int(meta["last_ack_ms"]) if "last_ack_ms" in meta else None
    return {
        "store_id": meta.get("store_id"),
        "next_seq": int(meta.get("next_seq", 1)),
        "oldest_unacked_seq": oldest,
        "backlog": backlog,
        "backlog_total": sum(backlog.values()),
        "backlog_bytes": backlog_bytes,
        "store_full": meta.get("store_full") == "1",
        "counters": {
            k: int(meta.get(k, 0))
            for k in (
                "accepted_total",
                "acked_total",
                "evicted_events",
                "evicted_bytes",
                "refused_telemetry",
                "rejected_events",
            )
        },
        "dead_letters": dead,
        "dead_letter_reasons": {r: n for r, n in dead_reasons},
        "last_ack_ms": last_ack,
        "last_ack_age_s": None if last_ack is None else round(time.time() - last_ack / 1000, 1),
        "uplink_connected": meta.get("uplink_connected") == "1",
        "uplink_since_ms": int(meta["uplink_since_ms"]) if meta.get("uplink_since_ms") else None,
        "uplink_error": meta.get("uplink_error", ""),
        "clock_synced": clock.synced(),
        "boot_id": clock.boot_id,
    }


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def format_status(gateway_id: str, s: dict[str, Any]) -> str:
    c = s["counters"]
    b = s["backlog"]
    lines = [
        f"gateway       {gateway_id}",
        f"store         {s['store_id']}  (next seq {s['next_seq']})",
        "uplink        "
        + (f"connected since {_when(s['uplink_since_ms'])}" if s["uplink_connected"] else "NOT connected")
        + (f"  ({s['uplink_error']})" if s["uplink_error"] and not s["uplink_connected"] else ""),
        f"last ack      {_when(s['last_ack_ms'])}"
        + (f"  ({s['last_ack_age_s']} s ago)" if s["last_ack_age_s"] is not None else ""),
        f"clock         {'synchronised' if s['clock_synced'] else 'NOT synchronised'}  (boot {s['boot_id']})",
        f"backlog       {s['backlog_total']} events, {s['backlog_bytes']} bytes  "
        f"(life safety {b['life_safety']}, security {b['security']}, telemetry {b['telemetry']})",
        f"store full    {'YES: telemetry is being refused' if s['store_full'] else 'no'}",
        f"accepted      {c['accepted_total']}   acked {c['acked_total']}",
        f"evicted       {c['evicted_events']} events ({c['evicted_bytes']} bytes), reported to the cloud",
        f"refused       {c['refused_telemetry']} telemetry events",
        f"dead letters  {s['dead_letters']}"
        + "".join(f"\n              {n} × {r}" for r, n in s["dead_letter_reasons"].items()),
    ]
    devices = s.get("devices")
    if devices:
        as_of = devices.get("as_of_ms")
        if devices.get("running", True) and as_of is not None and time.time() * 1000 - as_of < 10_000:
            lines.append("devices")
        else:
            lines.append(f"devices       as last seen by the gateway, {_when(as_of)} (it is not running)")
        for family, st in sorted(devices.get("families", {}).items()):
            for name, d in sorted(st.get("devices", {}).items()):
                state = str(d.get("state", "?"))
                since = _when(d.get("since_ms"))
                flag = "   <-- not answering" if state == "offline" else ""
                lines.append(f"  {family:<8} {name:<24} {state:<8} since {since}{flag}")
        lines.extend(_local_lines(devices.get("local") or {}))
    return "\n".join(lines)


def _local_lines(local: dict[str, Any]) -> list[str]:
    """Doors, fire release, intrusion zones, equipment faults and the credential store."""
    out: list[str] = []
    access = local.get("access")
    if access:
        age = access.get("age_s")
        age_text = "never confirmed by the cloud" if age is None else f"confirmed {age / 60:.0f} min ago"
        out.append(
            f"credentials   {access.get('credentials', 0)} at version {access.get('version', 0)}, "
            f"{age_text}; {access.get('decisions', 0)} decision(s) since start"
        )
    fire = local.get("fire") or {}
    if fire.get("released"):
        doors = ", ".join(sorted(fire["released"]))
        out.append(f"FIRE RELEASE  {doors} released until a person resets it (fire.reset or the key)")
    for name, d in sorted((local.get("doors") or {}).items()):
        state = "released" if d.get("wanted") == "released" else "locked"
        notes = [
            n
            for n in (d.get("alarm"), d.get("write_error") and f"lock write failing: {d['write_error']}")
            if n
        ]
        open_ = {True: "open", False: "closed"}.get(d.get("open"), "contact unknown")
        out.append(f"  door     {name:<24} {state:<8} {open_}{'   <-- ' + '; '.join(notes) if notes else ''}")
    for name, z in sorted((local.get("intrusion") or {}).items()):
        extra = f" (bypassed: {', '.join(z['bypassed'])})" if z.get("bypassed") else ""
        out.append(f"  zone     {name:<24} {z.get('state', '?')}{extra}")
    for name, r in sorted((local.get("rules") or {}).items()):
        if r.get("state") not in (None, "normal"):
            out.append(f"  rule     {name:<24} {r['state']}   <-- {r.get('fault', '')}")
    return out
