"""The one flow every transport shares: open lazily, quote, run with a timeout, check, push, pull, close."""

from __future__ import annotations

import contextlib
import errno
import posixpath
import re
import shlex
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from profiler.transports.errors import CommandTimedOut, Interrupted, TransferFailed, UnexpectedExit
from profiler.transports.result import Result
from supernet.errors import host_error
from supernet.files import sha256_of

__all__ = ["HOST_SIDE_ERRNOS", "Transport", "interrupt_all", "quote_command"]

_T = TypeVar("_T")
# Errors of a download that can only come from this machine, the side that writes (the device only reads).
HOST_SIDE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_LIVE: weakref.WeakSet[Transport] = weakref.WeakSet()
# Characters of paths per hashing command: ADB's oldest shell service takes a command of up to 4 KB.
_HASH_COMMAND_CHARS = 3000
_SHA256_LINE = re.compile(r"([0-9a-f]{64}) [ *](.*)")


def interrupt_all() -> None:
    """Interrupt every transport of this process (a signal handler calls this on SIGINT and SIGTERM)."""
    for transport in list(_LIVE):
        transport.interrupt()


def quote_command(argv: Sequence[str]) -> str:
    """Join arguments into one POSIX shell command line, each argument quoted.

    Raises:
        ValueError: ``argv`` is a bare string or empty, which would be split or quoted wrongly.
    """
    if isinstance(argv, str) or not argv:
        raise ValueError(f"expected a non-empty list of arguments, got {argv!r}; pass e.g. ['ls', '-l', path]")
    return " ".join(shlex.quote(str(arg)) for arg in argv)



