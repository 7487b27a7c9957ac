"""``gatehouse demo``: the whole platform on one machine.

- the cloud (``gatehouse cloud serve``) on SQLite under ./var/demo/cloud, with the embedded MQTT
  broker on a non-standard loopback port (a Mosquitto may already hold 1883), seeded with the demo
  property company (``gatehouse cloud seed-demo``: an estate of six towers, hundreds of flats and
  residents, one member of staff per role), whose console sign-ins it prints;
- the simulated building (``gatehouse sim building``): Modbus meters, chiller, pump and I/O
  modules, a BACnet air handler with duct smoke detectors, a Wiegand and an OSDP card reader, all
  speaking their real protocols on loopback, with the demo scenario (drivers/sim/scenarios/demo.toml)
  raising smoke, forcing a door and failing a device on a three-minute loop;
- one real gateway process (``gatehouse gateway run``) registered with the cloud on first run,
  reading the building through its drivers;
- a status line every few seconds; Ctrl-C stops everything cleanly. A second run keeps the data.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DEMO_SCENARIO = Path(__file__).resolve().parent.parent / "drivers" / "sim" / "scenarios" / "demo.toml"
GATEWAY_ID = "hv-tower-gw1"
# The seeded estate's code (cloud/seed.py): the gateway serves it and its access data is kept under it.
SITE = "harbour-view"
# A data folder made by a demo of another layout is moved aside rather than half-reused.
DEMO_LAYOUT = "2"
# The demo inbox checks the cloud's SMS requests with this (the SMS provider's shared secret).
INBOX_SMS_SECRET = "harbour-demo-sms-secret"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=os.environ.get("GATEHOUSE_DEMO_DIR", "./var/demo"),
        help="where the demo keeps its data (default ./var/demo); a second run reuses it",
    )
    p.add_argument("--api-port", type=int, default=8080, help="cloud API port on 127.0.0.1 (default 8080)")
    p.add_argument("--broker-port", type=int, default=18830, help="embedded MQTT broker port (default 18830)")
    p.add_argument(
        "--inbox-port",
        type=int,
        default=8025,
        help="the demo inbox's SMTP port (default 8025); its SMS and webhook endpoint listens on the next "
        "port: the on-call technicians' emails and text messages are printed as [inbox] lines",
    )
    p.add_argument(
        "--scenario",
        default=str(DEMO_SCENARIO),
        help="scenario file the building runs (default: the demo's own loop of smoke, a forced door, "
        "a failed device, a bad card frame and a tampered reader)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="extra synthetic telemetry events per second on top of the building (default 0)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop by itself after this many seconds (default: run until Ctrl-C)",
    )


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _write_cloud_config(path: Path, data: Path, args: argparse.Namespace) -> None:
    path.write_text(
        "# Written by `gatehouse demo`. See config/cloud.example.toml for every key.\n"
        f"data_dir = {_q(str(data / 'cloud'))}\n\n"
        f'[api]\nhost = "127.0.0.1"\nport = {args.api_port}\n\n'
        f'[mqtt]\nurl = ""  # empty: the embedded broker\nembedded_host = "127.0.0.1"\n'
        f"embedded_port = {args.broker_port}\n\n"
        "# Notices go to the demo's inbox (gatehouse cloud inbox): a real SMTP server and SMS provider\n"
        "# on loopback that print what a technician's phone would show.\n"
        f'[notify]\nbase_url = "http://127.0.0.1:{args.api_port}"\n'
        f'[notify.smtp]\nhost = "127.0.0.1"\nport = {args.inbox_port}\n'
        'from_address = "alerts@harbour.example"\n'
        f'[notify.sms]\nurl = "http://127.0.0.1:{args.inbox_port + 1}/sms"\nkey_id = "demo"\n'
        f"secret = {_q(INBOX_SMS_SECRET)}\n\n"
        "[alerts]\ngateway_offline_notify_after_s = 30\n",
        encoding="utf-8",
    )


def _write_gateway_config(
    path: Path, password: str, data: Path, building: str, args: argparse.Namespace
) -> None:
    synthetic = ""
    if args.rate > 0:
        synthetic = (
            f'[[sources]]\nkind = "synthetic"\nrate_per_s = {args.rate}\nbatch = 10\n'
            "alarm_every_s = 0\naccess_every_s = 0\n\n"
        )
    path.write_text(
        "# Written by `gatehouse demo` from `gatehouse cloud gateway add` and the simulated building.\n"
        "# See config/gateway.example.toml for every key.\n"
        f"gateway_id = {_q(GATEWAY_ID)}\n"
        f"data_dir = {_q(str(data / 'gateway'))}\n"
        'config_version = "demo-3"\n\n'
        f"[mqtt]\nurl = {_q(f'mqtt://127.0.0.1:{args.broker_port}')}\npassword = {_q(password)}\n\n"
        # The demo's gateway runs on the cloud's own machine and shares its clock; a gateway in a
        # plant room asks the kernel (auto), and schedules wait until NTP has set its clock.
        '[clock]\nsynced = "yes"\n\n' + synthetic + building,
        encoding="utf-8",
    )
    path.chmod(0o600)


def _wait_file(path: Path, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(
                f"gatehouse demo: {what} exited with status {proc.returncode}; see the log above"
            )
        if time.monotonic() > deadline:
            raise SystemExit(f"gatehouse demo: {what} did not start within {timeout:.0f}s")
        time.sleep(0.1)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"gatehouse demo: the cloud exited with status {proc.returncode}; see the log above"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"gatehouse demo: the cloud did not become healthy at {url} within {timeout:.0f}s")


# What the demo prints as it happens: everything but routine readings.
ROUTINE = {
    "telemetry.point",
    "meter.reading",
    "equipment.status",
    "door.lock_state",
    "door.exit_request",
    "fire.reset_input",
    "gateway.inventory",
}


DESCRIBED = ("zone", "door", "doors", "holder", "card", "reason", "by", "state", "sensors", "fault", "detail")


def _describe(e: dict) -> str:
    d = e.get("data", {})
    when = str(e.get("reported_time", ""))[11:19]
    detail = ", ".join(f"{k}={d[k]}" for k in DESCRIBED if d.get(k))
    return f"  {when}  {e['kind']:<22} {e['source']:<20} {detail}"[:160]


def _new_events(api: str, token: str, after_id: int) -> tuple[list[dict], int]:
    """Events the cloud stored since ``after_id`` that a person would want to see, oldest first."""
    req = urllib.request.Request(
        f"{api}/api/v1/events?gateway_id={GATEWAY_ID}&limit=200", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            items = json.load(r)["items"]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return [], after_id
    fresh = [e for e in items if e["id"] > after_id]
    newest = max((e["id"] for e in items), default=after_id)
    return sorted((e for e in fresh if e["kind"] not in ROUTINE), key=lambda e: e["id"]), max(
        newest, after_id
    )


def _import_cardholders(api: str, token: str) -> None:
    """The building's access levels and cardholders into the cloud (from the same CSV an office
    would upload); the cloud pushes them to the gateway. A second run changes nothing."""
    from drivers.sim.building import Building

    site = urllib.parse.quote(SITE, safe="")
    for what, body in (("levels", Building.levels_csv()), ("credentials", Building.credentials_csv())):
        req = urllib.request.Request(
            f"{api}/api/v1/sites/{site}/access/{what}/import",
            data=body.encode(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                doc = json.load(r)
            print(
                f"gatehouse demo: {what}: {doc.get('added', 0)} added, {doc.get('changed', 0)} changed, "
                f"access version {doc.get('version')}",
                flush=True,
            )
        except (urllib.error.URLError, OSError, ValueError) as e:
            print(f"gatehouse demo: could not import the demo {what}: {e}", file=sys.stderr, flush=True)


def _cloud_events(api: str, token: str) -> int | None:
    req = urllib.request.Request(f"{api}/api/v1/gateways", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            doc = json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    items = doc["items"] if isinstance(doc, dict) else doc
    return sum(int(g.get("event_count", 0)) for g in items)


def _retire_old_layout(data: Path) -> None:
    if not data.exists() or not any(data.iterdir()):
        return
    stamp = data / "demo-layout"
    if stamp.exists() and stamp.read_text().strip() == DEMO_LAYOUT:
        return
    aside = data.with_name(f"{data.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    data.rename(aside)
    print(f"gatehouse demo: {data} was made by an earlier demo; moved to {aside}", flush=True)


def _seed(exe: list[str], env: dict[str, str], cloud_toml: Path, api: str, webhook_url: str) -> list[str]:
    """The demo company, its estate and staff (a second run adds nothing); the sign-in lines."""
    out = subprocess.run(
        [
            *exe,
            "cloud",
            "seed-demo",
            "--config",
            str(cloud_toml),
            "--gateway",
            GATEWAY_ID,
            "--url",
            api,
            "--webhook-url",
            webhook_url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        raise SystemExit("gatehouse demo: could not seed the demo company")
    return out.stdout.splitlines()


def run(args: argparse.Namespace) -> int:
    from cloud.alerts.seed import demo_webhook_secret
    from cloud.seed import DEMO_COMPANY_CODE
    from edge.clock import Clock
    from edge.fieldbus import read_device_status
    from edge.status import read_status

    data = Path(args.data_dir).resolve()
    _retire_old_layout(data)
    data.mkdir(parents=True, exist_ok=True)
    (data / "demo-layout").write_text(DEMO_LAYOUT + "\n")
    cloud_toml, gateway_toml = data / "cloud.toml", data / "gateway.toml"
    exe = [sys.executable, "-m", "gatehouse"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("GATEHOUSE_DATABASE_URL", None)  # the demo is SQLite under its data dir

    _write_cloud_config(cloud_toml, data, args)
    api = f"http://127.0.0.1:{args.api_port}"
    print(f"gatehouse demo: data in {data}", flush=True)
    inbox = subprocess.Popen(
        [
            *exe,
            "cloud",
            "inbox",
            "--smtp-port",
            str(args.inbox_port),
            "--http-port",
            str(args.inbox_port + 1),
            "--sms-secret",
            INBOX_SMS_SECRET,
            "--webhook-secret",
            demo_webhook_secret(DEMO_COMPANY_CODE),
            "--log",
            str(data / "inbox.jsonl"),
        ],
        env=env,
    )
    cloud = subprocess.Popen([*exe, "cloud", "serve", "--config", str(cloud_toml)], env=env)
    gateway: subprocess.Popen | None = None
    building: subprocess.Popen | None = None
    try:
        _wait_healthy(f"{api}/healthz", cloud)
        sign_ins = _seed(exe, env, cloud_toml, api, f"http://127.0.0.1:{args.inbox_port + 1}/webhook")
        registration = data / "gateway-password"
        if not registration.exists() and gateway_toml.exists():
            # A data folder from an earlier demo: the gateway's password is in its old config.
            registration.write_text(tomllib.loads(gateway_toml.read_text())["mqtt"]["password"])
        if not registration.exists():
            out = subprocess.run(
                [
                    *exe,
                    "cloud",
                    "gateway",
                    "add",
                    GATEWAY_ID,
                    "--site",
                    SITE,
                    "--name",
                    "T1 plant room",
                    "--config",
                    str(cloud_toml),
                    "--mqtt-url",
                    f"mqtt://127.0.0.1:{args.broker_port}",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                raise SystemExit("gatehouse demo: could not register the demo gateway")
            registration.write_text(tomllib.loads(out.stdout)["mqtt"]["password"])
            registration.chmod(0o600)
        # The building's ports and pty paths are new on every run: it says how to reach it.
        building_toml = data / "building.toml"
        building_toml.unlink(missing_ok=True)
        building = subprocess.Popen(
            [
                *exe,
                "sim",
                "building",
                "--gateway-config-out",
                str(building_toml),
                "--scenario",
                args.scenario,
            ],
            env=env,
        )
        _wait_file(building_toml, building, "the simulated building")
        _write_gateway_config(
            gateway_toml, registration.read_text().strip(), data, building_toml.read_text(), args
        )
        gateway = subprocess.Popen([*exe, "gateway", "run", "--config", str(gateway_toml)], env=env)
        token = (data / "cloud" / "api-token").read_text().strip()
        _import_cardholders(api, token)
        print(
            "\n"
            "  Gatehouse demo is running.\n"
            + "".join(f"  {line}\n" for line in sign_ins)
            + f"  Cloud API      {api}/docs   (Authorize with the platform token below)\n"
            f"  API token      {token}   (the platform operator's: every company)\n"
            f"  Try            curl -H 'Authorization: Bearer {token}' '{api}/api/v1/events?limit=5'\n"
            f"  Metrics        {api}/metrics\n"
            f"  Alerts         {api}/alerts   (on call: {api}/oncall; a technician's phone: {api}/tech)\n"
            f"  Inbox          SMTP 127.0.0.1:{args.inbox_port}, SMS and webhooks http://127.0.0.1:"
            f"{args.inbox_port + 1}: every notice prints here as an [inbox] line ({data / 'inbox.jsonl'})\n"
            f"  MQTT broker    mqtt://127.0.0.1:{args.broker_port} (embedded; gateways sign in with "
            "their own id)\n"
            f"  Gateway        {GATEWAY_ID} at {SITE}: gatehouse gateway status --config {gateway_toml}\n"
            f"  Unlock a door  gatehouse cloud gateway command {GATEWAY_ID} door.unlock "
            f"--arg door=door-plantroom --config {cloud_toml}\n"
            "  Ctrl-C stops everything; the next run keeps the data.\n",
            flush=True,
        )
        started = time.monotonic()
        gw_cfg = tomllib.loads(gateway_toml.read_text())
        outbox = Path(gw_cfg["data_dir"]) / "outbox.sqlite3"
        _, last_id = _new_events(api, token, 0)  # from now on: not a replay of earlier runs
        while args.duration <= 0 or time.monotonic() - started < args.duration:
            time.sleep(5)
            if any(p.poll() is not None for p in (cloud, gateway, building, inbox)):
                print("gatehouse demo: a process exited; stopping", file=sys.stderr)
                return 1
            try:
                s = read_status(outbox, Clock("auto"))
            except Exception:  # the gateway is still creating its store
                continue
            held = _cloud_events(api, token)
            fresh, last_id = _new_events(api, token, last_id)
            for e in fresh:
                print(_describe(e), flush=True)
            devices = read_device_status(outbox.parent) or {}
            states = [
                d.get("state")
                for f in devices.get("families", {}).values()
                for d in f.get("devices", {}).values()
            ]
            online = f"devices {states.count('online')}/{len(states)} online, " if states else ""
            print(
                f"[demo] gateway {GATEWAY_ID}: {online}accepted {s['counters']['accepted_total']}, "
                f"backlog {s['backlog_total']}, acked {s['counters']['acked_total']}, "
                f"uplink {'up' if s['uplink_connected'] else 'DOWN'} | cloud holds "
                f"{'?' if held is None else held} events",
                flush=True,
            )
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        print("gatehouse demo: stopping", flush=True)
        # The gateway first, so it can say goodbye to the broker; the building after it, so the
        # gateway does not report its devices going offline on the way out.
        for proc in (gateway, building, cloud, inbox):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
