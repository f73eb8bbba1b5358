"""A test ADB device: the device side of the ADB wire protocol over TCP, running commands in a sandbox folder.

No Android device daemon is packaged for Debian, so this stands in for a phone's adbd. It speaks what Debian's
``adb`` client and adb-shell need: CNXN; AUTH with the host's signature checked against authorized public keys
(new keys are refused unless ``accept_new_keys``, like a user tapping "Allow"); OPEN of ``shell:`` (legacy,
stderr merged, no exit code) and ``sync:`` with STAT, STA2, SEND, RECV and QUIT; WRTE/OKAY/CLSE with one WRTE
in flight per stream. Checksums are the byte sum of the payload. ``tests/test_adb_daemon.py`` proves it
faithful by driving it with Debian's ``adb``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tests.peers.waiting import wait_until

VERSION = 0x01000000
MAX_DATA = 256 * 1024
SYNC_CHUNK = 64 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
_HEADER = struct.Struct("<6I")
_ANDROID_KEY = struct.Struct("<II256s256sI")
# DER prefix of a SHA-1 DigestInfo: PKCS#1 v1.5 signatures over a prehashed SHA-1 digest carry it.
_SHA1_PREFIX = bytes.fromhex("3021300906052b0e03021a05000414")


def _cmd(name: bytes) -> int:
    return int.from_bytes(name, "little")


CNXN, AUTH, OPEN, OKAY, WRTE, CLSE = (_cmd(n) for n in (b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"WRTE", b"CLSE"))


def decode_android_key(public_key: str) -> tuple[int, int]:
    """(modulus, exponent) of a key in Android's adbkey.pub format (``base64 user@host``)."""
    words, _n0inv, modulus, _rr, exponent = _ANDROID_KEY.unpack(base64.b64decode(public_key.split()[0]))
    if words != 64:
        raise ValueError(f"expected a 2048-bit key (64 words), got {words} words")
    return int.from_bytes(modulus, "little"), exponent


def verify_signature(token: bytes, signature: bytes, key: tuple[int, int]) -> bool:
    """Check an RSA PKCS#1 v1.5 signature over ``token`` used as a prehashed SHA-1 digest."""
    modulus, exponent = key
    size = (modulus.bit_length() + 7) // 8
    if len(signature) != size:
        return False
    block = pow(int.from_bytes(signature, "big"), exponent, modulus).to_bytes(size, "big")
    suffix = b"\x00" + _SHA1_PREFIX + token
    return block == b"\x00\x01" + b"\xff" * (size - 3 - len(suffix) + 1) + suffix


class _Stream:
    """One OPEN stream on the device side: an id pair, an inbox, and the flow control for its WRTEs."""

    def __init__(self, connection: _Connection, local_id: int, remote_id: int) -> None:
        self.connection, self.local_id, self.remote_id = connection, local_id, remote_id
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.okay = threading.Semaphore(0)
        self.closed = threading.Event()
        self.process: subprocess.Popen | None = None

    def write(self, data: bytes) -> bool:
        """Send data to the host, one WRTE in flight; False once the stream is closed."""
        for start in range(0, len(data), self.connection.max_data):
            if self.closed.is_set():
                return False
            self.connection.send(WRTE, self.local_id, self.remote_id, data[start : start + self.connection.max_data])
            while not self.okay.acquire(timeout=0.1):
                if self.closed.is_set():
                    return False
        return True

    def close(self) -> None:
        """Close from the device side (the command ended)."""
        if not self.closed.is_set():
            self.closed.set()
            self.connection.send(CLSE, self.local_id, self.remote_id)
        self.connection.streams.pop(self.local_id, None)

    def kill(self) -> None:
        """Stop the stream's command, with its children (it runs in its own process group)."""
        self.closed.set()
        self.inbox.put(None)
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


