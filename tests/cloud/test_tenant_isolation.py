"""Tenant isolation: no route lets one company read or change another's data.

Companies X and Y each have a site with one of everything (``make_estate``: the property model,
people, staff, tokens, residents, a gateway with its inventory, events and commands, access data,
audit entries). X's company admin (every permission) then calls every route of the app with Y's
ids wherever a path, a query or a body names an id, and bodies otherwise valid (built from the
OpenAPI description). No answer may carry Y's data (Y's names all hold a marker that must never
appear), and every row of Y's is the same afterwards."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from cloud.accounts.permissions import Role
from cloud.api import create_app
from cloud.config import CloudConfig
from cloud.db import SessionFactory
from cloud.models import Base
from tests.cloud.test_permission_matrix import (
    PLATFORM_TOKEN,
    Estate,
    LiveServer,
    RouteInfo,
    app_routes,
    fill,
    live_server,  # noqa: F401 (a fixture)
    make_company_row,
    make_estate,
    sessions,  # noqa: F401 (a fixture)
    user_cookie,
)

# Body fields that name an object, and the estate's key for it.
ID_FIELDS = {
    "common_area_id": "area_id",
    "parent_id": "department_id",
    "parking_space_id": "space_id",
}
PASSWORD = "Correct-Horse-Battery-2026!"
CANDIDATES = (
    "T1",
    "abc",
    "a1",
    "13800000000",
    "x@example.com",
    "zh",
    "12.50",
    "2026-01-01",
    "site-1",
    "ab-12",
)


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    return schema


def example(schema: dict[str, Any], spec: dict[str, Any], name: str, ids: dict[str, Any]) -> Any:
    """A value for ``schema`` that its validation should take, with the other company's ids for
    every field that names an object."""
    schema = _resolve(schema, spec)
    key = ID_FIELDS.get(name, name)
    if key in ids and key.endswith("_id"):
        return ids[key]
    if name == "site_ids":
        return [ids["site_id"]]
    if "anyOf" in schema or "oneOf" in schema:
        options = [
            o for o in schema.get("anyOf", schema.get("oneOf", [])) if _resolve(o, spec).get("type") != "null"
        ]
        return example(options[0], spec, name, ids) if options else None
    if "allOf" in schema:
        return example(schema["allOf"][0], spec, name, ids)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        required = set(schema.get("required", []))
        return {
            prop: example(sub, spec, prop, ids)
            for prop, sub in schema.get("properties", {}).items()
            if prop in required or prop.endswith("_id") or prop.endswith("_ids")
        }
    if kind == "array":
        items = schema.get("items", {})
        return [example(items, spec, name.removesuffix("s"), ids)] if items else []
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return max(schema.get("minimum", 1), 1)
    if kind == "boolean":
        return False
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date":
            return "2026-01-01"
        if fmt == "date-time":
            return datetime.now(UTC).isoformat()
        if fmt == "email":
            return "x@example.com"
        if fmt == "binary":
            return "id,name\n1,x\n"
        if "password" in name:
            return PASSWORD
        pattern = schema.get("pattern")
        if pattern:
            return next((c for c in CANDIDATES if re.search(pattern, c)), "x")
        return f"iso{secrets.token_hex(2)}"[: max(schema.get("maxLength", 10), 1)]
    return None


def request_body(route: RouteInfo, spec: dict[str, Any], ids: dict[str, Any]) -> dict[str, Any]:
    """httpx keyword arguments carrying a valid-looking body for the route (none if it takes none)."""
    operation = spec["paths"].get(route.path, {}).get(route.method.lower(), {})
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return {"json": example(content["application/json"]["schema"], spec, "body", ids)}
    if "text/csv" in content:
        return {"content": b"id,card,holder\nc1,1001,x\n", "headers": {"Content-Type": "text/csv"}}
    if "multipart/form-data" in content:
        form = _resolve(content["multipart/form-data"]["schema"], spec)
        files, data = {}, {}
        for prop, sub in form.get("properties", {}).items():
            value = example(sub, spec, prop, ids)
            field = _resolve(sub, spec)
            if field.get("format") == "binary" or "contentMediaType" in field:
                files[prop] = ("rows.csv", b"code,name\nT9,x\n", "text/csv")
            else:
                data[prop] = str(value).lower() if isinstance(value, bool) else str(value)
        return {"files": files, "data": data}
    return {}


async def company_rows(factory: SessionFactory, estate: Estate) -> dict[str, list[str]]:
    """Every row that is the estate's company's: by company, site, site code or gateway."""
    gateway_ids = {estate.gateway_id}
    rows: dict[str, list[str]] = {}
    async with factory() as session:
        for table in Base.metadata.sorted_tables:
            columns = table.columns
            found = []
            for row in (await session.execute(select(table))).mappings():
                mine = (
                    ("company_id" in columns and row["company_id"] == estate.company_id)
                    or ("site_id" in columns and row["site_id"] == estate.site_id)
                    or ("site" in columns and row["site"] == estate.site_code)
                    or ("gateway_id" in columns and row["gateway_id"] in gateway_ids)
                    or (table.name == "gateways" and row["id"] in gateway_ids)
                )
                if mine:
                    found.append(repr(sorted(row.items())))
            rows[table.name] = sorted(found)
    return rows


async def test_no_route_lets_a_company_reach_another(
    live_server: LiveServer,  # noqa: F811
    sessions: SessionFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    x_id, x_code = await make_company_row(sessions, f"xmark{secrets.token_hex(3)}")
    x = await make_estate(sessions, x_id, x_code, f"xmark{secrets.token_hex(3)}")
    y_marker = f"ymark{secrets.token_hex(3)}"
    y_id, y_code = await make_company_row(sessions, y_marker)
    y = await make_estate(sessions, y_id, y_code, y_marker)
    admin = await user_cookie(sessions, x.company_id, Role.COMPANY_ADMIN)
    before = await company_rows(sessions, y)
    assert sum(len(v) for v in before.values()) > 20

    app = create_app(CloudConfig(data_dir=str(tmp_path)), sessions, token=PLATFORM_TOKEN)
    spec = app.openapi()
    routes = [r for r in app_routes(app) if not r.public and r.authorizers]
    leaks: list[str] = []
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30, follow_redirects=False) as client:
        for route in routes:
            params = {name: y.ids[name] for name in route.query_params if name in y.ids}
            kwargs = request_body(route, spec, y.ids) if route.method in ("POST", "PUT", "PATCH") else {}
            headers = {**admin, **kwargs.pop("headers", {})}
            async with client.stream(
                route.method, fill(route, y.ids), params=params, headers=headers, **kwargs
            ) as r:
                if r.headers.get("content-type", "").startswith("text/event-stream"):
                    body = ""  # a live stream (it was refused, or it would show in its status)
                    # A stream opened with Y's ids is a leak; one that names none is the caller's own
                    # (the technician page's stream of "my alerts").
                    if r.status_code < 300 and (route.path_params or params):
                        leaks.append(f"{route}: {r.status_code}, a live stream of Y's")
                else:
                    body = (await r.aread()).decode("utf-8", "replace")
            if y_marker in body:
                leaks.append(f"{route} ({r.status_code}): the answer holds Y's data")
    after = await company_rows(sessions, y)
    changed = [t for t in before if before[t] != after.get(t)]
    assert leaks == [] and changed == [], "\n".join([*leaks, *(f"Y's {t} rows changed" for t in changed)])
