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

from supernet.files import json_loads, naming

__all__ = ["Journal"]


class Journal:
    """Append-only JSONL of measurements; a torn last line (the process died mid-write) is ignored, and cut by
    :meth:`repair`.

    A line that is not a JSON object (an edited or damaged journal) is skipped and listed in ``set_aside`` as
    ``(line number, reason)``: the lines around it still count.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.set_aside: list[tuple[int, str]] = []

    def repair(self) -> None:
        """Cut a torn last line before appending. Only the table's lock holder may: the last line of a journal
        another run is writing is torn for a moment, and is not the reader's to cut."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        """Each line's record, with its line number under ``"_line"``."""
        self.set_aside = []
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    break  # torn: being written, or its writer died mid-line
                try:
                    record = json_loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
                except (UnicodeDecodeError, ValueError) as err:
                    self.set_aside.append((number, f"not JSON ({err})"))
                    continue
                if not isinstance(record, dict):
                    self.set_aside.append((number, f"a JSON {type(record).__name__}, not an object"))
                    continue
                yield {**record, "_line": number}

    def append(self, *records: dict[str, Any]) -> None:
        lines = "".join(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n" for record in records)
        with naming(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")
