"""Whole subnets on the device against a table: ``ofa-profile --subnets`` and ``--calibrate``.

``--subnets found.json`` times each arch end to end with the table's protocol (:mod:`profiler.whole_subnets`) and
writes measured against predicted latency, raw and calibrated (CSV; the CLI adds the plot). ``--calibrate N``
times N random subnets the same way and fits measured ≈ a·sum + b into the table's sidecar, where
:class:`~predictors.latency.LatencyPredictor` and ``ofa-search`` pick it up.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from predictors.calibration import Calibration, fit_calibration
from predictors.latency import LatencyPredictor
from predictors.table_io import Table, read_table, write_table
from profiler.devices import DeviceProfile
from profiler.protocol import Protocol
from profiler.transports.base import Transport
from profiler.whole_subnets import measure_subnets
from supernet import Arch, ArchSpace, count_macs
from supernet.files import atomic_write

__all__ = ["calibrate", "remeasure", "table_anchor"]


def table_anchor(table: Table) -> float | None:
    """The reference latency the table's values are stated at (None for tables built without the reference)."""
    anchor = (table.meta.get("reference") or {}).get("anchor") or {}
    return anchor.get("anchor_ms")


def compare(
    archs: Sequence[Arch], measured: Sequence[dict], predictor: LatencyPredictor, width: float, n_classes: int
) -> pd.DataFrame:
    """Predicted (calibrated where the table has a calibration, with its interval) against measured, per arch."""
    result = predictor.predict_result(archs)
    frame = pd.DataFrame(measured)
    frame.insert(0, "arch", [arch.to_json() for arch in archs])
    frame.insert(1, "resolution", [arch.r for arch in archs])
    frame.insert(2, "macs_m", [count_macs(arch, width, n_classes) / 1e6 for arch in archs])
    frame["raw_sum_ms"] = result.raw_ms
    frame["predicted_ms"] = result.latency_ms
    frame["low_ms"] = result.low_ms
    frame["high_ms"] = result.high_ms
    frame["calibrated"] = result.calibrated
    frame["error_pct"] = (frame["predicted_ms"] - frame["measured_ms"]) / frame["measured_ms"] * 100
    frame["raw_error_pct"] = (frame["raw_sum_ms"] - frame["measured_ms"]) / frame["measured_ms"] * 100
    return frame


def remeasure(
    profile: DeviceProfile,
    transport: Transport,
    archs: Sequence[Arch],
    table_path: Path,
    out_csv: Path,
    cache_dir: Path,
    protocol: Protocol,
) -> pd.DataFrame:
    """Measure each distinct arch end to end; write measured beside predicted (raw sum and calibrated) to
    ``out_csv``, one line per distinct arch (an arch listed twice is measured once)."""
    table = read_table(table_path)
    predictor = LatencyPredictor(table)
    width, n_classes = predictor.width_mult, predictor.n_classes
    space = ArchSpace.for_width(width)
    archs = list(dict.fromkeys(space.validate(arch) for arch in archs))
    predictor.predict(archs)  # a table that lacks rows or resolutions fails before anything is exported
    measured = measure_subnets(profile, transport, archs, width_mult=width, n_classes=n_classes,
                               anchor_ms=table_anchor(table), protocol=protocol, cache_dir=cache_dir,
                               scratch=out_csv.parent, work_name=out_csv.stem)
    frame = compare(archs, measured, predictor, width, n_classes)
    atomic_write(out_csv, frame.to_csv(index=False))
    return frame


def calibrate(
    profile: DeviceProfile,
    transport: Transport,
    table_path: Path,
    n_subnets: int,
    cache_dir: Path,
    protocol: Protocol,
    seed: int = 0,
) -> Calibration:
    """Fit measured ≈ a·sum + b on ``n_subnets`` random subnets timed against the reference; store it.

    Both sides are stated at the table's anchor (measured ratios times the table's anchor), so drift between the
    table run and now does not leak into the fit.
    """
    table = read_table(table_path)
    predictor = LatencyPredictor(table, calibrated=False)
    width, n_classes = predictor.width_mult, predictor.n_classes
    rng = random.Random(seed)
    space = ArchSpace.for_width(width)
    archs = [space.sample(rng).with_resolution(rng.choice(table.resolutions)) for _ in range(n_subnets)]
    sums = predictor.predict(archs)
    measured = measure_subnets(profile, transport, archs, width_mult=width, n_classes=n_classes,
                               anchor_ms=table_anchor(table), protocol=protocol, cache_dir=cache_dir,
                               scratch=table_path.parent, work_name=f"{table_path.stem}.calibrate")
    calibration = fit_calibration(sums, [m["measured_ms"] for m in measured])
    store_calibration(table_path, calibration)
    return calibration


def store_calibration(table_path: Path, calibration: Calibration) -> None:
    stored = read_table(table_path)
    write_table(table_path, Table(stored.rows, {**stored.meta, "calibration": calibration.to_dict()}))
