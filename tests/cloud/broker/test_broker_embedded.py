"""The embedded amqtt broker with the registry plugins, driven by paho clients (as the gateway is).

The broker runs in the test's event loop; every blocking client call goes through
``asyncio.to_thread`` so the broker keeps serving while the test waits.
"""

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from cloud.broker.authority import RegistryAuthority
from cloud.broker.embedded import BrokerStartError, EmbeddedBroker
from cloud.broker.passwords import hash_password
from tests.cloud.broker.mqtt_clients import TestClient
from tests.support.ports import free_port, port_accepts

CLOUD, CLOUD_PW = "gh-cloud", "cloud-secret"
run = asyncio.to_thread


class Registry:
    def __init__(self) -> None:
        self.hashes: dict[str, str] = {}

    def add(self, gateway_id: str, password: str) -> None:
        self.hashes[gateway_id] = hash_password(password, iterations=1000)

    async def lookup(self, username: str) -> str | None:
        return self.hashes.get(username)


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.add("gw-a", "pw-a")
    reg.add("gw-b", "pw-b")
    return reg


@pytest.fixture
async def broker(registry: Registry) -> AsyncIterator[EmbeddedBroker]:
    embedded = EmbeddedBroker("127.0.0.1", free_port(), RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW))
    await embedded.start()
    yield embedded
    await embedded.stop()


class Clients:
    def __init__(self, port: int) -> None:
        self.port = port
        self.made: list[TestClient] = []

    def new(
        self,
        client_id: str,
        user: str | None = None,
        pw: str | None = None,
        *,
        clean_session: bool = True,
        will: tuple[str, bytes, int, bool] | None = None,
        manual_ack: bool = False,
    ) -> TestClient:
        client = TestClient(
            self.port, client_id, user, pw, clean_session=clean_session, will=will, manual_ack=manual_ack
        )
        self.made.append(client)
        return client

    async def connected(
        self, client_id: str, user: str | None = None, pw: str | None = None, **kw: object
    ) -> TestClient:
        client = self.new(client_id, user, pw, **kw)  # type: ignore[arg-type]
        rc = await run(client.connect)
        assert not rc.is_failure, f"{client_id}: {rc}"
        return client


@pytest.fixture
async def clients(broker: EmbeddedBroker) -> AsyncIterator[Clients]:
    made = Clients(broker.port)
    yield made
    for client in made.made:
        await run(client.close)


# -- sign-in -----------------------------------------------------------------------------------


async def test_sign_in_checks_the_registry(clients: Clients, registry: Registry) -> None:
    assert not (await run(clients.new("gw-a", "gw-a", "pw-a").connect)).is_failure
    assert not (await run(clients.new("cloud", CLOUD, CLOUD_PW).connect)).is_failure
    assert (await run(clients.new("gw-a-2", "gw-a", "wrong").connect)).is_failure
    assert (await run(clients.new("gw-x", "gw-x", "pw-a").connect)).is_failure
    assert (await run(clients.new("cloud-2", CLOUD, "wrong").connect)).is_failure
    assert (await run(clients.new("anonymous").connect)).is_failure


async def test_gateway_registered_at_run_time_is_admitted(clients: Clients, registry: Registry) -> None:
    cloud = await clients.connected("cloud", CLOUD, CLOUD_PW)
    await run(cloud.subscribe, "gh/v1/+/events")
    assert (await run(clients.new("gw-new-1", "gw-new", "pw-new").connect)).is_failure
    registry.add("gw-new", "pw-new")
    gw = await clients.connected("gw-new-2", "gw-new", "pw-new")
    await run(gw.publish, "gh/v1/gw-new/events", b"first")
    assert (await run(cloud.wait_for_payload, b"first")).topic == "gh/v1/gw-new/events"


async def test_will_on_a_foreign_topic_is_refused_at_sign_in(clients: Clients) -> None:
    bad = clients.new("gw-a", "gw-a", "pw-a", will=("gh/v1/gw-b/state", b"offline", 1, True))
    assert (await run(bad.connect)).is_failure
    good = clients.new("gw-a-2", "gw-a", "pw-a", will=("gh/v1/gw-a/state", b"offline", 1, True))
    assert not (await run(good.connect)).is_failure


# -- topic rights --------------------------------------------------------------------------------


