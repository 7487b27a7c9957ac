"""The password and ACL files against a real Mosquitto 2.0 (a private one on a free loopback port)."""

import gc
import logging
import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.broker.mosquitto import render_acl, signal_reload, write_acl_file, write_password_file
from cloud.broker.passwords import hash_password
from tests.cloud.broker.mqtt_clients import TestClient
from tests.support.mosquitto import MOSQUITTO, MosquittoProcess, make_broker_dir
from tests.support.ports import free_port, port_accepts, wait_for_port

pytestmark = pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="mosquitto binary not installed")

CLOUD, CLOUD_PW = "gh-cloud", "cloud-secret"
ITER = 1000  # keeps the tests quick; the format is the same at any count


@pytest.fixture
def broker_dir() -> Iterator[str]:
    path = make_broker_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clients() -> Iterator[list[TestClient]]:
    made: list[TestClient] = []
    yield made
    for client in made:
        client.close()


@pytest.fixture
def secured(broker_dir: str) -> Iterator[MosquittoProcess]:
    """Mosquitto with our password file (gw-a, gw-b, the cloud) and our ACL file."""
    passwd, acl = os.path.join(broker_dir, "passwd"), os.path.join(broker_dir, "acl")
    write_password_file(
        passwd,
        {
            "gw-a": hash_password("pw-a", ITER),
            "gw-b": hash_password("pw-b", ITER),
            CLOUD: hash_password(CLOUD_PW, ITER),
        },
    )
    write_acl_file(acl, CLOUD)
    broker = MosquittoProcess(password_file=passwd, acl_file=acl)
    broker.start()
    yield broker
    broker.close()


def connected(
    clients: list[TestClient], broker: MosquittoProcess, client_id: str, user: str, pw: str
) -> TestClient:
    client = TestClient(broker.port, client_id, user, pw)
    clients.append(client)
    rc = client.connect()
    assert not rc.is_failure, f"{user}: {rc}"
    return client


# -- files -----------------------------------------------------------------------------------------


def test_password_file_is_private_and_readable_by_the_broker_user(broker_dir: str) -> None:
    path = os.path.join(broker_dir, "passwd")
    write_password_file(path, {"gw-b": hash_password("x", ITER), "gw-a": hash_password("y", ITER)})
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    if os.geteuid() == 0:
        assert st.st_uid == pwd.getpwnam("mosquitto").pw_uid
    lines = Path(path).read_text().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["gw-a", "gw-b"]
    assert all(line.split(":", 1)[1].startswith(f"$7${ITER}$") for line in lines)
    assert sorted(os.listdir(broker_dir)) == ["passwd"]  # no temp file left behind


def test_password_file_rewrite_replaces_it_atomically(broker_dir: str) -> None:
    path = os.path.join(broker_dir, "passwd")
    write_password_file(path, {"gw-a": hash_password("y", ITER)})
    inode = os.stat(path).st_ino
    write_password_file(path, {"gw-b": hash_password("z", ITER)})
    assert os.stat(path).st_ino != inode  # a new file renamed over the old one
    assert Path(path).read_text().startswith("gw-b:$7$")


@pytest.mark.parametrize(
    ("username", "hashed"),
    [
        ("gw:a", "$7$1$c2FsdA==$aGFzaA=="),
        ("gw a", "$7$1$c2FsdA==$aGFzaA=="),
        ("", "$7$1$c2FsdA==$aGFzaA=="),
        ("gw-a", "plaintext"),
        ("gw-a", "$7$1$c2FsdA==$aGFzaA==\nroot:$7$1$x$y"),
    ],
)
def test_password_file_refuses_bad_entries(broker_dir: str, username: str, hashed: str) -> None:
    path = os.path.join(broker_dir, "passwd")
    with pytest.raises(ValueError):
        write_password_file(path, {username: hashed})
    assert os.listdir(broker_dir) == []


