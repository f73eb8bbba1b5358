"""The fixed reference workloads items are timed against, and the anchor that turns ratios into ms.

The device's speed drifts by several percent within minutes, but a model and a reference timed in alternating
blocks drift together: their ratio holds where either time alone does not (docs/measurement.md). A table keeps each
row's ratio, and its values in ms are those ratios times the *anchor*: the reference's latency at a stated device
state (the median of the reference over the run that built the table, or a later timing of the reference alone when
the table is re-anchored). The sidecar records which reference and which anchor.

There are two references, chosen with ``ofa-profile --reference``: one mid-sized block (the default: it tracked
covering subnets best across an hour of drift) and a small whole subnet (steadier within minutes); the figures are
in docs/measurement.md. Whole subnets measured against a table use that table's reference, so that they are stated
at its anchor. Tables and journals written before there were two references name none: theirs is the block.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.devices import DeviceProfile
from supernet.arch import Arch
from supernet.errors import OFAProfileError
from supernet.model_cache import agent_model, export_unit, subnet_model
from supernet.units import Unit

__all__ = [
    "BLOCK_REFERENCE",
    "NETWORK_REFERENCE",
    "REFERENCE_IDS",
    "REFERENCE_NAME",
    "STATS",
    "Reference",
    "UnknownReferenceError",
    "reference_named",
    "reference_of",
    "stats_ms",
]

REFERENCE_NAME = "reference"
STATS = ("median", "mean", "std", "p10", "p90")


class UnknownReferenceError(OFAProfileError, ValueError):
    """A table or data set names a reference workload this version does not know."""


@dataclass(frozen=True)
class Reference:
    """One reference workload: a unit exported alone (``unit``) or a whole subnet of the w1.0 supernet (``arch``).

    ``id`` names it in sidecars, journals and subnet CSVs: ratios against different references do not mix.
    """

    id: str
    unit: Unit | None = None
    arch: Arch | None = None
    seed: int = 1
    width_mult: float = 1.0
    n_classes: int = 1000

    def model(self, profile: DeviceProfile, cache_dir: Path) -> dict[str, Any]:
        """The workload as a model mapping (name, exported file, input shape) for the agents, in the profile's
        precision: an int8 item alternating with a float workload switches kernels at every block, and read up to
        13% slower in blocks than in a plain loop."""
        if self.arch is not None:
            return subnet_model(REFERENCE_NAME, self.arch, self.width_mult, self.n_classes, profile.model_format,
                                cache_dir, profile.batch, profile.precision)

        path = export_unit(self.unit, profile.model_format, cache_dir, seed=self.seed, batch=profile.batch,
                           precision=profile.precision)
        return agent_model(REFERENCE_NAME, path, (profile.batch, *self.unit.input_shape[1:]), profile.model_format)

    def describe(self) -> dict[str, Any]:
        if self.arch is not None:
            return {"name": REFERENCE_NAME, "id": self.id, "subnet": self.arch.to_json(),
                    "width_mult": self.width_mult, "n_classes": self.n_classes}
        return {"name": REFERENCE_NAME, "id": self.id, "key": self.unit.key, "seed": self.seed}


# A mid-sized block of w1.0 tables (r=224); its own export seed keeps its file apart from that row's.
BLOCK_REFERENCE = Reference("block", unit=Unit.block(28, 40, 40, 160, 5, 1, idskip=True, se=True, hs=False))
# The smallest subnet shape at r=160 (about 1.5 ms here, so a 25 ms block holds a dozen runs).
NETWORK_REFERENCE = Reference("network", arch=Arch((3,) * 20, (3,) * 20, (2,) * 5, 160))
_REFERENCES = {reference.id: reference for reference in (BLOCK_REFERENCE, NETWORK_REFERENCE)}
REFERENCE_IDS = tuple(_REFERENCES)


def reference_named(name: str) -> Reference:
    """The reference ``ofa-profile --reference NAME`` means."""
    if name not in _REFERENCES:
        raise UnknownReferenceError(f"unknown reference workload {name!r}; use one of {', '.join(_REFERENCES)}")
    return _REFERENCES[name]


def reference_of(meta: Mapping[str, Any] | None) -> Reference:
    """The reference a table's sidecar (or a model's metadata) names; the block where it names none (older)."""
    name = ((meta or {}).get("reference") or {}).get("id", BLOCK_REFERENCE.id)
    if name not in _REFERENCES:
        raise UnknownReferenceError(f"the table was timed against a reference workload {name!r} this version does "
                                    f"not know ({', '.join(_REFERENCES)}); upgrade ofa-profile, or build the table "
                                    f"again")
    return _REFERENCES[name]


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
