"""Does the agent measure what an in-process loop measures? Prints JSON; the medians should agree within 3%.

Runs, on this machine through the local transport, the same ONNX model (a 1x32x56x56 conv stack, about 2 ms here) in
turn: in this process, then the agent and this process again, three rounds, so drift between runs shows up.

    .venv/bin/python benchmarks/agent_overhead.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from profiler.agent_run import run_python_agent
from profiler.transports.local import LocalTransport

SHAPE = (1, 32, 56, 56)
SETTINGS = {"threads": 1, "warmup": 20, "min_count": 300, "min_time_s": 2.0}


def _model(path: Path) -> Path:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 32, 3, padding=1)
    ).eval()
    torch.onnx.export(net, (torch.randn(SHAPE),), str(path), dynamo=False, opset_version=17)
    return path


def _in_process(path: Path) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)}
    for _ in range(SETTINGS["warmup"]):
        session.run(None, feeds)
    samples, started = [], time.perf_counter()
    while len(samples) < SETTINGS["min_count"] or time.perf_counter() - started < SETTINGS["min_time_s"]:
        begin = time.perf_counter_ns()
        session.run(None, feeds)
        samples.append((time.perf_counter_ns() - begin) / 1e6)
    return float(np.median(samples))


def main(rounds: int = 3) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model = _model(folder / "conv.onnx")
        in_process, agent = [_in_process(model)], []
        with LocalTransport() as local:
            for index in range(rounds):
                run = run_python_agent(
                    local,
                    [{"name": "conv", "path": model}],
                    remote_dir=str(folder / f"device{index}"),
                    results=folder / f"results{index}.jsonl",
                    timeout=300,
                    python=sys.executable,
                    settings=SETTINGS,
                )
                agent.append(run.results["conv"]["summary"]["median"])
                in_process.append(_in_process(model))
    # Each agent run is compared with the in-process runs just before and after it, which brackets drift.
    ratios = [value / ((in_process[i] + in_process[i + 1]) / 2) - 1 for i, value in enumerate(agent)]
    report = {
        "model": f"conv3x3 32->64->32 at {SHAPE}, ONNX Runtime CPU, 1 thread",
        "in_process_median_ms": [round(value, 4) for value in in_process],
        "agent_median_ms": [round(value, 4) for value in agent],
        "relative_difference_per_round": [round(value, 4) for value in ratios],
        "relative_difference": round(float(np.median(ratios)), 4),
        "within_3_percent": abs(float(np.median(ratios))) <= 0.03,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
