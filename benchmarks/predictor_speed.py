"""Archs per second of the table-sum latency predictor (and of MACs and accuracy) on this machine.

    .venv/bin/python benchmarks/predictor_speed.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from predictors.accuracy import AccuracyPredictor  # noqa: E402
from predictors.archs import sample_batch  # noqa: E402
from predictors.complexity import MacsPredictor  # noqa: E402
from predictors.latency import LatencyPredictor  # noqa: E402
from supernet import ArchSpace  # noqa: E402


def rate(predict, batch, repeats: int = 5) -> float:
    """Best of ``repeats`` runs, in archs per second."""
    best = min(_timed(predict, batch) for _ in range(repeats))
    return len(batch) / best


def _timed(predict, batch) -> float:
    started = time.perf_counter()
    predict(batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args()
    space = ArchSpace(resolutions=(160, 176, 192, 208, 224))
    batch = sample_batch(args.n, space, np.random.default_rng(0))
    latency = LatencyPredictor(ROOT / "tables" / "note10_w1.2_tflite.csv")
    macs = MacsPredictor(1.2, 1000, space.resolutions)
    small = batch[np.arange(min(args.n, 100_000))]
    print(json.dumps({
        "archs": args.n,
        "latency_archs_per_s": round(rate(latency.predict, batch)),
        "macs_archs_per_s": round(rate(macs.predict, batch)),
        "accuracy_archs_per_s": round(rate(AccuracyPredictor.default().predict, small, repeats=2)),
    }))


if __name__ == "__main__":
    main()
