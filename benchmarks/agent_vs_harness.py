"""Do the agent and the plain-loop harness read the same subnets alike? JSON, for the open difference in
docs/measurement.md.

Seeded random w1.0 subnets at 160/192/224 px (ONNX Runtime, 1 thread; ``--precision int8`` for the statically
quantized ones), on this machine:

1. **Whole subnets, as ``--subnets`` and the closed loop measure them.** ``--rounds`` times in turn: the agent
   measures all of them (``measure_subnets`` against the reference workload of the table in ``--table``, or of a
   table built first), then the harness (:mod:`benchmarks.plain_loop`) times the same files. Reported: the agent's
   absolute times and its own plain loops over the harness's absolute times, and how far one measurement of a
   subnet moves from round to round (robust spread, %) on each side.
2. **The timing code alone.** In one process, per subnet and round: the agent's timer on the agent's session, then
   the harness's window on the harness's session, then the harness's window on the agent's session.
3. **A neighbour on the other core.** The harness's windows with the other core idle, with a process there that
   wakes every millisecond, and with one that spins.

    PYTHONPATH=. .venv/bin/python -m benchmarks.agent_vs_harness --out /tmp/avh [--table T.csv] [--precision int8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.commands import run
from benchmarks.plain_loop import PlainLoop, Timed
from benchmarks.table_fidelity import WORKLOAD, _timed
from predictors.table_io import read_table
from profiler.connect import open_transport
from profiler.devices import resolve_device
from profiler.modes import table_path
from profiler.protocol import Protocol
from profiler.reference import reference_of
from profiler.remeasure import table_anchor
from profiler.steady import with_table_blocks
from profiler.whole_subnets import measure_subnets
from supernet.arch import Arch, ArchSpace
from supernet.formats import ONNX_FREE_DIMS
from supernet.model_cache import agent_model

AGENTS = Path(__file__).resolve().parents[1] / "agents"
NEIGHBOURS = {"idle": None, "wakes every 1 ms": "import time\nwhile True: time.sleep(0.001)",
              "spins": "while True: pass"}


def _spread_pct(values: np.ndarray) -> float:
    """Robust spread (1.4826 MAD of the log, in %) of each subnet's values over rounds, median over subnets."""
    logs = np.log(values / np.median(values, axis=0))
    return round(float(np.median(np.abs(logs)) * 1.4826 * 100), 2)


def _archs(n: int, seed: int) -> list[Arch]:
    space, rng = ArchSpace.for_width(1.0), random.Random(seed)
    return [dataclasses.replace(space.sample(rng), r=(160, 192, 224)[i % 3]) for i in range(n)]


def whole_subnets(archs: list[Arch], table: Path, cache: Path, scratch: Path, rounds: int, precision: str) -> dict:
    stated = read_table(table)
    reference, anchor = reference_of(stated.meta), table_anchor(stated)
    protocol = with_table_blocks(Protocol(), stated.meta)
    profile = resolve_device("local", {"precision": precision})
    harness, workload = PlainLoop(rounds=2), _timed(WORKLOAD, "onnx", cache, precision)
    absolute, plain, harnessed = [], [], []
    with open_transport(profile, "localhost") as transport:
        for round_no in range(rounds):
            agent = measure_subnets(profile, transport, archs, width_mult=1.0, n_classes=1000, anchor_ms=anchor,
                                    reference=reference, protocol=protocol, cache_dir=cache, scratch=scratch,
                                    work_name=f"avh{round_no}")
            truth = harness.measure({a.to_json(): _timed(a, "onnx", cache, precision) for a in archs}, workload)
            absolute.append([m["absolute_ms"] for m in agent])
            plain.append([m["steady_ms"] for m in agent])
            harnessed.append([truth[a.to_json()].absolute_ms for a in archs])
    absolute, plain, harnessed = map(np.array, (absolute, plain, harnessed))
    return {"subnets": len(archs), "rounds": rounds,
            "agent_absolute_over_harness": round(float(np.median(absolute / harnessed)), 4),
            "agent_plain_loop_over_harness": round(float(np.median(plain / harnessed)), 4),
            "per_round_agent_absolute_over_harness": [round(float(np.median(a / h)), 3)
                                                      for a, h in zip(absolute, harnessed, strict=True)],
            "round_to_round_spread_pct": {"agent_absolute": _spread_pct(absolute), "agent_plain_loop":
                                          _spread_pct(plain), "harness_absolute": _spread_pct(harnessed)}}


def timing_code(models: list[Timed], rounds: int) -> dict:
    sys.path.insert(0, str(AGENTS))
    import python_agent  # the agent stands alone: imported from its folder, as it runs on a device

    loop = PlainLoop()
    ours = [loop.load(model) for model in models]
    theirs = []
    for model in models:
        spec = {**agent_model(model.path.stem, model.path, model.shape, "onnx"), "runtime": "onnxruntime",
                "provider": "CPU", "dim_overrides": dict.fromkeys(ONNX_FREE_DIMS, model.shape[-1])}
        theirs.append(python_agent.load_onnxruntime(spec, str(model.path), 1)[0])
    agent_timer, harness_on_agent, harness = [], [], []
    for _ in range(rounds):
        for i in range(len(models)):
            harness.append(loop.window_ms(ours[i]))
            with python_agent.gc_paused():
                timer = python_agent.Timer(theirs[i], 5, 1.0, None)
                agent_timer.append(float(np.median([timer.sample() for _ in range(loop.runs)])))
            harness_on_agent.append(loop.window_ms(theirs[i]))
    base = np.array(harness)
    return {"agent_timer_over_harness": round(float(np.median(np.array(agent_timer) / base)), 4),
            "harness_on_agent_session_over_harness": round(float(np.median(np.array(harness_on_agent) / base)), 4)}


def neighbours(models: list[Timed], rounds: int) -> dict:
    loop = PlainLoop()
    runs = [loop.load(model) for model in models]
    windows: dict[str, list[list[float]]] = {name: [] for name in NEIGHBOURS}
    for _ in range(rounds):
        for name, code in NEIGHBOURS.items():
            process = subprocess.Popen([sys.executable, "-c", code]) if code else None
            try:
                time.sleep(0.2)
                windows[name].append([loop.window_ms(run) for run in runs])
            finally:
                if process is not None:
                    process.kill()
                    process.wait()
    idle = np.array(windows["idle"])
    return {f"{name} over idle": round(float(np.median(np.median(np.array(values) / idle, axis=0))), 4)
            for name, values in windows.items() if name != "idle"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/agent_vs_harness"))
    parser.add_argument("--table", type=Path, help="a local w1.0 ONNX Runtime table (default: build one)")
    parser.add_argument("--subnets", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    args = parser.parse_args()
    cache = args.out / "cache"
    table = args.table
    if table is None:
        run(["--device", "local", "--width", "1.0", "--resolutions", "160,192,224", "--out", str(args.out / "table"),
             "--cache", str(cache), "--precision", args.precision, "--quiet"])
        table = table_path(args.out / "table", resolve_device("local", {"precision": args.precision}), 1.0)
    archs = _archs(args.subnets, args.seed)
    models = [_timed(arch, "onnx", cache, args.precision) for arch in archs]
    report = {"precision": args.precision,
              "whole_subnets": whole_subnets(archs, table, cache, args.out, args.rounds, args.precision),
              "timing_code_in_one_process": timing_code(models, args.rounds + 1),
              "neighbour_on_the_other_core": neighbours(models[:6], 2 * args.rounds)}
    text = json.dumps(report, indent=1)
    (args.out / "report.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
