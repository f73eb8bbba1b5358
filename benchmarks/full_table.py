"""How long a complete latency table takes on this machine, and how steady its rows are. Prints JSON.

Runs ``ofa-profile --device local --width 1.0 --resolutions all`` (every row of all 25 resolutions) into a
folder, exporting every unit first so that export and measurement time are reported apart.

    .venv/bin/python benchmarks/full_table.py --out /tmp/full-table          # about 20-30 minutes here
    .venv/bin/python benchmarks/full_table.py --resolutions 160,192,224       # a shorter run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from profiler.builder import journal_path
from profiler.cli import main as profile_main
from profiler.journal import Journal
from profiler.protocol import Protocol
from supernet.arch import ArchSpace
from supernet.export import export_units
from supernet.units import all_units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/full-table"))
    parser.add_argument("--width", default="1.0")
    parser.add_argument("--resolutions", default="all")
    parser.add_argument("--min-time", default=str(Protocol().min_time_s))
    args = parser.parse_args()
    width = float(args.width)
    resolutions = (ArchSpace.for_width(width).resolutions if args.resolutions == "all"
                   else [int(r) for r in args.resolutions.split(",")])
    units = all_units(width, resolutions)
    cache = args.out / "cache"

    start = time.perf_counter()
    export_units(units, "onnx", cache)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    code = profile_main(["--device", "local", "--width", args.width, "--resolutions", args.resolutions,
                         "--out", str(args.out), "--cache", str(cache), "--min-time", args.min_time, "--quiet"])
    measure_s = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"ofa-profile failed with exit code {code}")

    table = args.out / f"local_w{width}_onnxruntime_cpu.csv"
    records = list(Journal(journal_path(table)).records())
    kept: dict[str, dict] = {}
    for record in records:
        if record["type"] == "row" and (record["key"] not in kept or record["cv"] < kept[record["key"]]["cv"]):
            kept[record["key"]] = record
    robust = np.array([r["cv"] for r in kept.values()])
    classic = np.array([r["summary"]["std"] / r["summary"]["mean"] for r in kept.values()])
    print(json.dumps({
        "table": str(table),
        "width_mult": width,
        "resolutions": len(resolutions),
        "rows": len(kept),
        "rows_expected": len(units),
        "minutes_total": round((export_s + measure_s) / 60, 2),
        "export_seconds": round(export_s, 1),
        "measurement_seconds": round(measure_s, 1),
        "share_rows_cv_le_5pct": round(float((robust <= 0.05).mean()), 4),
        "cv_definition": "1.4826 * MAD / median of the raw samples (the table value is the median)",
        "share_rows_std_over_mean_le_5pct": round(float((classic <= 0.05).mean()), 4),
        "measurements": sum(r["type"] == "row" for r in records),
        "drift_events": sum(r["type"] == "drift" for r in records),
    }, indent=1))


if __name__ == "__main__":
    main()
