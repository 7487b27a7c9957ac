"""``gatehouse cloud ...``: serve, ingest, migrate, the gateway registry, and commands to gateways.

Exit status: 0 done, 1 failed (the reason on stderr), 2 unusable config or arguments.
"""

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from cloud.accounts.cli import add_commands as add_account_commands
from cloud.accounts.permissions import PLATFORM, Principal
from cloud.audit.cli import add_audit_commands
from cloud.broker.provision import BrokerSync
from cloud.commands.repository import find_command
from cloud.commands.schemas import CommandOut
from cloud.commands.service import (
    DEFAULT_EXPIRES_S,
    MAX_BY_LENGTH,
    MAX_EXPIRES_S,
    Status,
    check_args,
    issue_command,
    record_result,
    shown_status,
)
from cloud.config import CloudConfig, broker_address, load_cloud_config
from cloud.db import SessionFactory
from cloud.gateways.service import (
    Issued,
    register_gateway,
    revoke_gateway_credentials,
    rotate_gateway_credentials,
)
from cloud.kit.errors import CloudError, InvalidInput
from cloud.models import GatewayCommand
from cloud.mqtt_link import Inbound
from cloud.notify.service import run_notifier
from cloud.registry import list_gateways
from cloud.seed_cli import add_seed_commands
from cloud.server import StartupFailed, command_link, open_database, run_ingest, serve
from protocols.commands import COMMANDS
from protocols.configuration import ConfigError
from protocols.envelope import CommandResult, decode
from protocols.errors import ProtocolError
from protocols.topics import Channel, topic, valid_gateway_id

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
        "notify",
        help="run the notification dispatcher and the alert escalator alone (email, SMS, webhooks)",
        description="Upgrade the database, then send the alerts' notifications from the outbox: email "
        "over SMTP ([notify.smtp]), SMS through the provider ([notify.sms]) and signed webhooks, with "
        "retries and back-off. Several can run at once; each notice is sent by one of them. Set "
        "notify.dispatch = false to run it here instead of inside serve/ingest. SIGINT/SIGTERM stop it.",
    )
    _config_option(p)
    p.set_defaults(func=_notify)

    p = subparsers.add_parser(
        "inbox",
        help="a local mail server and SMS/webhook receiver that prints every notice (demos, rehearsals)",
        description="Run an SMTP server and an HTTP endpoint playing the SMS provider (POST /sms) and a "
        "webhook receiver (POST /webhook) on 127.0.0.1, checking the signatures, printing each message "
        "as a phone would show it and appending it to --log (JSON lines). Point [notify.smtp] and "
        "[notify.sms] at it to rehearse alerting before the real accounts exist.",
    )
    p.add_argument("--smtp-port", type=int, default=8025, help="SMTP port (default 8025)")
    p.add_argument("--http-port", type=int, default=8026, help="SMS and webhook port (default 8026)")
    p.add_argument("--sms-secret", default="", help="[notify.sms] secret to check requests with")
    p.add_argument("--webhook-secret", default="", help="a webhook's secret to check deliveries with")
    p.add_argument("--log", default="", metavar="FILE", help="append every message to FILE (JSON lines)")
    p.set_defaults(func=_inbox)

    p = subparsers.add_parser(
        "migrate",
        help="upgrade the database schema to the latest revision",
        description="Apply the database migrations (Alembic upgrade head). serve and ingest do this at "
        "start as well; run it alone before a rollout.",
    )
    _config_option(p)
    p.set_defaults(func=_migrate)

    gateway = subparsers.add_parser(
        "gateway",
        help="register, list, re-key and revoke gateways, and send them commands",
        description="Register gateways, list them, rotate or revoke their broker credentials, send "
        "them commands. Registering, rotating and revoking are recorded in the audit log as the "
        "platform operator (with your login name).",
    )
    gateway_sub = gateway.add_subparsers(dest="gateway_command", metavar="ACTION", required=True)

    p = gateway_sub.add_parser(
        "add",
        help="register a gateway and print its config (with its new MQTT password)",
        description="Register a gateway under ID (its MQTT username) and print a ready gateway config "
        "holding its generated password. The password is shown this once; the cloud keeps only a hash.",
    )
    p.add_argument("gateway_id", metavar="ID", help="gateway id: letters, digits, '.', '_', '-'")
    p.add_argument(
        "--site",
        default="",
        metavar="CODE",
        help="the code of the site it serves (the gateway then belongs to that site's company); a code "
        "no site has is kept as the gateway's site name only",
    )
    p.add_argument("--name", default="", help="what to call it in the console, e.g. 'T1 plant room'")
    _config_option(p)
    _credentials_options(p)
    p.set_defaults(func=_gateway_add)

    p = gateway_sub.add_parser(
        "rotate",
        help="give a gateway a new MQTT password and print its config",
        description="Give gateway ID a new broker password and print a ready gateway config holding it. "
        "The old password stops working, and the broker closes a connection made with it (the "
        "embedded broker, Mosquitto's reload or its dynamic-security plugin). Reinstates a revoked "
        "gateway.",
    )
    p.add_argument("gateway_id", metavar="ID", help="the gateway's id")
    _config_option(p)
    _credentials_options(p)
    p.set_defaults(func=_gateway_rotate)

    p = gateway_sub.add_parser(
        "revoke",
        help="revoke a gateway's MQTT credentials (its history stays)",
        description="Gateway ID can no longer sign in to the broker, and a connection it holds is "
        "closed. Its registration, events and commands stay. Exit status 1 if the broker could "
        "not be told (the registry has the revocation: run it again once the broker answers).",
    )
    p.add_argument("gateway_id", metavar="ID", help="the gateway's id")
    _config_option(p)
    p.set_defaults(func=_gateway_revoke)

    p = gateway_sub.add_parser(
        "list",
        help="list registered gateways",
        description="List the registered gateways with their last state and event counts.",
    )
    _config_option(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    p.set_defaults(func=_gateway_list)

    p = gateway_sub.add_parser(
        "command",
        help="send a gateway a command and print its answer",
        description="Send GATEWAY the command NAME through the broker, recorded with who asked, and "
        "wait for its answer. Exit status 0 when the gateway did it, 1 when it refused, failed, "
        "found it expired or did not answer in time, 2 for unusable arguments. "
        f"Commands: {', '.join(sorted(COMMANDS))}.",
    )
    p.add_argument("gateway_id", metavar="GATEWAY", help="the gateway's id")
    p.add_argument("name", metavar="NAME", help="the command, e.g. door.unlock")
    p.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an argument (repeatable), e.g. --arg door=front --arg seconds=5; numbers and true/false "
        "are read as the command needs them",
    )
    p.add_argument("--args-json", metavar="JSON", help="the arguments as a JSON object (--arg wins)")
    p.add_argument(
        "--expires",
        type=float,
        default=DEFAULT_EXPIRES_S,
        metavar="S",
        help=f"the gateway refuses it after S seconds (default {DEFAULT_EXPIRES_S}, at most {MAX_EXPIRES_S})",
    )
    p.add_argument(
        "--wait", type=float, default=10.0, metavar="S", help="wait S seconds for the answer (default 10)"
    )
    p.add_argument("--by", metavar="NAME", help="who asks (default: your login name)")
    p.add_argument("--json", action="store_true", help="print the command and its answer as JSON")
    _config_option(p)
    p.set_defaults(func=_gateway_command)

    add_audit_commands(subparsers)

    add_account_commands(subparsers)  # company add, user add
    add_seed_commands(subparsers)  # seed-demo


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="cloud config (TOML); default: built-in defaults")