class _Connection:
    """One host connection: the handshake, then a reader that dispatches packets to streams."""

    def __init__(self, daemon: AdbDaemon, sock: socket.socket) -> None:
        self.daemon, self.sock = daemon, sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.max_data = MAX_DATA

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        header = _HEADER.pack(command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF)
        with self.send_lock, contextlib.suppress(OSError):
            self.sock.sendall(header + data)

    def _receive(self) -> tuple[int, int, int, bytes]:
        command, arg0, arg1, length, checksum, magic = _HEADER.unpack(self._exactly(_HEADER.size))
        data = self._exactly(length)
        if magic != command ^ 0xFFFFFFFF or (checksum and checksum != sum(data) & 0xFFFFFFFF):
            raise ConnectionError("corrupt packet from host")
        return command, arg0, arg1, data

    def _exactly(self, size: int) -> bytes:
        buffer = bytearray()
        while len(buffer) < size:
            chunk = self.sock.recv(size - len(buffer))
            if not chunk:
                raise ConnectionError("host hung up")
            buffer += chunk
        return bytes(buffer)

    def serve(self) -> None:
        try:
            if self._handshake():
                while True:
                    self._dispatch(*self._receive())
        except (OSError, ConnectionError, struct.error):
            pass
        finally:
            for stream in list(self.streams.values()):
                stream.kill()
            with contextlib.suppress(OSError):
                self.sock.close()

    def _handshake(self) -> bool:
        command, _version, max_data, _banner = self._receive()
        if command != CNXN:
            return False
        self.max_data = min(max_data, MAX_DATA)
        token = os.urandom(20)
        self.send(AUTH, AUTH_TOKEN, 0, token)
        while True:
            command, kind, _, data = self._receive()
            if command != AUTH:
                return False
            if kind == AUTH_SIGNATURE and any(verify_signature(token, data, key) for key in self.daemon.trusted_keys()):
                break
            if kind == AUTH_RSAPUBLICKEY:
                if not self.daemon.accept_new_keys:
                    continue  # like a phone whose user never taps "Allow": the host waits and times out
                self.daemon.authorize(data.rstrip(b"\0").decode())
                break
            token = os.urandom(20)
            self.send(AUTH, AUTH_TOKEN, 0, token)
        self.send(CNXN, VERSION, MAX_DATA, self.daemon.banner)
        return True

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == OPEN:
            self._open(arg0, data.rstrip(b"\0").decode())
            return
        stream = self.streams.get(arg1)
        if stream is None:
            if command == WRTE:
                self.send(CLSE, arg1, arg0)
            return
        if command == OKAY:
            stream.okay.release()
        elif command == WRTE:
            self.send(OKAY, stream.local_id, stream.remote_id)
            stream.inbox.put(data)
        elif command == CLSE:
            stream.kill()
            self.send(CLSE, stream.local_id, stream.remote_id)  # adb-shell waits for this answer
            self.streams.pop(stream.local_id, None)

    def _open(self, remote_id: int, service: str) -> None:
        if service.startswith("shell:"):
            target, argument = self.daemon.run_shell, service[len("shell:") :]
        elif service == "sync:":
            target, argument = self.daemon.run_sync, ""
        else:
            self.send(CLSE, 0, remote_id)
            return
        stream = _Stream(self, self.next_id, remote_id)
        self.next_id += 1
        self.streams[stream.local_id] = stream
        self.send(OKAY, stream.local_id, remote_id)
        threading.Thread(target=target, args=(stream, argument), daemon=True).start()


