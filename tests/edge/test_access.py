"""The gateway's credential store against real SQLite files: every decision reason, schedules in
the site's zone, staleness and clock trust, PINs, anti-passback, and versioned deltas."""

import asyncio
import sqlite3
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from pydantic import ValidationError

from edge import access as access_mod
from edge.access import AccessDecision, AccessRequest, CredentialStore
from protocols.access import (
    AccessDelta,
    AccessLevel,
    Credential,
    Decision,
    Holiday,
    Interval,
    Schedule,
    pin_hash,
    split_delta,
)

SH = ZoneInfo("Asia/Shanghai")
HOUR = 3600


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    """UTC ms of a wall time in Shanghai."""
    return int(datetime(y, mo, d, h, mi, tzinfo=SH).timestamp() * 1000)


# 2025-09-29 is a Monday; 2025-10-01 (a Wednesday) is a holiday.
MON_10 = at(2025, 9, 29, 10)
SYNCED_AT = at(2025, 9, 28, 12)  # Sunday noon: every time tested is after it
MONTH = 30 * 24 * 3600

SCHEDULES = [
    Schedule(id="office", intervals=[Interval(days=[0, 1, 2, 3, 4], start="08:00", end="18:00")]),
    Schedule(id="friday-night", intervals=[Interval(days=[4], start="22:00", end="06:00")]),
    Schedule(
        id="nightly",
        intervals=[Interval(start="22:00", end="06:00")],
        holiday=[Interval(start="22:00", end="02:00")],
    ),
    Schedule(
        id="shop",
        intervals=[Interval(days=[0, 1, 2, 3, 4], start="09:00", end="17:00")],
        holiday=[Interval(start="10:00", end="12:00")],
    ),
]
LEVELS = [
    AccessLevel(id="lobby", doors=["front", "lift"]),
    AccessLevel(id="office", doors=["office"], schedule="office"),
    AccessLevel(id="dock", doors=["dock"], schedule="friday-night"),
    AccessLevel(id="night", doors=["garage"], schedule="nightly"),
    AccessLevel(id="shop", doors=["shop"], schedule="shop"),
    AccessLevel(id="ghost", doors=["vault"], schedule="no-such-schedule"),
]
HOLIDAYS = [Holiday(date=date(2025, 10, 1), name="National Day")]
ALL_LEVELS = [lv.id for lv in LEVELS]


def cred(cid: str, card: str, **kw) -> Credential:
    kw.setdefault("facility", 10)
    kw.setdefault("holder", f"holder {cid}")
    kw.setdefault("levels", ALL_LEVELS)
    return Credential(id=cid, card=card, **kw)


CREDENTIALS = [
    cred("c1", "1001"),
    cred("suspended", "1002", suspended=True),
    cred("offline", "1003", offline_ok=True),
    cred("clockfree", "1004", clock_free=True, levels=["office"], valid_until_ms=at(2020, 1, 1)),
    cred("future", "1005", valid_from_ms=at(2025, 10, 1)),
    cred("expired", "1006", valid_until_ms=at(2025, 9, 29, 9)),
    cred("lobby-only", "1007", levels=["lobby"]),
    cred("pin", "1008", pin_hash=pin_hash("pin", "2468")),
    cred("exempt", "1009", antipassback_exempt=True),
    cred("any-facility", "2002", facility=None),
    cred("shared-any", "3003", facility=None),
    cred("shared-7", "3003", facility=7),
    cred("zeros", "0042"),
    cred("first", "1010", first_person_in=True),
    cred("unknown-level", "1011", levels=["no-such-level"]),
]


def full_delta(version: int = 1, credentials: list[Credential] | None = None) -> AccessDelta:
    return AccessDelta(
        base=0,
        version=version,
        reset=True,
        schedules=SCHEDULES,
        levels=LEVELS,
        holidays=HOLIDAYS,
        credentials=CREDENTIALS if credentials is None else credentials,
    )


@pytest.fixture
async def store(tmp_path):
    s = CredentialStore.open(tmp_path / "access.sqlite3")
    out = await s.apply(full_delta(), now_ms=SYNCED_AT)
    assert out.code == "applied" and out.version == 1
    yield s
    s.close()


