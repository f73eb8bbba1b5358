"""What int8 changes on this CPU: speed-up per kind of row, and the subnets a search picks in each precision. JSON
and a plot.

On the local CPU (one thread, w1.0 at --resolutions): two tables of the same command, ``ofa-profile --device local``
in fp32 and with ``--precision int8``, built one after the other; ONNX Runtime with in-network rows (the default) or
``--runtime tflite`` (LiteRT with XNNPACK, isolated rows, litert-torch's full-integer models). Each table states its
rows as ratios to a reference workload in its own precision, so the two references are then timed against each
other by the plain-loop harness (:mod:`benchmarks.plain_loop`, interleaved rounds): a row's speed-up is its fp32
ratio over its int8 ratio restated against the fp32 reference, whatever the machine's speed between the runs. Rows
are grouped by what they hold: the first convolution; blocks by expand ratio and kernel (expand 6 with a 3x3
depthwise is the most pointwise-heavy, expand 3 with a 7x7 the most depthwise-heavy), with and without
squeeze-and-excitation; and the head (the final expand, the feature mix and the classifier). Then OFA's evolutionary
search with the released accuracy predictor, for --budgets latency budgets spread over what both tables reach, once
with each table: the subnets side by side, with MACs and their latency in both precisions (table sums at each
table's anchor).

    .venv/bin/python -m benchmarks.int8_speedup --out /tmp/int8    # about 3 minutes here
    .venv/bin/python -m benchmarks.int8_speedup --out /tmp/int8-tfl --runtime tflite --resolutions 192
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.commands import run
from benchmarks.plain_loop import PlainLoop, Timed
from predictors.accuracy import AccuracyPredictor
from predictors.latency import LatencyPredictor
from predictors.search import Constraint, evolution_search
from predictors.table_io import Table, read_table
from profiler.devices import DeviceProfile, resolve_device
from profiler.modes import table_path
from profiler.plots import pyplot, save_figure
from profiler.reference import reference_of
from profiler.remeasure import table_anchor
from supernet import ArchSpace
from supernet.complexity import count_macs

RUNTIMES = {"onnxruntime": ("CPU", "in_network", "ONNX Runtime int8 (QDQ)"),
            "tflite": ("xnnpack", "isolated", "LiteRT/XNNPACK int8 (full integer)")}


def _profile(args: argparse.Namespace, precision: str) -> DeviceProfile:
    return resolve_device("local", {"runtime": args.runtime, "provider": RUNTIMES[args.runtime][0],
                                    "precision": precision})


def _table(args: argparse.Namespace, precision: str) -> Path:
    out = args.out / precision
    provider, rows, _ = RUNTIMES[args.runtime]
    run(["--device", "local", "--runtime", args.runtime, "--provider", provider, "--rows", rows, "--width", "1.0",
         "--resolutions", args.resolutions, "--precision", precision, "--out", str(out), "--cache",
         str(args.out / "cache"), "--quiet"])
    return table_path(out, _profile(args, precision), 1.0)


def _reference_factor(args: argparse.Namespace, tables: dict[str, Table]) -> tuple[float, dict]:
    """The int8 table's reference over the fp32 table's, timed against each other by the plain-loop harness, and
    how it was timed."""
    timed = {}
    for precision, table in tables.items():
        model = reference_of(table.meta).model(_profile(args, precision), args.out / "cache")
        timed[precision] = Timed(Path(model["path"]), tuple(model["inputs"][0]))
    harness = PlainLoop(runtime=args.runtime)
    factor = harness.measure({"int8": timed["int8"]}, timed["fp32"])["int8"].normalized
    return factor, {"int8_over_fp32": round(factor, 4), "how": harness.describe()["value"], "rounds": harness.rounds}


def row_kind(key: str) -> str:
    """What a row holds, for grouping speed-ups (see the module's docstring)."""
    if key.startswith("expanded_conv"):
        fields = dict(re.findall(r"(\w+):([\dx]+)", key))
        channels = int(fields["input"].split("x")[-1])
        expand = round(int(fields["expand"]) / channels)
        if expand == 1:  # the first block: a depthwise and a projection, no expansion
            return "first block (no expansion)"
        return f"block e{expand} k{fields['kernel']}" + (" SE" if fields["se"] == "1" else "")
    if key.startswith("Conv-input") and key.split("x")[2].startswith("3-"):
        return "first conv"
    return "head"


def _speedups(fp32: Path, int8: Path, factor: float) -> pd.DataFrame:
    """Per row: its ratios, the int8 one restated against the fp32 reference (times ``factor``), the speed-up."""
    a, b = (pd.read_csv(path).set_index("key") for path in (fp32, int8))
    keys = a.index.intersection(b.index)
    frame = pd.DataFrame({"fp32_ratio": a.loc[keys, "ratio"], "int8_ratio": b.loc[keys, "ratio"]})
    frame["speedup"] = frame["fp32_ratio"] / (frame["int8_ratio"] * factor)
    frame["kind"] = [row_kind(key) for key in frame.index]
    return frame


def _searches(tables: dict[str, LatencyPredictor], budgets: int, resolutions: list[int]) -> list[dict]:
    """Per budget, the subnet each precision's table sums pick, with its latency by both."""
    accuracy = AccuracyPredictor.default()
    space = ArchSpace(resolutions=tuple(resolutions))
    low = max(table.minimum()[0] for table in tables.values()) * 1.1
    high = min(float(np.median(table.predict(list(space.samples(200, seed=1))))) for table in tables.values())
    picked = []
    for budget in np.linspace(low, max(high, low * 1.5), budgets):
        row: dict = {"budget_ms": round(float(budget), 3)}
        for precision, table in tables.items():
            result = evolution_search(accuracy, [Constraint("latency_ms", table, float(budget))], space, seed=0)
            arch = result.arch
            row[precision] = {"arch": arch.to_json(), "top1": round(float(result.accuracy), 4),
                              "macs_m": round(count_macs(arch, 1.0) / 1e6, 1),
                              **{f"{p}_ms": round(float(t.predict([arch])[0]), 3) for p, t in tables.items()}}
        picked.append(row)
    return picked


def _plot(frame: pd.DataFrame, png: Path, what: str) -> Path:
    kinds = frame.groupby("kind")["speedup"].median().sort_values()
    fig, ax = pyplot().subplots(figsize=(7, 0.35 * len(kinds) + 1.2))
    ax.barh(kinds.index, kinds.values, color="tab:blue")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("int8 speed-up (fp32 row / int8 row), median per kind")
    ax.set_title(f"{what} vs fp32, 1 thread, this CPU")
    return save_figure(fig, png)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/int8"))
    parser.add_argument("--resolutions", default="160,192,224")
    parser.add_argument("--budgets", type=int, default=5)
    parser.add_argument("--runtime", choices=list(RUNTIMES), default="onnxruntime")
    args = parser.parse_args()
    paths = {precision: _table(args, precision) for precision in ("fp32", "int8")}
    fp32, int8 = paths["fp32"], paths["int8"]
    stated = {precision: read_table(path) for precision, path in paths.items()}
    factor, reference = _reference_factor(args, stated)
    frame = _speedups(fp32, int8, factor)
    frame.to_csv(args.out / "int8_speedup.csv")
    by_kind = frame.groupby("kind")["speedup"].agg(["median", "min", "max", "count"]).round(3)
    resolutions = [int(r) for r in args.resolutions.split(",")]
    sums = {p: LatencyPredictor(t, calibrated=False) for p, t in paths.items()}
    whole = np.array(list(ArchSpace(resolutions=tuple(resolutions)).samples(100, seed=3)))
    anchors = {p: table_anchor(table) for p, table in stated.items()}
    whole_speedup = ((sums["fp32"].predict(list(whole)) / anchors["fp32"])
                     / (sums["int8"].predict(list(whole)) / anchors["int8"] * factor))
    report = {
        "runtime": args.runtime, "rows": len(frame), "tables": {"fp32": str(fp32), "int8": str(int8)},
        "reference_workloads": reference,
        "speedup_by_kind": by_kind.to_dict(orient="index"),
        "whole_subnets_speedup_table_sums": {"median": round(float(np.median(whole_speedup)), 3),
                                             "min": round(float(whole_speedup.min()), 3),
                                             "max": round(float(whole_speedup.max()), 3), "subnets": len(whole)},
        "searches": _searches(sums, args.budgets, resolutions),
        "plot": str(_plot(frame, args.out / "int8_speedup.png", RUNTIMES[args.runtime][2])),
    }
    (args.out / "int8_speedup.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
