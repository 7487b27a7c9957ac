"""The brokers running inside this process: the embedded broker of ``gatehouse cloud serve``.

When a gateway's credentials are rotated or revoked through the API of the same process, the
embedded broker is told at once (``recheck``) and disconnects the gateway's live connection if its
password no longer holds. A change made by another process (the CLI against the same database)
reaches it at its next periodic check (``EmbeddedBroker.RECHECK_EVERY_S``). New sign-ins need
neither: the broker asks the registry at every sign-in.

Kept apart from ``embedded`` so that the code that changes credentials need not import amqtt.
"""

import logging
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class CredentialWatcher(Protocol):
    async def recheck(self, username: str | None = None) -> int:
        """Disconnect the connections (of ``username``, or of everyone) whose credentials no
        longer hold; return how many were disconnected."""
        ...


_watchers: "weakref.WeakSet[CredentialWatcher]" = weakref.WeakSet()


def register(watcher: CredentialWatcher) -> None:
    _watchers.add(watcher)


def unregister(watcher: CredentialWatcher) -> None:
    _watchers.discard(watcher)


def running() -> int:
    return len(_watchers)


async def recheck(username: str) -> int:
    """Ask every broker of this process to check ``username``'s live connections now."""
    kicked = 0
    for watcher in list(_watchers):
        try:
            kicked += await watcher.recheck(username)
        except Exception:
            # The credentials changed in the registry whatever happens here; the periodic check
            # tries again.
            log.exception("embedded broker: cannot recheck the connections of %s", username)
    return kicked
