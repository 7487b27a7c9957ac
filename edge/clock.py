"""What the gateway knows about its own clock: the boot id and whether the wall clock is synchronised.

A Raspberry Pi has no real-time clock: after a power cut without network its wall clock can be far
off. Every event therefore carries the wall time, the boot id and the monotonic time, and the
gateway says whether the kernel considered the clock synchronised when the event was stamped.
"""

import ctypes
import ctypes.util
import time
import uuid
from pathlib import Path

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
_TIME_ERROR = 5  # adjtimex(2): "clock not synchronized"


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>; only `modes` is written (0 = read-only query).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def kernel_clock_synced() -> bool | None:
    """The kernel's NTP state via adjtimex(2); None where it cannot be asked."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


def kernel_boot_id() -> str:
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError:
        # Not Linux (a developer's laptop): one id per process start is the closest meaning.
        return str(uuid.uuid4())


class Clock:
    """Stamps events. ``synced`` may be forced ("yes"/"no") by config or tests; "auto" asks the kernel."""

    def __init__(self, synced: str = "auto", boot_id: str | None = None) -> None:
        if synced not in {"auto", "yes", "no"}:
            raise ValueError(f"clock synced must be auto, yes or no, not {synced!r}")
        self._mode = synced
        self.boot_id = boot_id or kernel_boot_id()
        self._cached: tuple[float, bool] | None = None

    def synced(self) -> bool:
        if self._mode != "auto":
            return self._mode == "yes"
        now = time.monotonic()
        if self._cached and now - self._cached[0] < 1.0:
            return self._cached[1]
        value = bool(kernel_clock_synced())
        self._cached = (now, value)
        return value

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    @staticmethod
    def mono_ns() -> int:
        return time.monotonic_ns()
