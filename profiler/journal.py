"""The durable record of a table run: one JSON line per measured row, raw samples included.

Every line is flushed and fsynced before the next row starts, so a run killed at any moment loses at most the
row it was measuring. The CSV table is derived from the journal (atomically rewritten), never the other way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Journal"]


class Journal:
    """Append-only JSONL of measurements; a torn last line (the process died mid-write) is ignored and cut."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._repair()

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f"{self.path}: line {number} is not JSON; the journal was edited by hand? "
                                     f"Remove that line to go on") from None

    def append(self, *records: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
