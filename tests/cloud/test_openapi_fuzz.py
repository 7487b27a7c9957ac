"""Schemathesis against the whole ``/api/v1`` from the app's own OpenAPI description: whatever the
fuzzer sends, as the platform operator or as a company's admin, no answer is a server error, and
every answer the description declares fits the schema it declares.

The app runs under uvicorn on a loopback port over a SQLite file seeded with two companies (so ids
the fuzzer tries may hit real rows of another company); each operation gets a bounded number of
examples from a fixed seed, so a run takes the same path every time and stays within a couple of
minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance

from cloud.accounts.permissions import Role
from cloud.api import create_app
from cloud.config import CloudConfig
from cloud.db import create_engine, session_factory
from cloud.schema import prepare_database
from tests.cloud.tenancy import bearer, role_token
from tests.cloud.test_permission_matrix import (
    PLATFORM_TOKEN,
    LiveServer,
    make_company_row,
    make_estate,
)

EXAMPLES_PER_OPERATION = 5
SEED = 20261127
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True},
        # The explicit examples and the fuzzing; the coverage phase's exhaustive edge cases and the
        # stateful links would take many times as long.
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)


@dataclass(frozen=True)
class Api:
    url: str
    principals: dict[str, dict[str, str]]
    http: requests.Session  # one connection, kept alive


async def _seed(url: str) -> dict[str, dict[str, str]]:
    engine = create_engine(url)
    try:
        await prepare_database(engine)
        sessions = session_factory(engine)
        headers = {"platform": bearer(PLATFORM_TOKEN)}
        for marker in ("fuzzx", "fuzzy"):
            company_id, code = await make_company_row(sessions, marker)
            await make_estate(sessions, company_id, code, f"{marker}-estate")
            if marker == "fuzzx":
                admin = await role_token(sessions, company_id, Role.COMPANY_ADMIN)
                headers["company_admin"] = bearer(admin)
        return headers
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    work: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite+aiosqlite:///{work / 'cloud.db'}"
    principals = asyncio.run(_seed(url))
    server = LiveServer(url, work)
    server.start()
    try:
        with requests.Session() as http:
            yield Api(server.url, principals, http)
    finally:
        server.stop()


def _description() -> dict[str, Any]:
    """The app's OpenAPI description: the app is built on an engine it never connects with."""
    engine = create_engine("sqlite+aiosqlite://")
    return create_app(
        CloudConfig(data_dir="/nonexistent"), session_factory(engine), token=PLATFORM_TOKEN
    ).openapi()


# Loaded at import (schemathesis.pytest.from_fixture does not run under pytest 9: it reads the test
# node's private _nodeid): the description does not depend on the data.
schema = schemathesis.openapi.from_dict(_description(), config=CONFIG).include(path_regex=r"^/api/v1/")


@schema.parametrize()
def test_no_server_errors(case: Any, api: Api) -> None:
    for headers in api.principals.values():
        case.call_and_validate(
            base_url=api.url,
            session=api.http,
            headers=headers,
            checks=[not_a_server_error, response_schema_conformance],
            timeout=60,
        )
