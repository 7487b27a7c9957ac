"""Loopback ports for test servers: find a free one, wait until one accepts."""

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_accepts(host: str, port: int) -> bool:
    """True if a TCP connection to ``host:port`` is accepted now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Return once ``host:port`` accepts a TCP connection; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not port_accepts(host, port):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout} s")
        time.sleep(0.02)
