"""Sending commands to gateways and recording their answers.

A command is checked against ``protocols.commands.COMMANDS``, stored (status ``sent``) and only then
published on ``gh/v1/{gateway}/cmd`` (QoS 1, not retained), so that an answer arriving at once finds
its row. The gateway answers on ``cmd/result``; ingest records the answer (``record_result``) and
whoever waits reads it from the database, so the API may run in another process than ingest.

Who may: a door command (``door.*``: remote unlock, door modes) needs ``doors.control`` at the
gateway's site, any other ``gateways.command``; a gateway of another company, or at a site where
the principal has no gateway permission at all, answers 404 as if it did not exist.
Every command someone asks for is written to the audit log in the transaction that stores it (the
issue names remote unlock explicitly); the cloud's own ``access.sync`` pushes are not: the access
change that caused them is.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.permissions import Forbidden, Permission, Principal
from cloud.audit.chain import record
from cloud.commands.repository import find_command, insert_commands, select_commands
from cloud.db import SessionFactory
from cloud.kit.errors import InvalidInput, NotFound, Unavailable
from cloud.kit.pagination import decode_cursor, encode_cursor
from cloud.models import Gateway, GatewayCommand
from protocols.access import AccessDelta
from protocols.commands import COMMANDS, ResultCode
from protocols.envelope import Command, CommandResult, MessageTooLarge, encode
from protocols.topics import Channel, topic

DEFAULT_EXPIRES_S = 60
MAX_EXPIRES_S = 86_400
DEFAULT_WAIT_S = 5.0
MAX_WAIT_S = 30.0
MAX_BY_LENGTH = 128
MAX_PAGE = 1000
DEFAULT_PAGE = 100
DOOR_PREFIX = "door."


class Status(StrEnum):
    SENT = "sent"  # published, no answer yet
    PENDING = "pending"  # a part of a multi-part command, taken; the last part's answer says more
    DONE = "done"
    REFUSED = "refused"  # not attempted: not allowed, not understood, or the state forbids it
    FAILED = "failed"  # attempted and it did not work
    EXPIRED = "expired"  # the gateway got it too late, or nobody answered before it expired


# The answers that mean the gateway did not even try.
_REFUSALS = frozenset(
    {
        ResultCode.UNAUTHORISED,
        ResultCode.UNKNOWN_COMMAND,
        ResultCode.BAD_ARGS,
        ResultCode.REFUSED,
        ResultCode.UNSUPPORTED,
        "version_mismatch",  # access.sync: the delta's base is not the store's version
    }
)


class Publisher(Protocol):
    """What sends the commands: an MqttLink (the API's own, or ingest's)."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes) -> None: ...


class UnknownGateway(NotFound):
    code = "unknown_gateway"


class UnknownCommand(NotFound):
    code = "unknown_command"


class InvalidArgs(InvalidInput):
    code = "invalid_args"


class TooLarge(InvalidArgs):
    code = "too_large"


class BrokerUnavailable(Unavailable):
    code = "broker_unavailable"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One command to send: its arguments as sent, and as recorded (default: ``recorded_args``)."""

    name: str
    args: dict[str, Any]
    recorded_args: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CommandPage:
    items: list[GatewayCommand]
    next_cursor: str | None


@dataclass(slots=True)
class _Prepared:
    row: dict[str, Any]
    payload: bytes = field(repr=False)


def status_of(result: CommandResult) -> Status:
    """The command's status after this answer."""
    if result.code == ResultCode.PENDING:
        return Status.PENDING
    if result.ok:
        return Status.DONE
    if result.code == ResultCode.EXPIRED:
        return Status.EXPIRED
    return Status.REFUSED if result.code in _REFUSALS else Status.FAILED


def shown_status(command: GatewayCommand, now: datetime | None = None) -> str:
    """The status to show: as stored, except that a command nobody answered before it expired
    shows as expired (a late answer still replaces it)."""
    if command.status == Status.SENT and command.expires_at <= (now or datetime.now(UTC)):
        return Status.EXPIRED
    return command.status


