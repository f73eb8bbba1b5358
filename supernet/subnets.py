"""Subnet files: what ``ofa-search`` writes and ``ofa-profile --subnets`` reads.

Accepted shapes (JSON): one OFA arch ``{"ks": [...], "e": [...], "d": [...], "r": [224]}``; a list of archs; a list
of objects each with an ``"arch"``; or an object with ``"subnets"`` holding such a list (``ofa-search --json``
output, which also carries each subnet's predicted accuracy, latency and MACs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from supernet.arch import Arch, ArchError
from supernet.errors import OFAProfileError
from supernet.files import atomic_write, json_loads, read_input

__all__ = ["SUBNETS_SCHEMA_VERSION", "SubnetFileError", "parse_subnets", "read_subnet_document", "read_subnets",
           "subnet_entries", "write_subnets"]

SUBNETS_SCHEMA_VERSION = 1


class SubnetFileError(OFAProfileError, ValueError):
    """A subnet file that is not one of the accepted shapes, or holds an invalid arch; names the entry."""


def _arch(entry: Any, where: str) -> Arch:
    try:
        return Arch.from_dict(entry)
    except ArchError as err:
        raise SubnetFileError(f"{where}: {err}") from None


def subnet_entries(document: Any, where: str = "subnets") -> list[Any]:
    """The arch objects of a parsed subnet document, unwrapped from ``{"arch": ...}`` (not yet checked)."""
    if isinstance(document, Mapping) and "subnets" in document:
        document = document["subnets"]
    if isinstance(document, Mapping):
        document = [document]
    if not isinstance(document, Sequence) or isinstance(document, (str, bytes)):
        raise SubnetFileError(f"{where}: expected an arch object, a list of them, or {{\"subnets\": [...]}}; "
                              f"got {type(document).__name__}")
    if not document:
        raise SubnetFileError(f"{where}: the list of subnets is empty")
    return [entry["arch"] if isinstance(entry, Mapping) and "arch" in entry else entry for entry in document]


def parse_subnets(document: Any, where: str = "subnets") -> list[Arch]:
    """The archs of a parsed subnet document (see the module docstring for the shapes)."""
    entries = subnet_entries(document, where)
    if isinstance(document, Mapping) and "subnets" not in document:  # one arch object
        return [_arch(entries[0], where)]
    return [_arch(entry, f"{where}: entry {i}") for i, entry in enumerate(entries)]


def read_subnet_document(path: str | os.PathLike) -> Any:
    """A subnet file's parsed JSON; a missing, malformed or non-UTF-8 file is one clear error."""
    path = Path(path)
    try:
        return json_loads(read_input(path).decode("utf-8"))
    except FileNotFoundError:
        raise SubnetFileError(f"{path}: no such file; write one with ofa-search --out {path}") from None
    except json.JSONDecodeError as err:
        raise SubnetFileError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise SubnetFileError(f"{path}: not a UTF-8 text file ({err.reason})", "save it as UTF-8 JSON") from None


def read_subnets(path: str | os.PathLike) -> list[Arch]:
    """The archs of a subnet file."""
    return parse_subnets(read_subnet_document(path), str(path))


def write_subnets(path: str | os.PathLike, document: Mapping[str, Any]) -> Path:
    """Write a subnet document atomically (temp file, then ``os.replace``)."""
    path = Path(path)
    atomic_write(path, json.dumps(document, indent=2) + "\n")
    return path
