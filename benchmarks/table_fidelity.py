"""How well does a table predict whole subnets on this machine? Prints JSON and draws a scatter plot.

1. Two independent table runs (different shuffles) at a few resolutions: the share of rows whose medians agree
   within 5% says how repeatable a table is.
2. A calibration fitted on subnets of one seed; 100 subnets of another seed measured end to end.
3. For those 100: table-predicted against measured latency, raw and calibrated: the share within ±10% and ±5%
   and the mean signed error.

    .venv/bin/python benchmarks/table_fidelity.py --out /tmp/fidelity        # about 10-15 minutes here
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

from predictors.table_io import read_table
from profiler.cli import main as profile_main
from profiler.connect import open_transport
from profiler.devices import resolve_device
from profiler.protocol import Protocol
from profiler.remeasure import calibrate, plot_predicted_vs_measured, remeasure
from supernet.arch import ArchSpace


def _scores(errors_pct: np.ndarray) -> dict[str, float]:
    return {"within_10pct": round(float((np.abs(errors_pct) <= 10).mean()), 3),
            "within_5pct": round(float((np.abs(errors_pct) <= 5).mean()), 3),
            "mean_signed_error_pct": round(float(errors_pct.mean()), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/fidelity"))
    parser.add_argument("--resolutions", default="160,192,224")
    parser.add_argument("--subnets", type=int, default=100)
    parser.add_argument("--calibration-subnets", type=int, default=20)
    parser.add_argument("--min-time", type=float, default=Protocol().min_time_s)
    parser.add_argument("--evict-cache-mb", type=int, default=0, help="time table rows with cold caches")
    args = parser.parse_args()
    resolutions = [int(r) for r in args.resolutions.split(",")]
    cache = args.out / "cache"
    common = ["--device", "local", "--width", "1.0", "--resolutions", args.resolutions, "--cache", str(cache),
              "--min-time", str(args.min_time), "--evict-cache-mb", str(args.evict_cache_mb), "--quiet"]
    for name, seed in (("a", 0), ("b", 1)):
        if profile_main([*common, "--out", str(args.out / name), "--seed", str(seed)]) != 0:
            raise SystemExit(f"table run {name} failed")
    table_a = args.out / "a" / "local_w1.0_onnxruntime_cpu.csv"
    a = read_table(table_a).values(resolutions[0])
    b = read_table(args.out / "b" / table_a.name).values(resolutions[0])
    for r in resolutions[1:]:
        a |= read_table(table_a).values(r)
        b |= read_table(args.out / "b" / table_a.name).values(r)
    agreement = np.array([abs(a[k] - b[k]) / ((a[k] + b[k]) / 2) <= 0.05 for k in a])

    space = ArchSpace.for_width(1.0)
    rng = random.Random(2024)
    archs = [space.sample(rng).with_resolution(rng.choice(resolutions)) for _ in range(args.subnets)]
    profile = resolve_device("local")
    protocol = Protocol(min_time_s=args.min_time)
    with open_transport(profile, "localhost") as transport:
        fit = calibrate(profile, transport, table_a, args.calibration_subnets, cache, protocol, seed=7)
        frame = remeasure(profile, transport, archs, table_a, args.out / "fidelity.csv", cache, protocol)
    png = plot_predicted_vs_measured(frame, args.out / "fidelity.png",
                                     f"{args.subnets} subnets, w1.0, r in {resolutions}, ONNX Runtime CPU")
    print(json.dumps({
        "subnets": len(frame),
        "table_rows_timed_with_cold_caches_mb": args.evict_cache_mb,
        "resolutions": resolutions,
        "raw": _scores(frame["error_pct"].to_numpy()),
        "calibrated": _scores(frame["calibrated_error_pct"].to_numpy()),
        "calibration": {**fit.to_dict(), "fitted_on": f"{args.calibration_subnets} subnets of another seed"},
        "two_table_runs": {"rows": len(agreement), "share_medians_within_5pct": round(float(agreement.mean()), 3)},
        "plot": str(png),
        "csv": str(args.out / "fidelity.csv"),
    }, indent=1))


if __name__ == "__main__":
    main()
