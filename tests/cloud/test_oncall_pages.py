"""The console's on-call pages through the real app (httpx over ASGI, SQLite), as a signed-in
manager and a technician: the overview, a rota's form (members chosen in turn order), overrides,
escalation policies as rows of steps, webhooks (the secret shown once), one's own notification
settings; and every string of the module has its Chinese (``oncall.po``)."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from sqlalchemy import select

from cloud.accounts.permissions import Role
from cloud.alerts.models import EscalationPolicy, NotifyPreference, OncallOverride, OncallRota, Webhook
from cloud.api import create_app
from cloud.config import CloudConfig
from cloud.console import i18n
from cloud.db import SessionFactory, create_engine, session_factory
from tests.cloud.browser import PLATFORM_TOKEN, StaffSession, staff_session
from tests.cloud.tenancy import Tenant, make_company, make_user

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Console:
    sessions: SessionFactory
    client: httpx.AsyncClient
    x: Tenant
    manager: StaffSession
    technician: StaffSession
    people: list[int]


@pytest.fixture
async def console(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    x = await make_company(sessions)
    async with sessions() as session, session.begin():
        people = []
        for name in ("Wang Fang", "Li Lei", "Zhao Min"):
            user = await make_user(session, x.company_id, f"{name}-{x.company_id}")
            user.display_name = name
            people.append(user.id)
    manager = await staff_session(sessions, x.company_id, [(Role.PROPERTY_MANAGER, None)], language="en")
    technician = await staff_session(sessions, x.company_id, [(Role.TECHNICIAN, None)], language="en")
    app = create_app(CloudConfig(data_dir=str(tmp_path)), sessions, token=PLATFORM_TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console") as client:
        yield Console(sessions, client, x, manager, technician, people)
    await engine.dispose()


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


async def get(c: Console, who: StaffSession, path: str) -> httpx.Response:
    return await c.client.get(path, headers=who.headers())


async def post(c: Console, who: StaffSession, path: str, fields: Any) -> httpx.Response:
    """A form as the browser posts it: repeated names (members, rows' roles) in document order."""
    data = [("csrf_token", who.csrf_token), *(fields.items() if isinstance(fields, dict) else fields)]
    headers = {**who.headers(), "Content-Type": "application/x-www-form-urlencoded"}
    return await c.client.post(path, content=urlencode(data), headers=headers)


async def test_a_manager_adds_a_rota_from_the_form_and_sees_who_is_on_call(console: Console) -> None:
    c, site_id = console, console.x.site_ids[0]
    page = await get(c, c.manager, "/oncall")
    assert page.status_code == 200, page.text
    assert "No rotas at this site yet." in page.text and f"/oncall/rotas/new?site_id={site_id}" in page.text
    form = await get(c, c.manager, f"/oncall/rotas/new?site_id={site_id}")
    assert form.status_code == 200 and "Members, in turn order" in form.text and "Wang Fang" in form.text

    wang, li, zhao = c.people
    today = datetime.now(UTC).date()
    fields = [
        ("site_id", str(site_id)),
        ("name", "HVAC engineers"),
        ("skill", "hvac"),
        ("members", str(li)),
        ("members", ""),  # an empty place is dropped
        ("members", str(wang)),
        ("lead_user_id", str(zhao)),
        ("handover_time", "08:00"),
        ("period_days", "7"),
        ("starts_on", (today - timedelta(days=3)).isoformat()),
    ]
    made = await post(c, c.manager, "/oncall/rotas", fields)
    assert made.status_code == 303, made.text
    async with c.sessions() as session:
        rota = await session.scalar(select(OncallRota).where(OncallRota.site_id == site_id))
    assert rota is not None and rota.members == [li, wang] and rota.lead_user_id == zhao
    assert made.headers["location"] == f"/oncall/rotas/{rota.id}"

    overview = text_of((await get(c, c.manager, "/oncall")).text)
    assert "HVAC engineers" in overview and "Li Lei" in overview and "The next 14 days" in overview
    # The same skill again: the form comes back with the reason, nothing added.
    again = await post(c, c.manager, "/oncall/rotas", [*fields[:1], ("name", "Second"), *fields[2:]])
    assert again.status_code == 409 and "already has a hvac rota" in html.unescape(again.text)

    # The rota's page: change the order, put Zhao on call for a while, take it off again.
    rota_page = await get(c, c.manager, f"/oncall/rotas/{rota.id}")
    assert rota_page.status_code == 200 and "Change the rota" in rota_page.text
    saved = await post(
        c,
        c.manager,
        f"/oncall/rotas/{rota.id}",
        [("name", "HVAC"), ("skill", "hvac"), ("members", str(wang)), ("members", str(li)),
         ("handover_time", "09:00"), ("period_days", "7"), ("starts_on", today.isoformat()),
         ("lead_user_id", "")],
    )  # fmt: skip
    assert saved.status_code == 303, saved.text
    local = "%Y-%m-%dT%H:%M"
    shanghai = datetime.now(ZoneInfo("Asia/Shanghai"))  # the site's zone: the form takes its wall time
    override = {
        "user_id": str(zhao),
        "starts_at": (shanghai - timedelta(hours=1)).strftime(local),
        "ends_at": (shanghai + timedelta(hours=2)).strftime(local),
        "reason": "swap",
    }
    bad = await post(c, c.manager, f"/oncall/rotas/{rota.id}/overrides", {**override, "ends_at": "soon"})
    assert bad.status_code == 422 and "ends_at" in html.unescape(bad.text)
    added = await post(c, c.manager, f"/oncall/rotas/{rota.id}/overrides", override)
    assert added.status_code == 303, added.text
    async with c.sessions() as session:
        changed = await session.get(OncallRota, rota.id)
        row = await session.scalar(select(OncallOverride).where(OncallOverride.rota_id == rota.id))
    assert changed is not None and changed.members == [wang, li] and changed.handover_time == "09:00"
    assert changed.lead_user_id is None and row is not None and row.user_id == zhao
    now_page = text_of((await get(c, c.technician, "/oncall")).text)
    assert "Zhao Min override" in now_page
    removed = await post(c, c.manager, f"/oncall/overrides/{row.id}/delete", {})
    assert removed.status_code == 303

    # A technician sees the rota but no form, and cannot post one.
    tech_view = await get(c, c.technician, f"/oncall/rotas/{rota.id}")
    assert tech_view.status_code == 200 and "Change the rota" not in tech_view.text
    assert (await post(c, c.technician, "/oncall/rotas", fields)).status_code == 403
    assert (await get(c, c.technician, "/oncall/rotas/new")).status_code == 403
    assert (await post(c, c.manager, f"/oncall/rotas/{rota.id}/delete", {})).status_code == 303
    assert (await get(c, c.manager, f"/oncall/rotas/{rota.id}")).status_code == 404


async def test_a_policy_is_written_as_rows_of_steps(console: Console) -> None:
    c, site_id = console, console.x.site_ids[0]
    listing = await get(c, c.technician, "/oncall/policies")
    assert listing.status_code == 200 and "Built-in policies" in listing.text
    assert "Add a maintenance policy" not in listing.text
    form = await get(c, c.manager, "/oncall/policies/new?track=maintenance")
    assert form.status_code == 200 and 'name="s2_after" value="30"' in form.text  # the built-in steps

    wang = c.people[0]
    fields = [
        ("name", "Plant room"),
        ("site_id", str(site_id)),
        ("track", "maintenance"),
        ("skill", "hvac"),
        ("s0_after", "0"),
        ("s0_oncall", "1"),
        ("s1_after", ""),  # an empty row is left out
        ("s2_after", "10"),
        ("s2_lead", "1"),
        ("s2_roles", "property_manager"),
        ("s2_users", str(wang)),
        ("ack_timeout_min", "120"),
        ("repeat_s", "120"),
    ]
    made = await post(c, c.manager, "/oncall/policies", fields)
    assert made.status_code == 303, made.text
    async with c.sessions() as session:
        policy = await session.scalar(select(EscalationPolicy))
    assert policy is not None and (policy.site_id, policy.skill, policy.ack_timeout_s) == (
        site_id,
        "hvac",
        7200,
    )
    assert policy.steps == [
        {"after_s": 0, "targets": [{"type": "oncall"}]},
        {
            "after_s": 600,
            "targets": [
                {"type": "lead"},
                {"type": "role", "role": "property_manager"},
                {"type": "user", "user_id": wang},
            ],
        },
    ]
    # Out of order: the form comes back naming the step as it shows it.
    wrong = await post(
        c, c.manager, f"/oncall/policies/{policy.id}",
        [("name", "Plant room"), ("skill", "hvac"), ("s0_after", "10"), ("s0_oncall", "1"), ("s1_after", "5"),
         ("s1_lead", "1")],
    )  # fmt: skip
    assert wrong.status_code == 422
    assert "steps[1].after_s: step 2 at 300 s is not after step 1 at 600 s" in html.unescape(wrong.text)
    empty_step = await post(c, c.manager, f"/oncall/policies/{policy.id}", [("name", "P"), ("s0_after", "5")])
    assert "steps[0].targets: step 1: List should have at least 1 item" in html.unescape(empty_step.text)
    view = text_of((await get(c, c.technician, f"/oncall/policies/{policy.id}")).text)
    assert "after 10 min" in view and "Wang Fang" in view
    listed = text_of((await get(c, c.manager, "/oncall/policies")).text)
    assert "Plant room" in listed and "after 10 min: team lead, Property manager, Wang Fang" in listed
    assert (await post(c, c.technician, f"/oncall/policies/{policy.id}/delete", {})).status_code == 403
    assert (await post(c, c.manager, f"/oncall/policies/{policy.id}/delete", {})).status_code == 303


async def test_a_webhook_shows_its_secret_once(console: Console) -> None:
    c = console
    bad = await post(
        c, c.manager, "/oncall/webhooks", {"name": "Ops", "url": "ftp://x", "tracks": "maintenance"}
    )
    assert bad.status_code == 422 and "not an http or https URL" in html.unescape(bad.text)
    made = await post(
        c,
        c.manager,
        "/oncall/webhooks",
        [("name", "Ops"), ("url", "http://127.0.0.1:9/hook"), ("tracks", "life_safety")],
    )
    assert made.status_code == 200, made.text
    async with c.sessions() as session:
        hook = await session.scalar(select(Webhook))
    assert hook is not None and hook.tracks == ["life_safety"] and hook.site_id is None
    assert hook.secret in made.text and "shown this once" in made.text
    listing = await get(c, c.technician, "/oncall/webhooks")
    assert listing.status_code == 200 and "Ops" in listing.text and hook.secret not in listing.text
    assert (await post(c, c.technician, f"/oncall/webhooks/{hook.id}/delete", {})).status_code == 403
    assert (await post(c, c.manager, f"/oncall/webhooks/{hook.id}/delete", {})).status_code == 303


async def test_my_notification_settings(console: Console) -> None:
    c = console
    page = await get(c, c.technician, "/account/notifications")
    assert page.status_code == 200 and "Quiet hours" in page.text
    bad = await post(c, c.technician, "/account/notifications", {"channels": "sms", "quiet_start": "22:00"})
    assert bad.status_code == 422 and "give both, or neither" in html.unescape(bad.text)
    saved = await post(
        c,
        c.technician,
        "/account/notifications",
        [
            ("channels", "sms"),
            ("quiet_start", "22:00"),
            ("quiet_end", "07:00"),
            ("timezone", "Asia/Shanghai"),
        ],
    )
    assert saved.status_code == 303
    async with c.sessions() as session:
        row = await session.get(NotifyPreference, c.technician.user_id)
    assert row is not None and (row.channels, row.quiet_start, row.quiet_end) == (["sms"], "22:00", "07:00")
    again = await get(c, c.technician, "/account/notifications")
    assert 'value="22:00"' in again.text


def _module_messages() -> set[str]:
    """What ``pybabel extract`` finds in the on-call module's code and templates."""
    keywords = {**DEFAULT_KEYWORDS, "N_": None, "translate": (2,)}
    found: set[str] = set()
    for folder, method_map, options in (
        (ROOT / "cloud" / "oncall", [("**.py", "python")], {}),
        (
            ROOT / "cloud" / "console" / "templates" / "oncall",
            [("**.html", "jinja2")],
            {"**.html": {"extensions": "jinja2.ext.i18n"}},
        ),
    ):
        for _f, _l, message, _c, _ctx in extract_from_dir(folder, method_map, options, keywords=keywords):
            found.add(message[0] if isinstance(message, tuple) else message)
    return {m for m in found if m}


def test_every_on_call_string_has_its_chinese() -> None:
    messages = _module_messages()
    zh = i18n.translations("zh")
    missing = sorted(m for m in messages if zh.gettext(m) == m)
    assert not missing, f"add these to translations/zh/LC_MESSAGES/oncall.po: {missing}"
    assert zh.gettext("On call") == "值班"
