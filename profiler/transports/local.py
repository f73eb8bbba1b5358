"""Run on this machine: the transport for profiling the host itself, and the reference the others match."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from profiler.transports.base import HOST_SIDE_ERRNOS, Transport
from profiler.transports.errors import TransferFailed
from profiler.transports.result import Result
from supernet.errors import host_error

__all__ = ["LocalTransport"]


class LocalTransport(Transport):
    """Commands through ``sh -c`` in a subprocess; files by copying.

    Commands go through the same quoting and shell as on a remote device, so what works here works there.
    """

    def __init__(self) -> None:
        super().__init__("local")
        self._running: set[subprocess.Popen[bytes]] = set()

    def _open(self) -> None:
        """Nothing to connect."""

    def _abort(self) -> None:
        for process in list(self._running):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def _close(self) -> None:
        """Nothing to release."""

    def _execute(self, command: str, timeout: float) -> Result:
        # A new session gives the command its own process group, so a timeout kills its children too.
        process = subprocess.Popen(
            ["sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._running.add(process)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            raise self._timed_out(command, timeout, _text(stdout), _text(stderr)) from None
        finally:
            self._running.discard(process)
        return Result(self.device, command, _text(stdout), _text(stderr), process.returncode)

    def _upload(self, local: Path, remote: str, timeout: float) -> None:
        self._copy(local, Path(remote))

    def _download(self, remote: str, local: Path, timeout: float) -> None:
        self._copy(Path(remote), local)

    def _copy(self, source: Path, target: Path) -> None:
        try:
            shutil.copy2(source, target)
        except OSError as exc:
            if exc.errno in HOST_SIDE_ERRNOS:  # the "device" is this machine: a full disk is not a lost link
                raise host_error(OSError(exc.errno, exc.strerror, str(target))) from exc
            raise TransferFailed(self.device, f"copying {source} to {target} failed: {exc}") from exc


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
