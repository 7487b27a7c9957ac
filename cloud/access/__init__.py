"""Each site's access-control data (credentials, levels, schedules, holidays), versioned, and the
deltas that bring the site's gateways up to date (command ``access.sync``)."""

from cloud.access.confirm import AccessConfirmer, ConfirmRound
from cloud.access.push import (
    note_sync_result,
    push_after_mismatch,
    push_if_behind,
    push_on_birth,
    push_site,
    send_delta,
)
from cloud.access.service import (
    Change,
    build_delta,
    delta_for,
    import_credentials,
    import_levels,
    put_holidays,
    put_schedule,
)

__all__ = [
    "AccessConfirmer",
    "Change",
    "ConfirmRound",
    "build_delta",
    "delta_for",
    "import_credentials",
    "import_levels",
    "note_sync_result",
    "push_after_mismatch",
    "push_if_behind",
    "push_on_birth",
    "push_site",
    "put_holidays",
    "put_schedule",
    "send_delta",
]
