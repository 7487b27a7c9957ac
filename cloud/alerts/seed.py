"""The demo company's alerting: who is on call for what at 海景花园, how alerts escalate, a webhook
to the duty-room screen, one person's quiet hours, a cover for a technician on leave, and a week of
past alerts with their timelines, so that the alert console and the technician page have a history
before the simulated building raises anything. Idempotent like the rest of ``seed_demo``: every row
is found by its natural key first."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import User
from cloud.alerts.models import (
    LIFE_SAFETY,
    MAINTENANCE,
    RESOLVED,
    Alert,
    AlertTimeline,
    EscalationPolicy,
    NotifyPreference,
    OncallOverride,
    OncallRota,
    Webhook,
)

ZONE = ZoneInfo("Asia/Shanghai")
# (skill, rota name, members in turn order, team lead), by the username after the company code.
ROTAS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("hvac", "暖通空调值班", ("tech-hvac", "tech"), "tech-lead"),
    ("electrical", "强弱电值班", ("tech-elec", "tech"), "tech-lead"),
    ("plumbing", "给排水值班", ("tech-plumb", "tech"), "tech-lead"),
    ("lifts", "电梯值班", ("tech-lift", "tech-elec"), "tech-lead"),
    ("security", "安保监控中心", ("guard-hv", "guard"), "guard"),
    ("general", "综合维修值班", ("tech", "tech-hvac", "tech-elec"), "tech-lead"),
)
WEBHOOK_NAME = "值班中心大屏 duty-room screen"


def demo_webhook_secret(company_code: str) -> str:
    """The demo's webhook secret: known to the demo's inbox, which checks every signature with it."""
    return f"{company_code}-duty-room-webhook-secret"


async def seed_demo_alerting(
    session: AsyncSession,
    company_id: int,
    site_id: int,
    company_code: str,
    gateway_id: str,
    now: datetime,
    created: Counter[str],
    webhook_url: str = "",
) -> None:
    from cloud.seed import mobile_number  # the seed's phone numbers (a cycle at import otherwise)

    users = {
        u.username.removeprefix(f"{company_code}-"): u
        for u in (await session.scalars(select(User).where(User.company_id == company_id))).all()
    }
    rng = random.Random(f"{company_code}-staff-phones")
    for _suffix, user in sorted(users.items()):
        number = mobile_number(rng)
        if not user.phone:
            user.phone = f"+86{number}"
    local_today = now.astimezone(ZONE).date()
    monday = local_today - timedelta(days=local_today.weekday())
    rotas: dict[str, OncallRota] = {}
    for skill, name, members, lead in ROTAS:
        rota = await session.scalar(
            select(OncallRota).where(OncallRota.site_id == site_id, OncallRota.skill == skill)
        )
        if rota is None:
            rota = OncallRota(
                company_id=company_id,
                site_id=site_id,
                skill=skill,
                name=name,
                members=[users[m].id for m in members if m in users],
                lead_user_id=users[lead].id if lead in users else None,
                handover_time="08:00",
                period_days=7,
                starts_on=monday,
                created_at=now,
            )
            session.add(rota)
            await session.flush()
            created["on-call rotas"] += 1
        rotas[skill] = rota
    # 冯刚 is on leave for three days: 刘志强 covers the plumbing rota.
    plumbing = rotas["plumbing"]
    have_cover = await session.scalar(select(OncallOverride.id).where(OncallOverride.rota_id == plumbing.id))
    if have_cover is None and "tech" in users:
        start = datetime.combine(local_today - timedelta(days=1), datetime.min.time(), ZONE).replace(hour=8)
        session.add(
            OncallOverride(
                rota_id=plumbing.id,
                user_id=users["tech"].id,
                starts_at=start,
                ends_at=start + timedelta(days=3),
                reason="冯刚年假，刘志强代班",
                created_by=users.get("manager", users["tech"]).id,
                created_at=now,
            )
        )
        created["on-call overrides"] += 1
    await _policies(session, company_id, site_id, users, now, created)
    await _preferences(session, users, created)
    if webhook_url:
        hook = await session.scalar(
            select(Webhook).where(Webhook.company_id == company_id, Webhook.name == WEBHOOK_NAME)
        )
        if hook is None:
            session.add(
                Webhook(
                    company_id=company_id,
                    site_id=site_id,
                    name=WEBHOOK_NAME,
                    url=webhook_url,
                    secret=demo_webhook_secret(company_code),
                    tracks=[LIFE_SAFETY, MAINTENANCE],
                    created_at=now,
                )
            )
            created["webhooks"] += 1
        else:
            hook.url = webhook_url  # the demo's inbox listens on the port of this run
    await _past_alerts(session, company_id, site_id, gateway_id, users, now, created)


async def _policies(
    session: AsyncSession,
    company_id: int,
    site_id: int,
    users: dict[str, User],
    now: datetime,
    created: Counter[str],
) -> None:
    wanted: list[dict[str, Any]] = [
        {
            "track": MAINTENANCE,
            "skill": "",
            "name": "设备故障：值班技术员 → 工程主管 → 物业经理",
            "steps": [
                {"after_s": 0, "targets": [{"type": "oncall"}]},
                {"after_s": 600, "targets": [{"type": "lead"}]},
                {"after_s": 1800, "targets": [{"type": "role", "role": "property_manager"}]},
            ],
            "ack_timeout_s": 4 * 3600,
            "repeat_s": 0,
        },
        {
            "track": LIFE_SAFETY,
            "skill": "",
            "name": "生命安全：安保值班 + 经理，立即；3 分钟无人确认 → 公司管理员",
            "steps": [
                {
                    "after_s": 0,
                    "targets": [
                        {"type": "oncall", "skill": "security"},
                        {"type": "role", "role": "security_guard"},
                        {"type": "role", "role": "property_manager"},
                    ],
                },
                {"after_s": 180, "targets": [{"type": "role", "role": "company_admin"}]},
            ],
            "ack_timeout_s": 30 * 60,
            "repeat_s": 300,  # every five minutes until acknowledged (the demo stays readable)
        },
    ]
    for p in wanted:
        exists = await session.scalar(
            select(EscalationPolicy.id).where(
                EscalationPolicy.company_id == company_id,
                EscalationPolicy.site_id == site_id,
                EscalationPolicy.track == p["track"],
                EscalationPolicy.skill == p["skill"],
            )
        )
        if exists is None:
            session.add(EscalationPolicy(company_id=company_id, site_id=site_id, created_at=now, **p))
            created["escalation policies"] += 1


async def _preferences(session: AsyncSession, users: dict[str, User], created: Counter[str]) -> None:
    wanted = {
        # 何伟 sleeps: maintenance notices at night wait for 07:00 (life safety never does).
        "tech-hvac": NotifyPreference(channels=["email", "sms"], quiet_start="22:00", quiet_end="07:00"),
        # The manager reads email; text messages only for life safety, which goes on every channel.
        "manager": NotifyPreference(channels=["email"]),
    }
    for suffix, pref in wanted.items():
        user = users.get(suffix)
        if user is None or await session.get(NotifyPreference, user.id) is not None:
            continue
        pref.user_id = user.id
        pref.timezone = "Asia/Shanghai"
        session.add(pref)
        created["notify preferences"] += 1


# (days ago, local hour, track, kind, source, fault, skill, severity, acknowledged by, minutes to
# acknowledge, resolved by ("" = cleared by itself), minutes to resolve, resolution, note)
_PAST: tuple[tuple[Any, ...], ...] = (
    (
        6,
        3,
        MAINTENANCE,
        "equipment.fault",
        "PU-2",
        "run_feedback_missing",
        "plumbing",
        "major",
        "tech",
        6,
        "tech",
        48,
        "接触器触点烧蚀，已更换",
        "2 号生活水泵无运行反馈，现场检查接触器",
    ),
    (
        5,
        14,
        MAINTENANCE,
        "device.offline",
        "meter-t2",
        "offline",
        "electrical",
        "major",
        "tech-elec",
        3,
        "",
        22,
        "cleared",
        "T2 电表通讯中断，RS485 端子松动已紧固",
    ),
    (
        3,
        22,
        LIFE_SAFETY,
        "smoke.alarm",
        "smoke-t3-b1",
        "smoke",
        "security",
        "critical",
        "guard-hv",
        1,
        "guard-hv",
        9,
        "误报：地下车库汽车尾气，已复位并通知保洁通风",
        "现场确认无明火",
    ),
    (
        2,
        10,
        MAINTENANCE,
        "equipment.fault",
        "CH-1",
        "chw_supply_high",
        "hvac",
        "major",
        "tech-hvac",
        4,
        "",
        35,
        "cleared",
        "冷冻水供水温度高，清洗冷凝器滤网后恢复",
    ),
    (
        1,
        16,
        MAINTENANCE,
        "equipment.fault",
        "LIFT-T1-2",
        "door_lock_fault",
        "lifts",
        "critical",
        "tech-lift",
        2,
        "tech-lift",
        64,
        "门锁回路开关调整，维保单位到场确认",
        "1 号楼 2 号梯门锁故障，已困人救援预案待命",
    ),
)


async def _past_alerts(
    session: AsyncSession,
    company_id: int,
    site_id: int,
    gateway_id: str,
    users: dict[str, User],
    now: datetime,
    created: Counter[str],
) -> None:
    for (
        days,
        hour,
        track,
        kind,
        source,
        fault,
        skill,
        severity,
        acker,
        ack_min,
        resolver,
        res_min,
        resolution,
        note,
    ) in _PAST:
        day: date = now.astimezone(ZONE).date() - timedelta(days=days)
        raised = datetime.combine(day, datetime.min.time(), ZONE).replace(hour=hour, minute=17)
        key = f"demo|{source}|{fault}|{day.isoformat()}"
        if await session.scalar(select(Alert.id).where(Alert.company_id == company_id, Alert.key == key)):
            continue
        acked = raised + timedelta(minutes=ack_min)
        resolved = raised + timedelta(minutes=res_min)
        ack_user = users.get(acker)
        res_user = users.get(resolver) if resolver else None
        alert = Alert(
            company_id=company_id,
            site_id=site_id,
            gateway_id=gateway_id,
            track=track,
            key=key,
            kind=kind,
            source=source,
            fault=fault,
            skill=skill,
            severity=severity,
            details={"demo": True},
            state=RESOLVED,
            active=False,
            event_count=1,
            raised_at=raised,
            first_event_at=raised,
            last_event_at=raised,
            cleared_at=resolved if not resolver else None,
            acknowledged_at=acked,
            acknowledged_by=ack_user.id if ack_user else None,
            resolved_at=resolved,
            resolved_by=res_user.id if res_user else None,
            resolution=resolution,
            escalation_step=0,
            escalation_from=raised,
            next_action_at=None,
        )
        session.add(alert)
        await session.flush()
        timeline: list[tuple[datetime, str, int | None, dict[str, Any]]] = [
            (raised, "raised", None, {"kind": kind, "source": source, "fault": fault, "severity": severity}),
        ]
        if ack_user is not None:
            for channel, address in (("sms", ack_user.phone), ("email", ack_user.email)):
                timeline.append(
                    (
                        raised + timedelta(seconds=2),
                        "notified",
                        None,
                        {
                            "user_id": ack_user.id,
                            "name": ack_user.display_name,
                            "channel": channel,
                            "address": address,
                            "reason": "raised",
                            "step": 0,
                            "message_id": f"demo-{alert.id}-{channel}",
                        },
                    )
                )
            timeline.append((acked, "acknowledged", ack_user.id, {}))
            timeline.append((acked + timedelta(minutes=1), "note", ack_user.id, {"text": note}))
        if res_user is None:
            timeline.append((resolved, "cleared", None, {"kind": kind.replace("fault", "fault_cleared")}))
            timeline.append((resolved, "resolved", None, {"resolution": "cleared", "auto": True}))
        else:
            timeline.append((resolved, "resolved", res_user.id, {"resolution": resolution, "auto": False}))
        session.add_all(
            AlertTimeline(alert_id=alert.id, at=at, action=action, actor_id=actor, detail=detail)
            for at, action, actor, detail in timeline
        )
        created["past alerts"] += 1