def decide(
    store: CredentialStore,
    card: str,
    door: str = "front",
    *,
    now: int = MON_10,
    synced: bool = True,
    stale_after_s: float = MONTH,
    facility: int | None = 10,
    **req,
) -> AccessDecision:
    return store.decide(
        AccessRequest(card=card, facility=facility, door=door, reader=f"{door}-r", **req),
        now_ms=now,
        clock_synced=synced,
        stale_after_s=stale_after_s,
        tz=SH,
    )


def reason(d: AccessDecision) -> Decision | None:
    assert d.granted == (d.reason is None), d
    return d.reason


# ------------------------------------------------------------------------------- decisions


async def test_grant_names_credential_holder_and_store_and_makes_a_granted_event(store):
    d = decide(store, "1001", "front")
    assert d.granted and d.reason is None
    assert (d.credential_id, d.holder, d.store_version) == ("c1", "holder c1", 1)
    assert d.store_age_s == pytest.approx(22 * HOUR)
    assert not d.first_person_in and not d.antipassback_violation
    req = AccessRequest(card="1001", facility=10, door="front", reader="front-r")
    ev = d.event(req, time_ms=MON_10)
    assert (ev.kind, ev.source, ev.time_ms) == ("access.granted", "front", MON_10)
    assert ev.data == {
        "door": "front",
        "reader": "front-r",
        "card": "1001",
        "facility": 10,
        "credential": "c1",
        "holder": "holder c1",
        "reason": None,
        "store_version": 1,
        "store_age_s": 22.0 * HOUR,
        "first_person_in": False,
        "antipassback_violation": False,
        "direction": None,
        "area": "",
    }


async def test_a_denial_is_an_access_denied_event_with_its_reason(store):
    d = decide(store, "9999")
    assert not d.granted and d.reason is Decision.UNKNOWN and d.credential_id is None
    ev = d.event(AccessRequest(card="9999", facility=10, door="front", reader="front-r"))
    assert ev.kind == "access.denied" and ev.data["reason"] == "unknown" and ev.data["credential"] is None


async def test_every_denial_reason(store):
    assert reason(decide(store, "9999")) is Decision.UNKNOWN
    assert reason(decide(store, "1002")) is Decision.SUSPENDED
    assert reason(decide(store, "1001", stale_after_s=HOUR)) is Decision.STORE_STALE
    assert reason(decide(store, "1001", synced=False)) is Decision.CLOCK_UNSYNCED
    assert reason(decide(store, "1005")) is Decision.NOT_YET_VALID
    assert reason(decide(store, "1006")) is Decision.EXPIRED
    assert reason(decide(store, "1007", "office")) is Decision.WRONG_DOOR
    assert reason(decide(store, "1001", "office", now=at(2025, 9, 29, 7, 59))) is Decision.OUTSIDE_SCHEDULE
    apb: dict[str, Any] = {"area": "b1", "direction": "in", "antipassback": "hard"}
    assert reason(decide(store, "1001", **apb)) is None
    assert reason(decide(store, "1001", **apb)) is Decision.ANTI_PASSBACK
    assert reason(decide(store, "1008", keypad=True)) is Decision.PIN_REQUIRED
    assert reason(decide(store, "1008", keypad=True, pin="1111")) is Decision.WRONG_PIN


async def test_the_first_failing_check_is_the_reason(store):
    # Suspended before stale, stale before clock, clock before dates, dates before door.
    assert reason(decide(store, "1002", stale_after_s=HOUR, synced=False)) is Decision.SUSPENDED
    assert reason(decide(store, "1006", stale_after_s=HOUR, synced=False)) is Decision.STORE_STALE
    assert reason(decide(store, "1006", "vault", synced=False)) is Decision.CLOCK_UNSYNCED
    assert reason(decide(store, "1006", "nowhere")) is Decision.EXPIRED
    # Door before schedule: the office door is closed now, but this one has no level holding it.
    assert reason(decide(store, "1007", "office", now=at(2025, 9, 29, 3))) is Decision.WRONG_DOOR


async def test_a_level_naming_an_unknown_schedule_is_closed_and_an_unknown_level_holds_no_door(store):
    assert reason(decide(store, "1001", "vault")) is Decision.OUTSIDE_SCHEDULE
    assert reason(decide(store, "1011", "front")) is Decision.WRONG_DOOR


async def test_first_person_in_comes_from_the_credential(store):
    assert decide(store, "1010").first_person_in
    assert not decide(store, "1001").first_person_in


# ------------------------------------------------------------------------------- schedules


