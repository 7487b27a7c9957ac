"""sd_notify for the gateway's systemd unit (Type=notify, WatchdogSec=).

The watchdog is fed only while the outbox writer and uplink are alive, so a wedged gateway is
restarted by systemd instead of silently not buffering.
"""

import os
import socket


def notify(message: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(addr)
            s.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    return int(usec) / 1_000_000 / 2
