"""The cloud's HTTP app: health and metrics for the operator, ``/api/v1`` for the console's
actions and for integrations, and the console's pages.

``/healthz`` and ``/metrics`` need no principal (load balancers and Prometheus scrape them);
everything else names the permission it needs (``cloud.accounts.permissions``): a bearer token
(the platform's, or an API token) or a signed-in session. A console page asked for without a
session redirects to the sign-in page; an API route answers 401 in JSON.
"""

import asyncio
import logging
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from cloud import metrics
from cloud.access.endpoints import router as access_router
from cloud.accounts.endpoints import router as accounts_router
from cloud.accounts.permissions import Authorize, Permission
from cloud.alerts.endpoints import router as alerts_router
from cloud.audit.endpoints import router as audit_router
from cloud.commands.endpoints import router as commands_router
from cloud.commands.service import Publisher
from cloud.config import CloudConfig, api_token, api_token_owner
from cloud.console.pages import router as console_router
from cloud.db import SessionFactory, is_transient
from cloud.events.endpoints import router as events_router
from cloud.gateways.endpoints import router as gateways_router
from cloud.kit.errors import CloudError, Unauthorized
from cloud.oncall.endpoints import router as oncall_router
from cloud.property.endpoints import router as property_router
from cloud.registry import count_online

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 2.0


class ErrorOut(BaseModel):
    detail: str
    code: str


def create_app(
    config: CloudConfig,
    sessions: SessionFactory,
    *,
    token: str | None = None,
    publisher: Publisher | None = None,
) -> FastAPI:
    """The API app on ``sessions``. ``token`` defaults to the configured (or kept) API token.
    ``publisher`` sends commands to the gateways (the server's MQTT link); without one, sending a
    command answers 503 and access changes are not pushed (the gateways catch up at birth)."""
    app = FastAPI(
        title="Gatehouse cloud",
        version="1",
        description="Gateways, their events, and the property-management modules built on them.",
    )
    app.state.sessions = sessions
    app.state.api_token = token or api_token(config)
    app.state.token_owner = api_token_owner(config)
    app.state.publisher = publisher
    app.state.config = config

    @app.exception_handler(CloudError)
    async def _domain_error(request: Request, exc: CloudError) -> Response:
        if isinstance(exc, Unauthorized) and _is_page(request):
            return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        return JSONResponse(exc.payload(), exc.status_code, headers=headers)

    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):
            log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
            return JSONResponse({"detail": "database unavailable, try again", "code": "unavailable"}, 503)
        log.error("%s %s: database error", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error", "code": "internal_error"}, 500)

    # A refused connection reaches us as a bare OSError (the driver's), not wrapped by SQLAlchemy.
    app.add_exception_handler(SQLAlchemyError, _database_error)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer is a bare list; ours says the same in one line, with the code every
        # other error has, and keeps the list for programs.
        errors = jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"})
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors
        )
        return JSONResponse(
            {"detail": where or "invalid request", "code": "invalid_input", "errors": errors}, 422
        )

    app.add_exception_handler(OSError, _database_error)

    @app.get("/healthz", tags=["operations"], summary="200 when the database answers, else 503")
    async def healthz() -> JSONResponse:
        try:
            async with sessions() as session:
                await asyncio.wait_for(session.execute(text("SELECT 1")), HEALTH_TIMEOUT_S)
        except Exception as e:
            log.warning("health check: database unreachable: %s", e)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus_metrics() -> Response:
        # The online gauge is a fact of the database, shared by every replica: read it at scrape
        # time. If the database does not answer, the last value stands.
        try:
            async with sessions() as session:
                metrics.GATEWAYS_ONLINE.set(await asyncio.wait_for(count_online(session), HEALTH_TIMEOUT_S))
        except Exception as e:
            log.debug("metrics: gateways online not refreshed: %s", e)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    api = APIRouter(
        prefix="/api/v1",
        responses={
            401: {"model": ErrorOut, "description": "No principal: sign in or send a bearer token"},
            403: {"model": ErrorOut, "description": "The principal may not do this (here)"},
            422: {"description": "A query parameter is not valid; the detail says which and why"},
            503: {"model": ErrorOut, "description": "The database is unavailable"},
        },
    )
    api.include_router(gateways_router)
    api.include_router(events_router, dependencies=[Depends(Authorize(Permission.EVENTS_READ))])
    api.include_router(commands_router)  # each route names its own permission
    api.include_router(access_router)  # each route names its own permission
    api.include_router(property_router)
    api.include_router(accounts_router)
    api.include_router(audit_router)
    api.include_router(alerts_router)  # each route names its own permission
    api.include_router(oncall_router)  # each route names its own permission
    app.include_router(api)
    app.include_router(console_router)
    return app


def _is_page(request: Request) -> bool:
    """A console page (HTML), as opposed to the JSON API or the operator's endpoints."""
    path = request.url.path
    return not path.startswith(("/api/", "/healthz", "/metrics", "/static/"))
