"""``make demo``: the main job end to end on this machine's CPU, in a few minutes.

1. ``ofa-profile``: a latency table of the w1.2 supernet at one resolution with ONNX Runtime, its rows taken
   from nine whole covering subnets, each timed against the reference workload;
2. ``ofa-profile --search``: for four latency budgets chosen from the table's own range, the most accurate subnet
   (OFA's released accuracy predictor) found with the table, measured whole on this CPU, and searched again
   with a refitted calibration while one measures over its budget; a report (CSV, JSON, PNG) of what each
   budget got.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from predictors.latency import LatencyPredictor
from profiler.cli import main as profile_main
from profiler.deliver import delivered_stem
from profiler.devices import resolve_device
from profiler.protocol import Protocol

__all__ = ["main"]

TABLE = "local_w1.2_onnxruntime_cpu.csv"


def _step(title: str) -> None:
    print(f"\n== {title}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiler.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default ./demo-out)")
    parser.add_argument("--resolution", type=int, default=176, help="resolution to profile and search (default 176)")
    parser.add_argument("--min-time", default="0.3", help="seconds of timed runs per item (default 0.3)")
    parser.add_argument("--generations", default="100", help="search generations per budget (default 100)")
    parser.add_argument("--retries", default=str(Protocol().retries), help="times a noisy item is measured again")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    quiet = ["--quiet"] if args.quiet else []
    common = ["--device", "local", "--width", "1.2", "--out", str(args.out), "--cache", str(args.out / "cache"),
              "--min-time", args.min_time, "--retries", args.retries, "--resolutions", str(args.resolution), *quiet]

    _step(f"1/2 ofa-profile: latency table of the w1.2 supernet at r={args.resolution} on this CPU")
    if profile_main(common) != 0:
        return 1
    table = args.out / TABLE
    fastest, _ = LatencyPredictor(table).minimum([args.resolution])
    budgets = [round(fastest * factor, 2) for factor in (1.15, 1.4, 1.8, 2.5)]

    _step(f"2/2 ofa-profile --search: subnets that measure under {budgets} ms (fastest predicted: {fastest:.2f} ms)")
    if profile_main([*common, "--search", "--latency-ms", ",".join(map(str, budgets)),
                     "--generations", args.generations]) != 0:
        return 1
    report_csv = args.out / f"{delivered_stem(resolve_device('local'), budgets)}.csv"
    report = pd.read_csv(report_csv)
    print(f"\n{'budget ms':>9}  {'pred. top-1':>11}  {'predicted ms':>12}  {'measured ms':>11}  {'rounds':>6}  met")
    for row in report.itertuples():
        print(f"{row.budget_ms:>9.2f}  {row.accuracy:>11.4f}  {row.predicted_ms:>12.2f}  {row.measured_ms:>11.2f}"
              f"  {row.rounds:>6}  {'yes' if row.met else 'NO'}")
    print(f"\ntable: {table}\nreport: {report_csv} (.json, .png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
