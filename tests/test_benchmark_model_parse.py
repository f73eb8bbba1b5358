"""Parsing benchmark_model output, on verbatim text of the newer and older formats as published by users/TF docs."""

# ruff: noqa: E501 - the sample outputs are verbatim, long lines included

from __future__ import annotations

import pytest

from profiler.benchmark_model import BenchmarkModelError, parse_benchmark_output, parse_op_profile

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

# The common prefix of our TF-Lite exports' tensor names: litert-torch names each module "CLASS_ATTRIBUTE".
EXPORT_PREFIX = "litert_torch._convert.to_channel_last_io.ChannelLastIOWrapper/supernet.mobilenetv3.MobileNetV3_wrapped"

# Our TF-Lite export of a w1.0 subnet (first_conv, 11 blocks, head; r=128), timed with --use_xnnpack=false
# --enable_op_profiling=true: the format of tensorflow/lite/profiling (StatsCalculator), tab-separated columns, with
# the tensor names the export really has ({W} is their common prefix); 8 of the 93 nodes are shown.
OP_PROFILE = (
    """\
INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=4391 curr=4262 min=4240 max=4478 avg=4291.6 std=48 p5=4245 median=4279 p95=4402

INFO: Inference timings in us: Init: 21771, First inference: 5127, Warmup (avg): 4456.3, Inference (avg): 4291.6
INFO: Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t                             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                         AllocateTensors\t    1.102\t    1.102\t100.000%\t100.000%\t   512.000\t        1\tAllocateTensors/0

Number of nodes executed: 1
============================== Summary by node type ==============================
\t                             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t                         AllocateTensors\t        1\t     1.102\t   100.000%\t   100.000%\t     0.000\t        1

Timings (microseconds): count=1 curr=1102
Memory (bytes): count=0
1 nodes observed

INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t                             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                                     PAD\t    0.061\t    0.058\t  4.571%\t  4.571%\t     0.000\t        1\t[{W}/supernet._layers.ConvLayer_first_conv/torch.nn.modules.conv.Conv2d_conv;]:0
\t                                 CONV_2D\t    0.412\t    0.398\t 31.363%\t 35.934%\t     0.000\t        1\t[{W}/supernet._layers.ConvLayer_first_conv/torch.nn.modules.batchnorm.BatchNorm2d_bn;;{W}/supernet._layers.ConvLayer_first_conv/torch.nn.modules.conv.Conv2d_conv;1]:1
\t                              HARD_SWISH\t    0.097\t    0.091\t  7.171%\t 43.105%\t     0.000\t        1\t[{W}/supernet._layers.ConvLayer_first_conv/torch.nn.modules.activation.Hardswish_act;]:2
\t                       DEPTHWISE_CONV_2D\t    0.083\t    0.079\t  6.225%\t 49.330%\t     0.000\t        1\t[{W}/supernet._layers.ResidualBlock_7/supernet._layers.MBConvLayer_conv/torch.nn.modules.container.Sequential_depth_conv/torch.nn.modules.batchnorm.BatchNorm2d_bn;;{W}/supernet._layers.ResidualBlock_6/supernet._layers.MBConvLayer_conv/torch.nn.modules.container.Sequential_inverted_bottleneck/torch.nn.modules.batchnorm.BatchNorm2d_bn;;{W}/supernet._layers.ResidualBlock_7/supernet._layers.MBConvLayer_conv/torch.nn.modules.container.Sequential_depth_conv/torch.nn.modules.conv.Conv2d_conv;1]:46
\t                                     ADD\t    0.006\t    0.005\t  0.394%\t 49.724%\t     0.000\t        1\t[{W}/supernet._layers.ResidualBlock_10;]:86
\t                                    MEAN\t    0.031\t    0.029\t  2.285%\t 52.009%\t     0.000\t        1\t[{W};]:89
\t                                 CONV_2D\t    0.352\t    0.347\t 27.344%\t 79.354%\t     0.000\t        1\t[{W}/supernet._layers.ConvLayer_feature_mix_layer/torch.nn.modules.conv.Conv2d_conv;2]:90
\t                         FULLY_CONNECTED\t    0.268\t    0.262\t 20.646%\t100.000%\t     0.000\t        1\t[serving_default_output_0_output]:92

============================== Top by Computation Time ==============================
\t                             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                                 CONV_2D\t    0.412\t    0.398\t 31.363%\t 31.363%\t     0.000\t        1\t[{W}/supernet._layers.ConvLayer_first_conv/torch.nn.modules.batchnorm.BatchNorm2d_bn;;{W}/supernet._layers.ConvLayer_first_conv/torch.nn.modules.conv.Conv2d_conv;1]:1
\t                                 CONV_2D\t    0.352\t    0.347\t 27.344%\t 58.708%\t     0.000\t        1\t[{W}/supernet._layers.ConvLayer_feature_mix_layer/torch.nn.modules.conv.Conv2d_conv;2]:90
\t                         FULLY_CONNECTED\t    0.268\t    0.262\t 20.646%\t 79.354%\t     0.000\t        1\t[serving_default_output_0_output]:92

Number of nodes executed: 93
============================== Summary by node type ==============================
\t                             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t                                 CONV_2D\t       45\t     3.021\t    70.412%\t    70.412%\t     0.000\t        1
\t                       DEPTHWISE_CONV_2D\t       11\t     0.604\t    14.078%\t    84.490%\t     0.000\t        1

Timings (microseconds): count=50 first=4380 curr=4250 min=4229 max=4466 avg=4280.4 std=47
Memory (bytes): count=0
93 nodes observed
"""
).replace("{W}", EXPORT_PREFIX)


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