async def test_weekly_schedule_boundaries_in_the_site_zone(store):
    office = [
        (at(2025, 9, 29, 7, 59), False),
        (at(2025, 9, 29, 8, 0), True),
        (at(2025, 9, 29, 17, 59), True),
        (at(2025, 9, 29, 18, 0), False),
        (at(2025, 10, 4, 10), False),  # Saturday
    ]
    for now, open_ in office:
        d = decide(store, "1001", "office", now=now, stale_after_s=30 * 24 * HOUR)
        assert d.granted is open_, datetime.fromtimestamp(now / 1000, SH)
    # 08:00 in Shanghai is 00:00 UTC: the schedule is not evaluated in UTC.
    assert at(2025, 9, 29, 8, 0) % 86_400_000 == 0


async def test_an_interval_past_midnight_belongs_to_the_day_it_starts(store):
    dock = [
        (at(2025, 10, 2, 23), False),  # Thursday night: the interval is on Fridays only
        (at(2025, 10, 3, 21, 59), False),  # Friday
        (at(2025, 10, 3, 22, 0), True),
        (at(2025, 10, 4, 0, 0), True),  # Saturday, after midnight: Friday's interval
        (at(2025, 10, 4, 5, 59), True),
        (at(2025, 10, 4, 6, 0), False),
        (at(2025, 10, 4, 23), False),  # Saturday night
    ]
    for now, open_ in dock:
        d = decide(store, "1001", "dock", now=now, stale_after_s=MONTH)
        assert d.granted is open_, datetime.fromtimestamp(now / 1000, SH)


async def test_holidays_use_the_holiday_intervals_or_close(store):
    # 2025-10-01: the office schedule has no holiday intervals: closed all day.
    assert reason(decide(store, "1001", "office", now=at(2025, 10, 1, 10), stale_after_s=MONTH)) is (
        Decision.OUTSIDE_SCHEDULE
    )
    # The shop opens 10:00-12:00 on holidays instead of 09:00-17:00.
    shop = [(9, 30, False), (10, 0, True), (11, 59, True), (12, 0, False), (15, 0, False)]
    for h, m, open_ in shop:
        d = decide(store, "1001", "shop", now=at(2025, 10, 1, h, m), stale_after_s=MONTH)
        assert d.granted is open_, (h, m)
    assert decide(store, "1001", "shop", now=at(2025, 10, 2, 15), stale_after_s=MONTH).granted
    # Overnight: Tuesday night's interval runs into the holiday morning (it began on Tuesday);
    # the holiday's own night ends at 02:00 instead of 06:00.
    garage = [
        (at(2025, 10, 1, 5), True),  # Tuesday 22:00 - Wednesday 06:00
        (at(2025, 10, 1, 23), True),  # the holiday's night, 22:00 - 02:00
        (at(2025, 10, 2, 1, 59), True),
        (at(2025, 10, 2, 3), False),
    ]
    for now, open_ in garage:
        d = decide(store, "1001", "garage", now=now, stale_after_s=MONTH)
        assert d.granted is open_, datetime.fromtimestamp(now / 1000, SH)


# ------------------------------------------------------------------------------- trust


async def test_a_stale_store_honours_only_offline_credentials(store):
    limit = 3600.0
    fresh, stale = SYNCED_AT + 3_600_000, SYNCED_AT + 3_600_001
    assert decide(store, "1001", now=fresh, stale_after_s=limit).granted
    d = decide(store, "1001", now=stale, stale_after_s=limit)
    assert d.reason is Decision.STORE_STALE and d.store_age_s == pytest.approx(3600.001)
    assert decide(store, "1003", now=stale, stale_after_s=limit).granted
    # An offline credential is still checked for everything else.
    assert reason(decide(store, "1003", "office", now=at(2025, 9, 30, 3), stale_after_s=limit)) is (
        Decision.OUTSIDE_SCHEDULE
    )


async def test_a_clock_behind_the_last_contact_makes_the_store_stale(store):
    d = decide(store, "1001", now=SYNCED_AT - 1000)
    assert d.reason is Decision.STORE_STALE and d.store_age_s == pytest.approx(-1.0)
    assert decide(store, "1003", now=SYNCED_AT - 1000).granted


async def test_a_store_never_synced_is_stale_for_every_credential(tmp_path):
    s = CredentialStore.open(tmp_path / "access.sqlite3")
    try:
        assert s.age_s(MON_10) is None and s.version == 0
        d = decide(s, "1001")
        assert d.reason is Decision.UNKNOWN and d.store_age_s is None and d.store_version == 0
    finally:
        s.close()


