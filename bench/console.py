#!/usr/bin/env python3
"""Benchmark of the console's pages and the events API at scale; prints one JSON line of figures.

    .venv/bin/python bench/console.py            # 1,000,000 events and 10,000 units (a few minutes)
    .venv/bin/python bench/console.py --quick    # 150,000 events, fewer requests: within a minute

For SQLite (a file in a temporary folder) and then PostgreSQL (a throwaway database): the schema
by the cloud's own migrations, a company of ``--units`` units over four sites with one gateway
each and ``--events`` events over the last 60 days (cloud.seed.seed_scale: ingest's bulk insert,
and what ingest's digest keeps), a company admin with a signed-in session and an API token; then
the real cloud (`gatehouse cloud serve --no-ingest`) on a free loopback port, asked over HTTP one
request at a time: each page and query ``--warmup`` times, then ``--requests`` times measured.

- pages: the dashboard (/), a site's view (/sites/{id}) and the event search (/events, also
  filtered by a kind): the session cookie, as a browser sends it.
- api: GET /api/v1/events with the API token (scoped to the company): the newest page, the next
  page by cursor, by kind (an alarm kind: rare), by kind prefix, by source, by site, and a day's
  window a month back.
- page_ms_p95 / api_events_query_ms_p95: the worst p95 of the pages / the API queries over both
  databases; each one's p50 and p95 are beside them. Targets: 150 ms and 100 ms.
- seed_s: how long seed_scale took (events, units, digest); on PostgreSQL a VACUUM ANALYZE
  follows it (autovacuum's steady state: statistics, and the visibility map index-only scans use).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import text  # noqa: E402

from cloud.accounts.authn import SESSION_COOKIE, token_hash  # noqa: E402
from cloud.accounts.models import ApiToken, RoleGrant, User  # noqa: E402
from cloud.accounts.permissions import ROLE_PERMISSIONS, Role  # noqa: E402
from cloud.accounts.sessions import open_session  # noqa: E402
from cloud.db import create_engine, session_factory  # noqa: E402
from cloud.schema import prepare_database  # noqa: E402
from cloud.seed import ScaleSeed, seed_scale  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.postgres import create_database, drop_database  # noqa: E402
from tests.system.harness import GATEHOUSE, Proc, wait_until  # noqa: E402

atexit.register(Proc.kill_all)  # a failed run leaves no cloud behind

TARGETS = {"page_ms_p95": 150.0, "api_events_query_ms_p95": 100.0}
API_TOKEN = "ght_bench-console-0123456789abcdefghijklmnop"


@dataclass
class Company:
    seed: ScaleSeed
    cookie: str
    plan: str  # PostgreSQL: the shape of the newest page's plan


async def newest_page_plan(conn: Any, gateway_ids: list[str]) -> str:
    """The newest page of the company over the partitioned table, as EXPLAIN has it: expected a
    Merge Append of a backward scan of each partition's id index, and no Sort."""
    listed = ", ".join(f"'{g}'" for g in gateway_ids)
    sql = f"SELECT * FROM events WHERE gateway_id IN ({listed}) ORDER BY id DESC LIMIT 101"
    doc = (await conn.execute(text("EXPLAIN (FORMAT JSON) " + sql))).scalar_one()
    plan = (json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"]
    counts: dict[str, int] = {}

    def walk(node: dict[str, Any]) -> None:
        label = node["Node Type"] + (" Backward" if node.get("Scan Direction") == "Backward" else "")
        counts[label] = counts.get(label, 0) + 1
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return ", ".join(f"{label} x{n}" if n > 1 else label for label, n in counts.items())


def pages(company: Company) -> dict[str, str]:
    """The console pages measured: add one here and it is measured on both databases."""
    site = company.seed.site_ids[0]
    return {
        "dashboard": "/",
        "site": f"/sites/{site}",
        "event_search": "/events",
        "event_search_kind": "/events?kind=access.denied",
    }


def api_queries(company: Company, now: datetime) -> dict[str, str]:
    """The events API queries measured (a ``{cursor}`` is the newest page's next_cursor)."""
    day = (now - timedelta(days=30)).replace(microsecond=0)
    return {
        "newest": "/api/v1/events?limit=100",
        "next_page": "/api/v1/events?limit=100&cursor={cursor}",
        "kind_rare": "/api/v1/events?kind=door.forced&limit=100",
        "kind_prefix": "/api/v1/events?kind_prefix=door.&limit=100",
        "source": f"/api/v1/events?source={company.seed.sources[7]}&limit=100",
        "site": f"/api/v1/events?site_id={company.seed.site_ids[1]}&limit=100",
        "window_day_month_ago": (
            f"/api/v1/events?since={day.isoformat().replace('+00:00', 'Z')}"
            f"&until={(day + timedelta(days=1)).isoformat().replace('+00:00', 'Z')}&limit=100"
        ),
    }


async def build(url: str, units: int, events: int) -> tuple[Company, float]:
    """Migrate, seed, and make the company's admin a session and an API token."""
    engine = create_engine(url)
    try:
        await prepare_database(engine)
        sessions = session_factory(engine)
        started = time.perf_counter()
        seed = await seed_scale(sessions, units=units, events=events)
        seeded = time.perf_counter() - started
        now = datetime.now(UTC)
        async with sessions() as session, session.begin():
            admin = User(
                company_id=seed.company_id, username="bench-admin", display_name="基准管理员", created_at=now
            )
            session.add(admin)
            await session.flush()
            session.add(
                RoleGrant(company_id=seed.company_id, user_id=admin.id, role=Role.COMPANY_ADMIN.value)
            )
            opened = await open_session(
                session, company_id=seed.company_id, user_id=admin.id, now=now, lifetime=timedelta(hours=12)
            )
            session.add(
                ApiToken(
                    company_id=seed.company_id,
                    name="bench",
                    token_hash=token_hash(API_TOKEN),
                    prefix=API_TOKEN[:8],
                    scopes=sorted(p.value for p in ROLE_PERMISSIONS[Role.COMPANY_ADMIN]),
                    site_ids=None,
                    created_at=now,
                )
            )
        plan = ""
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE"))
                plan = await newest_page_plan(conn, seed.gateway_ids)
        return Company(seed, opened.cookie, plan), seeded
    finally:
        await engine.dispose()


def serve(tmp: Path, url: str) -> tuple[Proc, str]:
    port = free_port()
    config = tmp / "cloud.toml"
    config.write_text(
        f'data_dir = "{tmp / "cloud"}"\n[database]\nurl = "{url}"\n[api]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[mqtt]\nurl = ""\nembedded_port = {free_port()}\n'
    )
    proc = Proc([*GATEHOUSE, "cloud", "serve", "--no-ingest", "--config", str(config)], tmp / "cloud.log")
    proc.start()
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not proc.running:
            raise RuntimeError(f"the cloud exited:\n{proc.log()[-3000:]}")
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 60, "the cloud's /healthz")
    return proc, base


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)