def recorded_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """What the gateway_commands row keeps of a command's (checked) arguments: all of them, except
    that an access.sync keeps its versions and how many of each thing it carried, not the data
    itself (up to 2,000 credentials a part; the access tables hold them)."""
    if name != "access.sync":
        return args
    return delta_summary(AccessDelta.model_validate(args))


def delta_summary(delta: AccessDelta) -> dict[str, Any]:
    """An access.sync's arguments as its gateway_commands row keeps them (``recorded_args``)."""
    return {
        "base": delta.base,
        "version": delta.version,
        "reset": delta.reset,
        "part": delta.part,
        "parts": delta.parts,
        "schedules": len(delta.schedules),
        "levels": len(delta.levels),
        "holidays": None if delta.holidays is None else len(delta.holidays),
        "credentials": len(delta.credentials),
        "removed_credentials": len(delta.removed_credentials),
        "removed_levels": len(delta.removed_levels),
        "removed_schedules": len(delta.removed_schedules),
    }


def check_args(name: str, args: Any) -> dict[str, Any]:
    """``args`` checked against the command's model, as they are to be sent (numbers and booleans
    given as text, e.g. by the CLI, made numbers and booleans). Raises InvalidArgs naming the field."""
    model = COMMANDS.get(name)
    if model is None:
        known = ", ".join(sorted(COMMANDS))
        raise InvalidArgs(f"name: unknown command {name!r} (known: {known})")
    try:
        parsed = model.model_validate(args)
    except ValidationError as e:
        raise InvalidArgs(describe(e, "args")) from None
    return parsed.model_dump(mode="json", exclude_unset=True)


def describe(err: ValidationError, prefix: str) -> str:
    parts = []
    for e in err.errors()[:5]:
        where = ".".join([prefix, *(str(x) for x in e["loc"])])
        parts.append(f"{where}: {e['msg']}")
    more = err.error_count() - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def command_permission(name: str) -> Permission:
    """The permission a command needs: a door's (remote unlock, door modes) doors.control, any
    other (an unknown name included: it is refused as unknown later) gateways.command."""
    return Permission.DOORS_CONTROL if name.startswith(DOOR_PREFIX) else Permission.GATEWAYS_COMMAND


def operator(by: str) -> Principal:
    """Who gives a command from outside the API (the CLI, run with the cloud's own database and
    config): the platform operator, under the name given."""
    return Principal(kind="platform", id=None, name=by, company_id=None)


# Any of these at a gateway's site lets the principal know the gateway is there.
_SEES_GATEWAYS = (Permission.GATEWAYS_READ, Permission.GATEWAYS_COMMAND, Permission.DOORS_CONTROL)


def holds_at_site(principal: Principal, permission: Permission, site_id: int | None) -> bool:
    """May the principal use ``permission`` at this gateway's site? A gateway at no site only
    with the permission at every site: a site-limited principal has no claim on it."""
    if site_id is None:
        return principal.sites(permission) is None
    return principal.can(permission, site_id)


async def visible_gateway(
    session: AsyncSession, principal: Principal, gateway_id: str, permission: Permission
) -> Gateway:
    """The gateway, if the principal may use ``permission`` on it. UnknownGateway (404) when it is
    not registered, is another company's, or stands at a site where the principal has no gateway
    permission at all (the same answer: a 403 would tell that it exists); Forbidden (403) when the
    principal sees it but lacks ``permission`` there."""
    gateway = await session.get(Gateway, gateway_id)
    if gateway is None or not (
        principal.is_platform
        or (
            gateway.company_id == principal.company_id
            and any(holds_at_site(principal, p, gateway.site_id) for p in (*_SEES_GATEWAYS, permission))
        )
    ):
        raise UnknownGateway(f"gateway {gateway_id!r} is not registered")
    if not holds_at_site(principal, permission, gateway.site_id):
        raise Forbidden(
            f"{principal.name}: not allowed to {permission.value} at gateway {gateway_id!r}'s site"
        )
    return gateway


