"""Alerts end to end, from simulated devices through a real gateway and broker to the people.

Real processes and peers: the simulated building (Modbus TCP, BACnet), a gateway process behind a
TCP proxy we can cut, the cloud (``gatehouse cloud serve``: embedded broker, ingest, the alert
engine, the escalator and the dispatcher; SQLite) seeded with the demo company, and the inbox
(cloud/notify/inbox.py: an aiosmtpd SMTP server and an HTTP SMS provider and webhook receiver that
check the signatures). The technician acts in Debian's Chromium from the link in their email.

Short times for the test, set where an installer sets them: the chiller rule's minimum duration
(1 s), the escalation steps (the team lead after 4 s), the gateway-offline grace (2 s).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloud.alerts.seed import demo_webhook_secret
from cloud.notify.inbox import Inbox, InboxServer
from edge.fieldbus import read_device_status
from tests.cloud.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.ports import free_port
from tests.support.tcpproxy import TcpProxy
from tests.system.harness import GATEHOUSE, BuildingThread, Cloud, Gateway, wait_until

pytestmark = [pytest.mark.system, pytest.mark.browser]

SITE_CODE = "harbour-view"
GATEWAY_ID = "hv-tower-gw1"
SMS_SECRET = "system-test-sms-secret"


class Db:
    """The cloud's SQLite file, read (and for the set-up, written) beside the running cloud."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with sqlite3.connect(self.path, timeout=30) as c:
            c.row_factory = sqlite3.Row
            return list(c.execute(sql, args))

    def run(self, sql: str, *args: Any) -> None:
        with sqlite3.connect(self.path, timeout=30) as c:
            c.execute(sql, args)

    def user(self, suffix: str) -> sqlite3.Row:
        return self.rows("SELECT * FROM users WHERE username = ?", f"harbour-{suffix}")[0]

    def alerts(self, where: str = "1=1", *args: Any) -> list[sqlite3.Row]:
        # Not the demo seed's past alerts (their keys start "demo|").
        return self.rows(f"SELECT * FROM alerts WHERE ({where}) AND key NOT LIKE 'demo|%' ORDER BY id", *args)


def device_state(gw: Gateway, device: str) -> str | None:
    status = read_device_status(gw.data) or {}
    for family in status.get("families", {}).values():
        if device in family.get("devices", {}):
            return str(family["devices"][device].get("state"))
    return None


def to(inbox: Inbox, channel: str, address: str) -> list[dict[str, Any]]:
    return [m for m in inbox.unique(channel) if m["to"] == address]


