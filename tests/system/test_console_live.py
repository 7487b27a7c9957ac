"""The console end to end: a sensor in the simulated building changes, and a signed-in manager
watching the estate's page in Chromium sees it in the live stream within two seconds.

Real processes and peers all the way: the simulated building (its I/O module on Modbus TCP), a
real gateway process, the cloud (``gatehouse cloud serve``: embedded broker, ingest, SQLite) seeded
with the demo company, and Debian's Chromium through Playwright.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.cloud.browser import CHROMIUM, CHROMIUM_ARGS
from tests.system.harness import GATEHOUSE, BuildingThread, Cloud, Gateway, wait_until

pytestmark = [pytest.mark.system, pytest.mark.browser]

SITE_CODE = "harbour-view"  # the demo seed's estate
GATEWAY_ID = "hv-tower-gw1"
LIVE_WITHIN_MS = 2000


def test_a_sensor_change_reaches_the_live_stream(tmp_path: Path, building: BuildingThread) -> None:
    from playwright.sync_api import sync_playwright

    cloud = Cloud(tmp_path)
    cloud.start()
    seeded = subprocess.run(
        [*GATEHOUSE, "cloud", "seed-demo", "--config", str(cloud.config), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    seed = json.loads(seeded.stdout)
    admin = next(a for a in seed["accounts"] if a["role"] == "company_admin")
    gw = Gateway(
        tmp_path,
        cloud.add_gateway(GATEWAY_ID, site=SITE_CODE),
        cloud.broker_url,
        sources=building.building.gateway_config(),
    )
    gw.start()
    try:
        # The gateway is connected and its devices answer: the lobby PIR reads "clear".
        wait_until(
            lambda: any(e["source"] == "pir-lobby" for e in cloud.events(GATEWAY_ID)),
            60,
            "the gateway's first readings in the cloud",
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(f"{cloud.api}/login")
                page.fill("input[name=username]", admin["username"])
                page.fill("input[name=password]", admin["password"])
                page.click("button[type=submit]")
                page.wait_for_url(f"{cloud.api}/", timeout=15_000)
                page.goto(f"{cloud.api}/sites/{seed['site_id']}")
                page.wait_for_selector("[data-live-status].is-live", timeout=15_000)

                building.act("motion", "pir-lobby")
                acted = time.monotonic()
                row = page.wait_for_selector(
                    "#live-events tbody tr:has-text('intrusion.detected'):has-text('pir-lobby')",
                    timeout=LIVE_WITHIN_MS,
                )
                assert row is not None
                print(f"live row {time.monotonic() - acted:.2f}s after the motion")
            finally:
                browser.close()
    finally:
        building.act("clear_motion", "pir-lobby")
        gw.stop()
        cloud.stop()
