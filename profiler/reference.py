"""The fixed reference workload every measurement is timed against, and the anchor that turns ratios into ms.

The device's speed drifts by several percent within minutes (SPEC §6), but a model and a reference timed in
alternating blocks drift together: their ratio holds where either time alone does not. A table keeps each row's
ratio, and its values in ms are those ratios times the *anchor*: the reference's latency at a stated device state
(the median of the reference over the run that built the table, or a later timing of the reference alone when the
table is re-anchored). The sidecar records which.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from profiler.devices import DeviceProfile
from supernet.units import Unit

__all__ = ["REFERENCE_NAME", "REFERENCE_SEED", "REFERENCE_UNIT", "STATS", "reference_model", "stats_ms"]

# A mid-sized block of w1.0 tables (r=224); its own export seed keeps its file apart from that row's.
REFERENCE_UNIT = Unit.block(28, 40, 40, 160, 5, 1, idskip=True, se=True, hs=False)
REFERENCE_NAME = "reference"
REFERENCE_SEED = 1
STATS = ("median", "mean", "std", "p10", "p90")


def reference_model(profile: DeviceProfile, cache_dir: Path) -> dict[str, Any]:
    """The reference workload as a model mapping (name, exported file, input shape) for the agents."""
    from supernet.export import export_unit  # torch: only when something is exported

    path = export_unit(REFERENCE_UNIT, profile.model_format, cache_dir, seed=REFERENCE_SEED, batch=profile.batch)
    return {"name": REFERENCE_NAME, "path": str(path), "inputs": [[profile.batch, *REFERENCE_UNIT.input_shape[1:]]]}


def reference_ms(result: Mapping[str, Any]) -> float | None:
    """The median of the reference blocks a result was timed against; None if it was timed alone."""
    reference = result.get("reference")
    return reference["summary"]["median"] if reference else None


def run_anchor(records: list[Mapping[str, Any]]) -> float | None:
    """The anchor of a run: the median over its journal records of the reference they were timed against."""
    values = [record["reference_ms"] for record in records if record.get("reference_ms")]
    return statistics.median(values) if values else None


def stats_ms(result: Mapping[str, Any], anchor_ms: float | None) -> dict[str, float | None]:
    """A result's statistics in ms at the anchor's device state: its ratios times the anchor.

    Results timed without the reference (older journals, runtimes without interleaving) give their absolute
    times, as measured.
    """
    ratio = result.get("ratio")
    if ratio and anchor_ms:
        stats = {name: (ratio[name] * anchor_ms if ratio.get(name) is not None else None) for name in STATS}
    else:
        stats = {name: result["summary"].get(name) for name in STATS}
    return {**stats, "count": result["summary"]["count"]}