def test_faults_reach_the_on_call_technician_escalate_and_stop_and_smoke_goes_through(
    tmp_path: Path, building: BuildingThread
) -> None:
    from playwright.sync_api import sync_playwright

    inbox = Inbox(sms_secret=SMS_SECRET, webhook_secret=demo_webhook_secret("harbour"))
    peers = InboxServer(inbox, free_port(), free_port())
    peers.start()
    cloud = Cloud(
        tmp_path,
        extra_toml=(
            f'[notify]\nbase_url = "http://127.0.0.1:{{api}}"\ngroup_interval_s = 30\n'
            f'[notify.smtp]\nhost = "127.0.0.1"\nport = {peers.smtp_port}\n'
            'from_address = "alerts@harbour.example"\n'
            f'[notify.sms]\nurl = "{peers.sms_url}"\nkey_id = "test"\nsecret = "{SMS_SECRET}"\n'
            "[alerts]\ngateway_offline_notify_after_s = 2\nrelease_after_s = 2\nescalator_poll_s = 0.2\n"
        ),
    )
    # The links in the messages point at this cloud's console.
    cloud.config.write_text(cloud.config.read_text().replace("{api}", str(cloud.api_port)))
    proxy: TcpProxy | None = None
    gw: Gateway | None = None
    try:
        cloud.start()
        seeded = subprocess.run(
            [
                *GATEHOUSE,
                "cloud",
                "seed-demo",
                "--config",
                str(cloud.config),
                "--json",
                "--webhook-url",
                peers.webhook_url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        seed = json.loads(seeded.stdout)
        db = Db(cloud.data / "gatehouse.db")
        hvac, lead, guard, manager = (db.user(s) for s in ("tech-hvac", "tech-lead", "guard-hv", "manager"))
        # On call for HVAC this week, whatever the weekday: 何伟 alone, awake. The guard is in his
        # quiet hours (all day), which life safety ignores.
        db.run("UPDATE oncall_rotas SET members = ? WHERE skill = 'hvac'", json.dumps([hvac["id"]]))
        db.run(
            "UPDATE notify_preferences SET quiet_start = NULL, quiet_end = NULL WHERE user_id = ?", hvac["id"]
        )
        db.run(
            "INSERT INTO notify_preferences (user_id, channels, quiet_start, quiet_end, timezone) "
            "VALUES (?, '[\"email\", \"sms\"]', '00:00', '23:59', 'Asia/Shanghai')",
            guard["id"],
        )
        db.run(
            "UPDATE escalation_policies SET steps = ? WHERE track = 'maintenance'",
            json.dumps(
                [
                    {"after_s": 0, "targets": [{"type": "oncall"}]},
                    {"after_s": 4, "targets": [{"type": "lead"}]},
                    {"after_s": 8, "targets": [{"type": "role", "role": "property_manager"}]},
                ]
            ),
        )
        # A silence over every maintenance alert of the estate's lobby (smoke must ignore it).
        db.run(
            "INSERT INTO silences (company_id, site_id, gateway_id, source_pattern, fault, reason, "
            "starts_at, ends_at, created_at) VALUES (?, ?, '', 'smoke-*', '', 'detector cleaning', "
            "datetime('now', '-1 minute'), datetime('now', '+1 hour'), datetime('now'))",
            seed["company_id"],
            seed["site_id"],
        )

        proxy = TcpProxy(cloud.embedded_port).start()
        sources = building.building.gateway_config().replace("min_duration_s = 10.0", "min_duration_s = 1.0")
        sources = sources.replace("min_duration_s = 5.0", "min_duration_s = 1.0")
        gw = Gateway(
            tmp_path,
            cloud.add_gateway(GATEWAY_ID, site=SITE_CODE),
            f"mqtt://127.0.0.1:{proxy.port}",
            sources=sources,
        )
        gw.start()
        wait_until(
            lambda: any(e["source"] == "chiller-1/chw_supply_temp" for e in cloud.events(GATEWAY_ID)),
            60,
            "the gateway's first readings in the cloud",
        )

        # 1. The chiller runs warm: one alert, to the on-call technician by email and SMS.
        building.act("set", "chiller-1/setpoint", value=11.0)
        wait_until(
            lambda: to(inbox, "sms", hvac["phone"]) and to(inbox, "email", hvac["email"]),
            30,
            "the chiller fault by SMS and email to the on-call HVAC technician",
        )
        [chiller] = db.alerts("kind = 'equipment.fault'")
        assert (chiller["source"], chiller["skill"], chiller["track"]) == ("CH-1", "hvac", "maintenance")
        mail = to(inbox, "email", hvac["email"])[0]
        link = re.search(r"https?://\S+/tech/alerts/\d+", mail["text"])
        assert link is not None, mail["text"]

        # 2. Unacknowledged: the team lead after 4 s.
        chiller_link = f"/tech/alerts/{chiller['id']}"
        wait_until(
            lambda: any(chiller_link in m["text"] for m in to(inbox, "sms", lead["phone"])),
            30,
            "the escalation to the team lead",
        )

        # 3. The technician opens the email's link on a phone, signs in, acknowledges.
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 390, "height": 844})
                page.goto(link.group(0))
                page.fill("input[name=username]", "harbour-tech-hvac")
                page.fill("input[name=password]", "harbour-tech-hvac-demo-2026")
                page.click("button[type=submit]")
                page.wait_for_url(re.compile(r".*/tech/alerts/\d+$"), timeout=15_000)
                page.click("#ack")
                page.wait_for_selector("#resolve", timeout=15_000)
                wait_until(
                    lambda: db.alerts("id = ?", chiller["id"])[0]["state"] == "acknowledged",
                    15,
                    "the acknowledgement stored",
                )
                # The escalator has seen it: its next look is the acknowledgement's timeout, hours
                # away, so the property manager's step (8 s) never comes.
                wait_until(
                    lambda: (
                        (a := db.alerts("id = ?", chiller["id"])[0])["next_action_at"] is not None
                        and a["next_action_at"] > a["acknowledged_at"]
                    ),
                    15,
                    "the escalator to take the acknowledgement",
                )
                assert not to(inbox, "email", manager["email"])
                assert not db.rows(
                    "SELECT id FROM notifications WHERE alert_id = ? AND user_id = ?",
                    chiller["id"],
                    manager["id"],
                )

                # 4. The value flaps: cleared and back within the window is the same alert, flapping.
                building.act("set", "chiller-1/setpoint", value=6.5)
                wait_until(
                    lambda: db.alerts("id = ?", chiller["id"])[0]["state"] == "resolved",
                    30,
                    "the clear resolving the alert",
                )
                building.act("set", "chiller-1/setpoint", value=11.0)
                wait_until(
                    lambda: db.alerts("id = ?", chiller["id"])[0]["flapping"] == 1,
                    30,
                    "the return marking it flapping",
                )
                assert len(db.alerts("kind = 'equipment.fault'")) == 1
                building.act("set", "chiller-1/setpoint", value=6.5)

                # 5. Smoke in the lobby: straight through the silence and the guard's quiet hours.
                before = len(to(inbox, "sms", guard["phone"]))
                building.act("smoke", "smoke-lobby-1")
                wait_until(
                    lambda: len(to(inbox, "sms", guard["phone"])) > before,
                    30,
                    "the smoke alarm by SMS to the guard",
                )
                [smoke] = db.alerts("kind = 'smoke.alarm'")
                assert smoke["silence_id"] is None and smoke["track"] == "life_safety"
                ls = db.rows(
                    "SELECT group_key, held_reason FROM notifications WHERE alert_id = ?", smoke["id"]
                )
                assert ls and all(r["group_key"] == "" and r["held_reason"] == "" for r in ls)
                # A technician may not acknowledge it; the chiller he resolves from the phone.
                page.goto(f"{cloud.api}/tech/alerts/{smoke['id']}")
                assert page.locator("#ack").count() == 0
                page.goto(link.group(0))
                page.fill("textarea[name=resolution]", "冷凝器滤网清洗")
                page.click("#resolve")
                wait_until(
                    lambda: db.alerts("id = ?", chiller["id"])[0]["state"] == "resolved",
                    15,
                    "the technician's resolve",
                )
            finally:
                browser.close()
        building.act("clear_smoke", "smoke-lobby-1")

        # 6. The gateway loses its link while the plant room's devices go down with it: one
        # gateway-offline alert, told after its grace; the device alerts are held behind it.
        offline_sms_before = len(inbox.unique("sms"))
        proxy.cut()
        building.act("fail_device", "pump-2")
        wait_until(
            lambda: db.alerts("kind = 'gateway.offline' AND state != 'resolved'"),
            30,
            "the gateway-offline alert",
        )
        wait_until(
            lambda: any(
                "offline" in m["text"] or "离线" in m["text"]
                for m in inbox.unique("sms")[offline_sms_before:]
            ),
            30,
            "the gateway-offline SMS",
        )
        wait_until(lambda: device_state(gw, "pump-2") == "offline", 30, "the gateway to see pump-2 offline")
        building.act("restore_device", "pump-2")
        wait_until(lambda: device_state(gw, "pump-2") == "online", 30, "the gateway to see pump-2 back")
        proxy.restore()
        wait_until(
            lambda: not db.alerts("kind = 'gateway.offline' AND state != 'resolved'"),
            60,
            "the gateway back online",
        )
        wait_until(
            lambda: any(
                e["kind"] == "device.online" and e["source"] == "pump-2" for e in cloud.events(GATEWAY_ID)
            ),
            60,
            "the buffered device events delivered",
        )
        assert len(db.alerts("kind = 'gateway.offline'")) == 1
        device_alerts = db.alerts("kind = 'device.offline' AND source = 'pump-2'")
        assert all(a["inhibited_by"] is not None for a in device_alerts)
        wait_until(
            lambda: all(
                a["state"] == "resolved" for a in db.alerts("kind = 'device.offline' AND source = 'pump-2'")
            ),
            30,
            "the held device alert resolved by its clear",
        )
        assert not db.rows(
            "SELECT n.id FROM notifications n JOIN alerts a ON a.id = n.alert_id "
            "WHERE a.kind = 'device.offline' AND n.user_id IS NOT NULL"
        )
    finally:
        if gw is not None:
            gw.stop()
        cloud.stop()
        if proxy is not None:
            proxy.close()
        peers.stop()
