"""Alerts for the alert tests, written straight through the models (the engine has its own
tests), and a real small JPEG made with the standard library."""

from __future__ import annotations

import secrets
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud.alerts.models import LIFE_SAFETY, MAINTENANCE, OPEN, Alert, AlertTimeline, Notification
from cloud.db import SessionFactory


async def make_alert(
    sessions: SessionFactory,
    company_id: int | None,
    site_id: int | None,
    *,
    track: str = MAINTENANCE,
    state: str = OPEN,
    kind: str = "equipment.fault",
    source: str = "chiller-1/status",
    fault: str = "high_temp",
    skill: str = "hvac",
    gateway_id: str = "gw-test",
    notify_user: int | None = None,
    raised_at: datetime | None = None,
) -> int:
    """An alert with its "raised" timeline row (and a sent notice to ``notify_user``); its id."""
    now = raised_at or datetime.now(UTC)
    if track == LIFE_SAFETY:
        key = f"ls|{gateway_id}|{secrets.token_hex(6)}|1"
        kind, fault, skill = (
            ("smoke.alarm", "smoke", "security") if kind == "equipment.fault" else (kind, fault, skill)
        )
    else:
        key = f"{gateway_id}|{source}|{fault}|{secrets.token_hex(4)}"
    async with sessions() as session:
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
            severity="critical" if track == LIFE_SAFETY else "major",
            details={"value": 9.5},
            state=state,
            raised_at=now,
            first_event_at=now,
            last_event_at=now,
            escalation_from=now,
            next_action_at=now + timedelta(minutes=10),
        )
        session.add(alert)
        await session.flush()
        session.add(
            AlertTimeline(
                alert_id=alert.id,
                at=now,
                action="raised",
                detail={"kind": kind, "source": source, "fault": fault, "severity": alert.severity},
            )
        )
        if notify_user is not None:
            await add_notice(session, alert, notify_user, now)
        await session.commit()
        return alert.id


async def add_notice(
    session: Any, alert: Alert, user_id: int, now: datetime, *, status: str = "sent", channel: str = "sms"
) -> None:
    session.add(
        Notification(
            alert_id=alert.id,
            company_id=alert.company_id,
            user_id=user_id,
            channel=channel,
            address="13800000000" if channel == "sms" else "tech@example.com",
            reason="raised",
            dedupe_key=f"{alert.id}|{user_id}|{channel}|raised|0|{secrets.token_hex(4)}",
            status=status,
            created_at=now,
            not_before=now,
            sent_at=now if status == "sent" else None,
        )
    )
    session.add(
        AlertTimeline(
            alert_id=alert.id,
            at=now,
            action="notified",
            detail={"user_id": user_id, "name": "Tech", "channel": channel, "address": "13800000000",
                    "reason": "raised", "step": 0, "message_id": "m1"},
        )
    )  # fmt: skip


def tiny_jpeg(grey: int = 144) -> bytes:
    """An 8×8 grey baseline JPEG: one block whose only coefficient is DC, with Huffman tables of
    one code each (DC category 8 / AC end-of-block, both the one-bit code 0). Decoders (Chromium,
    libjpeg) read it as any camera's JPEG."""
    dc = 8 * (grey - 128)  # the DCT's DC term of a flat block, quantised by 1
    assert 0 < dc < 256, "category 8 holds 128..255"

    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body

    quant = segment(0xDB, bytes([0x00]) + bytes([1] * 64))
    frame = segment(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + bytes([1, 0x11, 0]))
    # DC table 0: one code of length 1 for category 8; AC table 0: one code of length 1 for EOB.
    dc_table = segment(0xC4, bytes([0x00]) + bytes([1] + [0] * 15) + bytes([8]))
    ac_table = segment(0xC4, bytes([0x10]) + bytes([1] + [0] * 15) + bytes([0x00]))
    scan = segment(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))
    bits = "0" + format(dc, "08b") + "0"  # DC code, its 8 bits, the AC end-of-block code
    bits += "1" * (-len(bits) % 8)
    data = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
    assert b"\xff" not in data
    return b"\xff\xd8" + quant + frame + dc_table + ac_table + scan + data + b"\xff\xd9"