async def test_gateway_publishes_only_its_own_uplink(clients: Clients) -> None:
    cloud = await clients.connected("cloud", CLOUD, CLOUD_PW)
    for channel in ("events", "alarms", "state", "cmd/result"):
        assert not (await run(cloud.subscribe, f"gh/v1/+/{channel}")).is_failure
    gw_a = await clients.connected("gw-a", "gw-a", "pw-a")

    await run(gw_a.publish, "gh/v1/gw-a/alarms", b"fire")
    assert (await run(cloud.wait_for_payload, b"fire")).topic == "gh/v1/gw-a/alarms"

    # Refused publishes are PUBACKed and dropped (MQTT 3.1.1); the marker comes after them on the
    # same connection, so once it has arrived the broker has handled them all.
    await run(gw_a.publish, "gh/v1/gw-b/events", b"forged-b")
    await run(gw_a.publish, "gh/v1/gw-a/cmd", b"own-downlink")
    await run(gw_a.publish, "elsewhere", b"elsewhere")
    await run(gw_a.publish, "gh/v1/gw-a/events", b"marker")
    await run(cloud.wait_for_payload, b"marker")
    assert cloud.payloads() == [b"fire", b"marker"]


async def test_gateway_subscribes_only_to_its_own_downlink(clients: Clients) -> None:
    cloud = await clients.connected("cloud", CLOUD, CLOUD_PW)
    gw_a = await clients.connected("gw-a", "gw-a", "pw-a")
    for own in ("gh/v1/gw-a/ack", "gh/v1/gw-a/cmd", "gh/v1/gw-a/config"):
        assert not (await run(gw_a.subscribe, own)).is_failure
    for foreign in ("gh/v1/gw-b/ack", "gh/v1/+/ack", "gh/v1/#", "#", "gh/v1/gw-a/events"):
        assert (await run(gw_a.subscribe, foreign)).is_failure, foreign

    await run(cloud.publish, "gh/v1/gw-b/ack", b"for-b")
    await run(cloud.publish, "gh/v1/gw-a/events", b"cloud-forged-uplink")  # refused: not the cloud's
    await run(cloud.publish, "gh/v1/gw-a/cmd", b"unlock")
    got = await run(gw_a.wait_for_payload, b"unlock")
    assert got.topic == "gh/v1/gw-a/cmd"
    assert gw_a.payloads() == [b"unlock"]


async def test_shared_subscription_is_accepted_but_matches_nothing_in_amqtt(clients: Clients) -> None:
    cloud = await clients.connected("cloud", CLOUD, CLOUD_PW)
    assert not (await run(cloud.subscribe, "$share/ingest/gh/v1/+/events")).is_failure
    assert not (await run(cloud.subscribe, "gh/v1/+/alarms")).is_failure
    gw_a = await clients.connected("gw-a", "gw-a", "pw-a")
    await run(gw_a.publish, "gh/v1/gw-a/events", b"batch")
    await run(gw_a.publish, "gh/v1/gw-a/alarms", b"marker")
    await run(cloud.wait_for_payload, b"marker")
    assert cloud.payloads() == [b"marker"]  # amqtt 0.12.1 has no shared subscriptions


# -- sessions, retained messages, will ---------------------------------------------------------------


async def test_persistent_session_keeps_qos1_messages_while_subscriber_is_away(clients: Clients) -> None:
    ingest = await clients.connected("cloud-ingest", CLOUD, CLOUD_PW, clean_session=False)
    await run(ingest.subscribe, "gh/v1/+/events")
    await run(ingest.disconnect)

    gw_a = await clients.connected("gw-a", "gw-a", "pw-a")
    for n in range(20):
        await run(gw_a.publish, "gh/v1/gw-a/events", f"batch-{n}".encode())

    back = await clients.connected("cloud-ingest", CLOUD, CLOUD_PW, clean_session=False)
    assert back.session_present
    await run(back.wait_for_payload, b"batch-19")
    assert back.payloads() == [f"batch-{n}".encode() for n in range(20)]
    # amqtt delivers what it queued for an absent session through its retained path: the retain
    # flag is set on these, although nothing was published retained. Ingest must ignore the flag.
    assert all(m.retain and m.qos == 1 for m in back.received)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="amqtt 0.12.1 forgets a QoS 1 message sent but not yet PUBACKed when the subscriber leaves; "
    "Mosquitto resends it (test_broker_mosquitto). Recovered end to end: ack after commit, resend.",
)
async def test_unacknowledged_message_is_resent_after_reconnect(clients: Clients) -> None:
    ingest = await clients.connected("cloud-ingest", CLOUD, CLOUD_PW, clean_session=False, manual_ack=True)
    await run(ingest.subscribe, "gh/v1/+/events")
    gw_a = await clients.connected("gw-a", "gw-a", "pw-a")
    await run(gw_a.publish, "gh/v1/gw-a/events", b"in-flight")
    await run(ingest.wait_for_payload, b"in-flight")  # received, never PUBACKed
    await run(ingest.disconnect)

    back = await clients.connected("cloud-ingest", CLOUD, CLOUD_PW, clean_session=False)
    await run(gw_a.publish, "gh/v1/gw-a/events", b"marker")
    await run(back.wait_for_payload, b"marker")
    assert b"in-flight" in back.payloads()


