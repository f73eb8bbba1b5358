"""Whole subnets timed on the device with the table's protocol: each against the reference, in one agent run.

Used by every check of a table against reality (``--subnets``, ``--calibrate``, the closed-loop search and the
fidelity benchmark), so predictions and measurements are always compared at the table's anchor: a subnet's
measured value is its ratio to the reference times the table's ``anchor_ms``, and drift between the table run
and now cancels. The absolute time, as measured now, is kept beside it, with the plain loop's (``steady_ms``).
A run whose blocked times disagree with the subnets' plain loops (:mod:`profiler.steady`) is measured again in
longer blocks.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from profiler.devices import DeviceProfile
from profiler.measure import measure_models, result_key
from profiler.protocol import Protocol
from profiler.reference import Reference, reference_ms, run_anchor, stats_ms
from profiler.steady import check_regime, next_blocks, regime_ratio
from profiler.transports.base import Transport
from supernet import Arch
from supernet.errors import OFAProfileError
from supernet.model_cache import subnet_model

__all__ = ["SubnetMeasurementError", "measure_subnets"]

log = logging.getLogger(__name__)


class SubnetMeasurementError(OFAProfileError, RuntimeError):
    """A subnet the device could not time; the message names it and what the agent said."""


def measure_subnets(
    profile: DeviceProfile,
    transport: Transport,
    archs: Sequence[Arch],
    *,
    width_mult: float,
    n_classes: int,
    anchor_ms: float | None,
    reference: Reference,
    protocol: Protocol,
    cache_dir: Path,
    scratch: Path,
    work_name: str = "subnets",
) -> list[dict[str, Any]]:
    """One dict per arch: ``measured_ms`` (at the anchor), p10/p90, ``absolute_ms``, ``steady_ms`` (the plain
    loop's median, absolute), ``regime`` (blocked over plain-loop median), ``ratio``, ``reference`` (its id),
    ``reference_ms``, ``anchor_ms``, ``block_ms``, ``settle_ms``, ``memory_mb`` (see :func:`_memory_mb`). The
    anchor is that of ``reference`` (the table's); without one (no table), the run's own median reference latency
    is the anchor."""
    models = [subnet_model(f"subnet-{i}", arch, width_mult, n_classes, profile.model_format, cache_dir, profile.batch,
                           profile.precision) for i, arch in enumerate(archs)]
    while True:
        results = _time(profile, transport, models, archs, protocol, reference, cache_dir, scratch,
                        f"{work_name}.b{protocol.block_ms:g}")
        check = check_regime(results, protocol)
        escalate = None if check is None or check.passed else next_blocks(check.block_ms, check.settle_ms)
        if escalate is None:
            break
        log.warning("%s: blocked timing disagrees with a plain loop (%s); measuring again in %g ms blocks",
                    transport, check.describe(), escalate["block_ms"])
        protocol = dataclasses.replace(protocol, **escalate)
    if anchor_ms is None:
        anchor_ms = run_anchor([{"reference_ms": reference_ms(result)} for result in results])
    measured = []
    for result in results:
        stats = stats_ms(result, anchor_ms)
        steady = result.get("steady_samples_ms")
        measured.append({
            "measured_ms": stats["median"],
            "measured_p10_ms": stats["p10"],
            "measured_p90_ms": stats["p90"],
            "absolute_ms": result["summary"]["median"],
            "steady_ms": statistics.median(steady) if steady else None,
            "regime": regime_ratio(result),
            "ratio": (result.get("ratio") or {}).get("median"),
            "reference": reference.id,
            "reference_ms": reference_ms(result),
            "anchor_ms": anchor_ms,
            "block_ms": result.get("block_ms"),
            "settle_ms": result.get("settle_ms"),
            "count": stats["count"],
            "memory_mb": _memory_mb(result),
        })
    return measured


def _memory_mb(result: dict[str, Any]) -> float | None:
    """The peak memory the subnet added while it loaded and ran: the Python agent's VmHWM growth, or on a phone
    ``benchmark_model``'s overall footprint (its growth from the tool's start, in the builds that print one); None
    where the agent could not tell."""
    memory = result.get("memory_mb") or {}
    return next((memory[key] for key in ("peak_growth", "overall", "peak") if memory.get(key) is not None), None)


def _time(profile: DeviceProfile, transport: Transport, models: Sequence[dict[str, Any]], archs: Sequence[Arch],
          protocol: Protocol, reference: Reference, cache_dir: Path, scratch: Path,
          work_name: str) -> list[dict[str, Any]]:
    """One agent run over the subnets; their results in order."""
    remote = transport.join(profile.remote_dir or "/tmp/ofa-profile", work_name)
    if profile.transport == "local":
        remote = str(scratch / f".{work_name}.work")
    reference_model = reference.model(profile, cache_dir)
    # Named by what the result depends on: a killed run's leftover results in the work folder are reused only
    # for the same model file, shapes and settings.
    keyed = [{**model, "name": f"{model['name']}-{result_key(profile, protocol, model, reference_model)}"}
             for model in models]
    run = measure_models(profile, transport, keyed, protocol, remote, scratch, reference=reference_model)
    results = []
    for i, (arch, model) in enumerate(zip(archs, keyed, strict=True)):
        result = run.results.get(model["name"])
        if result is None:
            error = run.errors.get(model["name"], {}).get("error", "no result")
            raise SubnetMeasurementError(f"{transport}: subnet {i} ({arch.to_json()}) could not be measured: {error}")
        results.append(result)
    return results
