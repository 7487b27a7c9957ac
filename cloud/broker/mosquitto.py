"""Mosquitto's password and ACL files, kept by the cloud, and the SIGHUP that reloads them.

The cloud writes both files whenever its gateway registry changes, then signals Mosquitto, which
re-reads them without dropping a connection (see ``config/mosquitto/README.md``). A file is
written next to its final path and renamed over it, so Mosquitto never reads half a file.

Mosquitto started as root drops to the ``mosquitto`` user and must still read the files at reload.
Run as root, we make them mode 0600 owned by that user. Run as another user (the cloud's systemd
unit), we cannot give a file away: if we are in the ``mosquitto`` group the file is made 0640 with
that group, otherwise 0600 (readable only by a Mosquitto running as our own user) and a warning
says so.
"""

import logging
import os
import pwd
import signal
import tempfile

from cloud.broker.passwords import is_supported_hash
from protocols.topics import DOWNLINK_CHANNELS, PREFIX, UPLINK_CHANNELS

log = logging.getLogger(__name__)

BROKER_USER = "mosquitto"
_FORBIDDEN_IN_NAME = set(":#+") | {chr(c) for c in range(33)} | {"\x7f"}


def write_password_file(path: str, entries: dict[str, str], *, owner: str | None = BROKER_USER) -> None:
    """Write ``username:hash`` lines (``$7$`` or ``$6$`` hashes) atomically, readable by Mosquitto only."""
    lines = []
    for username, hashed in sorted(entries.items()):
        _check_name(username)
        if not is_supported_hash(hashed):
            raise ValueError(f"the hash for {username!r} is not a Mosquitto $7$ or $6$ hash")
        lines.append(f"{username}:{hashed}\n")
    _atomic_write(path, "".join(lines), owner)


def render_acl(cloud_username: str) -> str:
    """The ACL file text: the cloud reads and writes ``gh/v1/#``; a gateway only its own channels.

    ``pattern`` lines apply to every user, ``%u`` standing for the username (= gateway id). In
    Mosquitto 2.0 ``read`` grants both subscribing and receiving; ``write`` grants publishing.
    Anything not granted is denied, and anonymous clients get nothing.
    """
    _check_name(cloud_username)
    out = [
        "# Written by the Gatehouse cloud (cloud.broker.mosquitto); edits here are overwritten.",
        "# A gateway's MQTT username is its gateway id: it publishes its uplink channels and",
        "# subscribes to its downlink channels, under its own id only.",
    ]
    out += [f"pattern write {PREFIX}/%u/{channel.value}" for channel in sorted(UPLINK_CHANNELS)]
    out += [f"pattern read {PREFIX}/%u/{channel.value}" for channel in sorted(DOWNLINK_CHANNELS)]
    out += [
        "",
        "# The cloud: ingest subscribes to every gateway (also as $share/...), commands go down.",
        f"user {cloud_username}",
        f"topic readwrite {PREFIX}/#",
        "",
    ]
    return "\n".join(out)


def write_acl_file(path: str, cloud_username: str, *, owner: str | None = BROKER_USER) -> None:
    """Write the ACL file (see :func:`render_acl`) atomically, readable by Mosquitto only."""
    _atomic_write(path, render_acl(cloud_username), owner)


def signal_reload(pid_file: str) -> bool:
    """Send SIGHUP to the Mosquitto named by ``pid_file``; False (and a logged reason) if impossible."""
    try:
        with open(pid_file, encoding="ascii") as f:
            text = f.read().strip()
    except OSError as exc:
        log.warning("cannot reload Mosquitto: pid file %s unreadable: %s", pid_file, exc)
        return False
    if not text.isdigit() or int(text) <= 1:
        log.warning("cannot reload Mosquitto: pid file %s holds %r, not a process id", pid_file, text[:40])
        return False
    pid = int(text)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        log.warning("cannot reload Mosquitto: no process %d (from %s)", pid, pid_file)
        return False
    except PermissionError:
        log.warning(
            "cannot reload Mosquitto: not allowed to signal process %d (from %s); signalling needs root or "
            "Mosquitto's user, else let systemd reload it (config/mosquitto/README.md)",
            pid,
            pid_file,
        )
        return False
    log.info("sent SIGHUP to Mosquitto (pid %d) to reload its password and ACL files", pid)
    return True


def _check_name(username: str) -> None:
    if not username or any(ch in _FORBIDDEN_IN_NAME for ch in username):
        raise ValueError(
            f"{username!r} cannot be a Mosquitto username (empty, or ':', '#', '+', space, control)"
        )


def _ownership(owner: str | None, path: str) -> tuple[int, int, int]:
    """(mode, uid, gid) for a new file; -1 leaves an id unchanged."""
    if owner is None:
        return 0o600, -1, -1
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        return 0o600, -1, -1
    if os.geteuid() == 0:
        return 0o600, entry.pw_uid, entry.pw_gid
    if entry.pw_uid == os.geteuid():
        return 0o600, -1, -1
    if entry.pw_gid in os.getgroups() or entry.pw_gid == os.getegid():
        return 0o640, -1, entry.pw_gid
    log.warning(
        "%s is readable by this user only: a Mosquitto running as %r cannot read it "
        "(run the writer as root, or add its user to the %r group)",
        path,
        owner,
        owner,
    )
    return 0o600, -1, -1


def _atomic_write(path: str, text: str, owner: str | None) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            mode, uid, gid = _ownership(owner, path)
            os.fchmod(f.fileno(), 0o600)
            if (uid, gid) != (-1, -1):
                os.fchown(f.fileno(), uid, gid)
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
