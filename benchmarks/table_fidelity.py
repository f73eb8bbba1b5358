"""How well do tables predict whole subnets on this machine, and do found subnets meet their budgets? JSON + plots.

All on the local CPU (ONNX Runtime, 1 thread), w1.0 at --resolutions, every measurement timed against the
reference workload and stated at the table's anchor:

1. Tables: isolated rows (each unit alone), and in-network rows (covering subnets split by ONNX Runtime's
   profiler) three times: the same command twice, and once with another seed (another covering set and order).
   The share of rows of two runs that agree within 5% (in ratio to the reference, so the device's speed between
   the runs does not count). With ``--earlier DIR`` the rerun is compared with a table the same command built
   earlier (e.g. an hour before) in DIR.
2. A calibration of the in-network table fitted on ``--calibration-subnets`` subnets of another seed.
3. ``--subnets`` seeded random subnets measured end to end: isolated sums, in-network sums and calibrated
   in-network predictions, each with the share within ±5% and ±10% and the mean signed error.
4. The closed loop over ``--budgets`` budgets spread over the table's range: the share that measure at or under
   their budget, the mean number of rounds, and the predicted top-1 given up against the open-loop pick. The
   released accuracy predictor is for w1.2; on w1.0 archs (the same encoding) it serves as the ranking.

    .venv/bin/python benchmarks/table_fidelity.py --out /tmp/fidelity        # about 15 minutes here
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from predictors.accuracy import AccuracyPredictor
from predictors.latency import LatencyPredictor
from predictors.table_io import read_table
from profiler.cli import main as profile_main
from profiler.closed_loop import closed_loop
from profiler.connect import open_transport
from profiler.devices import resolve_device
from profiler.plots import plot_delivered
from profiler.protocol import Protocol
from profiler.reference import reference_of
from profiler.remeasure import calibrate, compare, table_anchor
from profiler.whole_subnets import measure_subnets
from supernet.arch import ArchSpace

TABLE = "local_w1.0_onnxruntime_cpu.csv"


def _scores(errors_pct: np.ndarray) -> dict[str, float]:
    return {"within_10pct": round(float((np.abs(errors_pct) <= 10).mean()), 3),
            "within_5pct": round(float((np.abs(errors_pct) <= 5).mean()), 3),
            "mean_signed_error_pct": round(float(errors_pct.mean()), 2)}


def _ratios(path: Path) -> pd.Series:
    return pd.read_csv(path).set_index("key")["ratio"]


def _agreement(first: Path, second: Path) -> dict[str, float]:
    a, b = _ratios(first), _ratios(second)
    gap = np.abs(a - b[a.index]) / ((a + b[a.index]) / 2)
    return {"rows": len(gap), "share_within_5pct": round(float((gap <= 0.05).mean()), 3),
            "share_within_10pct": round(float((gap <= 0.10).mean()), 3)}


def _plot(frames: dict[str, pd.DataFrame], png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5))
    measured = next(iter(frames.values()))["measured_ms"].to_numpy()
    for (label, frame), marker in zip(frames.items(), "o^x", strict=False):
        ax.scatter(measured, frame["predicted_ms"], s=16, marker=marker, label=label)
    line = np.linspace(0.9 * measured.min(), 1.1 * measured.max(), 10)
    ax.plot(line, line, color="black", linewidth=1, label="y = x")
    ax.fill_between(line, 0.95 * line, 1.05 * line, color="grey", alpha=0.3, label="±5%")
    ax.set_xlabel("measured latency (ms, at the table's anchor)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/fidelity"))
    parser.add_argument("--resolutions", default="160,192,224")
    parser.add_argument("--subnets", type=int, default=100)
    parser.add_argument("--calibration-subnets", type=int, default=20)
    parser.add_argument("--budgets", type=int, default=20)
    parser.add_argument("--min-time", type=float, default=Protocol().min_time_s)
    parser.add_argument("--earlier", type=Path, help="a folder holding an in-network table built earlier")
    args = parser.parse_args()
    resolutions = [int(r) for r in args.resolutions.split(",")]
    cache = args.out / "cache"
    common = ["--device", "local", "--width", "1.0", "--resolutions", args.resolutions, "--cache", str(cache),
              "--min-time", str(args.min_time), "--quiet"]
    timings = {}
    for name, rows, seed in (("isolated", "isolated", 0), ("in_network_a", "in_network", 0),
                             ("in_network_rerun", "in_network", 0), ("in_network_seed1", "in_network", 1)):
        started = time.perf_counter()
        if profile_main([*common, "--rows", rows, "--out", str(args.out / name), "--seed", str(seed)]) != 0:
            raise SystemExit(f"table run {name} failed")
        timings[name] = round(time.perf_counter() - started, 1)
    isolated, table_a, rerun, seed1 = (args.out / name / TABLE for name in
                                       ("isolated", "in_network_a", "in_network_rerun", "in_network_seed1"))
    earlier = (args.earlier / TABLE) if args.earlier else table_a

    profile = resolve_device("local")
    protocol = Protocol(min_time_s=args.min_time)
    space = ArchSpace.for_width(1.0)
    rng = random.Random(2024)
    archs = [space.sample(rng).with_resolution(rng.choice(resolutions)) for _ in range(args.subnets)]
    calibrated = args.out / "calibrated" / TABLE
    calibrated.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".csv", ".json", ".samples.jsonl"):
        shutil.copy(table_a.with_name(table_a.stem + suffix) if suffix != ".csv" else table_a,
                    calibrated.with_name(calibrated.stem + suffix))
    with open_transport(profile, "localhost") as transport:
        fit = calibrate(profile, transport, calibrated, args.calibration_subnets, cache, protocol, seed=7)
        reference = reference_of(read_table(table_a).meta)
        measured = measure_subnets(profile, transport, archs, width_mult=1.0, n_classes=1000,
                                   anchor_ms=table_anchor(read_table(table_a)), reference=reference,
                                   protocol=protocol, cache_dir=cache, scratch=args.out)
        # Isolated rows have their own anchor: state the same ratios at it (measure again if their reference is
        # another).
        iso_anchor, iso_reference = table_anchor(read_table(isolated)), reference_of(read_table(isolated).meta)
        measured_iso = ([{**m, "measured_ms": m["ratio"] * iso_anchor} for m in measured] if iso_reference == reference
                        else measure_subnets(profile, transport, archs, width_mult=1.0, n_classes=1000,
                                             anchor_ms=iso_anchor, reference=iso_reference, protocol=protocol,
                                             cache_dir=cache, scratch=args.out))
        frames = {
            "isolated rows": compare(archs, measured_iso, LatencyPredictor(isolated, calibrated=False), 1.0, 1000),
            "in-network rows": compare(archs, measured, LatencyPredictor(table_a, calibrated=False), 1.0, 1000),
            "in-network, calibrated": compare(archs, measured, LatencyPredictor(calibrated), 1.0, 1000),
        }
        for label, frame in frames.items():
            frame.to_csv(args.out / f"fidelity_{label.replace(' ', '_').replace(',', '')}.csv", index=False)
        png = _plot(frames, args.out / "fidelity.png",
                    f"{args.subnets} subnets, w1.0, r in {resolutions}, ONNX Runtime CPU")

        predictor = LatencyPredictor(table_a, calibrated=False)
        loop_space = ArchSpace(resolutions=tuple(resolutions))
        fastest, _ = predictor.minimum()
        highest = float(predictor.predict([space.uniform(ks=7, e=6, d=4, r=max(resolutions))])[0])
        budgets = list(np.round(np.linspace(fastest * 1.1, highest * 0.9, args.budgets), 2))

        def device(batch):
            return [m["measured_ms"] for m in measure_subnets(
                profile, transport, batch, width_mult=1.0, n_classes=1000,
                anchor_ms=table_anchor(read_table(table_a)), reference=reference, protocol=protocol,
                cache_dir=cache, scratch=args.out, work_name="loop")]

        started = time.perf_counter()
        deliveries, _ = closed_loop(predictor, AccuracyPredictor.default(), loop_space, budgets, device)
        loop_s = time.perf_counter() - started
    loop = pd.DataFrame([d.to_dict() for d in deliveries])
    loop.to_csv(args.out / "closed_loop.csv", index=False)
    loop_png = plot_delivered(loop, args.out / "closed_loop.png", "closed loop, w1.0, local CPU")
    given_up = (loop["open_loop_accuracy"] - loop["accuracy"]) * 100
    print(json.dumps({
        "subnets": args.subnets,
        "resolutions": resolutions,
        "table_seconds": timings,
        "isolated_rows": _scores(frames["isolated rows"]["error_pct"].to_numpy()),
        "in_network_rows": _scores(frames["in-network rows"]["error_pct"].to_numpy()),
        "in_network_calibrated": _scores(frames["in-network, calibrated"]["error_pct"].to_numpy()),
        "calibration": {**{k: v for k, v in fit.to_dict().items() if k not in ("sums_ms", "measured_ms")},
                        "fitted_on": f"{args.calibration_subnets} subnets of another seed"},
        "two_table_runs": {"same_command": _agreement(earlier, rerun), "earlier": str(earlier),
                           "another_covering_set": _agreement(table_a, seed1)},
        "closed_loop": {"budgets": len(loop), "share_met": round(float(loop["met"].mean()), 3),
                        "mean_rounds": round(float(loop["rounds"].mean()), 2),
                        "top1_points_given_up_mean": round(float(given_up.mean()), 3),
                        "top1_points_given_up_max": round(float(given_up.max()), 3),
                        "seconds": round(loop_s, 1)},
        "plots": [str(png), str(loop_png)],
    }, indent=1))


if __name__ == "__main__":
    main()