def test_acl_file_text(broker_dir: str) -> None:
    path = os.path.join(broker_dir, "acl")
    write_acl_file(path, CLOUD)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    lines = [line for line in Path(path).read_text().splitlines() if line and not line.startswith("#")]
    assert lines == [
        "pattern write gh/v1/%u/alarms",
        "pattern write gh/v1/%u/cmd/result",
        "pattern write gh/v1/%u/events",
        "pattern write gh/v1/%u/state",
        "pattern read gh/v1/%u/ack",
        "pattern read gh/v1/%u/cmd",
        "pattern read gh/v1/%u/config",
        f"user {CLOUD}",
        "topic readwrite gh/v1/#",
    ]
    with pytest.raises(ValueError):
        render_acl("two words")


def test_signal_reload_without_a_process(broker_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cloud.broker.mosquitto")
    missing = os.path.join(broker_dir, "none.pid")
    assert not signal_reload(missing)
    garbage = os.path.join(broker_dir, "garbage.pid")
    Path(garbage).write_text("not a pid\n")
    assert not signal_reload(garbage)
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = os.path.join(broker_dir, "dead.pid")
    Path(dead).write_text(f"{gone.pid}\n")
    assert not signal_reload(dead)
    assert len(caplog.records) == 3
    assert "unreadable" in caplog.records[0].getMessage()


# -- a real Mosquitto --------------------------------------------------------------------------------


def test_mosquitto_runs_as_its_own_user_and_reads_our_files(secured: MosquittoProcess) -> None:
    if os.geteuid() != 0:
        pytest.skip("privilege drop only happens when started as root")
    status = Path(f"/proc/{secured.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert int(uid_line.split()[1]) == pwd.getpwnam("mosquitto").pw_uid


def test_our_hash_is_accepted_by_mosquitto(secured: MosquittoProcess, clients: list[TestClient]) -> None:
    good = TestClient(secured.port, "gw-a", "gw-a", "pw-a")
    bad = TestClient(secured.port, "gw-a-2", "gw-a", "pw-wrong")
    unknown = TestClient(secured.port, "gw-x", "gw-x", "pw-a")
    anonymous = TestClient(secured.port, "anon")
    clients.extend([good, bad, unknown, anonymous])
    assert not good.connect().is_failure
    assert bad.connect().is_failure
    assert unknown.connect().is_failure
    assert anonymous.connect().is_failure


def test_gateway_publishes_only_its_own_uplink(secured: MosquittoProcess, clients: list[TestClient]) -> None:
    cloud = connected(clients, secured, "cloud-ingest", CLOUD, CLOUD_PW)
    assert not cloud.subscribe("gh/v1/+/events").is_failure
    gw_a = connected(clients, secured, "gw-a", "gw-a", "pw-a")

    gw_a.publish("gh/v1/gw-a/events", b"own")
    assert cloud.wait_for_payload(b"own").topic == "gh/v1/gw-a/events"

    # MQTT 3.1.1: the denied publish is PUBACKed and dropped. The marker, published after it on the
    # same connection, proves the broker has handled it by the time the marker arrives.
    gw_a.publish("gh/v1/gw-b/events", b"forged")
    gw_a.publish("gh/v1/gw-a/events", b"marker")
    cloud.wait_for_payload(b"marker")
    assert b"forged" not in cloud.payloads()


def test_gateway_receives_only_its_own_downlink(secured: MosquittoProcess, clients: list[TestClient]) -> None:
    cloud = connected(clients, secured, "cloud-cmd", CLOUD, CLOUD_PW)
    gw_a = connected(clients, secured, "gw-a", "gw-a", "pw-a")
    assert not gw_a.subscribe("gh/v1/gw-a/ack").is_failure  # `pattern read` grants subscribe
    gw_a.subscribe("gh/v1/gw-b/ack")  # Mosquitto may grant it; it never delivers B's messages
    gw_a.subscribe("gh/v1/+/ack")

    cloud.publish("gh/v1/gw-b/ack", b"for-b")
    cloud.publish("gh/v1/gw-a/ack", b"for-a")
    got = gw_a.wait_for_payload(b"for-a")
    assert got.topic == "gh/v1/gw-a/ack"
    assert b"for-b" not in gw_a.payloads()


def test_cloud_shared_subscription(secured: MosquittoProcess, clients: list[TestClient]) -> None:
    cloud = connected(clients, secured, "cloud-ingest-1", CLOUD, CLOUD_PW)
    assert not cloud.subscribe("$share/ingest/gh/v1/+/events").is_failure
    gw_b = connected(clients, secured, "gw-b", "gw-b", "pw-b")
    gw_b.publish("gh/v1/gw-b/events", b"batch")
    assert cloud.wait_for_payload(b"batch").topic == "gh/v1/gw-b/events"


def test_unacknowledged_message_is_resent_after_reconnect(
    secured: MosquittoProcess, clients: list[TestClient]
) -> None:
    """The reference behaviour the embedded broker lacks (see test_broker_embedded)."""
    ingest = TestClient(secured.port, "cloud-ingest", CLOUD, CLOUD_PW, clean_session=False, manual_ack=True)
    clients.append(ingest)
    assert not ingest.connect().is_failure
    ingest.subscribe("gh/v1/+/events")
    gw_a = connected(clients, secured, "gw-a", "gw-a", "pw-a")
    gw_a.publish("gh/v1/gw-a/events", b"in-flight")
    ingest.wait_for_payload(b"in-flight")  # received, never PUBACKed
    ingest.disconnect()

    back = TestClient(secured.port, "cloud-ingest", CLOUD, CLOUD_PW, clean_session=False)
    clients.append(back)
    assert not back.connect().is_failure
    gw_a.publish("gh/v1/gw-a/events", b"marker")
    back.wait_for_payload(b"marker")
    resent = back.wait_for_payload(b"in-flight")
    assert resent.dup


def test_reload_admits_a_new_gateway_without_restart(
    secured: MosquittoProcess, broker_dir: str, clients: list[TestClient]
) -> None:
    passwd, acl = os.path.join(broker_dir, "passwd"), os.path.join(broker_dir, "acl")
    cloud = connected(clients, secured, "cloud-ingest", CLOUD, CLOUD_PW)
    cloud.subscribe("gh/v1/+/events")
    newcomer = TestClient(secured.port, "gw-new", "gw-new", "pw-new")
    clients.append(newcomer)
    assert newcomer.connect().is_failure

    write_password_file(
        passwd,
        {
            "gw-a": hash_password("pw-a", ITER),
            "gw-b": hash_password("pw-b", ITER),
            "gw-new": hash_password("pw-new", ITER),
            CLOUD: hash_password(CLOUD_PW, ITER),
        },
    )
    write_acl_file(acl, CLOUD)
    pid = secured.pid
    assert signal_reload(secured.pid_file)

    # Mosquitto handles the SIGHUP in its main loop: retry the sign-in until it has, bounded.
    deadline = time.monotonic() + 10
    attempt = 0
    while True:
        attempt += 1
        newcomer = TestClient(secured.port, f"gw-new-{attempt}", "gw-new", "pw-new")
        clients.append(newcomer)
        if not newcomer.connect().is_failure:
            break
        assert time.monotonic() < deadline, "gw-new still refused 10 s after SIGHUP"
    assert secured.pid == pid and secured.running  # same process: reloaded, not restarted
    newcomer.publish("gh/v1/gw-new/events", b"hello")
    assert cloud.wait_for_payload(b"hello").topic == "gh/v1/gw-new/events"  # the existing session kept


def test_mosquitto_process_restart_keeps_persistent_sessions(
    broker_dir: str, clients: list[TestClient]
) -> None:
    broker = MosquittoProcess(persistence_dir=os.path.join(broker_dir, "db"))
    with broker:
        sub = TestClient(broker.port, "ingest", clean_session=False)
        clients.append(sub)
        assert not sub.connect().is_failure
        sub.subscribe("gh/v1/+/events")
        sub.disconnect()
        pub = TestClient(broker.port, "pub")
        clients.append(pub)
        pub.connect()
        pub.publish("gh/v1/gw-a/events", b"queued")
        pub.disconnect()
        port = broker.port
        broker.restart()
        assert broker.port == port
        back = TestClient(broker.port, "ingest", clean_session=False)
        clients.append(back)
        assert not back.connect().is_failure
        assert back.session_present
        assert back.wait_for_payload(b"queued").topic == "gh/v1/gw-a/events"
    assert not broker.running
    assert not os.path.exists(broker.workdir)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to pose as another user")
def test_non_root_writer_shares_the_file_through_the_mosquitto_group(
    broker_dir: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mosquitto_gid = pwd.getpwnam("mosquitto").pw_gid
    monkeypatch.setattr(os, "geteuid", lambda: 54321)
    monkeypatch.setattr(os, "getegid", lambda: 54321)
    monkeypatch.setattr(os, "getgroups", lambda: [54321, mosquitto_gid])
    shared = os.path.join(broker_dir, "passwd")
    write_password_file(shared, {"gw-a": hash_password("pw", ITER)})
    st = os.stat(shared)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, mosquitto_gid)

    monkeypatch.setattr(os, "getgroups", lambda: [54321])
    caplog.set_level(logging.WARNING, logger="cloud.broker.mosquitto")
    private = os.path.join(broker_dir, "acl")
    write_acl_file(private, CLOUD)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert "cannot read it" in caplog.text


def test_production_example_config_is_accepted(broker_dir: str, clients: list[TestClient]) -> None:
    """config/mosquitto/mosquitto.conf, with its paths and port moved into a temp dir, runs."""
    example = Path(__file__).resolve().parents[3] / "config" / "mosquitto" / "mosquitto.conf"
    port = free_port()
    replacements = {
        "listener 1883 127.0.0.1": f"listener {port} 127.0.0.1",
        "/etc/mosquitto/gatehouse/passwords": os.path.join(broker_dir, "passwords"),
        "/etc/mosquitto/gatehouse/acl": os.path.join(broker_dir, "acl"),
        "/var/lib/mosquitto/": os.path.join(broker_dir, "db") + "/",
        "/run/mosquitto/mosquitto.pid": os.path.join(broker_dir, "mosquitto.pid"),
        "log_dest file /var/log/mosquitto/mosquitto.log": "log_dest stderr",
    }
    text = example.read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    os.makedirs(os.path.join(broker_dir, "db"))
    if os.geteuid() == 0:
        os.chown(os.path.join(broker_dir, "db"), *pwd.getpwnam("mosquitto")[2:4])
    write_password_file(os.path.join(broker_dir, "passwords"), {CLOUD: hash_password(CLOUD_PW, ITER)})
    write_acl_file(os.path.join(broker_dir, "acl"), CLOUD)
    conf = os.path.join(broker_dir, "mosquitto.conf")
    Path(conf).write_text(text)

    proc = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not port_accepts("127.0.0.1", port):
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "example config: no listener within 10 s"
            time.sleep(0.02)
        cloud = TestClient(port, "cloud", CLOUD, CLOUD_PW)
        clients.append(cloud)
        assert not cloud.connect().is_failure
        stranger = TestClient(port, "anon")
        clients.append(stranger)
        assert stranger.connect().is_failure
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


# -- the test support itself ---------------------------------------------------------------------


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_mosquitto_process_kill_and_garbage_collection_leave_nothing_behind() -> None:
    broker = MosquittoProcess()
    broker.start()
    pid = broker.pid
    assert pid is not None and broker.url == f"mqtt://127.0.0.1:{broker.port}"
    broker.kill()
    assert not broker.running and _gone(pid)
    broker.start()  # same port again after a crash
    pid = broker.pid
    assert pid is not None
    workdir = broker.workdir
    del broker
    gc.collect()
    assert _gone(pid)
    shutil.rmtree(workdir, ignore_errors=True)


def test_mosquitto_process_reports_a_failed_start(broker_dir: str) -> None:
    broker = MosquittoProcess(password_file=os.path.join(broker_dir, "missing"))
    with pytest.raises(RuntimeError, match=r"pwfile|password"):
        broker.start()
    assert not broker.running
    broker.close()


def test_wait_for_port_is_bounded() -> None:
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.0.1", free_port(), timeout=0.2)
