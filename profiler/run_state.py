"""What a table run's journal says so far: the kept record per item, attempts per item, the anchor, batches.

The journal is the run's truth; this folds it, so a restarted run knows exactly what is measured and what is not.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler.journal import Journal
from profiler.records import row_problem
from profiler.reference import BLOCK_REFERENCE, run_anchor

__all__ = ["RunState", "journal_path", "load_state"]


def journal_path(table: Path) -> Path:
    return table.with_name(table.stem + ".samples.jsonl")


@dataclass
class RunState:
    """Kept record (lowest spread) per item, attempts per item, the reference baseline and re-anchoring, and the
    regime checks with the blocks they escalated to (:mod:`profiler.steady`)."""

    kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    baseline_ms: float | None = None
    environment: dict[str, Any] | None = None
    batches: set[str] = field(default_factory=set)
    reanchored: dict[str, Any] | None = None
    set_aside: list[tuple[int, str]] = field(default_factory=list)
    outside: int = 0
    blocks: dict[str, float] | None = None
    regime_checks: list[dict[str, Any]] = field(default_factory=list)

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


def load_state(journal: Journal, names: Collection[str] | None = None, reference_id: str | None = None) -> RunState:
    """Fold the journal. Rows that fail the checks of :mod:`profiler.records` are set aside with their line
    numbers instead of stopping the run; rows of items not among ``names`` (when given: another run's plan on
    the same table) stay in the journal but are not used, and are counted in ``outside``. With
    ``reference_id``, rows, baselines and anchors of another reference workload are set aside too: their
    ratios are to another workload."""
    state = RunState()
    for record in journal.records():
        kind = record.get("type")
        if isinstance(record.get("batch"), str):
            state.batches.add(record["batch"])
        other = _other_reference(record, reference_id)
        if other is not None:
            state.set_aside.append((record["_line"], other))
        elif kind == "row":
            problem = row_problem(record)
            if problem is not None:
                state.set_aside.append((record["_line"], problem))
            elif names is not None and record["key"] not in names:
                state.outside += 1
            else:
                state.keep(record)
        elif kind == "reference" and _positive(record.get("median_ms")):
            state.baseline_ms = record["median_ms"]
        elif kind == "anchor" and _positive(record.get("anchor_ms")):
            state.reanchored = {k: record.get(k) for k in ("anchor_ms", "time", "count")}
        elif kind == "regime" and _positive(record.get("median")):
            state.regime_checks.append({k: v for k, v in record.items() if k not in ("_line", "type", "next")})
            if _blocks(record.get("next")):
                state.blocks = {k: float(record["next"][k]) for k in ("block_ms", "settle_ms")}
        elif kind == "environment" and isinstance(record.get("environment"), dict):
            state.environment = state.environment or record["environment"]
        elif kind in ("reference", "anchor", "environment", "regime"):
            state.set_aside.append((record["_line"], f"a {kind} record without its value"))
    state.set_aside = sorted(journal.set_aside + state.set_aside)
    return state


def _other_reference(record: dict[str, Any], reference_id: str | None) -> str | None:
    """Why a record timed against another reference workload than ``reference_id`` cannot be used, or None."""
    timed = record.get("type") in ("reference", "anchor") or record.get("reference_ms") is not None
    theirs = record.get("reference_id", BLOCK_REFERENCE.id)
    if reference_id is None or not timed or theirs == reference_id:
        return None
    return f"timed against the {theirs} reference, and this run times against the {reference_id} one"


def _blocks(value: Any) -> bool:
    """A journaled escalation: the next blocks' length and settling time."""
    return isinstance(value, dict) and _positive(value.get("block_ms")) and _number(value.get("settle_ms"))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")