async def test_a_store_whose_current_time_is_unknown_counts_as_stale(store, tmp_path):
    store.close()
    db = sqlite3.connect(tmp_path / "access.sqlite3")
    db.execute("DELETE FROM meta WHERE key = 'current_at_ms'")
    db.commit()
    db.close()
    s = CredentialStore.open(tmp_path / "access.sqlite3")
    try:
        assert reason(decide(s, "1001")) is Decision.STORE_STALE
        assert decide(s, "1003").granted
    finally:
        s.close()


async def test_unsynced_clock_honours_only_clock_free_credentials_and_skips_dates_and_schedules(store):
    night = at(2025, 9, 30, 3)  # the office door is closed at 03:00
    assert reason(decide(store, "1001", "office", now=night, synced=False)) is Decision.CLOCK_UNSYNCED
    # clockfree expired in 2020 and the office is closed: neither can be trusted without a clock.
    d = decide(store, "1004", "office", now=night, synced=False)
    assert d.granted
    # ...but its doors still are.
    assert reason(decide(store, "1004", "front", synced=False)) is Decision.WRONG_DOOR
    # With the clock synchronised the same credential is judged on its dates.
    assert reason(decide(store, "1004", "office")) is Decision.EXPIRED


# ------------------------------------------------------------------------------- PIN


async def test_pin_required_wrong_and_right_on_a_keypad_reader(store):
    assert reason(decide(store, "1008", keypad=True)) is Decision.PIN_REQUIRED
    assert reason(decide(store, "1008", keypad=True, pin="1357")) is Decision.WRONG_PIN
    assert reason(decide(store, "1008", keypad=True, pin="12")) is Decision.WRONG_PIN  # not a PIN
    assert decide(store, "1008", keypad=True, pin="2468").granted
    # A reader without a keypad cannot ask: the card alone opens it.
    assert decide(store, "1008").granted
    # A credential without a PIN ignores one entered.
    assert decide(store, "1001", keypad=True, pin="0000").granted


# ------------------------------------------------------------------------------- anti-passback


async def test_hard_anti_passback_refuses_entering_twice_and_leaving_twice(store):
    def go(direction: str) -> AccessDecision:
        return decide(store, "1001", area="b1", direction=direction, antipassback="hard")

    assert go("out").granted  # nothing known yet: allowed
    assert go("in").granted
    d = go("in")
    assert d.reason is Decision.ANTI_PASSBACK and not d.granted and d.antipassback_violation
    assert go("out").granted
    assert reason(go("out")) is Decision.ANTI_PASSBACK
    assert go("in").granted
    # Areas are separate, and so are credentials.
    assert decide(store, "1001", area="b2", direction="in", antipassback="hard").granted
    assert decide(store, "1003", area="b1", direction="in", antipassback="hard").granted


async def test_soft_anti_passback_grants_flags_and_records(store):
    soft: dict[str, Any] = {"area": "b1", "antipassback": "soft"}
    assert decide(store, "1001", direction="in", **soft).reason is None
    d = decide(store, "1001", direction="in", **soft)
    assert d.granted and d.antipassback_violation and d.reason is Decision.ANTI_PASSBACK
    assert d.event(AccessRequest("1001", 10, "front", "front-r")).kind == "access.granted"
    assert store.passages("c1") == {"b1": "in"}
    # Recorded: the exit is not a violation.
    assert decide(store, "1001", direction="out", **soft).reason is None


async def test_exempt_credentials_skip_anti_passback(store):
    for _ in range(3):
        d = decide(store, "1009", area="b1", direction="in", antipassback="hard")
        assert d.granted and not d.antipassback_violation
    assert store.passages("exempt") == {}


async def test_a_door_without_anti_passback_still_records_the_passage(store):
    assert decide(store, "1001", area="b1", direction="in", antipassback="hard").granted
    assert decide(store, "1001", area="b1", direction="out").granted  # exit reader, "off"
    assert decide(store, "1001", area="b1", direction="in", antipassback="hard").granted


async def test_a_denied_card_records_no_passage(store):
    apb: dict[str, Any] = {"area": "b1", "direction": "in", "antipassback": "hard"}
    assert reason(decide(store, "1008", keypad=True, pin="1111", **apb)) is Decision.WRONG_PIN
    assert store.passages("pin") == {}
    assert decide(store, "1008", keypad=True, pin="2468", **apb).granted


