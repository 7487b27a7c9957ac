"""Sign-in and topic rights for the embedded broker, backed by the cloud's gateway registry.

``lookup(username)`` returns the stored ``$7$`` hash of a registered gateway, or None. It is asked
on every sign-in, so a gateway registered at run time is admitted at once and a revoked or
re-keyed one is refused at once. What is cached is only the costly part, the PBKDF2 check: for a
short while, a (username, password) pair that was already checked against the same stored hash
is answered from memory, so a reconnect storm costs lookups, not CPU. The cache key holds a keyed
HMAC of the password (a per-process random key), never the password or a plain fast hash of it.
"""

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloud.broker import acl
from cloud.broker.passwords import verify_password
from protocols.topics import valid_gateway_id

log = logging.getLogger(__name__)

Lookup = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class _Verdict:
    stored_hash: str
    ok: bool
    expires: float


class RegistryAuthority:
    """Decides who may sign in to the broker and what each may do there."""

    def __init__(
        self,
        lookup: Lookup,
        cloud_username: str,
        cloud_password: str,
        *,
        cache_ttl: float = 30.0,
        cache_size: int = 10_000,
    ) -> None:
        if not cloud_username or not cloud_password:
            raise ValueError("the cloud's broker user needs a username and a password")
        self._lookup = lookup
        self._cloud_username = cloud_username
        self._cloud_password = cloud_password.encode("utf-8")
        self._cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, bytes], _Verdict] = OrderedDict()
        self._inflight: dict[tuple[str, bytes, str], asyncio.Future[bool]] = {}
        self._key = secrets.token_bytes(32)

    @property
    def cloud_username(self) -> str:
        return self._cloud_username

    async def check_login(self, username: str | None, password: str | None) -> bool:
        """True if ``username``/``password`` may sign in: the cloud user, or a registered gateway."""
        if not username or password is None:
            return False
        if username == self._cloud_username:
            return hmac.compare_digest(password.encode("utf-8"), self._cloud_password)
        if not valid_gateway_id(username):
            return False
        try:
            stored = await self._lookup(username)
        except Exception:
            log.exception("gateway registry lookup failed for %r; sign-in refused", username)
            return False
        if not stored:
            return False

        key = self._cache_key(username, password)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached.stored_hash == stored and cached.expires > now:
            return cached.ok

        # Several connections of one gateway at once share one PBKDF2 run.
        flight_key = (*key, stored)
        pending = self._inflight.get(flight_key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[flight_key] = future
        try:
            # hashlib's PBKDF2 releases the GIL: the broker keeps serving while it runs.
            ok = await asyncio.to_thread(verify_password, password, stored)
            future.set_result(ok)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            del self._inflight[flight_key]
        self._remember(key, _Verdict(stored, ok, time.monotonic() + self._cache_ttl))
        return ok

    async def still_valid(self, username: str | None, password: str | None) -> bool:
        """For a connection already signed in: do its credentials still hold? Answered from the
        cache whenever the stored hash is the one they were checked against (the verdict for one
        password and one hash never changes, so its age does not matter here); a changed hash is
        checked in full, an emptied one (revoked) or a gateway gone is refused. A lookup that
        fails (the database away) keeps the connection: an outage must not disconnect everyone."""
        if not username or password is None:
            return False
        if username == self._cloud_username:
            return hmac.compare_digest(password.encode("utf-8"), self._cloud_password)
        try:
            stored = await self._lookup(username)
        except Exception:
            log.warning("gateway registry lookup failed for %r; its connection is kept for now", username)
            return True
        if not stored:
            return False
        cached = self._cache.get(self._cache_key(username, password))
        if cached is not None and cached.stored_hash == stored:
            return cached.ok
        return await self.check_login(username, password)

    def _cache_key(self, username: str, password: str) -> tuple[str, bytes]:
        return (username, hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).digest())

    def may_publish(self, username: str | None, topic: str) -> bool:
        return acl.may_publish(username, topic, self._cloud_username)

    def may_subscribe(self, username: str | None, topic_filter: str) -> bool:
        return acl.may_subscribe(username, topic_filter, self._cloud_username)

    def may_receive(self, username: str | None, topic: str) -> bool:
        return acl.may_receive(username, topic, self._cloud_username)

    def forget(self, username: str | None = None) -> None:
        """Drop cached verdicts (of one user, or all); the next sign-in is checked in full."""
        if username is None:
            self._cache.clear()
            return
        for key in [k for k in self._cache if k[0] == username]:
            del self._cache[key]

    def _remember(self, key: tuple[str, bytes], verdict: _Verdict) -> None:
        self._cache[key] = verdict
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
