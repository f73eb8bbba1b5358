"""The fidelity benchmark's ground truth: a plain back-to-back loop that shares no timing code with the agent.

On a model whose latency a plain loop written here gives, the harness must report that latency, absolute and
normalized by its workload.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.plain_loop import GroundTruth, PlainLoop, Timed
from supernet import ArchSpace
from supernet.model_cache import export_subnet

# Compares timings of one model by two loops: run with the machine to itself (see pyproject.toml).
pytestmark = pytest.mark.serial

ARCH = ArchSpace.for_width(1.0).uniform(ks=3, e=3, d=2, r=128)


@pytest.fixture(scope="module")
def onnx_subnet(tmp_path_factory: pytest.TempPathFactory) -> Timed:
    path = export_subnet(ARCH, 1.0, 1000, "onnx", tmp_path_factory.mktemp("cache"))
    return Timed(path, (1, 3, ARCH.r, ARCH.r))


def _known_latency_ms(model: Timed, runs: int = 40) -> float:
    """The model's latency by the plainest loop there is: warm up, then the median of back-to-back runs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    for name in ("height", "width"):
        options.add_free_dimension_override_by_name(name, ARCH.r)
    session = ort.InferenceSession(str(model.path), sess_options=options, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: np.zeros(model.shape, np.float32)}
    for _ in range(10):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - begin)
    return float(np.median(times)) * 1e3


def test_the_harness_reports_a_plain_loop_latency(onnx_subnet: Timed):
    # A 1.4 ms model: windows of 40 runs and 7 rounds keep a CI machine's jitter (±20% between windows of 15
    # runs, seen once) out of the medians, at under a second per measurement.
    harness = PlainLoop(rounds=7, runs=40, warmup=5)
    ratios, normalized = [], []
    for _ in range(3):  # each measurement bracketed by the plain loop: the machine's speed drifts within minutes
        before = _known_latency_ms(onnx_subnet)
        truth = harness.measure({"m": onnx_subnet}, onnx_subnet)["m"]
        after = _known_latency_ms(onnx_subnet)
        ratios.append(truth.absolute_ms / ((before + after) / 2))
        normalized.append(truth.normalized)
        assert len(truth.round_ms) == 7
    assert 0.85 < np.median(ratios) < 1.15, ratios
    # The model timed against itself as the workload: normalized latency 1, up to noise.
    assert 0.85 < np.median(normalized) < 1.15, normalized


def _every_fifth_run_slow() -> Callable[[], None]:
    """A stand-in model whose runs take 1 ms, and every fifth 5 ms (busy waits: sleeps overshoot)."""
    count = iter(range(10**9))

    def run() -> None:
        end = time.perf_counter() + (0.005 if next(count) % 5 == 4 else 0.001)
        while time.perf_counter() < end:
            pass

    return run


def test_a_p90_harness_holds_the_slow_runs_and_keeps_its_workload_on_medians(onnx_subnet: Timed):
    """What a p90 budget is judged by: each window's 90th percentile of runs; the drift workload stays on medians."""
    harness = PlainLoop(rounds=3, runs=25, warmup=5, percentile=90)
    assert harness.window_ms(_every_fifth_run_slow()) == pytest.approx(1.0, abs=0.3)
    assert harness.window_ms(_every_fifth_run_slow(), 90) == pytest.approx(5.0, abs=0.5)
    harness.load = lambda model: _every_fifth_run_slow()  # both the model and the workload
    truth = harness.measure({"m": onnx_subnet}, onnx_subnet)["m"]
    assert truth.absolute_ms == pytest.approx(5.0, abs=0.5) and truth.normalized == pytest.approx(5.0, rel=0.25)
    assert harness.describe()["percentile"] == 90


def test_a_ground_truth_is_stated_at_an_anchor():
    truth = GroundTruth(absolute_ms=6.0, normalized=1.5, round_ms=(6.0,))
    assert truth.at(4.0) == pytest.approx(6.0) and truth.at(5.0) == pytest.approx(7.5)


def test_litert_models_are_timed_through_litert(tmp_path: Path):
    path = export_subnet(ARCH, 1.0, 1000, "tflite", tmp_path)
    model = Timed(path, (1, ARCH.r, ARCH.r, 3))
    truth = PlainLoop(runtime="tflite", rounds=2, runs=5, warmup=2).measure({"m": model}, model)["m"]
    assert truth.absolute_ms > 0 and 0.7 < truth.normalized < 1.4


def test_an_unknown_runtime_is_refused(onnx_subnet: Timed):
    with pytest.raises(ValueError, match="use one of onnxruntime, tflite"):
        PlainLoop(runtime="tvm").load(onnx_subnet)
