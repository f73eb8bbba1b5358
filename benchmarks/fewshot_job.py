"""A new device from nothing to delivered subnets: few-shot against a table, counting device measurements. JSON.

The new device is this CPU under ONNX Runtime at ``--batch`` (4 by default): none of the shipped priors measured
it (they are batch 1 and 8, 2 threads, int8, LiteRT and torch). The same budgets go to two jobs, each run as a user
runs it, from an empty folder:

- **few-shot:** ``ofa-profile --subnets fewshot:N --prior ...`` (N whole subnets the priors pick), ``ofa-fit latency
  --prior ...`` on them, then the closed loop from that model (``--search --latency-model``), which refits it with
  every subnet it measures;
- **table:** the in-network table at the same resolutions (one covering subnet per stage configuration), then the
  closed loop from the table.

Each job counts the whole subnets it measured on the device (the picked subnets, the table's covering subnets with
their repeats, every subnet the loop measured) and its wall time, and reports each budget's delivered subnet as
the loop measured it: met, latency at the anchor, slack, MACs. Budgets are ``--budgets`` quantiles of the few-shot
subnets' measured latencies, so both jobs get the same ones. The loops rank by MACs: OFA's accuracy predictor is
for w1.2.

    PYTHONPATH=. .venv/bin/python -m benchmarks.fewshot_job --out /tmp/fewshot-job
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.commands import run
from predictors.fit_cli import main as fit_main
from profiler.cli import main as profile_main
from profiler.deliver import delivered_stem
from profiler.devices import resolve_device
from profiler.journal import Journal
from profiler.run_state import journal_path

PRIORS = ("local-ort-t1", "local-ort-b8", "local-ort-t2")


def _run(step: str, main, argv: list[str], times: dict[str, float]) -> None:
    """One command as a user runs it (``ofa-fit``'s or ``ofa-profile``'s ``main``), timed as ``step``; what it
    prints (paths, the fit's report) stays out of the JSON."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run(argv, main, "ofa-fit" if main is fit_main else "ofa-profile")
    times[step] = round(time.perf_counter() - start, 1)


def _loop(common: list[str], budgets: list[float], source: list[str], out: Path, batch: int, times: dict[str, float],
          generations: int) -> dict:
    """The closed loop for ``budgets`` from ``source`` (a model, or the table by default); what it delivered and
    how many subnets it measured."""
    _run("closed loop", profile_main, [*common, "--search", "--latency-ms", ",".join(f"{b:g}" for b in budgets),
                                       "--rank", "macs", "--generations", str(generations), *source], times)
    stem = out / delivered_stem(resolve_device("local", {"batch": batch}), budgets)
    report = json.loads(Path(f"{stem}.json").read_text())
    delivered = pd.read_csv(f"{stem}.csv")
    return {
        "loop_measurements": len(report["measured"]),
        "met": int(delivered["met"].sum()),
        "deliveries": [{"budget_ms": row.budget_ms, "met": bool(row.met), "measured_ms": round(row.measured_ms, 3),
                        "slack": round(row.slack, 4), "macs_m": round(row.macs / 1e6, 1), "rounds": int(row.rounds)}
                       for row in delivered.itertuples()],
        "mean_slack": round(float(delivered["slack"].mean()), 4),
    }


def fewshot_job(out: Path, common: list[str], n: int, priors: list[str], budget_quantiles: list[float], batch: int,
                generations: int) -> tuple[dict, list[float]]:
    """The few-shot job, and the budgets it set from its picked subnets' latencies (the table job gets the same)."""
    times: dict[str, float] = {}
    prior_args = [arg for name in priors for arg in ("--prior", name)]
    _run("fewshot subnets", profile_main, [*common, "--subnets", f"fewshot:{n}", *prior_args], times)
    (measured,) = out.glob(f"local_w1.0_fewshot{n}_*.csv")
    frame = pd.read_csv(measured)
    model = out / "model"
    _run("fit", fit_main, ["latency", str(measured), *prior_args, "--out", str(model)], times)
    budgets = [round(float(np.quantile(frame["measured_ms"], q)), 3) for q in budget_quantiles]
    loop = _loop(common, budgets, ["--latency-model", str(model)], out, batch, times, generations)
    method = json.loads((out / "model.json").read_text()).get("method")
    return {"subnets_measured": len(frame) + loop["loop_measurements"], "picked": len(frame), "method": method,
            **loop, "seconds": times, "minutes_total": round(sum(times.values()) / 60, 2)}, budgets


def table_job(out: Path, common: list[str], budgets: list[float], batch: int, generations: int) -> dict:
    """The table job: its covering subnets counted from the journal, repeats included."""
    times: dict[str, float] = {}
    _run("table", profile_main, common, times)
    (table,) = out.glob("local_w1.0_onnxruntime_cpu*.csv")
    rows = [r for r in Journal(journal_path(table)).records() if r["type"] == "row"]
    loop = _loop(common, budgets, [], out, batch, times, generations)
    return {"subnets_measured": len(rows) + loop["loop_measurements"],
            "covering_subnets": len({r["key"] for r in rows}), "covering_measurements": len(rows), **loop,
            "seconds": times,
            "minutes_total": round(sum(times.values()) / 60, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/fewshot-job"))
    parser.add_argument("--resolutions", default="160,192,224")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--n", type=int, default=20, help="subnets fewshot:N measures")
    parser.add_argument("--prior", action="append", help=f"shipped prior names or files (default: {', '.join(PRIORS)})")
    parser.add_argument("--budgets", default="0.1,0.3,0.5,0.7,0.9",
                        help="quantiles of the few-shot subnets' measured latencies")
    parser.add_argument("--generations", type=int, default=50)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    quantiles = [float(q) for q in args.budgets.split(",")]

    def common(folder: Path) -> list[str]:
        return ["--device", "local", "--width", "1.0", "--resolutions", args.resolutions, "--batch", str(args.batch),
                "--out", str(folder), "--cache", str(args.out / "cache"), "--quiet"]

    few, budgets = fewshot_job(args.out / "fewshot", common(args.out / "fewshot"), args.n, args.prior or list(PRIORS),
                               quantiles, args.batch, args.generations)
    table = table_job(args.out / "table", common(args.out / "table"), budgets, args.batch, args.generations)
    print(json.dumps({"device": f"local CPU, ONNX Runtime, 1 thread, batch {args.batch} (a device no prior measured)",
                      "resolutions": args.resolutions, "priors": args.prior or list(PRIORS), "budgets_ms": budgets,
                      "measurements": "whole subnets timed on the device (covering subnets, picked subnets, loop "
                                      "candidates), repeats included; the loop's figures are its own measurements",
                      "fewshot": few, "table": table}, indent=1))


if __name__ == "__main__":
    main()
