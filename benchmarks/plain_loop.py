"""The ground truth tables are judged against: plain back-to-back loops, timed by code that shares nothing with the
agent.

What users check a latency against is the steady state of back-to-back runs after a warm-up, as TF-Lite's
``benchmark_model`` and ``onnxruntime_perf_test`` report it. This harness times exactly that, with its own code: it
imports nothing from ``agents/`` or ``profiler/``, only NumPy and the runtime (ONNX Runtime, or LiteRT with its
default XNNPACK delegate).

- Every model is loaded once, then timed in ``rounds`` rounds; each round visits the models in a new shuffled order,
  one at a time: ``warmup`` untimed runs, then ``runs`` timed back to back, and the round's value is their median
  (or, with ``percentile`` 90, their 90th percentile: the slow runs a p90 budget holds).
- The machine's speed drifts by several percent within minutes, so the harness times a workload of its own (any
  model the caller picks, e.g. one fixed subnet) before the first model and after each one. A model's round value
  divided by the mean of the workload's two bracketing medians is its *normalized* latency; times the workload's
  latency at another moment (its *anchor*, e.g. timed just before and after a table was built), it is the model's
  plain-loop latency at that moment's device state.

A model's result is the median over rounds of both: its absolute latency now and its normalized latency.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["GroundTruth", "PlainLoop", "Timed"]

Run = Callable[[], object]


@dataclass(frozen=True)
class Timed:
    """One model to time: its file and the input shape it is fed (NCHW for ONNX, NHWC for TF-Lite)."""

    path: Path
    shape: tuple[int, ...]


@dataclass(frozen=True)
class GroundTruth:
    """A model's plain-loop latency: ``absolute_ms`` now, and ``normalized`` (over the harness's workload)."""

    absolute_ms: float
    normalized: float
    round_ms: tuple[float, ...]

    def at(self, workload_anchor_ms: float) -> float:
        """The plain-loop latency at the device state where the harness's workload took ``workload_anchor_ms``."""
        return self.normalized * workload_anchor_ms


@dataclass
class PlainLoop:
    """Times models the way ``benchmark_model`` does, one at a time, in interleaved rounds.

    Args:
        runtime: ``onnxruntime`` (CPU execution provider) or ``tflite`` (LiteRT, XNNPACK).
        threads: Intra-op threads.
        warmup: Untimed runs before each timed window.
        runs: Timed back-to-back runs per window.
        rounds: Windows per model; each round shuffles the order of the models.
        seed: Seed of the shuffles.
        percentile: A model's window value: the median (50) of its runs, or another percentile of them. The drift
            workload's windows are always medians.
    """

    runtime: str = "onnxruntime"
    threads: int = 1
    warmup: int = 10
    runs: int = 25
    rounds: int = 6
    seed: int = 0
    percentile: int = 50

    def load(self, model: Timed) -> Run:
        """A function that runs the model once on fixed random inputs."""
        loaders = {"onnxruntime": self._onnxruntime, "tflite": self._tflite}
        if self.runtime not in loaders:
            raise ValueError(f"runtime {self.runtime!r}: use one of {', '.join(loaders)}")
        return loaders[self.runtime](model)

    def _onnxruntime(self, model: Timed) -> Run:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        declared = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"]).get_inputs()[0]
        # Symbolic input dimensions (one file serving many resolutions) are fixed at load, as a user deploying
        # the file at one resolution would.
        for dim, size in zip(declared.shape, model.shape, strict=True):
            if isinstance(dim, str):
                options.add_free_dimension_override_by_name(dim, int(size))
        session = ort.InferenceSession(str(model.path), sess_options=options, providers=["CPUExecutionProvider"])
        feeds = {declared.name: np.random.default_rng(0).standard_normal(model.shape).astype(np.float32)}
        return lambda: session.run(None, feeds)

    def _tflite(self, model: Timed) -> Run:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(model.path), num_threads=self.threads)
        detail = interpreter.get_input_details()[0]
        if tuple(detail["shape"]) != model.shape:
            interpreter.resize_tensor_input(detail["index"], list(model.shape))
        interpreter.allocate_tensors()
        data = np.random.default_rng(0).standard_normal(model.shape).astype(detail["dtype"])

        def run() -> None:
            interpreter.set_tensor(detail["index"], data)
            interpreter.invoke()

        return run

    def window_ms(self, run: Run, percentile: int = 50) -> float:
        """One window: ``warmup`` runs, then the ``percentile`` (the median) of ``runs`` back-to-back runs, in ms."""
        for _ in range(self.warmup):
            run()
        times = np.empty(self.runs)
        for i in range(self.runs):
            begin = time.perf_counter_ns()
            run()
            times[i] = time.perf_counter_ns() - begin
        return float(np.percentile(times, percentile)) / 1e6

    def workload_ms(self, workload: Timed, windows: int = 5) -> float:
        """The workload alone: the median of ``windows`` windows (what an anchor is taken with)."""
        run = self.load(workload)
        return float(np.median([self.window_ms(run) for _ in range(windows)]))

    def measure(self, models: Mapping[str, Timed], workload: Timed,
                on_model: Callable[[], None] | None = None) -> dict[str, GroundTruth]:
        """Every model's plain-loop latency, absolute and normalized by ``workload``, over interleaved rounds."""
        runs = {name: self.load(model) for name, model in models.items()}
        reference = self.load(workload)
        rng = random.Random(self.seed)
        absolute: dict[str, list[float]] = {name: [] for name in models}
        normalized: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(self.rounds):
            order = list(models)
            rng.shuffle(order)
            before = self.window_ms(reference)
            for name in order:
                value = self.window_ms(runs[name], self.percentile)
                after = self.window_ms(reference)
                absolute[name].append(value)
                normalized[name].append(value / ((before + after) / 2))
                before = after
                if on_model is not None:
                    on_model()
        return {name: GroundTruth(float(np.median(absolute[name])), float(np.median(normalized[name])),
                                  tuple(absolute[name])) for name in models}

    def describe(self) -> dict[str, object]:
        return {"harness": "benchmarks/plain_loop.py (no code shared with the agent)", "runtime": self.runtime,
                "threads": self.threads, "warmup": self.warmup, "runs": self.runs, "rounds": self.rounds,
                "percentile": self.percentile,
                "value": f"median over rounds of each round's {_named(self.percentile)} of back-to-back runs after a "
                         f"warm-up"}


def _named(percentile: int) -> str:
    return "median" if percentile == 50 else f"{percentile}th percentile"
