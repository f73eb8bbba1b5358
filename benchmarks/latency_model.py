"""How many measured subnets does a latency model need, and does it beat table sums? JSON + a learning-curve plot.

On the local CPU (w1.0 at --resolutions, --runtime and --batch as given): build the device's table, measure
--subnets seeded random subnets end to end against it (``ofa-profile --subnets random:N``, timed against the
reference and stated at the table's anchor), hold a seeded random --test of them out, and for each training size
report on those the share within ±10% and ±5%, the Spearman correlation and the RMS relative error of

- the table sum;
- the calibrated table sum (``a · sum + b`` fitted on the training subnets);
- the fitted model with the table (``LatencyModel(table=...)``, method chosen by cross-validation);
- the fitted model without a table.

Then the prediction speed of both models (archs per second, on a million random archs).

    .venv/bin/python benchmarks/latency_model.py --out /tmp/lm-ort                       # about 12 minutes here
    .venv/bin/python benchmarks/latency_model.py --out /tmp/lm-ort8 --batch 8 --subnets 150 --test 50 \\
        --train 20,50,100
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.commands import run
from predictors.archs import batch_from_dicts, sample_batch
from predictors.calibration import fit_calibration
from predictors.latency import LatencyPredictor
from predictors.latency_model import LatencyModel, latency_metrics
from profiler.plots import pyplot, save_figure
from supernet.arch import ArchSpace


def _scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    m = latency_metrics(predicted, measured)
    return {k: round(m[k], 3) for k in ("within_10_pct", "within_5_pct", "spearman_rho", "rms_pct", "mean_error_pct")}


def _plot(report: dict, png: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    sizes = [row["train"] for row in report["curve"]]
    panels = (("within_5_pct", "held-out subnets within ±5% (%)"), ("rms_pct", "held-out RMS relative error (%)"))
    for method in report["curve"][0]["methods"]:
        for ax, (metric, _) in zip(axes, panels, strict=True):
            ax.plot(sizes, [row["methods"][method][metric] for row in report["curve"]], marker="o", label=method)
    for ax, (metric, label) in zip(axes, panels, strict=True):
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("measured subnets used for fitting")
        ax.set_ylabel(label)
        ax.set_ylim(0, 102 if metric == "within_5_pct" else None)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"latency models on {report['device']} (test: {report['n_test']} subnets)")
    return save_figure(fig, png)


def _speed(model: LatencyModel, resolutions: tuple[int, ...]) -> float:
    batch = sample_batch(1_000_000, ArchSpace(resolutions=resolutions), np.random.default_rng(0))
    started = time.perf_counter()
    model.predict(batch)
    return 1_000_000 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/latency-model"))
    parser.add_argument("--resolutions", default="160,192,224")
    parser.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "torch"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--subnets", type=int, default=300)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--train", default="20,50,100,200")
    parser.add_argument("--min-time", type=float)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true",
                        help="fit and score again on the table and subnets already measured in --out")
    args = parser.parse_args()
    sizes = [int(s) for s in args.train.split(",")]
    if max(sizes) + args.test > args.subnets:
        raise SystemExit(f"--train up to {max(sizes)} plus --test {args.test} exceeds --subnets {args.subnets}")
    common = ["--device", "local", "--width", "1.0", "--resolutions", args.resolutions, "--runtime", args.runtime,
              "--batch", str(args.batch), "--cache", str(args.out / "cache"), "--out", str(args.out), "--quiet",
              *(["--min-time", str(args.min_time)] if args.min_time else [])]
    table_s = subnets_s = None
    if not args.reuse:
        started = time.perf_counter()
        run(common)
        table_s = round(time.perf_counter() - started, 1)
    table_path = next(p for p in args.out.glob("local_w1.0_*.csv") if "random" not in p.name)
    if not args.reuse:
        started = time.perf_counter()
        run([*common, "--table", str(table_path), "--subnets", f"random:{args.subnets}", "--seed", str(args.seed)])
        subnets_s = round(time.perf_counter() - started, 1)
    frame = pd.read_csv(next(args.out.glob("local_w1.0_random_*.csv")))
    archs = batch_from_dicts([json.loads(a) for a in frame["arch"]], "measured")
    measured, sums = frame["measured_ms"].to_numpy(), frame["raw_sum_ms"].to_numpy()
    # A seeded split across the run: the subnets were measured in order, so a held-out tail would also measure the
    # device's drift during the run, which no model of archs can know.
    order = np.random.default_rng(args.seed).permutation(len(frame))
    test, pool = order[:args.test], order[args.test:]
    table = LatencyPredictor(table_path, calibrated=False)
    curve, models = [], {}
    for size in sizes:
        train = pool[:size]
        line = fit_calibration(sums[train], measured[train])
        with_table = LatencyModel(table=table).fit(archs[train], measured[train])
        alone = LatencyModel(width_mult=1.0).fit(archs[train], measured[train])
        models = {"with table": with_table, "without table": alone}
        curve.append({"train": size, "methods": {
            "table sum": _scores(sums[test], measured[test]),
            "calibrated sum": _scores(line.apply(sums[test]), measured[test]),
            "model with table": {**_scores(with_table.predict(archs[test]), measured[test]),
                                 "method": with_table.method_},
            "model without table": {**_scores(alone.predict(archs[test]), measured[test]), "method": alone.method_},
        }})
        print(json.dumps(curve[-1]), flush=True)
    resolutions = tuple(int(r) for r in args.resolutions.split(","))
    report = {
        "device": f"local CPU, {args.runtime}, batch {args.batch}, w1.0 at {args.resolutions}",
        "n_measured": len(frame), "n_test": args.test, "table": str(table_path), "table_rows": len(table.table.rows),
        "table_seconds": table_s, "subnets_seconds": subnets_s, "curve": curve,
        "archs_per_second": {name: round(_speed(m, resolutions)) for name, m in models.items()},
        "methods_at_largest": {name: m.method_ for name, m in models.items()},
    }
    (args.out / "latency_model.json").write_text(json.dumps(report, indent=2) + "\n")
    report["plot"] = str(_plot(report, args.out / "latency_model.png"))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
