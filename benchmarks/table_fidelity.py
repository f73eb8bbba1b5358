"""Do tables, calibrations and delivered subnets agree with a plain back-to-back loop? JSON and plots.

Everything on the local CPU, one thread, w1.0 at ``--resolutions``; ``--runtime onnxruntime`` (in-network rows, the
default) or ``--runtime tflite`` (LiteRT with XNNPACK, isolated rows); ``--precision int8`` for statically quantized
models (ONNX Runtime). The ground truth is
:mod:`benchmarks.plain_loop`, which shares no timing code with the agent: each subnet exported by this project's
``export_subnet`` (the model a user deploys) and timed in interleaved rounds of back-to-back runs after a warm-up,
beside a workload of the harness's own (in the run's precision, as the agent's reference is) that undoes the
machine's drift. Steps:

1. The table, ``ofa-profile --device local ...`` (the harness's workload timed just before and after it, which shows
   how far the machine moved meanwhile). Then the same command into another folder: the share of rows of the two
   runs that agree within 5% and 10% (in ratio to the reference, so the device's speed between the runs does not
   count).
2. A calibration of the table on ``--calibration-subnets`` subnets of another seed, spread over the table's range
   (``ofa-profile --calibrate``'s code).
3. ``--subnets`` seeded random subnets, in chunks of ten: the agent's measurement of a chunk (at the table's
   anchor, and its own plain loop) and then the harness's ground truth of the same chunk, so both see the machine
   at the same minutes. Raw sums, calibrated predictions and the agent's numbers are each scored against the ground
   truth at the table's device state (share within ±5% and ±10%, mean signed error). That state is the
   harness's workload time in each chunk times the agent's ratio of the table's anchor to its reference time in the
   same chunk (one conversion factor, median over subnets). Independently of any anchor, the agent's absolute times
   are compared with the harness's absolute times, and its blocked times with its own plain loop (the regime ratio).
4. The closed loop over ``--budgets`` budgets from the fastest subnet's predicted latency ×1.1 to ×0.98 that of
   the subnet the accuracy predictor ranks first (``ofa-profile --search``'s code); the delivered subnets are timed
   again by the harness right after, and stated at the table's state as in step 3, from the loop's own
   measurements: the share at or under budget and the mean slack, ``(budget - plain-loop latency) / budget``, by
   the plain-loop measure. With ``--percentile 90`` the budgets hold the slow runs, as
   ``ofa-profile --search --percentile 90`` does: the search sums the table's ``p90_ms``, the loop holds each
   subnet's 90th percentile of runs, and the harness judges by the 90th percentile of each window's runs.

    .venv/bin/python -m benchmarks.table_fidelity --out /tmp/fidelity                       # ONNX Runtime
    .venv/bin/python -m benchmarks.table_fidelity --out /tmp/fidelity-tfl --runtime tflite   # LiteRT
    .venv/bin/python -m benchmarks.table_fidelity --out /tmp/fidelity-int8 --precision int8  # ONNX Runtime int8
    .venv/bin/python -m benchmarks.table_fidelity --out /tmp/fidelity --loop-only --percentile 90  # p90 budgets
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmarks.commands import run
from benchmarks.plain_loop import PlainLoop, Timed
from predictors.accuracy import AccuracyPredictor
from predictors.latency import LatencyPredictor
from predictors.search import evolution_search
from predictors.table_io import read_table
from profiler.closed_loop import MAX_SLACK, PERCENTILES
from profiler.connect import open_transport
from profiler.deliver import deliver, percentile_tail, table_predictor
from profiler.devices import resolve_device
from profiler.modes import table_path
from profiler.plots import plot_delivered, pyplot, save_figure
from profiler.protocol import Protocol
from profiler.reference import reference_of
from profiler.remeasure import calibrate, table_anchor
from profiler.steady import with_table_blocks
from profiler.whole_subnets import measure_subnets
from supernet.arch import Arch, ArchSpace
from supernet.model_cache import export_subnet

ANCHOR_HOW = ("the harness's workload time in each chunk, times the agent's ratio of the table's anchor to its "
              "reference time in the same chunk; median over subnets (the harness's own workload timed before and "
              "after the table brackets minutes in which the machine may drift by more than the errors measured)")
ROWS = {"onnxruntime": ("in_network", "CPU"), "tflite": ("isolated", "xnnpack")}
# The harness's own drift workload: one fixed mid-sized subnet, not the agent's reference.
WORKLOAD = ArchSpace.for_width(1.0).uniform(ks=5, e=4, d=3, r=192)


def _scores(errors_pct: np.ndarray) -> dict[str, float]:
    return {"within_10pct": round(float((np.abs(errors_pct) <= 10).mean()), 3),
            "within_5pct": round(float((np.abs(errors_pct) <= 5).mean()), 3),
            "mean_signed_error_pct": round(float(errors_pct.mean()), 2),
            "n": int(errors_pct.size)}


def _ratio_summary(ratios: pd.Series) -> dict[str, float]:
    return {"median": round(float(ratios.median()), 4), "p10": round(float(ratios.quantile(0.1)), 4),
            "p90": round(float(ratios.quantile(0.9)), 4)}


def _agreement(first: Path, second: Path) -> dict[str, float]:
    a = pd.read_csv(first).set_index("key")["ratio"]
    b = pd.read_csv(second).set_index("key")["ratio"]
    gap = np.abs(a - b[a.index]) / ((a + b[a.index]) / 2)
    return {"rows": len(gap), "share_within_5pct": round(float((gap <= 0.05).mean()), 3),
            "share_within_10pct": round(float((gap <= 0.10).mean()), 3)}


def _export(args: tuple[Arch, str, Path, str]) -> Path:
    arch, model_format, cache, precision = args
    return export_subnet(arch, 1.0, 1000, model_format, cache, precision=precision)


def _export_all(archs: list[Arch], model_format: str, cache: Path, precision: str) -> None:
    """Every subnet's file first: TF-Lite conversions take seconds each, so two processes share them."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    jobs = [(arch, model_format, cache, precision) for arch in archs]
    if model_format == "tflite":
        # spawn, as supernet.export does: forking after torch and JAX started their threads can deadlock.
        with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
            list(tqdm(pool.map(_export, jobs), total=len(jobs), desc="export", unit="subnet"))
    else:
        for job in jobs:
            _export(job)


