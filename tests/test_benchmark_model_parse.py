"""Parsing benchmark_model output, on verbatim text of the newer and older formats as published by users/TF docs."""

# ruff: noqa: E501 - the sample outputs are verbatim, long lines included

from __future__ import annotations

import pytest

from profiler.benchmark_model import BenchmarkModelError, parse_benchmark_output

# Newer build with p5/median/p95 (an XNNPACK run on an Arm board).
NEW_WITH_MEDIAN = """\
INFO: Initialized session in 5.579ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415

INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
"""

# Newer build without percentiles.
NEW_PLAIN = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [./mobilenet_v1_1.0_224.tflite]
Enable op profiling: [1]
#threads used for CPU inference: [4]
Loaded model ./mobilenet_v1_1.0_224.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
"""

# Older build (TF docs' op-profiling example).
OLD = """\
Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929
Memory (bytes): count=0
31 nodes observed


Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9
"""

# Oldest build, where the steady-state mean is labelled "no stats".
OLDEST = """\
Initialized session in 21.039ms
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=751932

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=747738 curr=747428 min=747331 max=748577 avg=747733 std=293

Average inference timings in us: Warmup: 751932, Init: 21039, no stats: 747733
"""


def test_newer_format_with_percentiles():
    """Init/warm-up/avg from the summary line; count, std, min, max and median from the timed count= line."""
    result = parse_benchmark_output(NEW_WITH_MEDIAN)
    assert result.avg_ms == pytest.approx(1240.27)
    assert result.init_ms == pytest.approx(5.579)
    assert result.warmup_ms == pytest.approx(1357.6)
    assert (result.count, result.median_ms, result.std_ms) == (50, pytest.approx(1239.807), pytest.approx(2.565))
    assert (result.min_ms, result.max_ms) == (pytest.approx(1238.588), pytest.approx(1252.566))


def test_newer_format_without_percentiles_has_no_median():
    """Builds that print no median leave it None rather than inventing one."""
    result = parse_benchmark_output(NEW_PLAIN)
    assert result.avg_ms == pytest.approx(2950.34)
    assert result.count == 50
    assert result.median_ms is None


@pytest.mark.parametrize(
    ("text", "avg_ms", "init_ms", "warmup_ms"),
    [
        (OLD, 79.7609, 38.467, 83.235),
        (OLDEST, 747.733, 21.039, 751.932),
    ],
)
def test_older_formats(text: str, avg_ms: float, init_ms: float, warmup_ms: float):
    """`Average inference timings in us: Warmup, Init, Inference|no stats` (Warmup comes first there)."""
    result = parse_benchmark_output(text)
    assert (result.avg_ms, result.init_ms, result.warmup_ms) == pytest.approx((avg_ms, init_ms, warmup_ms))
    assert result.count == 50


def test_unconsumed_flags_fail_loudly():
    """A misspelled flag is only warned about by benchmark_model: the parser refuses the run."""
    text = NEW_PLAIN.replace("STARTING!", "STARTING!\nUnconsumed cmdline flags: --num_thread=4")
    with pytest.raises(BenchmarkModelError, match=r"ignored flags it does not know.*--num_thread=4"):
        parse_benchmark_output(text)


def test_output_without_timings_quotes_its_tail():
    """A crashed run (no summary line) is an error that shows the last lines."""
    with pytest.raises(BenchmarkModelError, match="Failed to load model"):
        parse_benchmark_output("STARTING!\nERROR: Failed to load model /data/local/tmp/x.tflite\n")