async def test_passages_survive_reopening_the_store(store, tmp_path):
    assert decide(store, "1001", area="b1", direction="in", antipassback="hard").granted
    store.close()
    s = CredentialStore.open(tmp_path / "access.sqlite3")
    try:
        assert reason(decide(s, "1001", area="b1", direction="in", antipassback="hard")) is (
            Decision.ANTI_PASSBACK
        )
    finally:
        s.close()


# ------------------------------------------------------------------------------- card matching


async def test_facility_none_matches_any_facility_and_exact_facility_is_preferred(store):
    assert decide(store, "2002", facility=55).credential_id == "any-facility"
    assert decide(store, "2002", facility=None).credential_id == "any-facility"
    # A credential with a facility code needs the same one.
    assert reason(decide(store, "1001", facility=11)) is Decision.UNKNOWN
    assert reason(decide(store, "1001", facility=None)) is Decision.UNKNOWN
    # Two credentials on one card number: the exact facility wins, the other takes the rest.
    assert decide(store, "3003", facility=7).credential_id == "shared-7"
    assert decide(store, "3003", facility=8).credential_id == "shared-any"
    assert decide(store, "3003", facility=None).credential_id == "shared-any"


async def test_card_numbers_compare_as_numbers(store):
    assert decide(store, "42").credential_id == "zeros"
    assert decide(store, "00042").credential_id == "zeros"


# ------------------------------------------------------------------------------- deltas


def delta(base: int, version: int, **kw) -> AccessDelta:
    return AccessDelta(base=base, version=version, **kw)


async def test_upserts_and_removals(store):
    out = await store.apply(
        delta(
            1,
            2,
            credentials=[cred("c1", "1001", holder="renamed", levels=["lobby"]), cred("new", "5005")],
            removed_credentials=["suspended"],
        ),
        now_ms=MON_10,
    )
    assert (out.code, out.version, store.version) == ("applied", 2, 2)
    d = decide(store, "1001")
    assert d.holder == "renamed" and d.store_version == 2 and d.store_age_s == 0
    assert reason(decide(store, "1001", "office")) is Decision.WRONG_DOOR
    assert decide(store, "5005").granted
    assert reason(decide(store, "1002")) is Decision.UNKNOWN

    await store.apply(delta(2, 3, removed_levels=["lobby"]), now_ms=MON_10)
    assert reason(decide(store, "5005", "front")) is Decision.WRONG_DOOR
    await store.apply(delta(3, 4, removed_schedules=["office"]), now_ms=MON_10)
    assert reason(decide(store, "5005", "office")) is Decision.OUTSIDE_SCHEDULE  # unknown: closed
    assert store.stats()["schedules"] == len(SCHEDULES) - 1


async def test_holidays_are_replaced_by_a_list_and_kept_by_none(store):
    hol = at(2025, 10, 1, 10)
    await store.apply(delta(1, 2, credentials=[cred("x", "7007")]), now_ms=MON_10)
    assert store.stats()["holidays"] == 1 and store.holidays() == {date(2025, 10, 1)}
    assert not decide(store, "1001", "office", now=hol, stale_after_s=MONTH).granted
    await store.apply(delta(2, 3, holidays=[]), now_ms=MON_10)
    assert store.stats()["holidays"] == 0 and store.holidays() == frozenset()
    assert decide(store, "1001", "office", now=hol, stale_after_s=MONTH).granted


async def test_an_empty_delta_at_the_store_version_marks_it_current(store):
    later = SYNCED_AT + 10 * HOUR * 1000
    out = await store.apply(delta(1, 1), now_ms=later)
    assert (out.code, out.version) == ("current", 1)
    assert store.age_s(later) == 0 and store.current_at_ms == later
    out = await store.apply(delta(2, 2), now_ms=later + 5000)
    assert out.code == "version_mismatch" and store.current_at_ms == later


async def test_mark_current_persists(store, tmp_path):
    store.mark_current(MON_10 + 5000)
    store.close()
    s = CredentialStore.open(tmp_path / "access.sqlite3")
    try:
        assert s.current_at_ms == MON_10 + 5000 and s.version == 1
    finally:
        s.close()


