"""``gatehouse gateway ...``: run the gateway, show its status, check its config."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edge.clock import Clock
from edge.config import load_gateway_config
from protocols.configuration import ConfigError

DEFAULT_CONFIG = os.environ.get("GATEHOUSE_GATEWAY_CONFIG", "/etc/gatehouse/gateway.toml")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser(
        "run",
        help="run the gateway: outbox, uplink and configured sources",
        description="Run the gateway until SIGINT/SIGTERM. Events are kept in the "
        "outbox (SQLite) until the cloud acknowledges them.",
    )
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"gateway TOML file (default {DEFAULT_CONFIG})")
    run.set_defaults(func=_run)

    st = sub.add_parser(
        "status",
        help="show backlog, counters, last ack and clock state",
        description="Show what the outbox holds and how the uplink fares. Reads the "
        "outbox file read-only, so it works whether or not the gateway is running.",
    )
    st.add_argument("--config", default=DEFAULT_CONFIG, help=f"gateway TOML file (default {DEFAULT_CONFIG})")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    st.set_defaults(func=_status)

    chk = sub.add_parser(
        "check-config",
        help="check a gateway config file against the schema",
        description="Check a gateway config file; print one line naming the file, "
        "the key and the problem and exit 2 if it is wrong.",
    )
    chk.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    chk.set_defaults(func=_check)


def _load(path: str):  # type: ignore[no-untyped-def]
    try:
        return load_gateway_config(path)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(2) from None


def _run(args: argparse.Namespace) -> int:
    from edge.gateway import run_forever  # imports aiosqlite and paho only when running

    return run_forever(_load(args.config), Path(args.config))


def _status(args: argparse.Namespace) -> int:
    from edge.fieldbus import read_device_status
    from edge.status import format_status, read_status

    cfg = _load(args.config)
    try:
        s = read_status(cfg.outbox_path, Clock(cfg.clock.synced))
        s["devices"] = read_device_status(Path(cfg.data_dir))
    except FileNotFoundError as e:
        print(f"gatehouse gateway status: {e}", file=sys.stderr)
        return 1
    print(json.dumps(s, indent=2) if args.json else format_status(cfg.gateway_id, s))
    return 0


def _check(args: argparse.Namespace) -> int:
    cfg = _load(args.file)
    devices = len(cfg.modbus) + len(cfg.bacnet) + len(cfg.readers)
    print(
        f"{args.file}: ok (gateway {cfg.gateway_id}, broker {cfg.mqtt.url}, {len(cfg.sources)} source(s), "
        f"{devices} field device(s), {len(cfg.sensors)} sensor(s), {len(cfg.doors)} door(s), "
        f"{len(cfg.intrusion_zones)} intrusion zone(s), {len(cfg.rules)} equipment rule(s))"
    )
    return 0
