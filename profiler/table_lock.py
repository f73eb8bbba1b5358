"""One run per table: a lock file beside the table, held with ``flock`` for as long as the run measures.

Two runs on one table would measure items twice and recover (kill) each other's agents. The lock file names
its holder (PID, host, start time, command) so that a refused run can say who holds it. ``flock`` is released by
the kernel when its holder dies, however it dies, so a killed run's lock is taken over without any staleness
guess; the takeover is logged with the dead holder's details.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

from profiler.sidecar import now
from supernet.errors import OFAProfileError
from supernet.files import json_loads

__all__ = ["TableLocked", "lock_path", "table_lock"]

log = logging.getLogger(__name__)


class TableLocked(OFAProfileError):
    """Another run holds the table; the message names it."""


def lock_path(table: Path) -> Path:
    return table.with_name(table.name + ".lock")


def _holder(text: str) -> dict:
    try:
        holder = json_loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another run (it has not written its details yet)"
    return (f"PID {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


def _open_lock(path: Path) -> int:
    """The lock file, never through a link (truncating it would empty the link's target) nor a special file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise TableLocked(f"the lock file {path} is a symbolic link; refusing to write through it",
                          "remove it: each run creates its own") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TableLocked(f"the lock file {path} is not a regular file", "remove it: each run creates its own")
    return fd


# Lock files this process holds: a command that holds its table's lock (the closed loop) calls a step that takes
# it too (the table run, on a worker thread), where a second flock on the same file would refuse itself. Commands
# in one process on several devices (a fleet) hold different tables' locks.
_HELD: set[Path] = set()


@contextlib.contextmanager
def table_lock(table: Path, command: str = "") -> Iterator[None]:
    """Hold ``table``'s lock inside the block, or raise :class:`TableLocked` naming the holder. Every command that
    writes beside a table holds it: table runs, ``--reanchor``, ``--subnets``, ``--calibrate``, ``--search`` and
    ``convert``. Re-entrant within one process."""
    path = lock_path(table)
    held = path.resolve()
    if held in _HELD:
        yield
        return
    _HELD.add(held)
    try:
        with _flock(path, table, command):
            yield
    finally:
        _HELD.discard(held)


@contextlib.contextmanager
def _flock(path: Path, table: Path, command: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock(path)
    try:
        with os.fdopen(os.dup(fd), "r", encoding="utf-8", errors="replace") as reader:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(reader.read())
                raise TableLocked(
                    f"{table} is being measured by {_describe(holder)}",
                    "wait for that run to finish or stop it; two runs on one table would measure rows twice",
                ) from None
            earlier = _holder(reader.read())
        if earlier:
            log.info("%s: took over the lock of %s, which is no longer running", table, _describe(earlier))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": now(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