async def test_a_version_mismatch_leaves_the_store_untouched(store, tmp_path):
    before = store.stats()
    out = await store.apply(
        delta(5, 6, credentials=[cred("x", "7007")], removed_credentials=["c1"]), now_ms=MON_10 + 1
    )
    assert out.code == "version_mismatch" and out.version == 1
    assert "have 1" in out.detail and "5" in out.detail
    assert store.stats() == before and store.current_at_ms == SYNCED_AT
    assert decide(store, "1001").granted and reason(decide(store, "7007")) is Decision.UNKNOWN


async def test_a_delta_for_an_older_version_is_answered_current_and_changes_nothing(store):
    await store.apply(delta(1, 2, credentials=[cred("x", "7007")]), now_ms=MON_10)
    await store.apply(delta(2, 3, removed_credentials=["x"]), now_ms=MON_10)
    out = await store.apply(delta(1, 2, credentials=[cred("x", "7007")]), now_ms=MON_10 + 1)
    assert (out.code, out.version) == ("current", 3)
    assert reason(decide(store, "7007")) is Decision.UNKNOWN and store.current_at_ms == MON_10


async def test_reset_replaces_everything_whatever_the_base(store):
    assert decide(store, "1001", area="b1", direction="in", antipassback="hard").granted
    assert decide(store, "1003", area="b1", direction="in", antipassback="hard").granted
    out = await store.apply(
        AccessDelta(
            base=77,
            version=9,
            reset=True,
            levels=[AccessLevel(id="only", doors=["front"])],
            credentials=[cred("offline", "1003", levels=["only"])],
        ),
        now_ms=MON_10,
    )
    assert (out.code, out.version) == ("applied", 9)
    st = store.stats()
    assert (st["credentials"], st["levels"], st["schedules"], st["holidays"]) == (1, 1, 0, 0)
    assert reason(decide(store, "1001")) is Decision.UNKNOWN
    assert store.passages("c1") == {}
    # The remaining credential keeps its passages.
    assert reason(decide(store, "1003", area="b1", direction="in", antipassback="hard")) is (
        Decision.ANTI_PASSBACK
    )


async def test_a_multi_part_delta_is_staged_then_applied_at_once_and_survives_reopening(store, tmp_path):
    new = [cred(f"n{i}", str(60_000 + i)) for i in range(7)]
    parts = split_delta(delta(1, 2, credentials=new, removed_credentials=["c1"]), per_part=2)
    assert len(parts) == 4
    for p in parts[:2]:
        out = await store.apply(p, now_ms=MON_10)
        assert (out.code, out.version) == ("pending", 1)
    # A part sent again is taken once.
    assert (await store.apply(parts[1], now_ms=MON_10)).code == "pending"
    assert store.stats()["pending_parts"] == 2
    # Nothing of it is visible yet.
    assert decide(store, "1001").granted and reason(decide(store, "60000")) is Decision.UNKNOWN

    store.close()
    s = CredentialStore.open(tmp_path / "access.sqlite3")
    try:
        st = s.stats()
        assert st["pending_parts"] == 2 and st["version"] == 1
        assert st["pending"] == [{"reset": False, "base": 1, "version": 2, "parts": 4, "have": 2}]
        assert (await s.apply(parts[3], now_ms=MON_10)).code == "pending"
        out = await s.apply(parts[2], now_ms=MON_10 - 7)
        assert (out.code, out.version) == ("applied", 2)
        assert s.stats()["pending_parts"] == 0 and s.current_at_ms == MON_10 - 7
        assert all(decide(s, str(60_000 + i)).granted for i in range(7))
        assert reason(decide(s, "1001")) is Decision.UNKNOWN
        # A late resend of a part of it changes nothing.
        assert (await s.apply(parts[0], now_ms=MON_10)).code == "current"
        assert s.stats()["pending_parts"] == 0
    finally:
        s.close()