def _timed(arch: Arch, model_format: str, cache: Path, precision: str = "fp32") -> Timed:
    path = export_subnet(arch, 1.0, 1000, model_format, cache, precision=precision)
    shape = (1, 3, arch.r, arch.r) if model_format == "onnx" else (1, arch.r, arch.r, 3)
    return Timed(path, shape)


def _plot(truth: np.ndarray, predictions: dict[str, np.ndarray], png: Path, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for (label, values), marker in zip(predictions.items(), "o^x", strict=False):
        ax.scatter(truth, values, s=16, marker=marker, label=label)
    line = np.linspace(0.9 * truth.min(), 1.1 * truth.max(), 10)
    ax.plot(line, line, color="black", linewidth=1, label="y = x")
    ax.fill_between(line, 0.95 * line, 1.05 * line, color="grey", alpha=0.3, label="±5%")
    ax.set_xlabel("plain-loop latency (ms, independent harness, at the table run's device state)")
    ax.set_ylabel("predicted or agent-measured latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, png)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/fidelity"))
    parser.add_argument("--runtime", choices=list(ROWS), default="onnxruntime")
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                        help="int8: tables, subnets and ground truth of statically quantized models")
    parser.add_argument("--resolutions", default="160,192,224")
    parser.add_argument("--subnets", type=int, default=100)
    parser.add_argument("--calibration-subnets", type=int, default=20)
    parser.add_argument("--budgets", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=PlainLoop().rounds, help="ground-truth rounds per subnet")
    parser.add_argument("--guard", type=float, default=0.0, help="the closed loop's --guard (default 0)")
    parser.add_argument("--percentile", type=int, choices=PERCENTILES, default=50,
                        help="the closed loop's budgets hold this percentile of runs (default 50: the median)")
    parser.add_argument("--skip-loop", action="store_true", help="no closed loop (tables and subnets only)")
    parser.add_argument("--loop-only", action="store_true",
                        help="only the closed loop, on the table an earlier run left in --out")
    args = parser.parse_args()
    resolutions = [int(r) for r in args.resolutions.split(",")]
    rows, provider = ROWS[args.runtime]
    profile = resolve_device("local", {"runtime": args.runtime, "provider": provider, "precision": args.precision})
    cache = args.out / "cache"
    harness = PlainLoop(runtime=args.runtime, rounds=args.rounds)
    # In the run's precision, as the agent's reference is: int8 and float subnets drift apart on this CPU, so an
    # int8 subnet over a float workload is not a steady ratio (an hour later it had moved 15%).
    workload = _timed(WORKLOAD, profile.model_format, cache, args.precision)

    def build(folder: str) -> tuple[Path, float]:
        started = time.perf_counter()
        run(["--device", "local", "--runtime", args.runtime, "--provider", provider, "--precision", args.precision,
             "--width", "1.0", "--resolutions", args.resolutions, "--rows", rows, "--out", str(args.out / folder),
             "--cache", str(cache), "--quiet"])
        return table_path(args.out / folder, profile, 1.0), time.perf_counter() - started

    if args.loop_only:
        table = table_path(args.out / "table", profile, 1.0)
        loop = _closed_loop(args, profile, table, resolutions, harness, workload, cache)
        _report(args.out / f"closed_loop{percentile_tail(args.percentile)}.json", {"closed_loop": loop})
        return
    before = harness.workload_ms(workload)
    table, table_s = build("table")
    after = harness.workload_ms(workload)
    rerun, rerun_s = build("rerun")

    calibrated = args.out / "calibrated" / table.name
    calibrated.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".csv", ".json", ".samples.jsonl"):
        shutil.copy(table.with_suffix(suffix) if suffix != ".samples.jsonl" else table.with_name(table.stem + suffix),
                    calibrated.with_name(calibrated.stem + suffix))
    space = ArchSpace.for_width(1.0)
    rng = random.Random(2024)
    archs = list(dict.fromkeys(space.sample(rng).with_resolution(rng.choice(resolutions))
                               for _ in range(args.subnets)))
    stated = read_table(table)
    reference, table_anchor_ms = reference_of(stated.meta), table_anchor(stated)
    protocol = with_table_blocks(Protocol(), stated.meta)  # what --subnets and --search use with this table
    _export_all(archs, profile.model_format, cache, args.precision)
    agent, truth = [], {}
    with open_transport(profile, "localhost") as transport, \
            tqdm(total=len(archs), desc="agent and ground truth", unit="subnet") as bar:
        fit = calibrate(profile, transport, calibrated, args.calibration_subnets, cache, protocol, seed=7)
        for start in range(0, len(archs), 10):
            chunk = archs[start:start + 10]
            agent += measure_subnets(profile, transport, chunk, width_mult=1.0, n_classes=1000,
                                     anchor_ms=table_anchor_ms, reference=reference,
                                     protocol=protocol, cache_dir=cache,
                                     scratch=args.out, work_name=f"fidelity{start}")
            truth.update(harness.measure({a.to_json(): _timed(a, profile.model_format, cache, args.precision)
                                          for a in chunk}, workload))
            bar.update(len(chunk))
    anchor_w = _workload_at_table_state(archs, agent, truth)
    (args.out / "workload_anchor.json").write_text(json.dumps({"anchor_ms": anchor_w, "how": ANCHOR_HOW,
                                                               "before_table": before, "after_table": after}))
    plain = np.array([truth[arch.to_json()].at(anchor_w) for arch in archs])
    raw = LatencyPredictor(table, calibrated=False).predict(archs)
    with_fit = LatencyPredictor(calibrated).predict(archs)
    measured = np.array([m["measured_ms"] for m in agent])
    frame = pd.DataFrame({"arch": [a.to_json() for a in archs], "resolution": [a.r for a in archs],
                          "plain_loop_ms": plain, "plain_loop_absolute_ms": [truth[a.to_json()].absolute_ms
                                                                               for a in archs],
                          "table_sum_ms": raw, "calibrated_ms": with_fit, "agent_ms": measured,
                          "agent_absolute_ms": [m["absolute_ms"] for m in agent],
                          "agent_plain_loop_ms": [m["steady_ms"] for m in agent],
                          "regime": [m["regime"] for m in agent]})
    frame.to_csv(args.out / "fidelity.csv", index=False)

    def error(values: np.ndarray) -> np.ndarray:
        return (values - plain) / plain * 100

    by_resolution = {int(r): {"raw": _scores(error(raw)[frame["resolution"] == r]),
                              "calibrated": _scores(error(with_fit)[frame["resolution"] == r])}
                     for r in resolutions}
    title = f"{len(archs)} subnets, w1.0, r {resolutions}, {args.runtime} CPU {args.precision}, {rows} rows"
    png = _plot(plain, {"table sum": raw, "calibrated": with_fit, "agent (at the table's anchor)": measured},
                args.out / "fidelity.png", title)
    report = {
        "runtime": args.runtime, "precision": args.precision, "rows": rows, "subnets": len(archs),
        "resolutions": resolutions,
        "ground_truth": {**harness.describe(), "workload": WORKLOAD.to_json(), "workload_precision": args.precision,
                         "workload_anchor_ms": round(anchor_w, 4), "anchor": ANCHOR_HOW,
                         "workload_before_and_after_table_ms": [round(before, 4), round(after, 4)]},
        "table_minutes": round(table_s / 60, 2), "rerun_minutes": round(rerun_s / 60, 2),
        "table_items": stated.meta.get("items_measured"),
        "timing": stated.meta.get("timing"),
        "raw_table_sum": _scores(error(raw)), "calibrated": _scores(error(with_fit)),
        "agent_measured": _scores(error(measured)),
        "agent_vs_harness_absolute": _ratio_summary(frame["agent_absolute_ms"] / frame["plain_loop_absolute_ms"]),
        "agent_plain_loop_vs_harness_absolute": _ratio_summary(frame["agent_plain_loop_ms"]
                                                                / frame["plain_loop_absolute_ms"]),
        "agent_regime_blocked_over_plain": _ratio_summary(frame["regime"]),
        "by_resolution": by_resolution,
        "calibration": {**{k: v for k, v in fit.to_dict().items() if k not in ("sums_ms", "measured_ms")},
                        "fitted_on": f"{args.calibration_subnets} subnets of another seed, spread over the "
                                     "table's range"},
        "two_table_runs_minutes_apart": _agreement(table, rerun),
        "plot": str(png),
    }
    _report(args.out / "report.json", report)
    if not args.skip_loop:
        loop = _closed_loop(args, profile, table, resolutions, harness, workload, cache)
        _report(args.out / f"closed_loop{percentile_tail(args.percentile)}.json", {"closed_loop": loop})