def measure(client: httpx.Client, path: str, warmup: int, requests: int) -> dict[str, Any]:
    for _ in range(warmup):
        r = client.get(path)
        if r.status_code != 200:
            return {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            return {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
    return {"p50": percentile(times, 0.5), "p95": percentile(times, 0.95)}


def run_backend(name: str, url: str, tmp: Path, args: argparse.Namespace, figures: dict[str, Any]) -> None:
    started = time.perf_counter()
    company, seeded = asyncio.run(build(url, args.units, args.events))
    figures["seed_s"][name] = round(seeded, 1)
    if company.plan:
        figures[f"plan_newest_page_{name}"] = company.plan
    proc, base = serve(tmp, url)
    figures["setup_s"][name] = round(time.perf_counter() - started, 1)  # migrate, seed, start
    try:
        with (
            httpx.Client(base_url=base, cookies={SESSION_COOKIE: company.cookie}, timeout=30) as browser,
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30) as api,
        ):
            figures["pages"][name] = {
                page: measure(browser, path, args.warmup, args.requests)
                for page, path in pages(company).items()
            }
            newest = api.get("/api/v1/events?limit=100").json()
            cursor = newest.get("next_cursor") or ""
            figures["api"][name] = {
                query: measure(api, path.replace("{cursor}", cursor), args.warmup, args.requests)
                for query, path in api_queries(company, datetime.now(UTC)).items()
            }
    finally:
        proc.stop()


def worst(section: dict[str, dict[str, dict[str, Any]]]) -> float | None:
    values = [m["p95"] for db in section.values() for m in db.values() if "p95" in m]
    return max(values) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="150,000 events, fewer requests: within a minute")
    ap.add_argument("--events", type=int, help="events to seed (default 1,000,000; 150,000 with --quick)")
    ap.add_argument("--units", type=int, help="units to seed (default 10,000; 2,000 with --quick)")
    ap.add_argument("--requests", type=int, help="measured requests per page or query (default 100; 15)")
    ap.add_argument("--warmup", type=int, help="requests before measuring (default 5; 3)")
    ap.add_argument("--backends", default="sqlite,postgresql", help="comma-separated (default both)")
    args = ap.parse_args()
    args.events = args.events if args.events is not None else (150_000 if args.quick else 1_000_000)
    args.units = args.units if args.units is not None else (2_000 if args.quick else 10_000)
    args.requests = args.requests or (15 if args.quick else 100)
    args.warmup = args.warmup if args.warmup is not None else (3 if args.quick else 5)
    figures: dict[str, Any] = {
        "quick": args.quick,
        "events": args.events,
        "units": args.units,
        "requests": args.requests,
        "page_ms_p95": None,
        "api_events_query_ms_p95": None,
        "targets": TARGETS,
        "pages": {},
        "api": {},
        "seed_s": {},
        "setup_s": {},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gh-bench-console-") as d:
        for name in args.backends.split(","):
            tmp = Path(d) / name
            tmp.mkdir()
            if name == "sqlite":
                run_backend(name, f"sqlite+aiosqlite:///{tmp / 'cloud.db'}", tmp, args, figures)
            else:
                url = asyncio.run(create_database("gh_bench_console"))
                try:
                    run_backend(name, url, tmp, args, figures)
                finally:
                    asyncio.run(drop_database(url))
    figures["page_ms_p95"] = worst(figures["pages"])
    figures["api_events_query_ms_p95"] = worst(figures["api"])
    figures["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
