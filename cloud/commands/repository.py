"""The gateway_commands table: one row per command sent, updated with the gateway's answer."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.models import GatewayCommand


async def insert_commands(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Add commands (column values as dicts) in the caller's transaction."""
    if rows:
        await session.execute(insert(GatewayCommand), list(rows))


async def find_command(session: AsyncSession, gateway_id: str, command_id: str) -> GatewayCommand | None:
    return await session.scalar(
        select(GatewayCommand)
        .where(GatewayCommand.id == command_id, GatewayCommand.gateway_id == gateway_id)
        .execution_options(populate_existing=True)
    )


async def select_commands(
    session: AsyncSession, gateway_id: str, *, before_seq: int | None, limit: int
) -> list[GatewayCommand]:
    """Up to ``limit`` commands of the gateway, newest first."""
    stmt = select(GatewayCommand).where(GatewayCommand.gateway_id == gateway_id)
    if before_seq is not None:
        stmt = stmt.where(GatewayCommand.seq < before_seq)
    stmt = stmt.order_by(GatewayCommand.seq.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())


async def unanswered(
    session: AsyncSession, gateway_id: str, name: str, now: datetime
) -> list[GatewayCommand]:
    """The gateway's commands of ``name`` still waiting for their (final) answer and not expired."""
    stmt = select(GatewayCommand).where(
        GatewayCommand.gateway_id == gateway_id,
        GatewayCommand.name == name,
        GatewayCommand.status.in_(("sent", "pending")),
        GatewayCommand.expires_at > now,
    )
    return list((await session.scalars(stmt.order_by(GatewayCommand.seq))).all())
