"""Does a model learn a whole subnet's peak memory, and how steady is the measurement it learns from? Prints JSON.

On the local CPU (w1.0 at --resolutions, --runtime as given): measure --subnets seeded random subnets end to end
(``ofa-profile --subnets random:N``: each records the peak resident memory the subnet added while it loaded and
ran), then the same subnets again in a second run, to see how far a second reading moves. Hold a seeded random
--test of them out, fit ``ofa-fit memory``'s model (``LatencyModel`` on ``memory_mb``, method by cross-validation)
on the rest, and report on the held-out ones the share within ±10% and ±5%, the Spearman correlation and the RMS
relative error, beside a straight line on the parameter count (the weights alone).

    .venv/bin/python -m benchmarks.memory_model --out /tmp/mem-ort             # about 6 minutes here
    .venv/bin/python -m benchmarks.memory_model --runtime tflite --out /tmp/mem-tflite
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.commands import run
from predictors.archs import batch_from_dicts
from predictors.complexity import ParamsPredictor
from predictors.latency_model import LatencyModel, latency_metrics


def _scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    m = latency_metrics(predicted, measured)
    return {k: round(m[k], 3) for k in ("within_10_pct", "within_5_pct", "spearman_rho", "rms_pct", "mean_error_pct")}


def _measure(args: argparse.Namespace, folder: str) -> pd.DataFrame:
    out = args.out / folder
    run(["--device", "local", "--runtime", args.runtime, "--width", "1.0", "--resolutions", args.resolutions,
         "--subnets", f"random:{args.subnets}", "--out", str(out), "--cache", str(args.out / "cache"), "--quiet"])
    (csv,) = out.glob("*.csv")
    return pd.read_csv(csv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/memory-model"))
    parser.add_argument("--runtime", choices=("onnxruntime", "tflite"), default="onnxruntime")
    parser.add_argument("--resolutions", default="160,192,224")
    parser.add_argument("--subnets", type=int, default=60)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the fit")
    args = parser.parse_args()
    first, second = _measure(args, "first"), _measure(args, "second")
    if list(first["arch"]) != list(second["arch"]):
        raise SystemExit("the two runs measured different subnets")
    known = first["memory_mb"].notna() & second["memory_mb"].notna()
    frame = first[known].reset_index(drop=True)
    memory = frame["memory_mb"].to_numpy(float)
    again = second.loc[known, "memory_mb"].to_numpy(float)
    batch = batch_from_dicts([json.loads(a) for a in frame["arch"]], "subnets")
    test = np.random.default_rng(args.seed).permutation(len(frame))[:args.test]
    train = np.setdiff1d(np.arange(len(frame)), test)

    model = LatencyModel(width_mult=1.0, random_state=args.seed).fit(batch[train], memory[train])
    params = ParamsPredictor(1.0, resolutions=sorted(set(batch.r.tolist()))).predict(batch)
    line = np.polyfit(params[train], memory[train], 1)
    report = {
        "runtime": args.runtime, "subnets": len(first), "with_memory": int(known.sum()),
        "memory": "peak resident memory each subnet added while it loaded and ran (the agent's VmHWM growth)",
        "memory_mb_range": [round(float(memory.min()), 2), round(float(memory.max()), 2)],
        "second_run_over_first": {"median": round(float(np.median(again / memory)), 4),
                                  "share_within_5_pct": round(float(np.mean(np.abs(again / memory - 1) <= 0.05)), 3),
                                  "share_within_10_pct": round(float(np.mean(np.abs(again / memory - 1) <= 0.10)),
                                                               3)},
        "train": len(train), "test": len(test),
        "model": {"method": model.method_, **_scores(model.predict(batch[test]), memory[test])},
        "line_on_params": _scores(np.polyval(line, params[test]), memory[test]),
        "second_run_as_prediction": _scores(again[test], memory[test]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1)
    (args.out / "report.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
