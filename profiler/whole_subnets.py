"""Whole subnets timed on the device with the table's protocol: each against the reference, in one agent run.

Used by every check of a table against reality (``--subnets``, ``--calibrate``, the closed-loop search and the
fidelity benchmark), so predictions and measurements are always compared at the table's anchor: a subnet's
measured value is its ratio to the reference times the table's ``anchor_ms``, and drift between the table run
and now cancels. The absolute time, as measured now, is kept beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from profiler.devices import DeviceProfile
from profiler.measure import measure_models
from profiler.protocol import Protocol
from profiler.reference import Reference, reference_ms, run_anchor, stats_ms
from profiler.transports.base import Transport
from supernet import Arch
from supernet.errors import OFAProfileError

__all__ = ["SubnetMeasurementError", "measure_subnets", "subnet_model"]


class SubnetMeasurementError(OFAProfileError, RuntimeError):
    """A subnet the device could not time; the message names it and what the agent said."""


def subnet_model(name: str, arch: Arch, width_mult: float, n_classes: int, model_format: str, cache_dir: Path,
                 batch: int) -> dict[str, Any]:
    """A whole subnet as a model mapping for the agents: its name, exported file and input shape.

    An ONNX subnet's file serves every resolution; ``dim_overrides`` tells the agent which one to fix.
    """
    from supernet.export import ONNX_FREE_DIMS, agent_model, export_subnet  # torch: only when exporting

    path = export_subnet(arch, width_mult, n_classes, model_format, cache_dir, batch)
    model = agent_model(name, path, (batch, 3, arch.r, arch.r), model_format)
    if model_format == "onnx":
        model["dim_overrides"] = dict.fromkeys(ONNX_FREE_DIMS, arch.r)
    return model


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
    """One dict per arch: ``measured_ms`` (at the anchor), p10/p90, ``absolute_ms``, ``ratio``, ``reference``
    (its id), ``reference_ms``, ``anchor_ms``. The anchor is that of ``reference`` (the table's); without one (no
    table), the run's own median reference latency is the anchor."""
    models = [subnet_model(f"subnet-{i}", arch, width_mult, n_classes, profile.model_format, cache_dir, profile.batch)
              for i, arch in enumerate(archs)]
    remote = transport.join(profile.remote_dir or "/tmp/ofa-profile", work_name)
    if profile.transport == "local":
        remote = str(scratch / f".{work_name}.work")
    run = measure_models(profile, transport, models, protocol, remote, scratch,
                         reference=reference.model(profile, cache_dir))
    results = []
    for i, arch in enumerate(archs):
        result = run.results.get(f"subnet-{i}")
        if result is None:
            error = run.errors.get(f"subnet-{i}", {}).get("error", "no result")
            raise SubnetMeasurementError(f"{transport}: subnet {i} ({arch.to_json()}) could not be measured: {error}")
        results.append(result)
    if anchor_ms is None:
        anchor_ms = run_anchor([{"reference_ms": reference_ms(result)} for result in results])
    measured = []
    for result in results:
        stats = stats_ms(result, anchor_ms)
        measured.append({
            "measured_ms": stats["median"],
            "measured_p10_ms": stats["p10"],
            "measured_p90_ms": stats["p90"],
            "absolute_ms": result["summary"]["median"],
            "ratio": (result.get("ratio") or {}).get("median"),
            "reference": reference.id,
            "reference_ms": reference_ms(result),
            "anchor_ms": anchor_ms,
            "count": stats["count"],
        })
    return measured