async def test_bad_data_never_leaves_the_store_half_applied(store, monkeypatch):
    new = [cred(f"n{i}", str(60_000 + i)) for i in range(6)]
    parts = split_delta(delta(1, 2, credentials=new, removed_credentials=["c1"]), per_part=2)
    real = access_mod._cred_row

    def failing(c: Credential):
        if c.id == "n4":  # in the last part
            raise ValueError("bad credential")
        return real(c)

    monkeypatch.setattr(access_mod, "_cred_row", failing)
    assert (await store.apply(parts[0], now_ms=MON_10)).code == "pending"
    assert (await store.apply(parts[1], now_ms=MON_10)).code == "pending"
    with pytest.raises(ValueError, match="bad credential"):
        await store.apply(parts[2], now_ms=MON_10 + 1)
    assert store.version == 1 and store.current_at_ms == SYNCED_AT
    assert store.stats()["credentials"] == len(CREDENTIALS)
    assert decide(store, "1001").granted and reason(decide(store, "60000")) is Decision.UNKNOWN
    # The parts are dropped: a resend starts again, and goes through once the data is good.
    assert store.stats()["pending_parts"] == 0
    monkeypatch.setattr(access_mod, "_cred_row", real)
    for p in parts:
        out = await store.apply(p, now_ms=MON_10)
    assert (out.code, out.version) == ("applied", 2)


async def test_a_failure_after_everything_is_written_rolls_all_of_it_back(store, monkeypatch):
    new = [cred(f"n{i}", str(60_000 + i)) for i in range(6)]
    change = delta(
        1,
        2,
        credentials=new,
        removed_credentials=["c1"],
        levels=[AccessLevel(id="lobby", doors=["side"])],
        holidays=[],
    )
    real = access_mod._write

    def write_then_fail(*args):
        real(*args)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(access_mod, "_write", write_then_fail)
    for parts in (split_delta(change, per_part=2), [change]):
        for p in parts[:-1]:
            assert (await store.apply(p, now_ms=MON_10)).code == "pending"
        with pytest.raises(sqlite3.OperationalError):
            await store.apply(parts[-1], now_ms=MON_10 + 1)
        assert store.version == 1 and store.current_at_ms == SYNCED_AT
        st = store.stats()
        assert (st["credentials"], st["holidays"], st["pending_parts"]) == (len(CREDENTIALS), 1, 0)
        assert decide(store, "1001").granted and decide(store, "1007", "front").granted
        assert reason(decide(store, "60000")) is Decision.UNKNOWN


async def test_a_delta_in_json_is_parsed_and_applied_and_bad_json_refused(store):
    change = delta(1, 2, credentials=[cred(f"n{i}", str(60_000 + i)) for i in range(450)])
    assert access_mod.parse_delta(change.model_dump_json(), chunk=100) == change
    bad = change.model_dump(mode="json")
    bad["credentials"][300]["card"] = "12a"
    with pytest.raises(ValidationError, match=r"credentials\.300\.card"):
        await store.apply_json(orjson.dumps(bad), now_ms=MON_10)
    with pytest.raises(ValidationError):
        await store.apply_json(b"[1, 2]", now_ms=MON_10)
    with pytest.raises(ValidationError):
        await store.apply_json(b"{not json", now_ms=MON_10)
    assert store.version == 1
    out = await store.apply_json(change.model_dump_json().encode(), now_ms=MON_10)
    assert (out.code, out.version) == ("applied", 2) and decide(store, "60449").granted


async def test_a_multi_part_reset_replaces_the_store_when_complete(store):
    parts = split_delta(full_delta(version=5, credentials=CREDENTIALS[:5]), per_part=2)
    assert len(parts) == 3
    assert (await store.apply(parts[2], now_ms=MON_10)).code == "pending"
    assert (await store.apply(parts[0], now_ms=MON_10)).code == "pending"
    assert store.version == 1 and decide(store, "1007").granted
    out = await store.apply(parts[1], now_ms=MON_10)
    assert (out.code, out.version) == ("applied", 5)
    assert store.stats()["credentials"] == 5 and reason(decide(store, "1007")) is Decision.UNKNOWN


async def test_decisions_during_an_apply_see_the_old_version_and_their_passages_are_kept(store, tmp_path):
    change = delta(
        1, 2, credentials=[cred("c1", "1001", holder="v2")], levels=[AccessLevel(id="lobby", doors=["side"])]
    )
    task = asyncio.create_task(store.apply(change, now_ms=MON_10 - 1000))
    for _ in range(10):
        if store.stats()["applying"]:
            break
        await asyncio.sleep(0)
    assert store.stats()["applying"]
    # The worker may well have committed by now: the loop still sees version 1, whole.
    d = decide(store, "1007", "front", area="b1", direction="in", antipassback="hard")
    assert d.granted and d.store_version == 1
    assert reason(decide(store, "1007", "side")) is Decision.WRONG_DOOR
    assert decide(store, "1001").holder == "holder c1"
    # The passage is honoured before it is written.
    assert reason(decide(store, "1007", area="b1", direction="in", antipassback="hard")) is (
        Decision.ANTI_PASSBACK
    )
    store.mark_current(MON_10)  # later than the apply's own time: it stands
    out = await task
    assert (out.code, store.version, store.current_at_ms) == ("applied", 2, MON_10)
    assert decide(store, "1007", "side").granted and decide(store, "1001").holder == "v2"
    store.close()
    s = CredentialStore.open(tmp_path / "access.sqlite3")
    try:
        assert s.passages("lobby-only") == {"b1": "in"}
        assert (s.version, s.current_at_ms) == (2, MON_10)
    finally:
        s.close()