def test_op_profile_rows_of_the_regular_runs_in_run_order():
    """Only the regular runs' Run Order table: names as printed (module paths), type, avg ms; no set-up rows."""
    rows = parse_op_profile(OP_PROFILE)
    assert [(kind, avg) for _, kind, avg in rows] == [
        ("PAD", 0.058),
        ("CONV_2D", 0.398),
        ("HARD_SWISH", 0.091),
        ("DEPTHWISE_CONV_2D", 0.079),
        ("ADD", 0.005),
        ("MEAN", 0.029),
        ("CONV_2D", 0.347),
        ("FULLY_CONNECTED", 0.262),
    ]
    assert rows[0][0] == f"[{EXPORT_PREFIX}/supernet._layers.ConvLayer_first_conv/torch.nn.modules.conv.Conv2d_conv;]:0"
    assert rows[3][0].endswith(
        "ResidualBlock_7/supernet._layers.MBConvLayer_conv/torch.nn.modules.container."
        "Sequential_depth_conv/torch.nn.modules.conv.Conv2d_conv;1]:46"
    )
    assert (rows[5][0], rows[7][0]) == (f"[{EXPORT_PREFIX};]:89", "[serving_default_output_0_output]:92")


def test_op_profile_does_not_replace_the_binary_s_own_timings():
    """The profiler's 'Timings (microseconds): count=..' sums come after the binary's count= line; they lose."""
    result = parse_benchmark_output(OP_PROFILE)
    assert (result.count, result.median_ms, result.std_ms) == (50, pytest.approx(4.279), pytest.approx(0.048))


def test_op_profile_older_builds_and_the_xnnpack_delegate():
    """Older builds add a [start] column; XNNPACK's rows are named by its operators, with no tensor names."""
    older = (
        "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
        "============================== Run Order ==============================\n"
        "\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]"
        "\t[times called]\t[Name]\n"
        "\t                 CONV_2D\t            0.066\t   87.754\t   60.957\t  2.066%\t  2.066%\t     0.000"
        "\t        1\t[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0\n"
        "\n"
    )
    assert parse_op_profile(older) == [("[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0", "CONV_2D", 60.957)]
    xnnpack = (
        "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n"
        "============================== Run Order ==============================\n"
        "\t                             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]"
        "\t[times called]\t[Name]\n"
        "\t           Convolution (NHWC, F32) IGEMM\t    0.412\t    0.398\t 31.363%\t 31.363%\t     0.000"
        "\t        1\tDelegate/Convolution (NHWC, F32) IGEMM:0\n"
    )
    assert parse_op_profile(xnnpack) == [
        ("Delegate/Convolution (NHWC, F32) IGEMM:0", "Convolution (NHWC, F32) IGEMM", 0.398)
    ]


