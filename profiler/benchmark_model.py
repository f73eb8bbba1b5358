"""Parse the output of TF-Lite's ``benchmark_model`` (newer and older formats), failing loudly on bad flags.

With ``--enable_op_profiling=true`` the binary also prints per-node tables (tensorflow/lite/profiling): "Run Order",
"Top by Computation Time" and "Summary by node type", each row tab-separated as ``[node type] [first] [avg ms]
[%] [cdf%] [mem KB] [times called] [Name]`` (older builds add ``[start]`` after the type), once for the
initialization and once for the regular runs. A node's name is ``[OUTPUT TENSOR NAMES]:NODE_INDEX`` for TF-Lite's
own kernels and ``Delegate/XNNPACK OPERATOR:INDEX`` inside the XNNPACK delegate (the default on CPU), which keeps no
tensor names. Our TF-Lite exports name tensors by module path (``.../supernet._layers.ResidualBlock_7/...``), fused
ops by all their modules joined with ``;``, the op's own last; so only runs with ``--use_xnnpack=false`` can be
attributed to network units by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from supernet.errors import OFAProfileError

__all__ = ["BenchmarkModelError", "BenchmarkModelResult", "parse_benchmark_output", "parse_op_profile"]

_STATS = re.compile(r"count=(\d+)((?:\s+\w+=[-\d.e+]+)+)")
_FIELD = re.compile(r"(\w+)=([-\d.e+]+)")
_NEW_TIMINGS = re.compile(
    r"Inference timings in us: Init: ([\d.e+]+), First inference: ([\d.e+]+), "
    r"Warmup \(avg\): ([\d.e+]+), Inference \(avg\): ([\d.e+]+)"
)
# The op profiler's own summary of the per-node sums; the binary's timing lines come first where both are printed.
_PROFILER_TIMINGS = "Timings (microseconds):"
_OP_PROFILE = "Operator-wise Profiling Info for Regular Benchmark Runs"
# Older builds call the steady-state mean "Inference" or, before that, "no stats".
_OLD_TIMINGS = re.compile(
    r"Average inference timings in us: Warmup: ([\d.e+]+), Init: ([\d.e+]+), (?:Inference|no stats): ([\d.e+]+)"
)


# LiteRT's benchmark (litert/tools:benchmark_model) prints no "Inference timings" line, but a summary block in ms
# with two decimals: "Model initialization: 4.48 ms", "Warmup (avg): 0.47 ms (1055 runs)", "Inference (avg): 0.46
# ms (2112 runs)", each line tagged with its source ("[./litert/tools/benchmark_litert_model.h:NN]"), some broken
# right after the tag. Its count= lines still print microseconds, and are preferred where present.
# Where a build prints no count= line, the summary's spread and run count stand in ("Inference (std)" comes with
# or without its "ms").
_LITERT_SUMMARY = "BENCHMARK RESULTS"
_LITERT_NUMBER = r"{label}:\s*([\d.]+(?:e[-+]?\d+)?)"
_LITERT_VALUE = _LITERT_NUMBER + r"\s*ms"
_LITERT_FIELDS = {"init": r"Model initialization", "warmup": r"Warmup \(avg\)", "avg": r"Inference \(avg\)"}
_LITERT_SPREAD = {"min": r"Inference \(min\)", "max": r"Inference \(max\)", "std": r"Inference \(std\)"}
_LITERT_RUNS = re.compile(_LITERT_VALUE.format(label=_LITERT_FIELDS["avg"]) + r"\s*\((\d+) runs\)")
# TensorFlow's non-Lite tools/benchmark/benchmark_model times GraphDefs: "... no stats: X, with stats: Y".
_TENSORFLOW_TOOL = re.compile(r"no stats: [\d.e+]+, with stats: [\d.e+]+")
# Memory as the builds label it: (regex, fields it gives).
_MEMORY = (
    (re.compile(r"Peak memory footprint \(MB\): init=([\d.e+]+) overall=([\d.e+]+)"), ("init_mb", "overall_mb")),
    (re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=([\d.e+]+) overall=([\d.e+]+)"),
     ("init_mb", "overall_mb")),
    (re.compile(r"Init footprint:\s*([\d.e+]+)\s*MB"), ("init_mb",)),
    (re.compile(r"Overall footprint:\s*([\d.e+]+)\s*MB"), ("overall_mb",)),
    (re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*([\d.e+]+)"), ("peak_mb",)),
)


class BenchmarkModelError(OFAProfileError, ValueError):
    """benchmark_model's output cannot be trusted or read; the message quotes the offending line."""


@dataclass(frozen=True)
class BenchmarkModelResult:
    """Timings in ms from one benchmark_model run.

    Args:
        avg_ms: Mean steady-state inference time.
        init_ms: Interpreter initialisation time.
        warmup_ms: Mean warm-up inference time.
        count: Number of timed inference runs, from the ``count=`` line or LiteRT's summary (None without either).
        std_ms, min_ms, max_ms, median_ms: From the ``count=`` line where printed (median on newer builds only), or
            LiteRT's summary (no median).
        init_mb, overall_mb: The memory footprint after initialisation and over the whole run (MB, as the
            build reports it: a peak, or a delta from the tool's start); None where it prints none.
        peak_mb: The peak footprint from periodic monitoring, where the build reports one.
    """

    avg_ms: float
    init_ms: float
    warmup_ms: float
    count: int | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    median_ms: float | None = None
    init_mb: float | None = None
    overall_mb: float | None = None
    peak_mb: float | None = None