class AdbDaemon:
    """A device that answers ADB over TCP on 127.0.0.1, for tests.

    Args:
        sandbox: Folder commands run in; sync requests outside it are refused.
        authorized_keys: Public keys (``adbkey.pub`` contents) allowed to connect.
        accept_new_keys: Accept any key the host offers, as if a user tapped "Allow".
        features: The features advertised in the CNXN banner (``stat_v2`` makes Debian's adb use STA2).
    """

    def __init__(
        self,
        sandbox: Path,
        *,
        authorized_keys: Iterable[str] = (),
        accept_new_keys: bool = False,
        features: tuple[str, ...] = ("stat_v2",),
    ) -> None:
        self.sandbox = Path(sandbox).resolve()
        self.sandbox.mkdir(parents=True, exist_ok=True)
        self.accept_new_keys = accept_new_keys
        self._keys = [decode_android_key(key) for key in authorized_keys]
        props = "ro.product.name=ofa_test;ro.product.model=ofa_test_device;ro.product.device=ofa_test"
        self.banner = f"device::{props};features={','.join(features)}".encode()
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._connections: list[_Connection] = []
        self.port = 0

    def trusted_keys(self) -> list[tuple[int, int]]:
        return list(self._keys)

    def authorize(self, public_key: str) -> None:
        """Trust another host key (the ``adbkey.pub`` text)."""
        self._keys.append(decode_android_key(public_key))

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> AdbDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, port: int = 0) -> None:
        """Listen on ``port`` (0: any free one, outside adb's 5555-5585 scan in practice) and serve."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        self._server, self.port = server, server.getsockname()[1]
        thread = threading.Thread(target=self._accept, args=(server,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                sock, _ = server.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as adbd does (disable_tcp_nagle)
            connection = _Connection(self, sock)
            self._connections.append(connection)
            thread = threading.Thread(target=connection.serve, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Vanish like an unplugged phone: stop listening, drop every connection, kill every command."""
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._server.close()
            self._server = None
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads, self._connections = [], []

    @contextlib.contextmanager
    def unplugged_when(self, condition: Callable[[], bool], what: str) -> Iterator[None]:
        """While the body runs, :meth:`stop` (the cable goes) once ``condition()`` holds."""
        done = threading.Event()

        def unplug() -> None:
            if wait_until(condition, what, stop=done.is_set):
                self.stop()

        cable = threading.Thread(target=unplug)
        cable.start()
        try:
            yield
        finally:
            done.set()
            cable.join()

    # ---- services -------------------------------------------------------------------------------------------

    def run_shell(self, stream: _Stream, command: str) -> None:
        """Legacy ``shell:``: run the command with ``sh -c`` in the sandbox, stdout and stderr merged."""
        process = subprocess.Popen(
            ["sh", "-c", command],
            cwd=self.sandbox,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stream.process = process
        assert process.stdout is not None
        with process.stdout:
            while chunk := os.read(process.stdout.fileno(), 65536):
                if not stream.write(chunk):
                    break
        if stream.closed.is_set():
            stream.kill()
        process.wait()
        stream.close()

    def run_sync(self, stream: _Stream, _: str) -> None:
        """``sync:``: requests arrive as 8-byte headers (id, length) and payloads, split across WRTEs at will."""
        reader = _SyncReader(stream)
        try:
            while True:
                request, length = reader.header()
                if request == b"QUIT":
                    break
                path = reader.read(length).decode()
                if request in (b"STAT", b"STA2", b"LST2"):
                    stream.write(self._stat(request, path))
                elif request == b"SEND":
                    stream.write(self._receive_file(reader, path))
                elif request == b"RECV":
                    self._send_file(stream, path)
                else:
                    stream.write(_fail(f"unsupported sync request {request!r}"))
        except EOFError:
            pass
        stream.close()

    def _local(self, device_path: str) -> Path | None:
        """The sandbox file a device path names, or None when it points outside the sandbox."""
        path = (self.sandbox / device_path).resolve()
        return path if path.is_relative_to(self.sandbox) else None

    def _stat(self, request: bytes, device_path: str) -> bytes:
        path = self._local(device_path)
        try:
            info = path.stat() if path is not None else None
        except OSError:
            info = None
        if request == b"STAT":
            if info is None:
                return b"STAT" + struct.pack("<3I", 0, 0, 0)
            return b"STAT" + struct.pack("<3I", info.st_mode, info.st_size & 0xFFFFFFFF, int(info.st_mtime))
        if info is None:
            return request + struct.pack("<IQQIIIIQqqq", 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # errno ENOENT
        return request + struct.pack(
            "<IQQIIIIQqqq",
            0,
            info.st_dev,
            info.st_ino,
            info.st_mode,
            info.st_nlink,
            info.st_uid,
            info.st_gid,
            info.st_size,
            int(info.st_atime),
            int(info.st_mtime),
            int(info.st_ctime),
        )

    def _receive_file(self, reader: _SyncReader, spec: str) -> bytes:
        device_path, _, mode = spec.rpartition(",")
        path = self._local(device_path)
        data = bytearray()
        while True:
            kind, length = reader.header()
            if kind == b"DATA":
                data += reader.read(length)
            elif kind == b"DONE":
                break
            else:
                return _fail(f"expected DATA or DONE, got {kind!r}")
        if path is None:
            return _fail(f"{device_path}: outside the device sandbox {self.sandbox}")
        try:
            path.write_bytes(bytes(data))
            path.chmod(int(mode) & 0o777)
        except OSError as exc:
            return _fail(f"{device_path}: {exc.strerror}")
        return b"OKAY" + struct.pack("<I", 0)

    def _send_file(self, stream: _Stream, device_path: str) -> None:
        path = self._local(device_path)
        try:
            data = path.read_bytes() if path is not None else None
        except OSError:
            data = None
        if data is None:
            stream.write(_fail(f"remote object '{device_path}' does not exist"))
            return
        for start in range(0, len(data), SYNC_CHUNK):
            chunk = data[start : start + SYNC_CHUNK]
            stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        stream.write(b"DONE" + struct.pack("<I", 0))


def _fail(message: str) -> bytes:
    payload = message.encode()
    return b"FAIL" + struct.pack("<I", len(payload)) + payload


class _SyncReader:
    """Reassembles the sync byte stream from WRTE payloads."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            data = self.stream.inbox.get()
            if data is None:
                raise EOFError
            self.buffer += data
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    def header(self) -> tuple[bytes, int]:
        raw = self.read(8)
        return raw[:4], struct.unpack("<I", raw[4:])[0]