async def test_cancelling_the_caller_does_not_leave_caches_behind_the_data(store):
    task = asyncio.create_task(
        store.apply(delta(1, 2, levels=[AccessLevel(id="lobby", doors=["side"])]), now_ms=MON_10)
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The apply itself goes on to the end; the next one waits for it.
    assert (await store.apply(delta(2, 2), now_ms=MON_10)).code == "current"
    assert store.version == 2
    assert decide(store, "1007", "side").granted
    assert reason(decide(store, "1007", "front")) is Decision.WRONG_DOOR


# ------------------------------------------------------------------------------- size


def big_credentials(n: int, start: int = 0, holder: str = "") -> list[Credential]:
    return [
        Credential(
            id=f"p{i}",
            card=str(100_000 + i),
            facility=i % 256,
            holder=holder or f"person {i}",
            levels=["lobby", "office"] if i % 2 else ["lobby"],
        )
        for i in range(start, start + n)
    ]


async def test_a_100k_store_built_from_parts_decides_correctly_without_blocking_the_loop(tmp_path):
    s = CredentialStore.open(tmp_path / "access.sqlite3")
    try:
        reset = AccessDelta(
            base=0,
            version=1,
            reset=True,
            schedules=SCHEDULES,
            levels=LEVELS,
            holidays=HOLIDAYS,
            credentials=big_credentials(100_000),
        )
        parts = split_delta(reset)
        assert len(parts) == 50
        for p in parts[:-1]:
            assert (await s.apply(p, now_ms=SYNCED_AT)).code == "pending"

        ticks = 0
        seen: set[tuple[int, str]] = set()
        done = asyncio.Event()

        async def other_work() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                # Decisions made while the last part is applied see one version, whole.
                d = decide(s, "100001", facility=1)
                seen.add((d.store_version, d.reason or "granted"))
                await asyncio.sleep(0.001)

        worker = asyncio.create_task(other_work())
        await asyncio.sleep(0.005)
        before = ticks
        out = await s.apply(parts[-1], now_ms=SYNCED_AT)
        during = ticks - before
        done.set()
        await worker
        assert (out.code, out.version) == ("applied", 1)
        assert during >= 2, "the loop did not run while the delta was applied"
        assert seen <= {(0, Decision.STORE_STALE), (0, Decision.UNKNOWN), (1, "granted")}

        assert s.stats()["credentials"] == 100_000
        for i in (0, 1, 12_345, 99_998, 99_999):
            d = decide(s, str(100_000 + i), "office", facility=i % 256)
            assert d.credential_id == f"p{i}"
            assert d.granted is bool(i % 2), i
        assert reason(decide(s, "100001", facility=2)) is Decision.UNKNOWN
        assert reason(decide(s, "200000", facility=0)) is Decision.UNKNOWN

        # 10,000 changed in 5 parts, while the loop keeps going.
        change = split_delta(
            AccessDelta(
                base=1,
                version=2,
                credentials=big_credentials(10_000, start=40_000, holder="changed"),
                removed_credentials=["p0"],
            )
        )
        assert len(change) == 5
        done.clear()
        ticks = 0
        worker = asyncio.create_task(other_work())
        outs = [await s.apply(p, now_ms=MON_10) for p in change]
        done.set()
        await worker
        assert [o.code for o in outs] == ["pending"] * 4 + ["applied"]
        assert ticks >= 2
        assert decide(s, "145000", facility=45_000 % 256).holder == "changed"
        assert reason(decide(s, "100000", facility=0)) is Decision.UNKNOWN
        assert s.stats()["credentials"] == 99_999 and s.version == 2
    finally:
        s.close()