def audited_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """A command's arguments as the audit log keeps them: as recorded, except a config.apply's
    TOML (a gateway's config holds its broker password: never a secret in the log), kept as its
    SHA-256 and size."""
    if name != "config.apply" or not isinstance(args.get("toml"), str):
        return args
    toml = args["toml"].encode("utf-8")
    return {
        **{k: v for k, v in args.items() if k != "toml"},
        "toml_sha256": hashlib.sha256(toml).hexdigest(),
        "toml_bytes": len(toml),
    }


async def _audit_command(
    session: AsyncSession, principal: Principal, gateway: Gateway, row: dict[str, Any], ip: str
) -> None:
    """The audit entry of one command, in the transaction that stores it: a door command as an
    action on the door (``door.unlock`` on ``gateway/door``), any other on the gateway."""
    name: str = row["name"]
    args = audited_args(name, row["args"])
    if name.startswith(DOOR_PREFIX):
        action, target_type, target_id = name, "door", f"{gateway.id}/{args.get('door', '')}"
    else:
        action, target_type, target_id = f"gateway.command.{name}", "gateway", gateway.id
    await record(
        session,
        principal,
        action,
        target_type,
        target_id,
        company_id=gateway.company_id,
        site_id=gateway.site_id,
        after={
            "command_id": row["id"],
            "gateway_id": gateway.id,
            "name": name,
            "args": args,
            "expires_at": row["expires_at"],
        },
        ip=ip,
    )


def _check_common(by: str, expires_in_s: float) -> None:
    if not by or len(by) > MAX_BY_LENGTH:
        raise InvalidInput(f"by: who asks must be named, in 1 to {MAX_BY_LENGTH} characters")
    if not 1 <= expires_in_s <= MAX_EXPIRES_S:
        raise InvalidInput(f"expires_in_s: must be between 1 and {MAX_EXPIRES_S} seconds, not {expires_in_s}")


def _prepare(
    gateway_id: str, outgoing: Sequence[Outgoing], *, by: str, expires_in_s: float, now: datetime
) -> list[_Prepared]:
    now_ms = int(now.timestamp() * 1000)
    expires_at = now + timedelta(seconds=expires_in_s)
    expires_ms = now_ms + int(expires_in_s * 1000)
    out = []
    for o in outgoing:
        command = Command(
            id=uuid.uuid4().hex,
            name=o.name,
            args=o.args,
            issued_ms=now_ms,
            expires_ms=expires_ms,
            by=by,
        )
        try:
            payload = encode(command)
        except MessageTooLarge as e:
            raise TooLarge(f"args: too large for one MQTT message ({e})") from None
        row = {
            "id": command.id,
            "gateway_id": gateway_id,
            "name": o.name,
            "args": recorded_args(o.name, o.args) if o.recorded_args is None else o.recorded_args,
            "requested_by": by,
            "requested_at": now,
            "expires_at": expires_at,
            "sent_at": now,
            "status": Status.SENT.value,
        }
        out.append(_Prepared(row, payload))
    return out


async def send_commands(
    sessions: SessionFactory,
    publisher: Publisher,
    gateway_id: str,
    outgoing: Sequence[Outgoing],
    *,
    by: str,
    expires_in_s: float = DEFAULT_EXPIRES_S,
    hold: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    audit_as: Principal | None = None,
    ip: str = "",
) -> list[GatewayCommand]:
    """Store the commands (one transaction), then publish them in order. Their arguments must have
    been checked. ``hold`` wraps the write (ingest's write gate). With ``audit_as``, each command
    is written to the audit log as that principal's, in the same transaction. Raises
    UnknownGateway, or TooLarge when a command does not fit one MQTT message (nothing is stored
    then)."""
    _check_common(by, expires_in_s)
    prepared = _prepare(gateway_id, outgoing, by=by, expires_in_s=expires_in_s, now=datetime.now(UTC))
    async with (hold or nullcontext)(), sessions() as session, session.begin():
        gateway = await session.get(Gateway, gateway_id)
        if gateway is None:
            raise UnknownGateway(f"gateway {gateway_id!r} is not registered")
        await insert_commands(session, [p.row for p in prepared])
        if audit_as is not None:
            for p in prepared:
                await _audit_command(session, audit_as, gateway, p.row, ip)
    for p in prepared:
        publisher.publish(topic(gateway_id, Channel.CMD), p.payload)
    return [GatewayCommand(**p.row) for p in prepared]