def test_op_profile_missing_or_malformed_is_refused():
    """Output without the table names the flag to pass; a row that does not fit the header is quoted."""
    with pytest.raises(BenchmarkModelError, match="--enable_op_profiling=true"):
        parse_op_profile(NEW_WITH_MEDIAN)
    broken = OP_PROFILE.replace("\t    0.398\t", "\t    n/a\t", 1)
    with pytest.raises(BenchmarkModelError, match="does not fit the header"):
        parse_op_profile(broken)


# LiteRT's benchmark (litert/tools:benchmark_model). Synthesised from the lines issue 24 quotes from published runs
# of that build (a summary block in ms with two decimals, source tags on every line and a line broken after its
# tag, count= lines in microseconds, footprints in MB); the numbers are made up to agree with each other.
LITERT = """\
INFO: [./litert/tools/benchmark_litert_model.h:81] Graph: [model.tflite]
INFO: [./litert/tools/benchmark_litert_model.h:88] Num threads: [1]
INFO: [./litert/tools/benchmark_litert_model.h:120] count=1055 first=612 curr=451 min=440 max=612 avg=470.2 std=12 p5=449 median=468 p95=497
INFO: [./litert/tools/benchmark_litert_model.h:120] count=2112 first=470 curr=455 min=438 max=530 avg=461.7 std=9 p5=447 median=459 p95=478
INFO: [./litert/tools/benchmark_litert_model.h:140] ========== BENCHMARK RESULTS ==========
INFO: [./litert/tools/benchmark_litert_model.h:141] Model initialization: 4.48 ms
INFO: [./litert/tools/benchmark_litert_model.h:142] Warmup (avg): 0.47 ms (1055 runs)
INFO: [./litert/tools/benchmark_litert_model.h:143]
Inference (avg): 0.46 ms (2112 runs)
INFO: [./litert/tools/benchmark_litert_model.h:144] Inference (min): 0.44 ms
INFO: [./litert/tools/benchmark_litert_model.h:145] Inference (max): 0.53 ms
INFO: [./litert/tools/benchmark_litert_model.h:146] Inference (std): 0.01 ms
INFO: [./litert/tools/benchmark_litert_model.h:150] Init footprint: 8.94 MB
INFO: [./litert/tools/benchmark_litert_model.h:151] Overall footprint: 11.51 MB
"""

# TensorFlow's non-Lite tools/benchmark/benchmark_model (GraphDefs), glog prefixes; synthesised from its
# published format ("Average inference timings in us: ... no stats: X, with stats: Y" is TF-Lite's oldest line,
# so the tell is "with stats").
TENSORFLOW_TOOL = """\
2026-12-01 10:00:00.000000: I tensorflow/tools/benchmark/benchmark_model.cc:469] Graph: [graph.pb]
2026-12-01 10:00:03.000000: I tensorflow/core/util/stat_summarizer.cc:85] Timings (microseconds): count=100 first=9000 curr=8000 min=7900 max=9100 avg=8123 std=120
2026-12-01 10:00:03.000000: I tensorflow/tools/benchmark/benchmark_model.cc:636] Average inference timings in us: Warmup: 9500, no stats: 8123, with stats: 8400
"""


def test_litert_summary_in_ms_with_the_timed_runs_from_their_count_line():
    """No "Inference timings" line: init and warm-up from the summary (ms), the mean from the timed runs' count=
    line (microseconds, the more precise), median and spread from it too, and both footprints."""
    result = parse_benchmark_output(LITERT)
    assert (result.init_ms, result.warmup_ms) == (pytest.approx(4.48), pytest.approx(0.47))
    assert (result.avg_ms, result.median_ms, result.count) == (pytest.approx(0.4617), pytest.approx(0.459), 2112)
    assert (result.init_mb, result.overall_mb, result.peak_mb) == (pytest.approx(8.94), pytest.approx(11.51), None)


