"""What the notices say, in Chinese and English: email subject and body, SMS text, webhook JSON.

Plain format strings: the texts are short and fixed, and a template engine would add nothing but
an escaping question (these are plain-text emails and SMS, never HTML). A Chinese SMS is kept to
70 characters where it can be (one SMS segment): the link always stays whole, the place is cut.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud.alerts.models import LIFE_SAFETY

SMS_LIMIT = {"zh": 70, "en": 160}


@dataclass(frozen=True)
class AlertView:
    """One alert as a message tells it (read when the notice is sent, so its state is current)."""

    id: int
    track: str
    state: str
    kind: str
    source: str
    fault: str
    severity: str
    site_id: int | None
    site_name: str
    site_timezone: str
    raised_at: datetime
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    flapping: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PersonMessage:
    subject: str
    text: str  # the email's body
    sms: str


_KINDS: dict[str, tuple[str, str]] = {
    "fire.alarm": ("火警", "Fire alarm"),
    "smoke.alarm": ("烟感报警", "Smoke alarm"),
    "panic.alarm": ("紧急求助", "Panic alarm"),
    "duress.alarm": ("胁迫报警", "Duress alarm"),
    "access.duress": ("胁迫报警", "Duress alarm"),
    "door.forced": ("门被强行打开", "Door forced open"),
    "intrusion.alarm": ("入侵报警", "Intrusion alarm"),
    "fire.release_fault": ("疏散门释放故障", "Egress door release fault"),
    "device.fault": ("设备故障", "Device fault"),
    "equipment.fault": ("设备故障", "Equipment fault"),
    "device.offline": ("设备离线", "Device offline"),
    "gateway.offline": ("网关离线", "Gateway offline"),
    "reader.tamper": ("读卡器被拆", "Reader tamper"),
    "intrusion.supervision_fault": ("防区监视故障", "Zone supervision fault"),
}
_FAULTS: dict[str, tuple[str, str]] = {
    "unreadable": ("无法读取", "unreadable"),
    "offline": ("离线", "offline"),
    "high_temp": ("温度过高", "high temperature"),
    "low_temp": ("温度过低", "low temperature"),
    "high_pressure": ("压力过高", "high pressure"),
    "low_pressure": ("压力过低", "low pressure"),
    "tamper": ("被拆", "tamper"),
}
_REASONS: dict[str, tuple[str, str]] = {
    "raised": ("新告警", "New alert"),
    "escalated": ("无人确认，已升级", "Not acknowledged: escalated"),
    "repeated": ("仍未确认", "Still not acknowledged"),
    "reraised": ("确认后未解决，再次告警", "Acknowledged but not resolved: raised again"),
    "acknowledged": ("已确认", "Acknowledged"),
    "resolved": ("已解决", "Resolved"),
}
_SEVERITIES: dict[str, tuple[str, str]] = {
    "critical": ("严重", "critical"),
    "major": ("重要", "major"),
    "minor": ("次要", "minor"),
}
_STATES: dict[str, tuple[str, str]] = {
    "open": ("未确认", "open"),
    "acknowledged": ("已确认", "acknowledged"),
    "in_progress": ("处理中", "in progress"),
    "resolved": ("已解决", "resolved"),
    "inhibited": ("已抑制", "inhibited"),
}
_WORDS: dict[str, tuple[str, str]] = {
    "urgent": ("【紧急】", "[URGENT] "),
    "maintenance": ("【维修】", "[Maintenance] "),
    "urgent_sms": ("紧急", "URGENT"),
    "maintenance_sms": ("维修", "Maintenance"),
    "site": ("地点", "Site"),
    "source": ("设备", "Device"),
    "fault": ("故障", "Fault"),
    "severity": ("级别", "Severity"),
    "raised_at": ("发生时间", "Raised"),
    "state": ("状态", "State"),
    "flapping": ("（反复出现）", " (flapping)"),
    "open_it": ("查看并处理", "Open and handle it"),
    "open_them": ("查看并处理", "Open and handle them"),
    "act_now": ("请立即处理", "act now"),
    "footer": ("此消息由 Gatehouse 自动发送，请勿回复。", "Sent by Gatehouse; do not reply."),
    "unknown_site": ("未知地点", "unknown site"),
}


def alert_link(base_url: str, alert_id: int) -> str:
    return f"{base_url.rstrip('/')}/tech/alerts/{alert_id}"


def alerts_link(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/tech/alerts"


def person_message(items: Sequence[tuple[AlertView, str]], language: str, base_url: str) -> PersonMessage:
    """The message to one person about one alert, or about several maintenance alerts of one site
    at once (``items``: each alert with the reason of its notice)."""
    if not items:
        raise ValueError("a message needs at least one alert")
    lang = 0 if language != "en" else 1
    if len(items) == 1:
        return _single(items[0][0], items[0][1], lang, base_url)
    return _grouped(items, lang, base_url)


def webhook_payload(
    alert: AlertView, reason: str, step: int, base_url: str, delivery_id: str
) -> dict[str, Any]:
    """The JSON a webhook receives: the alert as it stands, the occasion, times in ISO-8601 UTC."""
    return {
        "delivery_id": delivery_id,
        "reason": reason,
        "step": step,
        "alert_id": alert.id,
        "track": alert.track,
        "state": alert.state,
        "kind": alert.kind,
        "site_id": alert.site_id,
        "site": alert.site_name,
        "source": alert.source,
        "fault": alert.fault,
        "severity": alert.severity,
        "flapping": alert.flapping,
        "details": alert.details,
        "link": alert_link(base_url, alert.id),
        "raised_at": iso_utc(alert.raised_at),
        "acknowledged_at": iso_utc(alert.acknowledged_at),
        "resolved_at": iso_utc(alert.resolved_at),
    }


def iso_utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _single(alert: AlertView, reason: str, lang: int, base_url: str) -> PersonMessage:
    urgent = alert.track == LIFE_SAFETY
    what = _kind(alert, lang)
    site = alert.site_name or _WORDS["unknown_site"][lang]
    reason_text = _REASONS.get(reason, (reason, reason))[lang]
    link = alert_link(base_url, alert.id)
    tag = _WORDS["urgent" if urgent else "maintenance"][lang]
    subject = f"{tag}{reason_text}: {_summary(alert, lang)} · {site}"
    lines = [f"{reason_text}: {what}" + (_WORDS["flapping"][lang] if alert.flapping else "")]
    lines.append(f"{_WORDS['site'][lang]}: {site}")
    if alert.source:
        lines.append(f"{_WORDS['source'][lang]}: {alert.source}")
    fault = _fault(alert, lang)
    if fault:
        lines.append(f"{_WORDS['fault'][lang]}: {fault}")
    lines.append(
        f"{_WORDS['severity'][lang]}: {_SEVERITIES.get(alert.severity, (alert.severity,) * 2)[lang]}"
    )
    lines.append(f"{_WORDS['raised_at'][lang]}: {_local(alert.raised_at, alert.site_timezone)}")
    lines.append(f"{_WORDS['state'][lang]}: {_STATES.get(alert.state, (alert.state,) * 2)[lang]}")
    lines += ["", f"{_WORDS['open_it'][lang]}: {link}", "", _WORDS["footer"][lang]]
    sms = _sms(alert, reason, lang, link)
    return PersonMessage(subject, "\n".join(lines) + "\n", sms)


def _grouped(items: Sequence[tuple[AlertView, str]], lang: int, base_url: str) -> PersonMessage:
    first = items[0][0]
    site = first.site_name or _WORDS["unknown_site"][lang]
    n = len(items)
    all_new = all(reason == "raised" for _a, reason in items)
    if lang == 0:
        head = f"{n} 个新故障" if all_new else f"{n} 个维修告警"
    else:
        head = f"{n} new faults" if all_new else f"{n} maintenance alerts"
    summaries = [_summary(a, lang) for a, _r in items]
    subject = f"{_WORDS['maintenance'][lang]}{head} · {site}: " + "; ".join(summaries)
    if len(subject) > 150:
        subject = subject[:149] + "…"
    lines = [f"{head} · {site}", ""]
    for i, (a, reason) in enumerate(items, 1):
        reason_text = _REASONS.get(reason, (reason, reason))[lang]
        lines.append(f"{i}. {_summary(a, lang)} ({reason_text}, {_local(a.raised_at, a.site_timezone)})")
        lines.append(f"   {alert_link(base_url, a.id)}")
    lines += ["", f"{_WORDS['open_them'][lang]}: {alerts_link(base_url)}", "", _WORDS["footer"][lang]]
    sep = " · " if lang else "·"
    link = alerts_link(base_url)
    limit = SMS_LIMIT["en" if lang else "zh"]
    start = f"{head}{sep}{site}: "
    listing = "; ".join(summaries)
    room = limit - len(start) - len(link) - 1
    if len(listing) > room:
        listing = listing[: max(room - 1, 8)] + "…"
    return PersonMessage(subject, "\n".join(lines) + "\n", f"{start}{listing} {link}")


def _sms(alert: AlertView, reason: str, lang: int, link: str) -> str:
    """``紧急·烟感报警·1F lobby smoke-lobby-1 海景花园 请立即处理 <link>``: where first (the zone and
    source tell a guard which stairs to take; the site is what is cut first), never the link."""
    urgent = alert.track == LIFE_SAFETY
    tag = _WORDS["urgent_sms" if urgent else "maintenance_sms"][lang]
    what = _kind(alert, lang)
    if reason != "raised":
        what = f"{_REASONS.get(reason, (reason, reason))[lang]}: {what}"
    fault = _fault(alert, lang) if not urgent else ""
    tail = f" {_WORDS['act_now'][lang]} {link}" if urgent and reason != "resolved" else f" {link}"
    sep = "·" if lang == 0 else " · "
    zone = alert.details.get("zone")
    where = (zone if isinstance(zone, str) else "", alert.source, fault, alert.site_name)
    place = " ".join(p for p in where if p)
    limit = SMS_LIMIT["zh" if lang == 0 else "en"]
    fixed = f"{tag}{sep}{what}{sep}"
    room = limit - len(fixed) - len(tail)
    if len(place) > room:
        place = place[: max(room - 1, 6)] + "…"
    return f"{fixed}{place}{tail}"


def _kind(alert: AlertView, lang: int) -> str:
    known = _KINDS.get(alert.kind)
    if known is not None:
        return known[lang]
    return str(alert.details.get("title") or alert.kind)


def _fault(alert: AlertView, lang: int) -> str:
    if not alert.fault:
        return ""
    text = _FAULTS.get(alert.fault, (alert.fault, alert.fault))[lang]
    detail = alert.details.get("detail")
    return f"{text} ({detail})" if isinstance(detail, str) and detail else text


def _summary(alert: AlertView, lang: int) -> str:
    parts = [_kind(alert, lang), alert.source]
    fault = _FAULTS.get(alert.fault, (alert.fault, alert.fault))[lang] if alert.fault else ""
    return " ".join(p for p in (*parts, fault) if p)


def _local(value: datetime, timezone: str) -> str:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M ") + timezone