def _credentials_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mqtt-url", help="broker URL the gateway connects to (default: the cloud's broker)")
    p.add_argument("--output", metavar="FILE", help="write the config to FILE (mode 0600) instead of stdout")


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


def _notify(args: argparse.Namespace) -> int:
    async def work(config: CloudConfig) -> None:
        from cloud.alerts.escalator import Escalator

        # The escalator beside the dispatcher: steps, repeats and re-raises as time passes.
        await run_notifier(
            config, [lambda sessions, dispatcher: Escalator(sessions, config.alerts, wake=dispatcher.wake)]
        )

    return _run(args, work)


def _inbox(args: argparse.Namespace) -> int:
    from cloud.notify.inbox import run_inbox

    run_inbox(args.smtp_port, args.http_port, args.sms_secret, args.webhook_secret, args.log)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    async def work(config: CloudConfig) -> None:
        async with open_database(config):
            pass  # opening upgrades; open_database logs the revision
        print("database schema is up to date")

    return _run(args, work)


def _cli_principal() -> Principal:
    # The CLI holds the database itself: it acts as the platform operator, named in the audit
    # log by the login that ran it.
    return replace(PLATFORM, name=_login_name())


def _gateway_add(args: argparse.Namespace) -> int:
    async def issue(config: CloudConfig, sessions: SessionFactory) -> Issued:
        issued = await register_gateway(
            sessions,
            config,
            _cli_principal(),
            args.gateway_id,
            site=args.site,
            name=args.name,
            mqtt_url=args.mqtt_url,
        )
        if args.site and issued.gateway.site_id is None:
            print(
                f"gatehouse cloud gateway add: note: no site has the code {args.site!r}; the gateway is "
                "registered under that site name only and belongs to no company (only the platform "
                "operator sees it)",
                file=sys.stderr,
            )
        return issued

    return _issue_credentials(args, "gateway add", "registered", issue)


def _gateway_rotate(args: argparse.Namespace) -> int:
    async def issue(config: CloudConfig, sessions: SessionFactory) -> Issued:
        return await rotate_gateway_credentials(
            sessions, config, _cli_principal(), args.gateway_id, mqtt_url=args.mqtt_url
        )

    return _issue_credentials(args, "gateway rotate", "given new credentials", issue)


def _issue_credentials(
    args: argparse.Namespace,
    command: str,
    done: str,
    issue: Callable[[CloudConfig, SessionFactory], Coroutine[Any, Any, Issued]],
) -> int:
    """Issue a password and hand out the config holding it: on stdout, or in a new private file
    opened before anything is issued (a password that could not be written anywhere would be lost)."""
    output = Path(args.output) if args.output else None
    fd = -1
    if output is not None:
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            reason = "exists; not overwriting it" if isinstance(e, FileExistsError) else e.strerror
            print(f"gatehouse cloud {command}: {output}: {reason}", file=sys.stderr)
            return 2

    async def work(config: CloudConfig) -> int:
        async with open_database(config) as (_engine, sessions):
            issued = await issue(config, sessions)
        if fd < 0:
            sys.stdout.write(issued.config_toml)
        else:
            with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as f:
                f.write(issued.config_toml)
            print(f"gateway {args.gateway_id} {done}; its config is in {output}", file=sys.stderr)
        _say_broker(command, issued.broker)
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


def _gateway_revoke(args: argparse.Namespace) -> int:
    async def work(config: CloudConfig) -> int:
        async with open_database(config) as (_engine, sessions):
            revoked = await revoke_gateway_credentials(sessions, config, _cli_principal(), args.gateway_id)
        print(f"gateway {args.gateway_id}: credentials revoked")
        _say_broker("gateway revoke", revoked.broker)
        return 0 if revoked.broker.applied else 1

    return _run(args, work)


def _say_broker(command: str, broker: BrokerSync) -> None:
    if broker.applied:
        log.info("broker: %s", broker.detail)
    else:
        print(f"gatehouse cloud {command}: warning: broker not updated: {broker.detail}", file=sys.stderr)


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
                            "name": g.name,
                            "site": g.site,
                            "site_id": g.site_id,
                            "revoked": g.revoked_at is not None,
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
            online = "revoked" if g.revoked_at is not None else "yes" if g.online else "no"
            rows.append((g.id, g.site, online, seen, g.version, clock, str(g.event_count)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())

    return _run(args, work)


def _command_args(args: argparse.Namespace) -> dict[str, Any]:
    """--args-json, then each --arg KEY=VALUE over it. Raises InvalidInput."""
    given: dict[str, Any] = {}
    if args.args_json:
        try:
            given = orjson.loads(args.args_json)
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f"--args-json: not JSON: {e}") from None
        if not isinstance(given, dict):
            raise InvalidInput('--args-json: must be a JSON object, e.g. \'{"door": "front"}\'')
    for item in args.arg:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--arg {item!r}: expected KEY=VALUE")
        given[key.strip()] = value
    return given


def _login_name() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "cli"


def _gateway_command(args: argparse.Namespace) -> int:
    try:
        if not valid_gateway_id(args.gateway_id):
            raise InvalidInput(f"GATEWAY: {args.gateway_id!r} is not a gateway id")
        checked = check_args(args.name, _command_args(args))
        if not 1 <= args.expires <= MAX_EXPIRES_S:
            raise InvalidInput(f"--expires: 1 to {MAX_EXPIRES_S} seconds, not {args.expires:g}")
        by = args.by or _login_name()
        if len(by) > MAX_BY_LENGTH:
            raise InvalidInput(f"--by: at most {MAX_BY_LENGTH} characters")
    except InvalidInput as e:
        print(f"gatehouse cloud gateway command: {e}", file=sys.stderr)
        return 2

    async def work(config: CloudConfig) -> int:
        answers: dict[str, tuple[CommandResult, datetime]] = {}
        arrived = asyncio.Event()

        def on_result(inbound: Inbound) -> None:
            try:
                result = decode(inbound.payload, CommandResult)
            except ProtocolError:
                return
            answers[result.id] = (result, inbound.received_time)
            arrived.set()

        gw = args.gateway_id
        async with open_database(config) as (_engine, sessions):
            # Subscribed to the gateway's answers before anything is sent: the answer cannot pass
            # unseen, even with no ingest running to record it.
            link = command_link(config, "cli", [topic(gw, Channel.CMD_RESULT)], on_result)
            link.start()
            try:
                try:
                    await asyncio.wait_for(link.subscribed.wait(), 15)
                except TimeoutError:
                    print(
                        f"gatehouse cloud: cannot reach the MQTT broker at {broker_address(config).url}",
                        file=sys.stderr,
                    )
                    return 1
                command = await issue_command(
                    sessions, link, gw, args.name, checked, by=by, expires_in_s=args.expires
                )
                command = await _await_answer(sessions, command, answers, arrived, args.wait)
            finally:
                await link.stop()
        _print_command(command, args.json, args.wait)
        return 0 if command.status == Status.DONE else 1

    return _run(args, work)


async def _await_answer(
    sessions: SessionFactory,
    command: GatewayCommand,
    answers: dict[str, tuple[CommandResult, datetime]],
    arrived: asyncio.Event,
    wait_s: float,
) -> GatewayCommand:
    """The command once answered (heard here, or recorded by ingest), or as it stands at the end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, wait_s)
    while True:
        heard = answers.get(command.id)
        if heard is not None:
            async with sessions() as session, session.begin():
                recorded = await record_result(session, command.gateway_id, heard[0], heard[1])
            return recorded or command
        async with sessions() as session:
            stored = await find_command(session, command.gateway_id, command.id)
        if stored is not None:
            command = stored
            if command.status != Status.SENT:
                return command
        left = deadline - loop.time()
        if left <= 0:
            return command
        arrived.clear()
        try:
            await asyncio.wait_for(arrived.wait(), min(0.5, left))
        except TimeoutError:
            pass


def _print_command(command: GatewayCommand, as_json: bool, waited: float) -> None:
    if as_json:
        print(CommandOut.of(command).model_dump_json())
        return
    status = shown_status(command)
    if command.status == Status.SENT:
        print(
            f"{command.gateway_id} {command.name}: no answer within {waited:g} s "
            f"(command {command.id}, {status}; expires {command.expires_at:%Y-%m-%d %H:%M:%SZ})"
        )
        return
    print(f"{command.gateway_id} {command.name}: {status} ({command.result_code})")
    print(f"  command {command.id}, asked by {command.requested_by}")
    if command.result_detail:
        print(f"  detail: {command.result_detail}")
    if command.result_data:
        print(f"  data: {orjson.dumps(command.result_data).decode()}")