# LiteRT 2.1.5's layout as a user published a run of it (mlcommons/mobile_app_open issue 1134, 2026-07-28): the
# results banner untagged, short source tags, aligned values, a signature name, "Warmup (first)", a std without
# its unit, a throughput, "Memory Usage:" broken after its tag, no peak memory, and no count= lines. The lines'
# shapes follow that run; the text and the numbers here are this project's.
LITERT_215 = """\
INFO: [benchmark_litert_model.h:60] Graph: [net.tflite]
========== BENCHMARK RESULTS ==========
INFO: [benchmark_litert_model.h:92] Signature name:       serving_default
INFO: [benchmark_litert_model.h:94] Model initialization: 12.31 ms
INFO: [benchmark_litert_model.h:96] Warmup (first):       3.02 ms
INFO: [benchmark_litert_model.h:98] Warmup (avg):         2.87 ms (1 runs)
INFO: [benchmark_litert_model.h:100] Inference (avg):      2.64 ms (50 runs)
INFO: [benchmark_litert_model.h:104] Inference (min):      2.51 ms
INFO: [benchmark_litert_model.h:106] Inference (max):      2.93 ms
INFO: [benchmark_litert_model.h:108] Inference (std):      0.08
INFO: [benchmark_litert_model.h:115] Throughput:           4.10 MB/s
INFO: [benchmark_litert_model.h:124]
Memory Usage:
INFO: [benchmark_litert_model.h:126] Init footprint:       21.40 MB
INFO: [benchmark_litert_model.h:128] Overall footprint:    25.02 MB
INFO: [benchmark_litert_model.h:135] Peak memory usage not available. (peak_mem_mb <= 0)
"""


def test_litert_summary_alone_is_read_in_ms_with_its_spread_and_run_count():
    """Without count= lines, the summary's min, max, std and run count stand in for theirs (no median)."""
    summary_only = "\n".join(line for line in LITERT.splitlines() if "count=" not in line)
    result = parse_benchmark_output(summary_only)
    assert (result.avg_ms, result.count, result.median_ms) == (pytest.approx(0.46), 2112, None)
    assert (result.min_ms, result.max_ms, result.std_ms) == (pytest.approx(0.44), pytest.approx(0.53),
                                                             pytest.approx(0.01))
    result = parse_benchmark_output(LITERT_215)
    assert (result.init_ms, result.warmup_ms, result.avg_ms, result.count) == (12.31, 2.87, 2.64, 50)
    assert (result.min_ms, result.max_ms, result.std_ms) == (2.51, 2.93, 0.08)
    assert (result.init_mb, result.overall_mb, result.peak_mb) == (21.4, 25.02, None)


@pytest.mark.parametrize(("line", "fields"), [
    ("Peak memory footprint (MB): init=3.2 overall=0", {"init_mb": 3.2, "overall_mb": 0.0}),
    ("INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832",
     {"init_mb": 6.36328, "overall_mb": 109.832}),
    ("Overall peak memory footprint (MB) via periodic monitoring: 12.5", {"peak_mb": 12.5}),
])
def test_memory_under_each_label_zeros_included(line, fields):
    result = parse_benchmark_output(NEW_PLAIN + line + "\n")
    assert {key: getattr(result, key) for key in fields} == pytest.approx(fields)


def test_large_values_in_scientific_notation_and_damaged_prefixes():
    text = NEW_PLAIN.replace("Inference timings", "FO: Inference timings")
    assert parse_benchmark_output(text).avg_ms == pytest.approx(2950.34)


def test_tensorflows_graph_benchmark_is_refused_naming_the_tool_needed():
    with pytest.raises(BenchmarkModelError, match=r"TensorFlow's .*not TF-Lite's; push TF-Lite's or LiteRT's"):
        parse_benchmark_output(TENSORFLOW_TOOL)


def test_duplicate_flags_is_a_warning_not_a_failure():
    assert parse_benchmark_output("Duplicate flags: num_threads\n" + NEW_PLAIN).avg_ms == pytest.approx(2950.34)
