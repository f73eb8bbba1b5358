"""Our search against the reference OFA EvolutionFinder, in the same run: accuracy found and time taken.

Both use the Note10 tables and the released accuracy predictor, at 15, 20, 25 and 30 ms over 5 seeds, with OFA's
settings (population 100, 500 generations). Prints one JSON line per budget, then one for a 20-budget sweep.
Reads the released files from the project's own copies in tests/data/ofa-release/.

    .venv/bin/python benchmarks/search_vs_reference.py [--seeds 5] [--budgets 15,20,25,30]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from predictors.accuracy import AccuracyPredictor  # noqa: E402
from predictors.latency import LatencyPredictor  # noqa: E402
from predictors.search import Constraint, evolution_search, pareto_sweep  # noqa: E402
from supernet import ArchSpace  # noqa: E402
from tests.ofa_oracle import reference_utils  # noqa: E402

RELEASE = ROOT / "tests" / "data" / "ofa-release"
RESOLUTIONS = (160, 176, 192, 208, 224)


def reference_finder(budget: float):
    """The reference EvolutionFinder with its tutorial LatencyTable and AccuracyPredictor, files loaded locally."""
    reference_utils()
    from ofa.tutorial import AccuracyPredictor as RefAccuracy
    from ofa.tutorial import EvolutionFinder
    from ofa.tutorial.latency_table import LatencyEstimator, LatencyTable

    table = LatencyTable.__new__(LatencyTable)
    table.latency_tables = {}
    for r in RESOLUTIONS:
        estimator = LatencyEstimator.__new__(LatencyEstimator)
        estimator.lut = yaml.safe_load((RELEASE / "note10" / f"{r}_lookup_table.yaml").read_text())
        table.latency_tables[r] = estimator
    accuracy = RefAccuracy(pretrained=False, device="cpu")
    accuracy.model.load_state_dict(torch.load(RELEASE / "acc_predictor.pth", map_location="cpu", weights_only=True))
    # 15..30 ms lies inside the reference's accepted range for "note10" (15..60), so it never calls input().
    return EvolutionFinder("note10", budget, table, accuracy)


def run_reference(budget: float, seed: int) -> tuple[float, float]:
    finder = reference_finder(budget)
    random.seed(seed)
    np.random.seed(seed)
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        _, best = finder.run_evolution_search()
    return best[0], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", default="15,20,25,30")
    parser.add_argument("--sweep-budgets", type=int, default=20)
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    accuracy = AccuracyPredictor.default()
    latency = LatencyPredictor(ROOT / "tables" / "note10_w1.2_tflite.csv", statistic="mean_ms")
    space = ArchSpace(resolutions=RESOLUTIONS)
    reference_seconds = []
    for budget in budgets:
        ref_acc, ref_time, our_acc, our_time = [], [], [], []
        for seed in range(args.seeds):
            acc, seconds = run_reference(budget, seed)
            ref_acc.append(acc)
            ref_time.append(seconds)
            result = evolution_search(accuracy, [Constraint("latency_ms", latency, budget)], space, seed=seed)
            our_acc.append(result.accuracy)
            our_time.append(result.seconds)
        reference_seconds += ref_time
        print(json.dumps({
            "budget_ms": budget, "seeds": args.seeds,
            "reference_mean_accuracy": round(float(np.mean(ref_acc)), 5),
            "ours_mean_accuracy": round(float(np.mean(our_acc)), 5),
            "reference_mean_seconds": round(float(np.mean(ref_time)), 3),
            "ours_mean_seconds": round(float(np.mean(our_time)), 3),
            "time_ratio": round(float(np.mean(ref_time) / np.mean(our_time)), 1),
        }), flush=True)
    sweep = list(np.linspace(15, 40, args.sweep_budgets))
    started = time.perf_counter()
    front = pareto_sweep(accuracy, Constraint("latency_ms", latency, 0.0), sweep, space, seed=0)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "sweep_budgets": len(sweep), "sweep_seconds": round(seconds, 3),
        "one_reference_search_seconds": round(float(np.mean(reference_seconds)), 3),
        "front": [[round(float(b), 2), round(r.accuracy, 5)] for b, r in zip(sweep, front, strict=True)],
    }), flush=True)


if __name__ == "__main__":
    main()