async def test_clean_session_gets_nothing_queued(clients: Clients) -> None:
    ingest = await clients.connected("cloud-ingest", CLOUD, CLOUD_PW, clean_session=True)
    await run(ingest.subscribe, "gh/v1/+/events")
    await run(ingest.disconnect)
    gw_a = await clients.connected("gw-a", "gw-a", "pw-a")
    await run(gw_a.publish, "gh/v1/gw-a/events", b"lost")
    back = await clients.connected("cloud-ingest", CLOUD, CLOUD_PW, clean_session=True)
    assert not back.session_present
    await run(back.subscribe, "gh/v1/+/events")
    await run(gw_a.publish, "gh/v1/gw-a/events", b"marker")
    await run(back.wait_for_payload, b"marker")
    assert back.payloads() == [b"marker"]


async def test_will_is_published_and_retained_when_a_gateway_vanishes(clients: Clients) -> None:
    cloud = await clients.connected("cloud", CLOUD, CLOUD_PW)
    await run(cloud.subscribe, "gh/v1/+/state")
    gw_a = await clients.connected("gw-a", "gw-a", "pw-a", will=("gh/v1/gw-a/state", b"offline", 1, True))
    await run(gw_a.publish, "gh/v1/gw-a/state", b"online", 1, True)
    birth = await run(cloud.wait_for_payload, b"online")
    assert not birth.retain  # a live subscriber gets it as a fresh message

    await run(gw_a.drop)
    death = await run(cloud.wait_for_payload, b"offline")
    assert (death.topic, death.qos, death.retain) == ("gh/v1/gw-a/state", 1, False)

    late = await clients.connected("cloud-late", CLOUD, CLOUD_PW)
    await run(late.subscribe, "gh/v1/gw-a/state")
    retained = await run(late.wait_for_payload, b"offline")
    assert retained.retain  # the will replaced the retained birth message
    assert b"online" not in late.payloads()


async def test_clean_disconnect_discards_the_will(clients: Clients) -> None:
    cloud = await clients.connected("cloud", CLOUD, CLOUD_PW)
    await run(cloud.subscribe, "gh/v1/+/state")
    gw_a = await clients.connected("gw-a", "gw-a", "pw-a", will=("gh/v1/gw-a/state", b"offline", 1, True))
    await run(gw_a.disconnect)
    gw_b = await clients.connected("gw-b", "gw-b", "pw-b")
    await run(gw_b.publish, "gh/v1/gw-b/state", b"marker")
    await run(cloud.wait_for_payload, b"marker")
    assert b"offline" not in cloud.payloads()


async def test_retained_message_can_be_cleared(clients: Clients) -> None:
    gw_a = await clients.connected("gw-a", "gw-a", "pw-a")
    await run(gw_a.publish, "gh/v1/gw-a/state", b"online", 1, True)
    await run(gw_a.publish, "gh/v1/gw-a/state", b"", 1, True)  # an empty retained publish clears it
    await run(gw_a.publish, "gh/v1/gw-a/events", b"x", 1, True)
    late = await clients.connected("cloud-late", CLOUD, CLOUD_PW)
    await run(late.subscribe, "gh/v1/gw-a/state")
    await run(late.subscribe, "gh/v1/gw-a/events")
    await run(late.wait_for_payload, b"x")
    assert late.payloads() == [b"x"]


