"""The on-call API through the real app (httpx over ASGI, SQLite): who may read and change rotas,
overrides, escalation policies and webhooks (a technician reads but cannot change; a manager can;
another company's objects are 404), the validation messages naming what and where, who is on
call now, a webhook's secret shown once and never audited, and one's own notify preferences."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloud.accounts.models import User
from cloud.accounts.permissions import Role
from cloud.alerts.models import NotifyPreference, OncallRota, Webhook
from cloud.api import create_app
from cloud.audit.models import AuditEntry
from cloud.config import CloudConfig
from cloud.db import SessionFactory, create_engine, session_factory
from tests.cloud.browser import PLATFORM_TOKEN, StaffSession, staff_session
from tests.cloud.tenancy import Tenant, bearer, make_company, make_user, role_token


@dataclass
class World:
    sessions: SessionFactory
    client: httpx.AsyncClient
    x: Tenant
    y: Tenant
    manager: dict[str, str]
    technician: dict[str, str]
    y_manager: dict[str, str]
    people: list[int]  # active staff of X
    retired: int  # an inactive member of X's staff
    outsider: int  # a member of Y's staff


@pytest.fixture
async def w(sqlite_url: str, tmp_path: Path) -> AsyncIterator[World]:
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    x = await make_company(sessions, sites=2)
    y = await make_company(sessions)
    async with sessions() as session, session.begin():
        people = [(await make_user(session, x.company_id, f"x{i}-{x.company_id}")).id for i in range(3)]
        retired = await make_user(session, x.company_id, f"x-retired-{x.company_id}")
        retired.active = False
        outsider = (await make_user(session, y.company_id, f"y-{y.company_id}")).id
    app = create_app(CloudConfig(data_dir=str(tmp_path)), sessions, token=PLATFORM_TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as client:
        yield World(
            sessions,
            client,
            x,
            y,
            bearer(await role_token(sessions, x.company_id, Role.PROPERTY_MANAGER)),
            bearer(await role_token(sessions, x.company_id, Role.TECHNICIAN)),
            bearer(await role_token(sessions, y.company_id, Role.PROPERTY_MANAGER)),
            people,
            retired.id,
            outsider,
        )
    await engine.dispose()


def rota_body(w: World, **more: Any) -> dict[str, Any]:
    return {
        "site_id": w.x.site_ids[0],
        "skill": "hvac",
        "name": "HVAC engineers",
        "members": w.people,
        "lead_user_id": w.people[0],
        "handover_time": "08:00",
        "period_days": 7,
        "starts_on": "2026-03-02",
        **more,
    }


async def detail(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    return str(r.json()["detail"])


async def test_a_technician_reads_rotas_a_manager_changes_them_another_company_sees_nothing(w: World) -> None:
    c = w.client
    assert (await c.post("/api/v1/oncall/rotas", json=rota_body(w), headers=w.technician)).status_code == 403
    made = await c.post("/api/v1/oncall/rotas", json=rota_body(w), headers=w.manager)
    assert made.status_code == 201, made.text
    rota = made.json()
    assert (rota["members"], rota["lead_user_id"], rota["skill"]) == (w.people, w.people[0], "hvac")
    path = f"/api/v1/oncall/rotas/{rota['id']}"

    assert (await c.get(path, headers=w.technician)).json()["name"] == "HVAC engineers"
    listed = await c.get("/api/v1/oncall/rotas", params={"site_id": w.x.site_ids[0]}, headers=w.technician)
    assert [r["id"] for r in listed.json()["items"]] == [rota["id"]]
    assert (await c.patch(path, json={"name": "x"}, headers=w.technician)).status_code == 403
    changed = await c.patch(path, json={"members": w.people[::-1], "lead_user_id": None}, headers=w.manager)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["members"], changed.json()["lead_user_id"]) == (w.people[::-1], None)

    # Company Y: 404 for X's rota, whatever it tries; X's rotas are not in its list.
    for method, kwargs in (("GET", {}), ("PATCH", {"json": {"name": "y"}}), ("DELETE", {})):
        assert (await c.request(method, path, headers=w.y_manager, **kwargs)).status_code == 404
    assert (await c.get("/api/v1/oncall/rotas", headers=w.y_manager)).json()["items"] == []
    assert (await c.get(f"{path}/schedule", headers=w.y_manager)).status_code == 404
    assert (
        await c.post("/api/v1/oncall/rotas", json=rota_body(w, members=[]), headers=w.y_manager)
    ).status_code == 404  # X's site
    assert (
        await c.get("/api/v1/oncall/now", params={"site_id": w.x.site_ids[0]}, headers=w.y_manager)
    ).status_code == 404

    # Each change is in the audit log, in the same transaction.
    async with w.sessions() as session:
        actions = list(
            await session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.target_type == "oncall_rotas")
                .order_by(AuditEntry.seq)
            )
        )
    assert actions == ["oncall.rota.create", "oncall.rota.update"]
    assert (await c.delete(path, headers=w.technician)).status_code == 403
    assert (await c.delete(path, headers=w.manager)).status_code == 204
    assert (await c.get(path, headers=w.manager)).status_code == 404


async def test_rota_and_override_mistakes_are_named(w: World) -> None:
    c, m = w.client, w.manager
    cases: list[tuple[dict[str, Any], str]] = [
        (
            rota_body(w, members=[w.people[0], w.retired]),
            f"members[1]: user {w.retired} is not an active member",
        ),
        (rota_body(w, members=[w.outsider]), f"members[0]: user {w.outsider} is not an active member"),
        (rota_body(w, lead_user_id=w.outsider), f"lead_user_id: user {w.outsider} is not an active member"),
        (rota_body(w, members=[w.people[0], w.people[0]]), f"user {w.people[0]} is listed twice in members"),
        (rota_body(w, skill="carpentry"), "body.skill: Input should be 'electrical'"),
        (rota_body(w, handover_time="8:00"), "body.handover_time"),
        (rota_body(w, period_days=0), "body.period_days"),
    ]
    for body, message in cases:
        assert message in await detail(await c.post("/api/v1/oncall/rotas", json=body, headers=m), 422)
    made = (await c.post("/api/v1/oncall/rotas", json=rota_body(w), headers=m)).json()
    twice = await c.post("/api/v1/oncall/rotas", json=rota_body(w, name="again"), headers=m)
    assert "already has a hvac rota" in await detail(twice, 409)

    overrides = f"/api/v1/oncall/rotas/{made['id']}/overrides"
    now = datetime.now(UTC).replace(microsecond=0)
    hour = timedelta(hours=1)

    def span(start: datetime, end: datetime, user: int | None = None) -> dict[str, Any]:
        return {"user_id": user or w.people[2], "starts_at": start.isoformat(), "ends_at": end.isoformat()}

    mistakes = [
        (span(now + hour, now), "ends_at must be after starts_at"),
        (span(now - 3 * hour, now - hour), "ends_at: already past"),
        (span(now, now + timedelta(days=400)), "ends_at: an override lasts at most a year"),
        (span(now + timedelta(days=300), now + timedelta(days=380)), "ends_at: at most a year from now"),
        (span(now, now + hour, w.outsider), f"user_id: user {w.outsider} is not an active member"),
        ({**span(now, now + hour), "starts_at": "2026-03-02T08:00:00"}, "body.starts_at"),  # no zone
    ]
    for body, message in mistakes:
        assert message in await detail(await c.post(overrides, json=body, headers=m), 422)
    assert (await c.post(overrides, json=span(now, now + hour), headers=w.technician)).status_code == 403
    added = await c.post(overrides, json=span(now - hour, now + hour), headers=m)
    assert added.status_code == 201, added.text

    # Now: the override's person, until it ends; the schedule shows it.
    on_call = await c.get("/api/v1/oncall/now", params={"site_id": w.x.site_ids[0]}, headers=w.technician)
    assert on_call.status_code == 200, on_call.text
    (entry,) = on_call.json()["items"]
    assert (entry["skill"], entry["user_id"], entry["override_id"]) == (
        "hvac",
        w.people[2],
        added.json()["id"],
    )
    assert datetime.fromisoformat(entry["until"]) == now + hour
    plan = (
        await c.get(f"/api/v1/oncall/rotas/{made['id']}/schedule", params={"days": 2}, headers=w.technician)
    ).json()
    assert plan[0]["user_id"] == w.people[2] and plan[0]["override_id"] == added.json()["id"]
    assert [o["id"] for o in (await c.get(overrides, headers=w.technician)).json()] == [added.json()["id"]]
    gone = await c.delete(f"/api/v1/oncall/overrides/{added.json()['id']}", headers=w.y_manager)
    assert gone.status_code == 404
    assert (await c.delete(f"/api/v1/oncall/overrides/{added.json()['id']}", headers=m)).status_code == 204


def step(after_s: int, *targets: dict[str, Any]) -> dict[str, Any]:
    return {"after_s": after_s, "targets": list(targets)}


async def test_escalation_policies_are_checked_step_by_step(w: World) -> None:
    c, m = w.client, w.manager
    oncall, lead = {"type": "oncall"}, {"type": "lead"}

    def body(**more: Any) -> dict[str, Any]:
        return {
            "name": "Plant",
            "track": "maintenance",
            "site_id": w.x.site_ids[0],
            "steps": [step(0, oncall)],
            **more,
        }

    cases: list[tuple[dict[str, Any], str]] = [
        (
            body(steps=[step(0, oncall), step(900, lead), step(600, lead)]),
            "steps[2].after_s: step 3 at 600 s is not after step 2 at 900 s",
        ),
        (body(steps=[step(0, oncall), step(0, lead)]), "steps[1].after_s"),
        (
            body(steps=[step(0, {"type": "role"})]),
            "body.steps.0.targets.0: Value error, a role target needs role",
        ),
        (body(steps=[step(0, {"type": "role", "role": "janitor"})]), "body.steps.0.targets.0.role"),
        (body(steps=[step(0, {"type": "user"})]), "a user target needs user_id"),
        (body(steps=[step(0, {"type": "pager"})]), "body.steps.0.targets.0.type"),
        (body(steps=[step(0, {"type": "oncall", "user_id": 3})]), "user_id is only for user targets"),
        (body(steps=[step(-1, oncall)]), "body.steps.0.after_s"),
        (body(steps=[step(0)]), "body.steps.0.targets"),
        (body(steps=[]), "body.steps"),
        (body(steps=[step(i * 60, oncall) for i in range(11)]), "body.steps"),
        (
            body(steps=[step(0, oncall), step(60, {"type": "user", "user_id": w.outsider})]),
            f"steps[1].targets[0].user_id: step 2, target 1: user {w.outsider} is not an active member",
        ),
        (
            body(track="life_safety", steps=[step(30, oncall)]),
            "steps[0].after_s: step 1 of a life-safety policy",
        ),
    ]
    for data, message in cases:
        assert message in await detail(await c.post("/api/v1/escalation-policies", json=data, headers=m), 422)

    assert (await c.post("/api/v1/escalation-policies", json=body(), headers=w.technician)).status_code == 403
    made = await c.post(
        "/api/v1/escalation-policies",
        json=body(steps=[step(0, oncall), step(600, lead, {"type": "role", "role": "property_manager"})]),
        headers=m,
    )
    assert made.status_code == 201, made.text
    policy = made.json()
    assert policy["steps"][1]["targets"] == [{"type": "lead"}, {"type": "role", "role": "property_manager"}]
    assert (policy["ack_timeout_s"], policy["repeat_s"]) == (4 * 3600, 120)  # the track's defaults
    again = await c.post("/api/v1/escalation-policies", json=body(), headers=m)
    assert "already has a maintenance policy for any skill" in await detail(again, 409)
    life = await c.post(
        "/api/v1/escalation-policies", json=body(track="life_safety", site_id=None), headers=m
    )
    assert life.status_code == 201 and life.json()["ack_timeout_s"] == 1800  # the company's default

    path = f"/api/v1/escalation-policies/{policy['id']}"
    bad = await c.patch(path, json={"steps": [step(60, oncall), step(60, lead)]}, headers=m)
    assert "steps[1].after_s" in await detail(bad, 422)
    ok = await c.patch(path, json={"steps": [step(0, oncall)], "skill": "hvac"}, headers=m)
    assert ok.status_code == 200 and ok.json()["skill"] == "hvac"
    assert (await c.get(path, headers=w.technician)).status_code == 200
    assert (await c.get(path, headers=w.y_manager)).status_code == 404
    listed = await c.get("/api/v1/escalation-policies", params={"track": "maintenance"}, headers=w.technician)
    assert [p["id"] for p in listed.json()["items"]] == [policy["id"]]
    assert (await c.delete(path, headers=w.y_manager)).status_code == 404
    assert (await c.delete(path, headers=m)).status_code == 204


async def test_a_webhooks_secret_is_shown_once_and_never_audited(w: World) -> None:
    c, m = w.client, w.manager
    for url, message in (
        ("ftp://example.com/x", "not an http or https URL"),
        ("https://", "has no host"),
        ("https://user:pw@example.com/", "a user name or password in the URL is not allowed"),
        ("https://example.com:99999/", "is not a URL"),
        ("example.com/hook", "not an http or https URL"),
    ):
        r = await c.post("/api/v1/webhooks", json={"name": "x", "url": url}, headers=m)
        assert message in await detail(r, 422)
    # Company-wide needs ALERTS_MANAGE for every site: a manager of X has it; a technician has none.
    assert (
        await c.post(
            "/api/v1/webhooks", json={"name": "x", "url": "http://127.0.0.1:9/h"}, headers=w.technician
        )
    ).status_code == 403
    made = await c.post(
        "/api/v1/webhooks",
        json={
            "name": "Ops",
            "url": "http://127.0.0.1:9/hook",
            "tracks": ["life_safety"],
            "site_id": w.x.site_ids[0],
        },
        headers=m,
    )
    assert made.status_code == 201, made.text
    hook = made.json()
    secret = hook["secret"]
    assert len(secret) >= 40 and hook["tracks"] == ["life_safety"]
    path = f"/api/v1/webhooks/{hook['id']}"
    shown = (await c.get(path, headers=w.technician)).json()
    assert "secret" not in shown and shown["url"] == "http://127.0.0.1:9/hook"
    assert all("secret" not in h for h in (await c.get("/api/v1/webhooks", headers=m)).json()["items"])
    patched = await c.patch(path, json={"active": False, "url": "https://hooks.example.com/x"}, headers=m)
    assert patched.status_code == 200 and "secret" not in patched.json()
    async with w.sessions() as session:
        stored = await session.scalar(select(Webhook.secret).where(Webhook.id == hook["id"]))
        audit = list(await session.scalars(select(AuditEntry).where(AuditEntry.target_type == "webhooks")))
    assert stored == secret  # the dispatcher signs with it
    assert [a.action for a in audit] == ["webhook.create", "webhook.update"]
    assert all(secret not in repr((a.before, a.after)) for a in audit)
    assert (await c.get(path, headers=w.y_manager)).status_code == 404
    assert (await c.delete(path, headers=m)).status_code == 204


async def test_my_notify_preferences(w: World) -> None:
    c = w.client
    me: StaffSession = await staff_session(w.sessions, w.x.company_id, [(Role.TECHNICIAN, None)])
    cookie = {**me.headers(), "X-CSRF-Token": me.csrf_token}
    first = await c.get("/api/v1/me/notify-preferences", headers=cookie)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "user_id": me.user_id,
        "channels": ["email", "sms"],
        "quiet_start": None,
        "quiet_end": None,
        "timezone": "Asia/Shanghai",
        "saved": False,
    }
    for body, message in (
        ({"channels": []}, "body.channels"),
        ({"channels": ["fax"]}, "body.channels.0"),
        ({"channels": ["sms", "sms"]}, "each channel once"),
        ({"channels": ["sms"], "quiet_start": "22:00"}, "give both, or neither"),
        ({"channels": ["sms"], "quiet_start": "22:00", "quiet_end": "22:00"}, "the same as quiet_start"),
        ({"channels": ["sms"], "quiet_start": "25:00", "quiet_end": "07:00"}, "body.quiet_start"),
        ({"channels": ["sms"], "timezone": "Mars/Olympus"}, "is not a time zone"),
    ):
        assert message in await detail(
            await c.put("/api/v1/me/notify-preferences", json=body, headers=cookie), 422
        )
    body = {"channels": ["sms"], "quiet_start": "22:00", "quiet_end": "07:00", "timezone": "Europe/Berlin"}
    saved = await c.put("/api/v1/me/notify-preferences", json=body, headers=cookie)
    assert saved.status_code == 200 and saved.json()["saved"] is True
    async with w.sessions() as session:
        row = await session.get(NotifyPreference, me.user_id)
        assert row is not None and (row.channels, row.quiet_start, row.timezone) == (
            ["sms"],
            "22:00",
            "Europe/Berlin",
        )
    # A token is nobody: it has no preferences; a resident is refused as everywhere on staff routes.
    token = await c.get("/api/v1/me/notify-preferences", headers=w.technician)
    assert token.status_code == 409 and token.json()["code"] == "not_a_user"
    assert (await c.get("/api/v1/me/notify-preferences")).status_code == 401


async def test_the_platform_names_the_company_and_rotas_live_under_sites(w: World) -> None:
    c, platform = w.client, bearer(PLATFORM_TOKEN)
    r = await c.post("/api/v1/webhooks", json={"name": "x", "url": "https://a.example/h"}, headers=platform)
    assert "company_id: the platform token must say which company" in await detail(r, 422)
    r = await c.post(
        "/api/v1/webhooks",
        json={"name": "x", "url": "https://a.example/h", "company_id": w.x.company_id},
        headers=platform,
    )
    assert r.status_code == 201 and r.json()["company_id"] == w.x.company_id
    made = await c.post("/api/v1/oncall/rotas", json=rota_body(w), headers=platform)
    assert made.status_code == 201 and made.json()["company_id"] == w.x.company_id
    async with w.sessions() as session:
        assert (
            await session.scalar(select(OncallRota.company_id).where(OncallRota.id == made.json()["id"]))
            == w.x.company_id
        )
        assert await session.get(User, w.people[0]) is not None
