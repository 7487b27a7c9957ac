from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cloud.api import create_app
from cloud.config import CloudConfig
from cloud.db import create_engine, session_factory
from cloud.events import store_batch
from cloud.registry import add_gateway
from tests.cloud.conftest import Database
from tests.cloud.helpers import make_events, new_gateway_id, new_store_id

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def client(db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CloudConfig(data_dir=str(tmp_path)), db.sessions, token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as c:
        yield c


async def test_healthz_needs_no_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok"}


async def test_healthz_is_503_without_database(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:9/none")
    app = create_app(CloudConfig(data_dir=str(tmp_path)), session_factory(engine), token=TOKEN)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud") as c:
            r = await c.get("/healthz")
            assert r.status_code == 503
            assert r.json()["status"] == "unavailable"
            r = await c.get("/api/v1/gateways", headers=AUTH)
            assert r.status_code == 503
            assert r.json()["code"] == "unavailable"
    finally:
        await engine.dispose()


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    for name in (
        "gatehouse_ingest_messages_total",
        "gatehouse_ingest_events_total",
        "gatehouse_ingest_duplicates_total",
        "gatehouse_ingest_db_errors_total",
        "gatehouse_ingest_commit_seconds_bucket",
        "gatehouse_gateways_online",
    ):
        assert name in r.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
)
async def test_api_needs_the_token(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for path in ("/api/v1/gateways", "/api/v1/events", "/api/v1/events?limit=0"):
        r = await client.get(path, headers=headers)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"


async def test_gateways_list(client: httpx.AsyncClient, db: Database) -> None:
    gw, store = new_gateway_id(), new_store_id()
    async with db.sessions() as session, session.begin():
        await add_gateway(session, gw, "Plant room 2")
    r = await client.get("/api/v1/gateways", headers=AUTH)
    assert r.status_code == 200
    assert set(r.json()) == {"items", "next_cursor"}
    mine = (await client.get(f"/api/v1/gateways/{gw}", headers=AUTH)).json()
    assert mine["id"] == gw
    assert mine["site"] == "Plant room 2"
    assert mine["online"] is False
    assert mine["last_seen"] is None
    assert mine["event_count"] == 0
    assert {"version", "boot_id", "clock_synced", "state_time", "created_at"} <= set(mine)
    assert "password_hash" not in mine
    del store


async def test_events_list_and_paging(client: httpx.AsyncClient, db: Database) -> None:
    gw, store = new_gateway_id(), new_store_id()
    t0 = datetime(2025, 2, 1, 12, 0, tzinfo=UTC)
    async with db.sessions() as session, session.begin():
        await store_batch(
            session,
            gw,
            store,
            datetime.now(UTC),
            make_events(1, 5, kind="door.forced", time_ms=int(t0.timestamp() * 1000)),
        )
    r = await client.get("/api/v1/events", params={"gateway_id": gw, "limit": 3}, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert [e["seq"] for e in body["items"]] == [5, 4, 3]
    assert body["items"][0]["kind"] == "door.forced"
    assert body["items"][-1]["reported_time"] == "2025-02-01T12:00:00.002000Z"
    assert body["next_cursor"]
    r = await client.get(
        "/api/v1/events", params={"gateway_id": gw, "limit": 3, "cursor": body["next_cursor"]}, headers=AUTH
    )
    assert [e["seq"] for e in r.json()["items"]] == [2, 1]
    assert r.json()["next_cursor"] is None

    r = await client.get(
        "/api/v1/events",
        params={"gateway_id": gw, "since": "2025-02-01T12:00:00.003Z", "until": "2025-02-01T14:00:00+01:00"},
        headers=AUTH,
    )
    assert [e["seq"] for e in r.json()["items"]] == [5, 4]


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-01T00:00:00Z"}, "until"),
        ({"gateway_id": "a/b"}, "gateway_id"),
        ({"kind": "Not A Kind"}, "kind"),
        ({"cursor": "bm90IG1pbmU"}, "cursor"),
        ({"since": "2025-02-02T00:00:00Z", "until": "2025-02-01T00:00:00Z"}, "since"),
    ],
)
async def test_bad_parameters_are_422_with_a_reason(
    client: httpx.AsyncClient, params: dict[str, str], mentions: str
) -> None:
    r = await client.get("/api/v1/events", params=params, headers=AUTH)
    assert r.status_code == 422
    assert mentions in r.text