async def test_gateway_never_sees_other_gateways_retained_state(clients: Clients) -> None:
    cloud = await clients.connected("cloud", CLOUD, CLOUD_PW)
    await run(cloud.subscribe, "gh/v1/+/state")
    gw_a = await clients.connected("gw-a", "gw-a", "pw-a")
    await run(gw_a.publish, "gh/v1/gw-a/state", b"a-online", 1, True)
    await run(cloud.wait_for_payload, b"a-online")

    # Unpatched amqtt 0.12.1 sends a connecting client the retained messages matching every
    # client's subscriptions (here the cloud's gh/v1/+/state), so gw-b would get gw-a's state.
    gw_b = await clients.connected("gw-b", "gw-b", "pw-b")
    await run(gw_b.subscribe, "gh/v1/gw-b/ack")
    await run(cloud.publish, "gh/v1/gw-b/ack", b"marker")
    await run(gw_b.wait_for_payload, b"marker")
    assert gw_b.payloads() == [b"marker"]


# -- client ids --------------------------------------------------------------------------------------


async def test_wrong_password_cannot_disturb_a_session_by_its_client_id(clients: Clients) -> None:
    cloud = await clients.connected("cloud", CLOUD, CLOUD_PW)
    await run(cloud.subscribe, "gh/v1/+/state")
    victim = await clients.connected(
        "gw-a", "gw-a", "pw-a", clean_session=False, will=("gh/v1/gw-a/state", b"offline", 1, True)
    )
    await run(victim.subscribe, "gh/v1/gw-a/cmd")

    for clean in (True, False):
        intruder = clients.new(
            "gw-a", "gw-a", "wrong", clean_session=clean, will=("gh/v1/gw-a/cmd", b"unlock", 1, False)
        )
        assert (await run(intruder.connect)).is_failure

    # The victim is still connected, subscribed, and its own will was neither fired nor replaced.
    await run(cloud.publish, "gh/v1/gw-a/cmd", b"real-command")
    await run(victim.wait_for_payload, b"real-command")
    assert victim.payloads() == [b"real-command"]
    await run(victim.drop)
    await run(cloud.wait_for_payload, b"offline")
    assert cloud.payloads() == [b"offline"]


async def test_another_gateway_cannot_take_a_session_by_its_client_id(clients: Clients) -> None:
    cloud = await clients.connected("cloud", CLOUD, CLOUD_PW)
    victim = await clients.connected("gw-a", "gw-a", "pw-a", clean_session=False)
    await run(victim.subscribe, "gh/v1/gw-a/cmd")
    await run(victim.disconnect)
    await run(cloud.publish, "gh/v1/gw-a/cmd", b"queued-for-a")

    thief = clients.new("gw-a", "gw-b", "pw-b", clean_session=False)
    assert (await run(thief.connect)).is_failure
    assert thief.payloads() == []

    back = await clients.connected("gw-a", "gw-a", "pw-a", clean_session=False)
    assert back.session_present
    await run(back.wait_for_payload, b"queued-for-a")


# -- start and stop ----------------------------------------------------------------------------------


async def test_refuses_a_taken_port(registry: Registry) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        embedded = EmbeddedBroker("127.0.0.1", port, RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW))
        with pytest.raises(BrokerStartError, match=str(port)):
            await embedded.start()
        assert not embedded.running


async def test_second_broker_on_the_same_port_is_refused(broker: EmbeddedBroker, registry: Registry) -> None:
    second = EmbeddedBroker("127.0.0.1", broker.port, RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW))
    with pytest.raises(BrokerStartError):
        await second.start()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_listens_on_loopback_only(registry: Registry, host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedBroker(host, 18830, RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW))


async def test_stop_closes_the_port_and_start_again_works(registry: Registry) -> None:
    port = free_port()
    embedded = EmbeddedBroker("127.0.0.1", port, RegistryAuthority(registry.lookup, CLOUD, CLOUD_PW))
    async with embedded:
        assert await run(port_accepts, "127.0.0.1", port)
        assert embedded.url == f"mqtt://127.0.0.1:{port}"
    assert not await run(port_accepts, "127.0.0.1", port)
    await embedded.start()  # the same object again, e.g. after a config change
    await embedded.stop()
