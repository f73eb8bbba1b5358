"""A TCP proxy on loopback between the host and a test peer (sshd, the ADB daemon) that can stall or drop links.

There is no ``netem`` in this kernel; the proxy is how the tests make a bad link: it forwards bytes both ways,
and on request stops forwarding for a while (a stalled Wi-Fi link: the connection stays open, nothing moves) or
closes every connection it carries (a pulled cable).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._links: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self.drops = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self, seconds: float) -> None:
        """Stop forwarding (connections stay open) for ``seconds``, then go on."""
        self._flowing.clear()
        threading.Timer(seconds, self._flowing.set).start()

    def drop(self) -> None:
        """Close every connection the proxy carries now, as a pulled cable would; new ones are accepted."""
        with self._lock:
            links, self._links = self._links, []
            self.drops += 1
        for pair in links:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def drop_every(self, seconds: float) -> threading.Event:
        """Drop every connection each ``seconds`` until the returned event is set."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(seconds) and not self._closed.is_set():
                self.drop()

        threading.Thread(target=loop, daemon=True).start()
        return stop

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        self.drop()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._links.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select([a, b], [], [], 0.1)
                if not self._flowing.is_set():
                    time.sleep(0.05)
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
