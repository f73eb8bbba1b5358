"""``make demo``: the main job end to end on this machine's CPU, in a few minutes.

1. ``ofa-profile``: a latency table of the w1.2 supernet at one resolution (96 rows) with ONNX Runtime;
2. ``ofa-search``: the most accurate subnets (OFA's released accuracy predictor) under four latency budgets,
   chosen from the table's own range so that they fit this machine;
3. ``ofa-profile --subnets``: each found subnet exported whole and measured, predicted against measured, plotted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from predictors.cli import main as search_main
from predictors.latency import LatencyPredictor
from profiler.cli import main as profile_main
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
    parser.add_argument("--min-time", default="0.3", help="seconds of timed runs per row (default 0.3)")
    parser.add_argument("--generations", default="100", help="search generations per budget (default 100)")
    parser.add_argument("--retries", default=str(Protocol().retries), help="times a noisy row is measured again")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    quiet = ["--quiet"] if args.quiet else []
    common = ["--device", "local", "--width", "1.2", "--out", str(args.out), "--cache", str(args.out / "cache"),
              "--min-time", args.min_time, "--retries", args.retries, *quiet]

    _step(f"1/3 ofa-profile: latency table of the w1.2 supernet at r={args.resolution} on this CPU")
    if profile_main([*common, "--resolutions", str(args.resolution)]) != 0:
        return 1
    table = args.out / TABLE
    fastest, _ = LatencyPredictor(table).minimum([args.resolution])
    budgets = [round(fastest * factor, 2) for factor in (1.15, 1.4, 1.8, 2.5)]

    _step(f"2/3 ofa-search: best predicted accuracy under {budgets} ms (fastest possible: {fastest:.2f} ms)")
    found = args.out / "found.json"
    if search_main(["--table", str(table), "--budgets", ",".join(map(str, budgets)), "--sweep", "latency",
                    "--generations", args.generations, "--out", str(found), *quiet]) != 0:
        return 1

    _step("3/3 ofa-profile --subnets: the found subnets measured whole on this CPU")
    if profile_main([*common, "--subnets", str(found)]) != 0:
        return 1
    measured = pd.read_csv(args.out / "local_subnets.csv")
    accuracy = [entry.get("accuracy") for entry in json.loads(found.read_text())["subnets"]]
    print(f"\n{'budget ms':>9}  {'pred. top-1':>11}  {'MMACs':>6}  {'table ms':>8}  {'measured ms':>11}  {'error':>6}")
    for budget, acc, (_, row) in zip(budgets, accuracy, measured.iterrows(), strict=True):
        print(f"{budget:>9.2f}  {acc:>11.4f}  {row.macs_m:>6.0f}  {row.predicted_ms:>8.2f}  {row.measured_ms:>11.2f}"
              f"  {row.error_pct:>+5.1f}%")
    print(f"\ntable: {table}\nfound subnets: {found}\nmeasured: {args.out / 'local_subnets.csv'}\n"
          f"plot: {args.out / 'local_subnets.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
