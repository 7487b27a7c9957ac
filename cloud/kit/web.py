"""What every API router shares: the database session per request and the bearer-token check."""

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.kit.errors import Unauthorized

_bearer = HTTPBearer(
    auto_error=False, description="The cloud's API token (config api.token or {data_dir}/api-token)"
)


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless the request carries ``Authorization: Bearer <the API token>``."""
    expected: str = request.app.state.api_token
    given = credentials.credentials if credentials is not None else ""
    # Compared in constant time: the time a wrong token takes says nothing of the right one.
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("missing or wrong API token: send Authorization: Bearer <token>")
