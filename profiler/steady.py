"""Does drift-proofing leave latency as users measure it? The regime check, batch by batch.

Latency is the steady state of back-to-back runs after a warm-up (``benchmark_model``, ``onnxruntime_perf_test``).
The agent times each item first in a plain loop of that kind, then in blocks alternating with the reference
workload, whose ratios make the table drift-proof. Blocks that are too short take an item out of its steady state
(caches, frequency, the runtime's thread pool: docs/measurement.md): on the host the issue was filed on, 25 ms
blocks read a 160 px subnet 1.18x slower than a plain loop. So each batch compares the two: the median over its
items of blocked median / plain-loop median must be within a tolerance of 1. Where it is not, the batch is
discarded, the blocks get longer and their first runs are discarded (:data:`LADDER`), and the batch is measured
again. The check and every escalation are journaled; the sidecar states them.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from profiler.protocol import Protocol

__all__ = ["ITEM_NOISE", "LADDER", "RegimeCheck", "check_regime", "next_blocks", "regime_ratio",
           "regime_summary", "with_table_blocks"]

# (block_ms, settle_ms) steps, shortest first: each is tried when the one before it failed the check.
LADDER: tuple[tuple[float, float], ...] = ((25.0, 0.0), (50.0, 10.0), (100.0, 25.0), (200.0, 50.0), (400.0, 100.0))

# One item's blocked/plain ratio scatters by this much (robust CV) with no regime effect at all: measured over
# 21 items, four passes, 25 ms blocks on this project's 2-core VM (docs/measurement.md).
ITEM_NOISE = 0.022


def regime_ratio(result: Mapping[str, Any]) -> float | None:
    """Blocked median over plain-loop median of one item's result; None without a plain loop (benchmark_model)."""
    steady = result.get("steady_samples_ms")
    samples = result.get("samples_ms")
    if not steady or not samples:
        return None
    return statistics.median(samples) / statistics.median(steady)


@dataclass(frozen=True)
class RegimeCheck:
    """One batch's check: its items' blocked/plain ratios and whether their median is 1 within ``tolerance``."""

    n: int
    median: float
    p10: float
    p90: float
    tolerance: float
    block_ms: float
    settle_ms: float

    @property
    def passed(self) -> bool:
        return abs(self.median - 1.0) <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}

    def describe(self) -> str:
        return (f"blocked/plain-loop median {self.median:.3f} (p10 {self.p10:.3f}, p90 {self.p90:.3f}) over "
                f"{self.n} item(s), tolerance ±{self.tolerance:.1%}, {self.block_ms:g} ms blocks settling "
                f"{self.settle_ms:g} ms")


def check_regime(results: Iterable[Mapping[str, Any]], protocol: Protocol) -> RegimeCheck | None:
    """The check over a batch's results, or None when none has a plain loop to compare with.

    The tolerance is ``protocol.regime_tolerance``, widened for small batches to three standard errors of a
    median of items that each scatter by their own spread (at least :data:`ITEM_NOISE`): a batch of three items
    must not fail on noise alone.
    """
    results = list(results)
    pairs = [(ratio, result) for result in results if (ratio := regime_ratio(result)) is not None]
    if not pairs:
        return None
    ratios = sorted(ratio for ratio, _ in pairs)
    median = statistics.median(ratios)
    if len(ratios) >= 3:
        mad = statistics.median(abs(r - median) for r in ratios)
        scatter = max(1.4826 * mad / median, ITEM_NOISE)
    else:
        scatter = ITEM_NOISE
    tolerance = max(protocol.regime_tolerance, 3 * scatter / math.sqrt(len(ratios)))
    first = pairs[0][1]
    return RegimeCheck(
        n=len(ratios), median=median, p10=_percentile(ratios, 10), p90=_percentile(ratios, 90),
        tolerance=tolerance, block_ms=float(first.get("block_ms", protocol.block_ms)),
        settle_ms=float(first.get("settle_ms", protocol.settle_ms)),
    )


def _percentile(values: Sequence[float], q: float) -> float:
    position = (len(values) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return values[low] + (values[high] - values[low]) * (position - low)


def next_blocks(block_ms: float, settle_ms: float) -> dict[str, float] | None:
    """The first step of :data:`LADDER` longer than ``block_ms`` (settling at least ``settle_ms``), or None when
    the ladder has no longer step."""
    for block, settle in LADDER:
        if block > block_ms:
            return {"block_ms": block, "settle_ms": max(settle, settle_ms)}
    return None


def regime_summary(checks: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """What the sidecar says of a run's checks: how many, how many failed, the last one's figures."""
    if not checks:
        return None
    failed = [check for check in checks if not check.get("passed")]
    last = checks[-1]
    return {"checks": len(checks), "failed": len(failed), "last": {k: v for k, v in last.items() if k != "type"}}


def with_table_blocks(protocol: Protocol, meta: Mapping[str, Any]) -> Protocol:
    """``protocol`` timing in the blocks the table's rows were finally timed in (its sidecar's ``timing``), so
    whole subnets measured against the table are in the same regime as its rows. Settings the user gave
    explicitly longer win."""
    timing = meta.get("timing") or {}
    block, settle = timing.get("block_ms"), timing.get("settle_ms")
    if not isinstance(block, (int, float)) or not isinstance(settle, (int, float)) or block <= protocol.block_ms:
        return protocol
    return dataclasses.replace(protocol, block_ms=float(block), settle_ms=max(float(settle), protocol.settle_ms))