class Transport(ABC):
    """A way to run commands on a device and move files to and from it.

    Subclasses fill in the hooks ``_open``, ``_execute``, ``_upload``, ``_download`` and ``_close``; this
    class owns quoting, checking exit codes, skipping unchanged uploads and the open/close life cycle.

    Args:
        device: Name used in every message, e.g. ``ssh://pi@10.0.0.7:22``.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._is_open = False
        self._stop = threading.Event()
        _LIVE.add(self)

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.device!r})"

    def open(self) -> None:
        """Connect now rather than on the first call."""
        if not self._is_open:
            self._open()
            self._is_open = True

    def close(self) -> None:
        """Release the connection; safe to call more than once."""
        if self._is_open:
            self._is_open = False
            self._close()

    def interrupt(self) -> None:
        """Abort what this transport is doing now (from any thread); every later call raises ``Interrupted``.

        The running command is stopped where the transport can (the local process group is killed; an SSH
        channel or ADB connection is closed, and the agent, orphaned, stops by itself).
        """
        self._stop.set()
        self._abort()

    def pause(self, seconds: float) -> None:
        """Sleep, but wake up and raise ``Interrupted`` as soon as the transport is interrupted."""
        if self._stop.wait(seconds):
            raise self._interrupted()

    def last_word(self, argv: Sequence[str], *, within_s: float = 1.0) -> bool:
        """Run one short command even after an interrupt, on a fresh connection, and wait at most ``within_s``.

        How a stopped run stops what it started on the device (an agent detached from the connection keeps
        measuring otherwise). Best effort: False when it did not run in time or failed; nothing is raised.
        """
        ran, ended = threading.Event(), threading.Event()

        def attempt() -> None:
            with contextlib.suppress(Exception):
                self.close()
                self.open()
                if self._execute(quote_command(argv), within_s).ok:
                    ran.set()
            with contextlib.suppress(Exception):
                self.close()
            ended.set()

        threading.Thread(target=attempt, name=f"last word to {self.device}", daemon=True).start()
        ended.wait(within_s)
        return ran.is_set()

    def _interrupted(self) -> Interrupted:
        return Interrupted(f"{self.device}: interrupted", "rerun the same command to continue")

    def _guard(self, call: Callable[[], _T]) -> _T:
        """Run a hook; once interrupted, whatever it raised or returned becomes ``Interrupted``."""
        if self._stop.is_set():
            raise self._interrupted()
        try:
            result = call()
        except Exception:
            if self._stop.is_set():
                raise self._interrupted() from None
            raise
        if self._stop.is_set():
            raise self._interrupted()
        return result

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True) -> Result:
        """Run a command on the device, every argument quoted.

        Args:
            argv: Program and arguments, e.g. ``["python3", "agent.py", "my model.json"]``.
            timeout: Seconds the command may take; it is abandoned after that.
            check: Raise ``UnexpectedExit`` on a non-zero exit status.

        Raises:
            CommandTimedOut: The command outlived ``timeout``.
            UnexpectedExit: ``check`` is set and the command failed.
            ConnectionFailed: The device could not be reached or went away.
        """
        return self.run_line(quote_command(argv), timeout=timeout, check=check)

    def run_line(self, command: str, *, timeout: float, check: bool = True) -> Result:
        """Run a shell command line as given; build it with ``quote_command`` for anything from outside."""
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
        self._guard(self.open)
        result = self._guard(lambda: self._execute(command, timeout))
        if check and not result.ok:
            raise UnexpectedExit(result)
        return result

    def push(self, local: Path | str, remote: str, *, timeout: float = 120.0) -> bool:
        """Copy a local file to the device unless an identical one is already there.

        Returns:
            True if the file was sent, False if the device already had the same bytes.
        """
        return bool(self.push_all({remote: local}, timeout=timeout))

    def push_all(self, files: Mapping[str, Path | str], *, timeout: float = 120.0) -> list[str]:
        """Copy local files to the device (device path: local path), each unless an identical one is there.

        The device's copies are hashed by as few commands as will hold their paths, not one each: a batch of
        models then costs one round trip before the transfers, which over SSH was a third of a small table's time.

        Returns:
            The device paths that were sent.
        """
        locals_ = {remote: Path(local) for remote, local in files.items()}
        for local in locals_.values():
            if not local.is_file():
                raise FileNotFoundError(f"cannot push {local}: no such file on this machine")
        there = self.remote_sha256s(list(locals_), timeout=timeout)
        sent = [remote for remote, local in locals_.items() if there.get(remote) != sha256_of(local)]
        if sent:
            self._guard(self.open)
        for remote in sent:
            self._guard(lambda remote=remote: self._upload(locals_[remote], remote, timeout))
        return sent

    def pull(self, remote: str, local: Path | str, *, timeout: float = 120.0) -> Path:
        """Copy a file from the device to ``local`` and return that path."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        self._guard(self.open)
        try:
            self._guard(lambda: self._download(remote, local, timeout))
        except TransferFailed as err:
            cause = err.__cause__
            if isinstance(cause, OSError) and cause.errno in HOST_SIDE_ERRNOS:
                raise host_error(OSError(cause.errno, cause.strerror, str(local))) from err
            raise
        return local

    def remote_sha256(self, remote: str, *, timeout: float = 60.0) -> str | None:
        """Hex SHA-256 of a file on the device, or None when it is missing."""
        return self.remote_sha256s([remote], timeout=timeout).get(remote)

    def remote_sha256s(self, remotes: Sequence[str], *, timeout: float = 60.0) -> dict[str, str]:
        """Hex SHA-256 of each file on the device that is there to read, by path; missing ones are left out.

        One ``sha256sum`` command per few thousand characters of paths. Only lines naming a path asked for count:
        a shell that mixes error messages into its output (ADB's) or a path the tool prints escaped (one holding a
        newline or a backslash) leaves that file out, so it is sent again, which is safe.
        """
        chunks: list[list[str]] = []
        size = 0
        for remote in remotes:
            if not chunks or size + len(remote) > _HASH_COMMAND_CHARS:
                chunks.append([])
                size = 0
            chunks[-1].append(remote)
            size += len(remote)
        digests: dict[str, str] = {}
        for chunk in chunks:
            output = self.run(["sha256sum", *chunk], timeout=timeout, check=False).stdout
            for match in map(_SHA256_LINE.fullmatch, output.splitlines()):
                if match and match[2] in chunk:
                    digests[match[2]] = match[1]
        return digests

    def make_dirs(self, *remote_dirs: str, timeout: float = 30.0) -> None:
        """Create folders (and their parents) on the device, in one command."""
        self.run(["mkdir", "-p", *remote_dirs], timeout=timeout)

    def remove(self, *remote_paths: str, timeout: float = 60.0) -> None:
        """Delete files or folders on the device."""
        self.run(["rm", "-rf", "--", *remote_paths], timeout=timeout)

    @staticmethod
    def join(*parts: str) -> str:
        """Join device paths (always POSIX, whatever the host is)."""
        return posixpath.join(*parts)

    def _timed_out(self, command: str, timeout: float, stdout: str = "", stderr: str = "") -> CommandTimedOut:
        """The error for a command abandoned after ``timeout``, with what it printed so far."""
        return CommandTimedOut(Result(self.device, command, stdout, stderr, -1), timeout)

    @abstractmethod
    def _open(self) -> None:
        """Connect to the device."""

    @abstractmethod
    def _execute(self, command: str, timeout: float) -> Result:
        """Run a shell command line; raise ``self._timed_out(...)`` after ``timeout``."""

    @abstractmethod
    def _upload(self, local: Path, remote: str, timeout: float) -> None:
        """Copy a local file to the device."""

    @abstractmethod
    def _download(self, remote: str, local: Path, timeout: float) -> None:
        """Copy a device file to a local path."""

    @abstractmethod
    def _abort(self) -> None:
        """Stop the command or transfer in progress; called from another thread (a signal handler)."""

    @abstractmethod
    def _close(self) -> None:
        """Drop the connection."""
