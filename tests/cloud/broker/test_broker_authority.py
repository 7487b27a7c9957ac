import asyncio

import pytest

import cloud.broker.authority as authority_module
from cloud.broker.authority import RegistryAuthority
from cloud.broker.passwords import hash_password, verify_password

CLOUD, CLOUD_PW = "gh-cloud", "cloud-secret"


class Registry:
    """The registry's interface as the broker sees it: an async lookup of a gateway's hash."""

    def __init__(self) -> None:
        self.hashes: dict[str, str] = {}
        self.lookups: list[str] = []
        self.fail = False

    async def lookup(self, username: str) -> str | None:
        self.lookups.append(username)
        if self.fail:
            raise ConnectionError("database down")
        return self.hashes.get(username)


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.hashes["gw-1"] = hash_password("pw-1", iterations=1000)
    return reg


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the PBKDF2 checks the authority runs."""
    calls: list[str] = []

    def counting(password: str, hashed: str) -> bool:
        calls.append(hashed)
        return verify_password(password, hashed)

    monkeypatch.setattr(authority_module, "verify_password", counting)
    return calls


async def test_cloud_user_signs_in_with_its_password_only(registry: Registry) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW)
    assert await auth.check_login(CLOUD, CLOUD_PW)
    assert not await auth.check_login(CLOUD, "wrong")
    assert not await auth.check_login(CLOUD, None)
    assert registry.lookups == []  # the cloud user never comes from the registry


async def test_registered_gateway_signs_in(registry: Registry) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW)
    assert await auth.check_login("gw-1", "pw-1")
    assert not await auth.check_login("gw-1", "pw-2")
    assert not await auth.check_login("gw-1", None)
    assert not await auth.check_login("gw-1", "")


async def test_anonymous_and_malformed_usernames_are_refused_without_lookup(registry: Registry) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW)
    for username in (None, "", "gw/1", "gw+", "#", "a" * 65):
        assert not await auth.check_login(username, "pw-1")
    assert registry.lookups == []


async def test_unknown_gateway_is_looked_up_every_time_and_admitted_once_registered(
    registry: Registry,
) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW)
    assert not await auth.check_login("gw-new", "pw-new")
    assert not await auth.check_login("gw-new", "pw-new")
    assert registry.lookups == ["gw-new", "gw-new"]
    registry.hashes["gw-new"] = hash_password("pw-new", iterations=1000)
    assert await auth.check_login("gw-new", "pw-new")


async def test_repeated_sign_ins_reuse_one_pbkdf2_check(registry: Registry, verifications: list[str]) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW)
    for _ in range(5):
        assert await auth.check_login("gw-1", "pw-1")
    assert len(verifications) == 1
    assert len(registry.lookups) == 5  # revocation still takes effect at the next sign-in


async def test_concurrent_sign_ins_share_one_check(registry: Registry, verifications: list[str]) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW)
    results = await asyncio.gather(*(auth.check_login("gw-1", "pw-1") for _ in range(20)))
    assert all(results)
    assert len(verifications) == 1


async def test_rekeyed_or_revoked_gateway_is_not_served_from_cache(registry: Registry) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW)
    assert await auth.check_login("gw-1", "pw-1")
    registry.hashes["gw-1"] = hash_password("pw-1b", iterations=1000)
    assert not await auth.check_login("gw-1", "pw-1")
    assert await auth.check_login("gw-1", "pw-1b")
    del registry.hashes["gw-1"]
    assert not await auth.check_login("gw-1", "pw-1b")


async def test_cache_expires(registry: Registry, verifications: list[str]) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW, cache_ttl=0.0)
    assert await auth.check_login("gw-1", "pw-1")
    assert await auth.check_login("gw-1", "pw-1")
    assert len(verifications) == 2


async def test_cache_is_bounded(registry: Registry, verifications: list[str]) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW, cache_size=2)
    for password in ("a", "b", "c"):
        assert not await auth.check_login("gw-1", password)
    assert not await auth.check_login("gw-1", "a")  # evicted: checked again
    assert len(verifications) == 4


async def test_registry_failure_refuses_sign_in(registry: Registry) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW)
    registry.fail = True
    assert not await auth.check_login("gw-1", "pw-1")
    registry.fail = False
    assert await auth.check_login("gw-1", "pw-1")


async def test_gateway_named_like_the_cloud_user_cannot_use_its_registry_password(registry: Registry) -> None:
    registry.hashes[CLOUD] = hash_password("gateway-pw", iterations=1000)
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW)
    assert not await auth.check_login(CLOUD, "gateway-pw")


def test_topic_rights_delegate_to_acl(registry: Registry) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW)
    assert auth.may_publish("gw-1", "gh/v1/gw-1/events")
    assert not auth.may_publish("gw-1", "gh/v1/gw-2/events")
    assert auth.may_subscribe("gw-1", "gh/v1/gw-1/ack")
    assert auth.may_subscribe(CLOUD, "$share/ingest/gh/v1/+/events")
    assert not auth.may_subscribe("gw-1", "gh/v1/+/ack")
    assert auth.may_receive("gw-1", "gh/v1/gw-1/cmd")
    assert not auth.may_receive("gw-1", "gh/v1/gw-2/cmd")


def test_cloud_credentials_are_required(registry: Registry) -> None:
    with pytest.raises(ValueError):
        RegistryAuthority(registry.lookup, "", CLOUD_PW)
    with pytest.raises(ValueError):
        RegistryAuthority(registry.lookup, CLOUD, "")


async def test_a_live_connection_is_rechecked_without_pbkdf2_until_its_hash_changes(
    registry: Registry, verifications: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW, cache_ttl=0.0)
    assert await auth.check_login("gw-1", "pw-1")
    assert len(verifications) == 1
    # The verdict's age does not matter for a connection already in: same hash, same answer.
    for _ in range(3):
        assert await auth.still_valid("gw-1", "pw-1")
    assert len(verifications) == 1
    # Re-keyed: checked in full, and refused. Revoked (hash emptied) or gone: refused at once.
    registry.hashes["gw-1"] = hash_password("pw-new", iterations=1000)
    assert not await auth.still_valid("gw-1", "pw-1")
    assert len(verifications) == 2
    registry.hashes["gw-1"] = ""
    assert not await auth.still_valid("gw-1", "pw-new")
    del registry.hashes["gw-1"]
    assert not await auth.still_valid("gw-1", "pw-new")
    # The database away: the connection is kept (an outage must not disconnect everyone).
    registry.fail = True
    assert await auth.still_valid("gw-1", "pw-1")
    assert await auth.still_valid(CLOUD, CLOUD_PW) and not await auth.still_valid(CLOUD, "wrong")
