"""How rows are timed: warm-up, minimum count and time, re-measuring wide rows, watching for drift.

Settings a table records in its sidecar so that anyone can see how its numbers were taken (docs/measurement.md).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from supernet.errors import OFAProfileError

__all__ = ["Protocol", "ProtocolError", "flag_of", "spread"]


# The ofa-profile flag of each setting, for messages a user can act on.
_FLAGS = {"min_time_s": "--min-time", "cooldown_s": "--cooldown", "backoff_s": "--backoff"}


def flag_of(name: str) -> str:
    """The ofa-profile flag that sets the Protocol field ``name``."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


class ProtocolError(OFAProfileError, ValueError):
    """A measurement setting out of range; the message names it and its allowed range."""

    exit_code = 2


@dataclass(frozen=True)
class Protocol:
    """Measurement settings.

    Args:
        warmup: Untimed runs before timing each model.
        min_count: Timed runs at least.
        min_time_s: Seconds of timed runs at least (whichever of count and time comes last).
        max_cv: Rows whose spread (see :func:`spread`) exceeds this are measured again.
        retries: How many times a wide row is measured again; the attempt with the lowest spread is kept. On
            this machine an attempt is steady (spread <= 5%) about 40% of the time, independently of earlier
            attempts (the VM's speed shifts by up to 25% within tens of ms): 6 retries bring ~97% of rows there.
        batch_rows: Rows per agent run: the device keeps each run's results until the host has them.
        drift_tolerance: A reference workload, timed before every batch, that moves more than this fraction
            from its first median marks a drift: the run cools down and measures the batch again.
        cooldown_s: Seconds to wait when drift is seen.
        max_drift_retries: Batches measured again because of drift, at most, before the run goes on regardless.
        seed: Seed of the shuffled row order.
        min_sample_ms: Each raw sample times enough back-to-back runs to last this long (Python agent): a run of
            microseconds alone is mostly timer and dispatch jitter. 0 times every run alone.
        reconnects: When the device goes away, reconnect this many times before stopping (resumably).
        backoff_s: Seconds before the first reconnect; each next one waits twice as long.
        evict_cache_mb: Write a buffer of this many MB before each timed run (Python agent only), so units are
            timed with cold caches as inside a whole network; 0 keeps caches warm (calibration corrects sums).
        block_ms: Every item is timed in alternating blocks of about this many ms with the reference workload
            (:mod:`profiler.reference`), so its ratio to the reference holds while the device's speed drifts.
        settle_ms: The first runs of each block, this many ms of them, are discarded: the block starts timing in
            the steady state. A run escalates both where its blocks disagree with a plain loop
            (:mod:`profiler.steady`).
        steady_count: Samples of the plain back-to-back loop that times each item before its blocks: latency as
            users measure it, which the blocks are checked against. 0 turns the check off.
        regime_tolerance: A batch whose items' blocked/plain-loop median ratio is further than this from 1 is
            measured again in longer blocks (widened for small batches, :func:`profiler.steady.check_regime`).
        profile_runs: Profiled runs of a whole network whose time is split among its units (in-network rows). The
            shares are the noisy part of a row taken from one network. With each node's mean time, two table
            runs agreed within 5% on 90% of rows with 20 profiled runs and on 96-97% with 80; the agent now takes
            each node's median, which is steadier with 40 runs than means were with 80.
        profile_sessions: The profiled runs are shared among this many sessions of the network, each loaded afresh,
            and each node's medians averaged: a node's time also moves with where one load's memory lands. Unit
            shares of two profiles agreed within 5% for 92.8% of units from one session of 40 runs and for 96.7%
            from two of 20 (docs/measurement.md).
    """

    warmup: int = 5
    min_count: int = 30
    min_time_s: float = 0.2
    max_cv: float = 0.05
    retries: int = 6
    batch_rows: int = 40
    drift_tolerance: float = 0.25
    cooldown_s: float = 10.0
    max_drift_retries: int = 2
    seed: int = 0
    min_sample_ms: float = 1.0
    reconnects: int = 3
    backoff_s: float = 5.0
    evict_cache_mb: int = 0
    block_ms: float = 25.0
    settle_ms: float = 0.0
    steady_count: int = 10
    regime_tolerance: float = 0.02
    profile_runs: int = 40
    profile_sessions: int = 2

    def __post_init__(self) -> None:
        for name in ("min_count", "batch_rows", "profile_runs", "profile_sessions"):
            if getattr(self, name) < 1:
                raise ProtocolError(f"{flag_of(name)} {getattr(self, name)} must be at least 1")
        if self.profile_sessions > self.profile_runs:
            raise ProtocolError(f"--profile-sessions {self.profile_sessions} cannot exceed --profile-runs "
                                f"{self.profile_runs}: each session needs a run")
        for name in ("warmup", "retries", "max_drift_retries", "evict_cache_mb", "reconnects", "steady_count"):
            if getattr(self, name) < 0:
                raise ProtocolError(f"{flag_of(name)} {getattr(self, name)} must be 0 or more")
        for name, unit in (("min_time_s", "seconds"), ("cooldown_s", "seconds"), ("backoff_s", "seconds"),
                           ("min_sample_ms", "ms"), ("block_ms", "ms"), ("settle_ms", "ms")):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ProtocolError(f"{flag_of(name)} {value} must be a finite number of {unit}, 0 or more")
        for name in ("max_cv", "drift_tolerance", "regime_tolerance"):
            if not 0 < getattr(self, name) < 1:  # also refuses NaN
                raise ProtocolError(f"{flag_of(name)} {getattr(self, name)} must be a fraction between 0 and 1")

    def agent_settings(self) -> dict[str, Any]:
        settings = {"warmup": self.warmup, "min_count": self.min_count, "min_time_s": self.min_time_s,
                    "block_ms": self.block_ms, "settle_ms": self.settle_ms, "steady_min_count": self.steady_count,
                    "profile_runs": self.profile_runs, "profile_sessions": self.profile_sessions}
        if self.evict_cache_mb:
            settings["evict_cache_mb"] = self.evict_cache_mb
        return settings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Protocol:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def spread(result: Mapping[str, Any]) -> float:
    """Relative spread of one measurement: 1.4826 · MAD / median of its raw samples (of its ratios, if any).

    The table value is the median, so its spread is measured around the median too: a robust coefficient of
    variation (equal to std / mean for normal noise) that one preempted run among hundreds does not inflate.
    A result timed against the reference is judged by its ratios, which are its values. Runtimes that report only
    aggregates (TF-Lite's benchmark_model without the reference) fall back to std / mean.
    """
    samples = result.get("ratio_samples") or result.get("samples_ms") or []
    if len(samples) >= 5:
        median = statistics.median(samples)
        mad = statistics.median(abs(x - median) for x in samples)
        return 1.4826 * mad / median if median > 0 else float("inf")
    summary = result["summary"]
    return summary["std"] / summary["mean"] if summary["mean"] > 0 else float("inf")
