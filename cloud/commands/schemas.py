"""The commands API's requests and answers."""

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from cloud.commands.service import DEFAULT_EXPIRES_S, DEFAULT_WAIT_S, MAX_EXPIRES_S, MAX_WAIT_S, shown_status
from cloud.models import GatewayCommand


class CommandIn(BaseModel):
    name: Annotated[str, Field(description="A command name, e.g. door.unlock (protocols/commands.py)")]
    args: Annotated[dict[str, Any], Field(default_factory=dict, description="The command's arguments")]
    expires_in_s: Annotated[
        int, Field(ge=1, le=MAX_EXPIRES_S, description="The gateway refuses it after this many seconds")
    ] = DEFAULT_EXPIRES_S
    wait_s: Annotated[
        float, Field(ge=0, le=MAX_WAIT_S, description="How long to wait for the gateway's answer")
    ] = DEFAULT_WAIT_S


class CommandOut(BaseModel):
    id: str
    gateway_id: str
    name: str
    args: dict[str, Any]
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    status: Annotated[
        str,
        Field(
            description="sent (no answer yet), pending (a part, taken), done, refused, failed, expired "
            "(refused as too late, or unanswered until it expired)"
        ),
    ]
    result_code: str | None
    result_detail: str | None
    result_data: dict[str, Any] | None
    result_at: datetime | None

    @classmethod
    def of(cls, command: GatewayCommand, now: datetime | None = None) -> "CommandOut":
        return cls(
            id=command.id,
            gateway_id=command.gateway_id,
            name=command.name,
            args=command.args,
            requested_by=command.requested_by,
            requested_at=command.requested_at,
            expires_at=command.expires_at,
            sent_at=command.sent_at,
            status=shown_status(command, now or datetime.now(UTC)),
            result_code=command.result_code,
            result_detail=command.result_detail,
            result_data=command.result_data,
            result_at=command.result_at,
        )


class CommandPageOut(BaseModel):
    items: list[CommandOut]
    next_cursor: str | None
