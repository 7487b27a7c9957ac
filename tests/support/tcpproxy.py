"""A TCP proxy a test can cut: the way to make a database unreachable without touching the shared
server. ``cut()`` resets every connection and refuses new ones (a server that died);
``blackhole()`` leaves connections open but carries nothing, and new ones hang too (a route that
went dark: no reset ever comes); ``restore()`` lets traffic through again."""

from __future__ import annotations

import socket
import threading

from tests.support.ports import free_port


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._dark = threading.Event()  # set while blackholed

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def _listen(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        self._thread = threading.Thread(target=self._accept, args=(ls,), daemon=True)
        self._thread.start()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            if self._dark.is_set():
                with self._lock:
                    self._conns.append(client)  # accepted, never answered
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self._dark.is_set():
                    return  # swallowed; the sockets stay open and silent until restore() resets them
                dst.sendall(data)
        except OSError:
            pass
        # The other side closed: close ours too (unless it went dark: then nothing is said).
        if not self._dark.is_set():
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Every open connection is reset and the port refuses new ones, as when a server dies."""
        if self._listener:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        self._reset_all()

    def _reset_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            # Linger 0 makes the close a reset. shutdown() first: a bare close() does not wake the
            # pipe thread blocked in recv() on it, and Linux keeps a socket some syscall is still
            # using open, so the peer would never hear a thing (a half-open connection).
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def blackhole(self) -> None:
        self._dark.set()

    def restore(self) -> None:
        if self._dark.is_set():
            # What went dark never comes back; its peers learn so now, as they would from a timeout.
            self._reset_all()
            self._dark.clear()
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
