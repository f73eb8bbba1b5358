"""Whole subnets on the device: re-measure what a search found, and calibrate table sums.

``ofa-profile --subnets found.json`` exports each arch as one network, times it end to end with the table's
protocol, and writes measured against table-predicted latency (CSV and a PNG plot). ``--calibrate N`` times N
random subnets together with their own units, shuffled in the same batches, and fits measured ≈ a·sum + b.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from predictors.latency import LatencyPredictor
from predictors.table_io import Table, read_table, write_table
from profiler.calibration import Calibration, fit_calibration
from profiler.devices import DeviceProfile
from profiler.measure import measure_models
from profiler.protocol import Protocol
from profiler.transports.base import Transport
from supernet import Arch, OFAMobileNetV3, count_macs
from supernet.export import SUFFIXES, export_module, export_units
from supernet.units import units_of

__all__ = ["calibrate", "plot_predicted_vs_measured", "remeasure"]

_SUPERNET_SEED = 0


def _supernet(width_mult: float, n_classes: int) -> OFAMobileNetV3:
    """Seeded random weights: latency does not depend on their values, and exports stay reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SUPERNET_SEED)
        return OFAMobileNetV3(width_mult=width_mult, n_classes=n_classes).eval()


def subnet_model(
    arch: Arch, supernet: OFAMobileNetV3, profile: DeviceProfile, cache_dir: Path
) -> tuple[Path, list[int]]:
    """The exported whole subnet (cached by arch, width, classes, batch and format) and its input shape."""
    fmt = profile.model_format
    shape = [profile.batch, 3, arch.r, arch.r]
    recipe = f"{arch.canonical().to_json()}|w{supernet.width_mult}|c{supernet.n_classes}|{shape}|{torch.__version__}"
    path = Path(cache_dir) / f"subnet-{hashlib.sha256(recipe.encode()).hexdigest()[:24]}{SUFFIXES[fmt]}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        export_module(supernet.extract(arch), fmt, path, shape)
    return path, shape


def remeasure(
    profile: DeviceProfile,
    transport: Transport,
    archs: Sequence[Arch],
    table_path: Path,
    out_csv: Path,
    cache_dir: Path,
    protocol: Protocol,
) -> pd.DataFrame:
    """Measure each arch end to end; write measured and predicted (raw and, if fitted, calibrated) side by side."""
    table = read_table(table_path)
    width, n_classes = float(table.meta.get("width_mult", 1.2)), int(table.meta.get("n_classes", 1000))
    predictor = LatencyPredictor(table)
    predicted = predictor.predict(archs)
    supernet = _supernet(width, n_classes)
    models = []
    for i, arch in enumerate(archs):
        path, shape = subnet_model(arch, supernet, profile, cache_dir)
        models.append({"name": f"subnet-{i}", "path": str(path), "inputs": [shape]})
    remote = transport.join(profile.remote_dir or "/tmp/ofa-profile", "subnets")
    if profile.transport == "local":
        remote = str(out_csv.parent / f".{out_csv.stem}.work")
    run = measure_models(profile, transport, models, protocol, remote, out_csv.parent)
    rows = []
    for i, arch in enumerate(archs):
        result = run.results.get(f"subnet-{i}")
        if result is None:
            error = run.errors.get(f"subnet-{i}", {}).get("error", "no result")
            raise RuntimeError(f"{transport}: subnet {i} ({arch.to_json()}) could not be measured: {error}")
        s = result["summary"]
        rows.append(
            {
                "arch": arch.to_json(),
                "resolution": arch.r,
                "macs_m": count_macs(arch, width, n_classes) / 1e6,
                "predicted_ms": float(predicted[i]),
                "measured_ms": s["median"],
                "measured_p10_ms": s["p10"],
                "measured_p90_ms": s["p90"],
                "count": s["count"],
                "error_pct": (float(predicted[i]) - s["median"]) / s["median"] * 100,
            }
        )
    frame = pd.DataFrame(rows)
    if "calibration" in table.meta:
        calibration = Calibration.from_dict(table.meta["calibration"])
        frame["calibrated_ms"] = calibration.apply(frame["predicted_ms"].to_numpy())
        frame["calibrated_error_pct"] = (frame["calibrated_ms"] - frame["measured_ms"]) / frame["measured_ms"] * 100
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(f".{out_csv.name}.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(out_csv)
    return frame


def plot_predicted_vs_measured(frame: pd.DataFrame, png: Path, title: str) -> Path:
    """Scatter of table-predicted against measured latency, with y = x and a ±10% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    measured = frame["measured_ms"].to_numpy()
    ax.scatter(measured, frame["predicted_ms"], s=18, label="table sum")
    if "calibrated_ms" in frame:
        ax.scatter(measured, frame["calibrated_ms"], s=18, marker="x", label="calibrated")
    lo, hi = 0.9 * measured.min(), 1.1 * measured.max()
    line = np.linspace(lo, hi, 10)
    ax.plot(line, line, color="black", linewidth=1, label="y = x")
    ax.fill_between(line, 0.9 * line, 1.1 * line, color="grey", alpha=0.2, label="±10%")
    ax.set_xlabel("measured latency (ms, median)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def calibrate(
    profile: DeviceProfile,
    transport: Transport,
    table_path: Path,
    n_subnets: int,
    cache_dir: Path,
    protocol: Protocol,
    seed: int = 0,
) -> Calibration:
    """Fit measured ≈ a·sum + b on ``n_subnets`` random subnets timed in the same batches as their units.

    The sums come from the units measured in this run (not the table), so drift between the table run and now
    does not leak into the fit. The fit is stored in the table's sidecar under ``calibration``.
    """
    table = read_table(table_path)
    width, n_classes = float(table.meta.get("width_mult", 1.2)), int(table.meta.get("n_classes", 1000))
    resolutions = table.resolutions
    rng = random.Random(seed)
    space = OFAMobileNetV3(width_mult=width, n_classes=n_classes).space
    archs = [space.sample(rng).with_resolution(rng.choice(resolutions)) for _ in range(n_subnets)]
    supernet = _supernet(width, n_classes)
    sums, measured = [], []
    scratch = table_path.parent
    for i, arch in enumerate(archs):
        units = units_of(arch, width, n_classes)
        unique = list({u.key: u for u in units}.values())
        paths = export_units(unique, profile.model_format, cache_dir)
        models = [
            {"name": u.key, "path": str(p), "inputs": [[profile.batch, *u.input_shape[1:]]]}
            for u, p in zip(unique, paths, strict=True)
        ]
        path, shape = subnet_model(arch, supernet, profile, cache_dir)
        models.append({"name": "subnet", "path": str(path), "inputs": [shape]})
        rng.shuffle(models)
        remote = transport.join(profile.remote_dir or "/tmp/ofa-profile", f"calibrate{i}")
        if profile.transport == "local":
            remote = str(scratch / f".{table_path.stem}.calibrate{i}")
        run = measure_models(profile, transport, models, protocol, remote, scratch)
        medians = {name: record["summary"]["median"] for name, record in run.results.items()}
        missing = [m["name"] for m in models if m["name"] not in medians]
        if missing:
            raise RuntimeError(f"{transport}: calibration subnet {i} lacks measurements of {missing[:3]}")
        sums.append(sum(medians[u.key] for u in units))
        measured.append(medians["subnet"])
    calibration = fit_calibration(sums, measured)
    stored = read_table(table_path)
    write_table(table_path, Table(stored.rows, {**stored.meta, "calibration": calibration.to_dict()}))
    return calibration

