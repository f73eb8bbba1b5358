"""What users wait for around the search: whole-process wall time of our commands, against the reference search.

Each command runs as a fresh process (what a user or a script pays, interpreter start included), --runs times,
interleaved round by round so the machine's drift hits all alike; the figure is the median. The baseline is
one reference ``EvolutionFinder`` search on the same Note10 tables and budget (in-process, its setup excluded),
timed in the same rounds, so the ratio holds where absolute times drift.

    .venv/bin/python benchmarks/cli_speed.py [--runs 5] [--budget 25]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.search_vs_reference import run_reference  # noqa: E402

BIN = Path(sys.executable).parent
NOTE10 = ROOT / "tables" / "note10_w1.2_tflite.csv"


def _commands(budget: float) -> dict[str, list[str]]:
    return {
        "ofa-profile --help": [str(BIN / "ofa-profile"), "--help"],
        "ofa-search --help": [str(BIN / "ofa-search"), "--help"],
        "ofa-fit --help": [str(BIN / "ofa-fit"), "--help"],
        "ofa-train --help": [str(BIN / "ofa-train"), "--help"],
        "ofa-profile --list-devices": [str(BIN / "ofa-profile"), "--list-devices"],
        f"ofa-search Note10 {budget:g} ms": [str(BIN / "ofa-search"), "--table", str(NOTE10), "--latency-ms",
                                             str(budget), "--quiet"],
    }


def _wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=25.0)
    args = parser.parse_args()
    commands = _commands(args.budget)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    reference: list[float] = []
    for argv in commands.values():  # warm the page cache and the .pyc files first
        _wall(argv)
    for seed in range(args.runs):
        for name, argv in commands.items():
            walls[name].append(_wall(argv))
        reference.append(run_reference(args.budget, seed)[1])
    reference_s = statistics.median(reference)
    report = {
        "runs": args.runs,
        "reference_search_s": round(reference_s, 3),
        "commands": {name: {"median_s": round(statistics.median(w), 3), "max_s": round(max(w), 3),
                            "reference_over_this": round(reference_s / statistics.median(w), 1)}
                     for name, w in walls.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
