"""``gatehouse cloud ...``: serve, ingest, migrate, and the gateway registry.

Exit status: 0 done, 1 failed (the reason on stderr), 2 unusable config or arguments.
"""

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from cloud.config import CloudConfig, broker_address, load_cloud_config
from cloud.kit.errors import CloudError
from cloud.registry import add_gateway, list_gateways, sync_mosquitto_files
from cloud.server import StartupFailed, open_database, run_ingest, serve
from protocols.configuration import ConfigError

log = logging.getLogger(__name__)


def add_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the API and ingest (and the embedded MQTT broker when no broker is configured)",
        description="Upgrade the database, then serve the HTTP API and run MQTT ingest in one process. "
        "With mqtt.url empty, an embedded MQTT broker is started first. SIGINT/SIGTERM stop cleanly.",
    )
    _config_option(p)
    p.add_argument("--no-ingest", action="store_true", help="serve the API only (ingest runs elsewhere)")
    p.set_defaults(func=_serve)

    p = subparsers.add_parser(
        "ingest",
        help="run MQTT ingest alone against an external broker",
        description="Upgrade the database, then take the gateways' events from the broker in mqtt.url "
        "(Mosquitto, EMQX, ...). Several workers share the load with mqtt.share_group and distinct "
        "mqtt.client_id values.",
    )
    _config_option(p)
    p.set_defaults(func=_ingest)

    p = subparsers.add_parser(
        "migrate",
        help="upgrade the database schema to the latest revision",
        description="Apply the database migrations (Alembic upgrade head). serve and ingest do this at "
        "start as well; run it alone before a rollout.",
    )
    _config_option(p)
    p.set_defaults(func=_migrate)

    gateway = subparsers.add_parser(
        "gateway", help="register and list gateways", description="Register and list gateways."
    )
    gateway_sub = gateway.add_subparsers(dest="gateway_command", metavar="ACTION", required=True)

    p = gateway_sub.add_parser(
        "add",
        help="register a gateway and print its config (with its new MQTT password)",
        description="Register a gateway under ID (its MQTT username) and print a ready gateway config "
        "holding its generated password. The password is shown this once; the cloud keeps only a hash.",
    )
    p.add_argument("gateway_id", metavar="ID", help="gateway id: letters, digits, '.', '_', '-'")
    p.add_argument("--site", default="", help="the site (building, estate) the gateway serves")
    _config_option(p)
    p.add_argument("--mqtt-url", help="broker URL the gateway connects to (default: the cloud's broker)")
    p.add_argument("--output", metavar="FILE", help="write the config to FILE (mode 0600) instead of stdout")
    p.set_defaults(func=_gateway_add)

    p = gateway_sub.add_parser(
        "list",
        help="list registered gateways",
        description="List the registered gateways with their last state and event counts.",
    )
    _config_option(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    p.set_defaults(func=_gateway_list)


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="cloud config (TOML); default: built-in defaults")


def _run(args: argparse.Namespace, work: Callable[[CloudConfig], Coroutine[Any, Any, int | None]]) -> int:
    try:
        config = load_cloud_config(args.config)
        return asyncio.run(work(config)) or 0
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except (StartupFailed, CloudError) as e:
        print(f"gatehouse cloud: {e}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    async def work(config: CloudConfig) -> None:
        await serve(config, with_ingest=not args.no_ingest)

    return _run(args, work)


def _ingest(args: argparse.Namespace) -> int:
    return _run(args, run_ingest)


def _migrate(args: argparse.Namespace) -> int:
    async def work(config: CloudConfig) -> None:
        async with open_database(config):
            pass  # opening upgrades; open_database logs the revision
        print("database schema is up to date")

    return _run(args, work)


def _gateway_add(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else None
    fd = -1
    if output is not None:
        # Opened before registering: a password that could not be written anywhere would be lost.
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            reason = "exists; not overwriting it" if isinstance(e, FileExistsError) else e.strerror
            print(f"gatehouse cloud gateway add: {output}: {reason}", file=sys.stderr)
            return 2

    async def work(config: CloudConfig) -> int:
        async with open_database(config) as (_engine, sessions):
            async with sessions() as session, session.begin():
                password = await add_gateway(
                    session, args.gateway_id, args.site, reserved=frozenset({config.mqtt.username})
                )
            async with sessions() as session:
                await sync_mosquitto_files(session, config)
        url = args.mqtt_url or broker_address(config).url
        text = gateway_config(args.gateway_id, args.site, url, password)
        if fd < 0:
            sys.stdout.write(text)
        else:
            with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as f:
                f.write(text)
            print(f"gateway {args.gateway_id} registered; its config is in {output}", file=sys.stderr)
        return 0

    status = 1
    try:
        status = _run(args, work)
    finally:
        if fd >= 0:
            os.close(fd)
            if status != 0 and output is not None:
                output.unlink(missing_ok=True)
    return status


def _gateway_list(args: argparse.Namespace) -> int:
    async def work(config: CloudConfig) -> None:
        async with open_database(config) as (_engine, sessions), sessions() as session:
            gateways = await list_gateways(session)
        if args.json:
            for g in gateways:
                print(
                    orjson.dumps(
                        {
                            "id": g.id,
                            "site": g.site,
                            "online": g.online,
                            "last_seen": g.last_seen_at,
                            "version": g.version,
                            "boot_id": g.boot_id,
                            "clock_synced": g.clock_synced,
                            "event_count": g.event_count,
                        }
                    ).decode()
                )
            return
        rows = [("ID", "SITE", "ONLINE", "LAST SEEN", "VERSION", "CLOCK", "EVENTS")]
        for g in gateways:
            seen = g.last_seen_at.strftime("%Y-%m-%d %H:%M:%SZ") if g.last_seen_at else "never"
            clock = "synced" if g.clock_synced else "unsynced"
            rows.append(
                (g.id, g.site, "yes" if g.online else "no", seen, g.version, clock, str(g.event_count))
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())

    return _run(args, work)


def gateway_config(gateway_id: str, site: str, mqtt_url: str, password: str) -> str:
    """The gateway's config file as ``gateway add`` prints it."""
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    about = f" (site {_toml_string(site)})" if site else ""
    return (
        f"# Gatehouse gateway {gateway_id}{about}, registered {made}.\n"
        "# Holds the gateway's broker password: keep this file private (mode 0600).\n"
        f"gateway_id = {_toml_string(gateway_id)}\n"
        f"data_dir = {_toml_string('./var/gateway/' + gateway_id)}\n"
        "\n"
        "[mqtt]\n"
        f"url = {_toml_string(mqtt_url)}\n"
        f"password = {_toml_string(password)}\n"
        'ca_file = ""   # only meaningful with mqtts://\n'
    )


def _toml_string(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return orjson.dumps(value).decode()
