"""A private Mosquitto for tests and benchmarks: its own loopback port, config, log and pid file.

Never touches the shared Mosquitto on 127.0.0.1:1883. Sync API::

    with MosquittoProcess() as broker:          # anonymous allowed: no password file
        client.connect("127.0.0.1", broker.port)

Mosquitto started as root drops to the ``mosquitto`` user before it reads the password and ACL
files and writes its persistence file: those files, and every directory above them, must be
reachable by that user. :func:`make_broker_dir` makes such a directory (``tmp_path`` is not one:
pytest makes it 0700 root). A process started here is stopped at the latest when the Python
process exits (atexit), or when its MosquittoProcess is garbage-collected.
"""

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from types import TracebackType

from tests.support.ports import free_port, port_accepts

MOSQUITTO = os.environ.get("GATEHOUSE_MOSQUITTO") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BROKER_USER = "mosquitto"
HOST = "127.0.0.1"

_live: "weakref.WeakSet[MosquittoProcess]" = weakref.WeakSet()


def _broker_ids() -> tuple[int, int] | None:
    """(uid, gid) Mosquitto will run as after dropping privileges, if it will drop them."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(BROKER_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def make_broker_dir(prefix: str = "gh-broker-") -> str:
    """A fresh directory Mosquitto can read and write after dropping to its user. Caller removes it."""
    path = tempfile.mkdtemp(prefix=prefix)
    ids = _broker_ids()
    if ids is not None:
        os.chown(path, *ids)
    # /tmp itself is world-traversable; the directory is the broker user's (or ours) alone.
    os.chmod(path, 0o700)
    return path


class MosquittoProcess:
    """One Mosquitto process on ``127.0.0.1:<port>`` with a generated config."""

    def __init__(
        self,
        port: int | None = None,
        *,
        password_file: str | None = None,
        acl_file: str | None = None,
        persistence_dir: str | None = None,
        extra_conf: str = "",
    ) -> None:
        self.port = port if port is not None else free_port(HOST)
        self.password_file = password_file
        self.acl_file = acl_file
        self.persistence_dir = persistence_dir
        self.extra_conf = extra_conf
        # Mosquitto re-reads its config on SIGHUP after dropping to its own user: the config must
        # live where that user can read it, or a reload fails ("Unable to open config file").
        self.workdir = make_broker_dir("gh-mosquitto-")
        self.conf_path = os.path.join(self.workdir, "mosquitto.conf")
        self.log_path = os.path.join(self.workdir, "mosquitto.log")
        self.pid_file = os.path.join(self.workdir, "mosquitto.pid")
        self._proc: subprocess.Popen[bytes] | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} {HOST}",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
        ]
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        if self.persistence_dir:
            lines += ["persistence true", f"persistence_location {self.persistence_dir.rstrip('/')}/"]
        else:
            lines.append("persistence false")
        lines += [
            # The default 1000 silently drops QoS 1 messages queued for a slow subscriber.
            "max_queued_messages 100000",
            "max_queued_bytes 0",
            "max_inflight_messages 100",
            "max_packet_size 140000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            self.extra_conf,
            "",
        ]
        return "\n".join(lines)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, spawn ``mosquitto -c``, return once the port accepts connections."""
        if self.running:
            raise RuntimeError(f"Mosquitto already running on port {self.port} (pid {self.pid})")
        with open(self.conf_path, "w", encoding="utf-8") as f:
            f.write(self.config_text())
        if self.persistence_dir:
            os.makedirs(self.persistence_dir, exist_ok=True)
            ids = _broker_ids()
            if ids is not None:
                os.chown(self.persistence_dir, *ids)
        log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", self.conf_path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        _live.add(self)
        with open(self.pid_file, "w", encoding="ascii") as f:
            f.write(f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout
        while not port_accepts(HOST, self.port):
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(
                    f"Mosquitto exited during start on port {self.port}:\n{self.log_text()[log_offset:]}"
                )
            if time.monotonic() >= deadline:
                self.kill()
                raise TimeoutError(
                    f"Mosquitto did not accept connections on port {self.port} within {timeout} s:\n"
                    f"{self.log_text()[log_offset:]}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Mosquitto saves its persistence file) and wait; SIGKILL if it does not exit."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved since the last autosave."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        _live.discard(self)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port (sessions survive if persistence_dir is set)."""
        self.stop(timeout)
        self.start(timeout)

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files, keeping every connection."""
        if not self.running or self._proc is None:
            raise RuntimeError("Mosquitto is not running")
        self._proc.send_signal(signal.SIGHUP)

    def close(self) -> None:
        """Stop the process and remove the generated config, log and pid file."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "MosquittoProcess":
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(5)


@atexit.register
def _stop_all() -> None:
    for broker in list(_live):
        with contextlib.suppress(Exception):
            broker.close()
