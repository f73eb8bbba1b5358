"""The project's one atomic writer: a file is there whole, with the mode users expect, or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from supernet.errors import OFAProfileError

__all__ = ["MAX_INPUT_BYTES", "InputTooLargeError", "NotARegularFileError", "atomic_write", "json_loads", "naming",
           "read_input",
           "sha256_of", "stem_of"]

_KINDS = ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))


# Tables, sidecars, subnet files and models are kilobytes to a few megabytes.
MAX_INPUT_BYTES = 64 << 20


class NotARegularFileError(OFAProfileError, OSError):
    """A path names a device node, FIFO, socket or folder: replacing it would break the system's, and reading it
    could block or never end."""


class InputTooLargeError(OFAProfileError, ValueError):
    """An input file far larger than any this project writes: a wrong path, read no further."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def stem_of(path: str | os.PathLike, suffixes: tuple[str, ...]) -> Path:
    """``path`` without one of ``suffixes``; other dots stay, as in ``local_w1.0.latency``.

    A model or predictor is a stem with several files beside it (``STEM.json``, ``STEM.npz``...): users may give
    any of them or the stem itself. ``Path.with_suffix`` would cut ``.0.latency`` from a stem that has none.
    """
    path = Path(path)
    return path.with_suffix("") if path.suffix in suffixes else path


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``.

    Readers never see half a file, and a crash leaves the old file. A symlink is written through (its target is
    replaced); a device node, FIFO, socket or folder is refused (:class:`NotARegularFileError`). The file gets
    the mode a plain ``open`` would give it (0666 less the umask), not the temp file's 0600.
    """
    path = _target(Path(path))
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def _target(path: Path) -> Path:
    """The regular file to replace: a symlink's target (the link stays a link), never a special file."""
    target = path.resolve() if path.is_symlink() else path
    try:
        # Through the link: /proc/self/fd/1 resolves to a name such as pipe:[N] that no stat finds.
        mode = path.stat().st_mode
    except FileNotFoundError:
        return target
    kind = _special_kind(mode)
    if kind:
        via = f" (through the symlink {path})" if target != path else ""
        raise NotARegularFileError(f"{target}{via} is a {kind}, not a regular file; refusing to replace it",
                                   "give a path to a regular file or a new one")
    return target


def _special_kind(mode: int) -> str | None:
    return next((kind for is_kind, kind in _KINDS if is_kind(mode)), None)


def json_loads(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads`` for text from outside: nesting too deep for Python's parser is a ``JSONDecodeError`` (which
    every reader turns into its one-line error), not a ``RecursionError``."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text if isinstance(text, str) else "", 0) from None


def read_input(path: str | os.PathLike, limit_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """An input file's bytes: only a regular file (a FIFO would block, /dev/zero never end) of at most
    ``limit_bytes``, so a wrong path fails at once with one line instead of hanging or filling memory.

    Raises:
        FileNotFoundError: As ``open`` does; callers word it for the kind of file they read.
        NotARegularFileError, InputTooLargeError: Naming the file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        kind = _special_kind(info.st_mode) or ("special file" if not stat.S_ISREG(info.st_mode) else None)
        if kind:
            raise NotARegularFileError(f"{path} is a {kind}, not a regular file", "give the path of a file")
        data = handle.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise InputTooLargeError(f"{path} is larger than {limit_bytes >> 20} MB, more than any input of this "
                                 f"project needs", "check the path")
    return data


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an ``OSError`` that names no file (a full disk on ``write``) the path being written."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            err.filename = str(path)
        raise


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (models are megabytes; tens of milliseconds each)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
