"""Commands to gateways: sending them (``cmd``), recording their answers (``cmd/result``)."""

from cloud.commands.service import (
    Outgoing,
    Publisher,
    Status,
    check_args,
    issue_command,
    record_result,
    send_commands,
    wait_for_answer,
)

__all__ = [
    "Outgoing",
    "Publisher",
    "Status",
    "check_args",
    "issue_command",
    "record_result",
    "send_commands",
    "wait_for_answer",
]
