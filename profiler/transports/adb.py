"""ADB with adb-shell, for phones: TCP (``host:port``) or USB (a serial), no adb server needed.

adb-shell speaks the legacy ``shell:`` service, which loses the exit status and merges stderr into stdout; a
sentinel line printed after the command carries the status back.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import threading
from pathlib import Path

from adb_shell.adb_device import AdbDevice
from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner
from adb_shell.exceptions import (
    AdbCommandFailureException,
    AdbConnectionError,
    AdbTimeoutError,
    DeviceAuthError,
    PushFailedError,
    TcpTimeoutException,
)
from adb_shell.transport.tcp_transport import TcpTransport

from profiler.transports.base import Transport
from profiler.transports.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DeviceBusy,
    TransferFailed,
)
from profiler.transports.result import Result
from supernet.errors import HostError

__all__ = ["AdbTransport", "KeyFileError", "load_or_create_key"]

_SENTINEL = "__OFA_EXIT_STATUS__"
_SENTINEL_LINE = re.compile(rf"\r?\n{_SENTINEL}(\d+)\r?\n?$")
_DEFAULT_KEY = Path("~/.android/adbkey")


class KeyFileError(HostError, PermissionError):
    """A private key file whose mode lets other users read it: refused, as ``adb`` and ``ssh`` do."""


def load_or_create_key(path: Path | str = _DEFAULT_KEY) -> PythonRSASigner:
    """The ADB RSA key at ``path``; created on first use, readable by its owner only (0600)."""
    path = Path(path).expanduser()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = os.umask(0o077)
        try:
            keygen(str(path))
        finally:
            os.umask(previous)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"ADB key {path} is readable by others (mode {mode:o})", f"run: chmod 600 {path}")
    return PythonRSASigner(Path(f"{path}.pub").read_text(), path.read_text())


class _TcpTransport(TcpTransport):
    """adb-shell's TCP transport, but a closed socket raises instead of reading b"" until the timeout."""

    def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        data = super().bulk_read(numbytes, transport_timeout_s)
        if not data:
            raise ConnectionResetError(f"{self._host}:{self._port} closed the connection")
        return data

    def connect(self, transport_timeout_s: float | None) -> None:
        super().connect(transport_timeout_s)
        # adb-shell writes a message's header and payload separately: with Nagle's algorithm the payload waits
        # for the device's delayed ACK of the header, about 40 ms for every message.
        self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def abort(self) -> None:
        """Wake a read or write blocked in another thread. ``AdbDevice.close`` cannot: it waits for that
        thread's lock, held until its read times out."""
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class AdbTransport(Transport):
    """Run commands and move files on an Android device over ADB.

    Args:
        address: ``host:port`` for ADB over TCP, or a USB serial number.
        key_path: ADB private key; created with 0600 permissions if missing.
        connect_timeout: Seconds for the TCP connection and for the device to accept the key.
    """

    def __init__(self, address: str, *, key_path: Path | str = _DEFAULT_KEY, connect_timeout: float = 10.0) -> None:
        super().__init__(f"adb://{address}")
        self.address = address
        self.key_path = Path(key_path).expanduser()
        self.connect_timeout = connect_timeout
        self._device: AdbDevice | None = None
        self._link: _TcpTransport | None = None

    def _make_device(self) -> AdbDevice:
        host, _, port = self.address.rpartition(":")
        if host and port.isdigit():
            self._link = _TcpTransport(host, int(port))
            return AdbDevice(self._link, default_transport_timeout_s=self.connect_timeout)
        try:
            from adb_shell.adb_device import AdbDeviceUsb

            return AdbDeviceUsb(serial=self.address, default_transport_timeout_s=self.connect_timeout)
        except Exception as exc:  # adb-shell raises its own InvalidTransportError without libusb1
            raise ConnectionFailed(
                self.device, f"cannot open USB device {self.address}: {exc}", "pip install 'adb-shell[usb]'"
            ) from exc

    def _open(self) -> None:
        signer = load_or_create_key(self.key_path)
        device = self._make_device()
        offered: list[bool] = []  # adb-shell calls back just before offering our public key
        try:
            device.connect(rsa_keys=[signer], auth_timeout_s=self.connect_timeout, auth_callback=offered.append)
        except (DeviceAuthError, AdbTimeoutError, TcpTimeoutException) as exc:
            device.close()
            if not offered and not isinstance(exc, DeviceAuthError):
                raise ConnectionFailed(self.device, f"no answer to CNXN: {exc}", "is this an ADB port?") from exc
            raise AuthenticationFailed(
                self.device,
                f"the device did not accept key {self.key_path}.pub ({exc})",
                "unlock the phone and tap 'Allow USB debugging' for this computer, then retry",
            ) from exc
        except Exception as exc:
            device.close()
            if "LIBUSB_ERROR_BUSY" in str(exc):
                raise DeviceBusy(
                    self.device, f"USB device is busy: {exc}", "an adb server holds it: run `adb kill-server`"
                ) from exc
            if isinstance(exc, (OSError, AdbConnectionError, TcpTimeoutException)):
                raise ConnectionFailed(
                    self.device,
                    f"could not connect: {exc}",
                    "check the address, that the device is on and ADB over network is enabled",
                ) from exc
            raise
        self._device = device

    def _abort(self) -> None:
        # Ending the connection ends the shell on the device; an agent detached from it is stopped by the run's
        # last word (see Transport.last_word).
        link, device = self._link, self._device
        if link is not None:
            link.abort()
        elif device is not None:
            # Over USB there is no socket to shut: close from a thread of its own, never blocking the caller.
            threading.Thread(target=device.close, name=f"abort {self.device}", daemon=True).start()

    def _close(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None

    def _lost(self, action: str, exc: Exception) -> ConnectionFailed:
        self.close()
        return ConnectionFailed(
            self.device,
            f"connection lost during {action}: {exc}",
            "the device went away (cable, Wi-Fi, reboot); rerun when it is back (agents resume from their results)",
        )

    def _execute(self, command: str, timeout: float) -> Result:
        assert self._device is not None
        line = f"{command}; printf '\\n{_SENTINEL}%d\\n' $?"
        try:
            output = self._device.shell(line, transport_timeout_s=timeout, read_timeout_s=timeout, timeout_s=timeout)
        except (AdbTimeoutError, TcpTimeoutException) as exc:
            # The stream may still deliver packets later: drop the connection so the next call starts clean.
            self.close()
            raise self._timed_out(command, timeout) from exc
        except (OSError, AdbConnectionError, AdbCommandFailureException) as exc:
            raise self._lost(f"{command!r}", exc) from exc
        match = _SENTINEL_LINE.search(output)
        if match is None:
            raise self._lost(
                f"{command!r}", ConnectionError(f"output ended without the exit status: {output[-200:]!r}")
            )
        return Result(self.device, command, output[: match.start()].replace("\r\n", "\n"), "", int(match.group(1)))

    def _upload(self, local: Path, remote: str, timeout: float) -> None:
        assert self._device is not None
        try:
            self._device.push(
                str(local),
                remote,
                st_mode=0o100000 | (local.stat().st_mode & 0o777),
                transport_timeout_s=timeout,
                read_timeout_s=timeout,
            )
        except (PushFailedError, AdbCommandFailureException) as exc:
            raise TransferFailed(self.device, f"push of {local} to {remote} failed: {exc}") from exc
        except (OSError, AdbConnectionError, AdbTimeoutError, TcpTimeoutException) as exc:
            raise self._lost(f"push of {local}", exc) from exc

    def _download(self, remote: str, local: Path, timeout: float) -> None:
        assert self._device is not None
        try:
            self._device.pull(remote, str(local), transport_timeout_s=timeout, read_timeout_s=timeout)
        except AdbCommandFailureException as exc:
            raise TransferFailed(self.device, f"pull of {remote} failed: {exc}") from exc
        except (OSError, AdbConnectionError, AdbTimeoutError, TcpTimeoutException) as exc:
            raise self._lost(f"pull of {remote}", exc) from exc