async def issue_command(
    sessions: SessionFactory,
    publisher: Publisher | None,
    gateway_id: str,
    name: str,
    args: Any,
    *,
    by: str,
    expires_in_s: float = DEFAULT_EXPIRES_S,
    principal: Principal | None = None,
    ip: str = "",
) -> GatewayCommand:
    """Check, store, audit and send one command for ``principal`` (default: the platform
    operator named ``by``, as the CLI gives commands). Raises UnknownGateway (404) for a gateway
    the principal does not see, Forbidden (403) without the command's permission at its site,
    InvalidArgs/InvalidInput (422), or BrokerUnavailable (503) when there is no connection to the
    broker to send it on."""
    _check_common(by, expires_in_s)
    principal = principal or operator(by)
    async with sessions() as session:
        await visible_gateway(session, principal, gateway_id, command_permission(name))
    checked = check_args(name, args)
    if publisher is None or not publisher.connected:
        raise BrokerUnavailable("not connected to the MQTT broker: the command was not sent, try again")
    (command,) = await send_commands(
        sessions,
        publisher,
        gateway_id,
        [Outgoing(name, checked)],
        by=by,
        expires_in_s=expires_in_s,
        audit_as=principal,
        ip=ip,
    )
    return command


async def wait_for_answer(
    sessions: SessionFactory, gateway_id: str, command_id: str, wait_s: float
) -> GatewayCommand:
    """The command once it has an answer, or as it stands after ``wait_s`` seconds."""
    deadline = time.monotonic() + max(0.0, wait_s)
    delay = 0.02
    while True:
        async with sessions() as session:
            command = await find_command(session, gateway_id, command_id)
        if command is None:
            raise UnknownCommand(f"gateway {gateway_id!r} has no command {command_id!r}")
        left = deadline - time.monotonic()
        if command.status != Status.SENT or left <= 0:
            return command
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 1.5, 0.25)


async def get_command(session: AsyncSession, gateway_id: str, command_id: str) -> GatewayCommand:
    command = await find_command(session, gateway_id, command_id)
    if command is None:
        raise UnknownCommand(f"gateway {gateway_id!r} has no command {command_id!r}")
    return command


async def list_commands(
    session: AsyncSession, gateway_id: str, *, cursor: str | None = None, limit: int = DEFAULT_PAGE
) -> CommandPage:
    """The gateway's commands, newest first; pass ``next_cursor`` back as ``cursor``."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: must be between 1 and {MAX_PAGE}, not {limit}")
    if await session.get(Gateway, gateway_id) is None:
        raise UnknownGateway(f"gateway {gateway_id!r} is not registered")
    before = decode_cursor(cursor) if cursor else None
    rows = await select_commands(session, gateway_id, before_seq=before, limit=limit + 1)
    if len(rows) > limit:
        return CommandPage(rows[:limit], encode_cursor(rows[limit - 1].seq))
    return CommandPage(rows, None)


async def record_result(
    session: AsyncSession, gateway_id: str, result: CommandResult, received_at: datetime
) -> GatewayCommand | None:
    """Record the gateway's answer on its command (in the caller's transaction). None if that
    gateway was sent no command of that id: the answer is then ignored."""
    command = await find_command(session, gateway_id, result.id)
    if command is None:
        return None
    command.status = status_of(result).value
    command.result_code = result.code
    command.result_detail = result.detail
    command.result_data = dict(result.data)
    command.result_at = received_at
    await session.flush()
    return command
