"""The gateway's side of the command channel: each command id executed once, checked first.

Checks, in order, before anything is done (the result's ``code`` says which one refused):
the name is known (``unknown_command``), the config allows it (``unauthorised``), a user is named
(``unauthorised``), it has not expired (``expired``: only judged on a synchronised clock, since a
Raspberry Pi without network may believe it is 1970), and its arguments fit
(``bad_args``). Then its handler runs.

Every result is kept in ``commands.sqlite3`` (for a week) before it is sent: the cloud resends a
command whose result it did not get, and a repeated id is answered with the first result, never run
again — also after a restart. A repeat that arrives while the first is still running waits for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edge.clock import Clock
from protocols.commands import COMMANDS, ResultCode
from protocols.envelope import Command, CommandResult
from protocols.events import NewEvent

log = logging.getLogger(__name__)

KEEP_MS = 7 * 24 * 3600 * 1000
# Commands that open or disarm something: delivered late (a broker's queue after a long outage) they
# would act on a situation long gone, so without a trusted clock to judge their expiry they are
# refused. A reset or a sync is safe to run late.
ACTUATING = frozenset({"door.unlock", "intrusion.disarm", "intrusion.bypass"})


class Refused(Exception):
    """A handler's way to refuse or fail: ``code`` and a reason a person can read."""

    def __init__(self, code: ResultCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Done:
    """What a handler answers: a line a person reads, data for the cloud, and the code (a part
    of a multi-part sync answers PENDING, a sync at another version VERSION_MISMATCH)."""

    detail: str
    data: dict[str, Any] = field(default_factory=dict)
    code: ResultCode = ResultCode.DONE


# A handler takes the validated arguments and the command; it answers Done or raises Refused.
Handler = Callable[[Any, Command], Awaitable[Done]]


class CommandLog:
    """The results already given, by command id (SQLite, synchronous: a row per command)."""

    def __init__(self, path: Path | None) -> None:
        self.db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a result given must be remembered after a power cut
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS command_results (id TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "by_user TEXT NOT NULL, done_ms INTEGER NOT NULL, result TEXT NOT NULL)"
        )

    def get(self, cid: str) -> CommandResult | None:
        row = self.db.execute("SELECT result FROM command_results WHERE id = ?", (cid,)).fetchone()
        return CommandResult.model_validate_json(row[0]) if row else None

    def put(self, cmd: Command, result: CommandResult) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO command_results VALUES (?, ?, ?, ?, ?)",
            (cmd.id, cmd.name, cmd.by, result.done_ms, result.model_dump_json()),
        )

    def drop(self, cid: str) -> None:
        self.db.execute("DELETE FROM command_results WHERE id = ?", (cid,))

    def prune(self, now_ms: int) -> None:
        self.db.execute("DELETE FROM command_results WHERE done_ms < ?", (now_ms - KEEP_MS,))

    def close(self) -> None:
        self.db.close()


class CommandExecutor:
    def __init__(
        self,
        log_path: Path | None,
        clock: Clock,
        handlers: dict[str, Handler],
        allowed: set[str] | None = None,
        record: Callable[[Sequence[NewEvent]], Awaitable[None]] | None = None,
    ) -> None:
        self.record = record
        self.log = CommandLog(log_path)
        self.log.prune(clock.now_ms())
        self.clock = clock
        self.handlers = handlers
        self.allowed = allowed
        self._running: dict[str, asyncio.Future[CommandResult]] = {}
        self.executed = 0

    async def execute(self, cmd: Command) -> CommandResult:
        running = self._running.get(cmd.id)
        if running is not None:  # first: the log already holds its "interrupted" placeholder
            return await asyncio.shield(running)
        first = self.log.get(cmd.id)
        if first is not None:
            return first
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._running[cmd.id] = fut
        try:
            # Written before the handler runs: if the gateway dies while a command runs, a repeat
            # after the restart gets this answer instead of running it a second time.
            self.log.put(
                cmd,
                self._result(cmd, ResultCode.FAILED, "interrupted by a gateway restart; not run again"),
            )
            result = await self._run(cmd)
            # A part of a multi-part command is not final: the next part comes with its own id,
            # and a repeat of this one must be taken again (the store keeps parts idempotently).
            if result.code == ResultCode.PENDING:
                self.log.drop(cmd.id)
            else:
                self.log.put(cmd, result)
            if self.record is not None:
                # Who asked for what, and what came of it, is history the cloud keeps (audit).
                data = {
                    "id": cmd.id,
                    "name": cmd.name,
                    "by": cmd.by,
                    "code": result.code,
                    "detail": result.detail,
                }
                try:
                    await self.record([NewEvent("gateway.command", "gateway", data)])
                except Exception:
                    log.exception("command %s: could not record it", cmd.id)
            fut.set_result(result)
            return result
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody repeated it
            raise
        finally:
            del self._running[cmd.id]

    def _result(
        self, cmd: Command, code: ResultCode, detail: str, data: dict[str, Any] | None = None
    ) -> CommandResult:
        ok = code in (ResultCode.DONE, ResultCode.PENDING)
        return CommandResult(
            id=cmd.id,
            ok=ok,
            code=code.value,
            detail=detail[:1000],
            data=data or {},
            done_ms=self.clock.now_ms(),
        )

    async def _run(self, cmd: Command) -> CommandResult:
        model = COMMANDS.get(cmd.name)
        handler = self.handlers.get(cmd.name)
        if model is None:
            return self._result(cmd, ResultCode.UNKNOWN_COMMAND, f"unknown command {cmd.name!r}")
        if self.allowed is not None and cmd.name not in self.allowed:
            return self._result(cmd, ResultCode.UNAUTHORISED, f"{cmd.name} is not allowed on this gateway")
        if not cmd.by:
            return self._result(cmd, ResultCode.UNAUTHORISED, "the command names no user (by)")
        now = self.clock.now_ms()
        if cmd.expires_ms and not self.clock.synced() and cmd.name in ACTUATING:
            return self._result(
                cmd,
                ResultCode.REFUSED,
                "the gateway's clock is not synchronised: it cannot tell whether this command has expired",
            )
        if cmd.expires_ms and self.clock.synced() and now > cmd.expires_ms:
            return self._result(
                cmd, ResultCode.EXPIRED, f"expired {(now - cmd.expires_ms) / 1000:.1f} s before it arrived"
            )
        try:
            args: BaseModel = model.model_validate(cmd.args)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "args"
            return self._result(cmd, ResultCode.BAD_ARGS, f"{cmd.name}: {where}: {first['msg']}")
        if handler is None:
            return self._result(
                cmd, ResultCode.UNSUPPORTED, f"this gateway has nothing to do {cmd.name} with"
            )
        self.executed += 1
        try:
            done = await handler(args, cmd)
        except Refused as r:
            log.info("command %s %s by %s: %s: %s", cmd.id, cmd.name, cmd.by, r.code.value, r.detail)
            return self._result(cmd, r.code, r.detail)
        except Exception as e:
            log.exception("command %s %s failed", cmd.id, cmd.name)
            return self._result(cmd, ResultCode.FAILED, f"{type(e).__name__}: {e}")
        log.info("command %s %s by %s: %s %s", cmd.id, cmd.name, cmd.by, done.code.value, done.detail)
        return self._result(cmd, done.code, done.detail, json.loads(json.dumps(done.data, default=str)))

    def close(self) -> None:
        self.log.close()
