"""What a table run's journal says so far: the kept record per item, attempts per item, the anchor, batches.

The journal is the run's truth; this folds it, so a restarted run knows exactly what is measured and what is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler.journal import Journal
from profiler.reference import run_anchor

__all__ = ["RunState", "journal_path", "load_state"]


def journal_path(table: Path) -> Path:
    return table.with_name(table.stem + ".samples.jsonl")


@dataclass
class RunState:
    """Kept record (lowest spread) per item, attempts per item, the reference baseline and re-anchoring."""

    kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    baseline_ms: float | None = None
    environment: dict[str, Any] | None = None
    batches: set[str] = field(default_factory=set)
    reanchored: dict[str, Any] | None = None

    def keep(self, record: dict[str, Any]) -> None:
        key = record["key"]
        self.attempts[key] = max(self.attempts.get(key, 0), record["attempt"])
        kept = self.kept.get(key)
        if kept is None or record["cv"] < kept["cv"]:
            self.kept[key] = record

    @property
    def anchor_ms(self) -> float | None:
        """The reference's latency that ratios are multiplied by: a re-anchoring, else the run's own median."""
        if self.reanchored:
            return self.reanchored["anchor_ms"]
        return run_anchor(list(self.kept.values()))

    def anchor(self) -> dict[str, Any] | None:
        """The anchor as the sidecar states it."""
        if self.reanchored:
            return {**self.reanchored, "from": "the reference timed alone (ofa-profile --reanchor)"}
        value = self.anchor_ms
        if value is None:
            return None
        times = sorted(record["time"] for record in self.kept.values() if record.get("reference_ms"))
        return {"anchor_ms": value, "from": "median of the reference blocks every kept row was timed against",
                "first": times[0], "last": times[-1]}


def load_state(journal: Journal) -> RunState:
    state = RunState()
    for record in journal.records():
        kind = record.get("type")
        if "batch" in record:
            state.batches.add(record["batch"])
        if kind == "row":
            state.keep(record)
        elif kind == "reference":
            state.baseline_ms = record["median_ms"]
        elif kind == "anchor":
            state.reanchored = {k: record[k] for k in ("anchor_ms", "time", "count")}
        elif kind == "environment" and state.environment is None:
            state.environment = record["environment"]
    return state