def _workload_at_table_state(archs: list[Arch], agent: list[dict], truth: dict) -> float:
    """The harness's workload time at the table's device state (see ``ANCHOR_HOW``)."""
    now = [truth[arch.to_json()].absolute_ms / truth[arch.to_json()].normalized for arch in archs]
    to_table_state = [m["measured_ms"] / m["absolute_ms"] for m in agent]
    return float(np.median(np.array(now) * np.array(to_table_state)))


def _report(path: Path, report: dict) -> None:
    """Printed, and kept beside the run's files."""
    text = json.dumps(report, indent=1)
    path.write_text(text + "\n")
    print(text)


def _closed_loop(args, profile, table: Path, resolutions, harness: PlainLoop, workload: Timed, cache: Path) -> dict:
    """The loop over ``--budgets`` budgets on the table's raw sums (``deliver``, what ``ofa-profile --search
    --raw-latency`` runs), its deliveries timed again by the harness at the same percentile, right after it.

    The harness's workload time at the table's state is found as for the subnets (``ANCHOR_HOW``), from the loop's
    own measurements of its deliveries: the relation between the two sides' workloads moves by hours on this VM,
    and a ``--loop-only`` run judged by the anchor of a run three hours before read the agent 7% off."""
    predictor = table_predictor(table, args.percentile, raw_latency=True)
    fastest, _ = predictor.minimum()
    space = ArchSpace(resolutions=tuple(resolutions))
    accuracy = AccuracyPredictor.default()
    # Above the latency of the subnet the accuracy predictor ranks first, every budget gets that subnet, and slack
    # only measures the gap: the budgets stop just under it.
    best = evolution_search(accuracy, [], space, seed=0).arch
    highest = float(predictor.predict([best])[0])
    budgets = [float(b) for b in np.round(np.linspace(fastest * 1.1, highest * 0.98, args.budgets), 2)]
    started = time.perf_counter()
    with open_transport(profile, "localhost") as transport:
        deliveries = deliver(profile, transport, table, budgets, accuracy, Protocol(), cache, raw_latency=True,
                             max_slack=MAX_SLACK, guard=args.guard, percentile=args.percentile).deliveries
    loop_s = time.perf_counter() - started
    loop = pd.DataFrame([d.to_dict() for d in deliveries])
    delivered = {d.arch: _timed(Arch.from_json(d.arch), profile.model_format, cache, args.precision)
                 for d in deliveries}
    truth = dataclasses.replace(harness, percentile=args.percentile).measure(delivered, workload)
    anchor_w = _workload_at_table_state([Arch.from_json(d.arch) for d in deliveries],
                                        [d.to_dict() for d in deliveries], truth)
    loop["plain_loop_ms"] = [truth[d.arch].at(anchor_w) for d in deliveries]
    loop["plain_loop_slack"] = (loop["budget_ms"] - loop["plain_loop_ms"]) / loop["budget_ms"]
    loop.to_csv(args.out / f"closed_loop{percentile_tail(args.percentile)}.csv", index=False)
    png = plot_delivered(loop, args.out / f"closed_loop{percentile_tail(args.percentile)}.png",
                         f"closed loop, w1.0, local {args.runtime} {args.precision}, p{args.percentile} budgets")
    given_up = (loop["open_loop_accuracy"] - loop["accuracy"]) * 100
    return {"budgets": len(loop), "share_met_agent": round(float(loop["met"].mean()), 3),
            "share_met_plain_loop": round(float((loop["plain_loop_slack"] >= 0).mean()), 3),
            "mean_slack_plain_loop": round(float(loop["plain_loop_slack"].mean()), 4),
            "max_slack_plain_loop": round(float(loop["plain_loop_slack"].max()), 4),
            "mean_slack_agent": round(float(((loop["budget_ms"] - loop["measured_ms"]) / loop["budget_ms"]).mean()),
                                      4),
            "mean_rounds": round(float(loop["rounds"].mean()), 2), "max_slack": MAX_SLACK, "guard": args.guard,
            "percentile": args.percentile, "workload_anchor_ms": round(anchor_w, 4),
            "top1_points_given_up_mean": round(float(given_up.mean()), 3),
            "seconds": round(loop_s, 1), "plot": str(png)}


if __name__ == "__main__":
    main()
