"""How long a complete latency table takes on this machine, and how steady its items are. Prints JSON.

Runs ``ofa-profile --device local --width 1.0 --resolutions all`` (every row of all 25 resolutions) into a
folder, exporting every model first (covering subnets for in-network rows, units for isolated ones) so that
export and measurement time are reported apart.

    .venv/bin/python -m benchmarks.full_table --out /tmp/full-table                  # in-network rows
    .venv/bin/python -m benchmarks.full_table --rows isolated --resolutions 160,192,224
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.commands import run
from predictors.table_io import read_table
from profiler.devices import resolve_device
from profiler.journal import Journal
from profiler.protocol import Protocol
from profiler.rows import STRATEGIES, strategy_for
from profiler.run_state import journal_path, load_state
from supernet.arch import ArchSpace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/full-table"))
    parser.add_argument("--width", default="1.0")
    parser.add_argument("--resolutions", default="all")
    parser.add_argument("--rows", choices=STRATEGIES, default="in_network")
    parser.add_argument("--min-time", default=str(Protocol().min_time_s))
    args = parser.parse_args()
    width = float(args.width)
    resolutions = (ArchSpace.for_width(width).resolutions if args.resolutions == "all"
                   else [int(r) for r in args.resolutions.split(",")])
    strategy = strategy_for(args.rows, width, resolutions, 1000)
    cache = args.out / "cache"

    start = time.perf_counter()
    strategy.models(strategy.items(), "onnx", cache, resolve_device("local").batch)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    run(["--device", "local", "--width", args.width, "--resolutions", args.resolutions, "--rows", args.rows,
         "--out", str(args.out), "--cache", str(cache), "--min-time", args.min_time, "--quiet"])
    measure_s = time.perf_counter() - start

    table = args.out / f"local_w{width}_onnxruntime_cpu.csv"
    journal = Journal(journal_path(table))
    records = list(journal.records())
    kept = load_state(journal).kept
    robust = np.array([r["cv"] for r in kept.values()])
    print(json.dumps({
        "table": str(table),
        "rows_from": args.rows,
        "width_mult": width,
        "resolutions": len(resolutions),
        "items": len(kept),
        "rows_expected": len(strategy.planned_keys()),
        "minutes_total": round((export_s + measure_s) / 60, 2),
        "export_seconds": round(export_s, 1),
        "measurement_seconds": round(measure_s, 1),
        "share_items_cv_le_5pct": round(float((robust <= 0.05).mean()), 4),
        "cv_definition": "1.4826 * MAD / median of the item's ratios to the reference",
        "measurements": sum(r["type"] == "row" for r in records),
        "drift_events": sum(r["type"] == "drift" for r in records),
        "regime_failures": sum(r["type"] == "regime" and not r["passed"] for r in records),
        "timing": read_table(table).meta.get("timing"),
    }, indent=1))


if __name__ == "__main__":
    main()