def parse_benchmark_output(text: str) -> BenchmarkModelResult:
    """Read one benchmark_model run's output (values in microseconds; returned in ms).

    Raises:
        BenchmarkModelError: ``Unconsumed cmdline flags`` (a misspelled flag was ignored, so the run did not
            measure what was asked), or no timing summary at all.
    """
    for line in text.splitlines():
        if "Unconsumed cmdline flags" in line:
            raise BenchmarkModelError(
                f"benchmark_model ignored flags it does not know: {line.strip()!r}; fix the flag names "
                "(this build's --help lists them) and run again"
            )
    new, old, litert = _NEW_TIMINGS.search(text), _OLD_TIMINGS.search(text), _litert_summary(text)
    stats = _steady_state_stats(text)
    if new:
        init, _first, warmup, avg = (float(value) / 1000 for value in new.groups())
    elif old:
        warmup, init, avg = (float(value) / 1000 for value in old.groups())
    elif litert:
        init, warmup, avg = litert["init"], litert["warmup"], litert["avg"]
        if stats and "avg" in stats:
            avg = stats["avg"] / 1000  # microseconds: more digits than the summary's two decimals of a ms
    elif _TENSORFLOW_TOOL.search(text):
        raise BenchmarkModelError("this benchmark_model is TensorFlow's (tools/benchmark, for GraphDefs; it prints "
                                  "'no stats: .., with stats: ..'), not TF-Lite's; push TF-Lite's or LiteRT's "
                                  "benchmark_model (tensorflow/lite/tools/benchmark) and point the profile at it")
    else:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise BenchmarkModelError(f"no 'Inference timings' line in benchmark_model output; last lines:\n{tail}")
    if stats:
        spread = {f"{key}_ms": stats[key] / 1000 for key in ("std", "min", "max", "median") if key in stats}
        spread["count"] = int(stats["count"])
    else:  # a LiteRT build without count= lines gives its summary's (ms); older builds give none
        spread = {key if key == "count" else f"{key}_ms": value for key, value in (litert or {}).items()
                  if key in (*_LITERT_SPREAD, "count")}
    return BenchmarkModelResult(avg_ms=avg, init_ms=init, warmup_ms=warmup, **spread, **_memory(text))


def _litert_summary(text: str) -> dict[str, float] | None:
    """Init, warm-up and steady-state means (ms) from LiteRT's summary block, None where there is none."""
    start = text.find(_LITERT_SUMMARY)
    if start < 0:
        return None
    block = text[start:]
    found = {key: re.search(_LITERT_VALUE.format(label=label), block) for key, label in _LITERT_FIELDS.items()}
    if found["avg"] is None:
        return None
    missing = [_LITERT_FIELDS[key].replace("\\", "") for key, match in found.items() if match is None]
    if missing:
        raise BenchmarkModelError(f"LiteRT's benchmark summary lacks {', '.join(missing)}; is the output whole?")
    summary = {key: float(match.group(1)) for key, match in found.items()}
    for key, label in _LITERT_SPREAD.items():
        match = re.search(_LITERT_NUMBER.format(label=label), block)
        if match:
            summary[key] = float(match.group(1))
    runs = _LITERT_RUNS.search(block)
    if runs:
        summary["count"] = int(runs.group(2))
    return summary


def _memory(text: str) -> dict[str, float]:
    """Memory fields (MB) the output states; the last statement of each wins, as the run's final one."""
    memory: dict[str, float] = {}
    for pattern, fields in _MEMORY:
        for match in pattern.finditer(text):
            memory.update(zip(fields, map(float, match.groups()), strict=True))
    return memory


def _steady_state_stats(text: str) -> dict[str, float] | None:
    """The last ``count=`` line: benchmark_model prints warm-up stats first, then the timed runs.

    The op profiler's ``Timings (microseconds): count=..`` lines (sums of the profiled nodes) count only in
    builds that print nothing else, such as the old one in TF's op-profiling example.
    """
    lines = [match for line in text.splitlines() for match in _STATS.finditer(line)]
    if not lines:
        return None
    last = ([match for match in lines if _PROFILER_TIMINGS not in match.string] or lines)[-1]
    fields = {"count": float(last.group(1))}
    fields.update((name, float(value)) for name, value in _FIELD.findall(last.group(2)))
    return fields


def parse_op_profile(text: str) -> list[tuple[str, str, float]]:
    """(node name, node type, mean ms per run) per node, in run order, from ``--enable_op_profiling=true`` output.

    Only the regular runs' "Run Order" table is read: the initialization's table times set-up steps, and the
    other tables repeat the same nodes sorted. Names are kept as printed (see the module docstring).

    Raises:
        BenchmarkModelError: No such table (the run had no ``--enable_op_profiling=true``), or a row that does
            not fit the table's header.
    """
    lines = text.splitlines()
    start = next((number for number, line in enumerate(lines) if _OP_PROFILE in line), len(lines))
    header = next((number + 1 for number in range(start, len(lines) - 1) if "= Run Order =" in lines[number]), None)
    if header is None:
        raise BenchmarkModelError(
            f"no '{_OP_PROFILE}' table in benchmark_model output; run it with --enable_op_profiling=true"
        )
    columns = [field.strip() for field in lines[header].split("\t")]
    if not {"[node type]", "[avg ms]", "[Name]"} <= set(columns) or columns[-1] != "[Name]":
        raise BenchmarkModelError(f"unexpected op profiling header {lines[header]!r}")
    kind, avg = columns.index("[node type]"), columns.index("[avg ms]")
    rows = []
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        fields = line.split("\t", len(columns) - 1)  # the name comes last, whatever it holds
        avg_ms = _float(fields[avg]) if len(fields) == len(columns) else None
        if avg_ms is None:
            raise BenchmarkModelError(f"op profiling row {line!r} does not fit the header {lines[header]!r}")
        rows.append((fields[-1], fields[kind].strip(), avg_ms))
    return rows


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
