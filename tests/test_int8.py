"""int8: statically quantized exports (real ``onnxruntime.quantization``, real litert-torch PT2E and LiteRT),
tables and searches in int8, and precisions that are never mixed."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import numpy_helper

from predictors.cli import main as search_main
from predictors.latency import LatencyPredictor
from predictors.table_io import read_table, sidecar_path
from profiler.builder import TableRun
from profiler.cli import main
from profiler.deliver import delivered_stem
from profiler.devices import DeviceError, check_precision_of, resolve_device
from profiler.protocol import Protocol
from profiler.reference import BLOCK_REFERENCE, NETWORK_REFERENCE
from profiler.remeasure import measured_before
from profiler.transports.local import LocalTransport
from supernet import ArchSpace
from supernet.errors import OFAProfileError
from supernet.model_cache import export_subnet, export_target, export_unit
from supernet.quantize import CALIBRATION, TFLITE_CALIBRATION, PrecisionError
from supernet.units import Unit, all_units
from tests.paths import NOTE10
from tests.peers.models import litert_interpreter

# A stem convolution, a block with squeeze-and-excitation and h-swish, and the classifier's input layer.
_UNITS = all_units(1.0, [128])
KEYS = [_UNITS[0].key, next(u.key for u in _UNITS if "se:1" in u.key and "hs:1" in u.key),
        next(u.key for u in _UNITS if u.kind == "Conv_1")]


def _outputs(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _output_step(path) -> float:
    """The quantization step of the model's output: the scale of the DequantizeLinear that produces it."""
    model = onnx.load(str(path))
    scales = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = next(n for n in model.graph.node if model.graph.output[0].name in n.output)
    assert producer.op_type == "DequantizeLinear", producer.op_type
    return float(scales[producer.input[1]])


@pytest.mark.parametrize("key", KEYS)
def test_an_int8_unit_stays_within_a_few_quantization_steps_of_the_float_unit(tmp_path, key):
    """Each int8 output is within a few quantization steps (its output's scale) of the float unit's: rounding at
    every quantized tensor on the way adds up to a step or so, never to a different function."""
    unit = Unit.from_key(key)
    fp32, int8 = (export_unit(unit, "onnx", tmp_path, precision=p) for p in ("fp32", "int8"))
    x = np.random.default_rng(1).standard_normal(unit.input_shape).astype(np.float32)
    expected, actual = _outputs(fp32, x), _outputs(int8, x)
    steps = np.abs(actual - expected) / _output_step(int8)
    # The output's own rounding alone is within half a step (median a quarter); the roundings upstream add a little
    # (measured here: medians 0.28-0.36 steps, 99th percentiles 0.9-1.6 over 30 units and two inputs).
    assert np.median(steps) <= 0.5 and np.quantile(steps, 0.99) <= 2, (np.median(steps), np.quantile(steps, 0.99))
    assert np.corrcoef(actual.ravel(), expected.ravel())[0, 1] > 0.99


def test_int8_subnets_are_deterministic_quantized_and_cached_apart_from_float(tmp_path):
    arch = ArchSpace.for_width(1.0).uniform(ks=3, e=3, d=2, r=160)
    fp32 = export_subnet(arch, 1.0, 1000, "onnx", tmp_path / "a")
    int8 = export_subnet(arch, 1.0, 1000, "onnx", tmp_path / "a", precision="int8")
    again = export_subnet(arch.with_resolution(192), 1.0, 1000, "onnx", tmp_path / "b", precision="int8")
    assert int8 != fp32 and int8.name == again.name and int8.read_bytes() == again.read_bytes()
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "QuantizeLinear" not in {
        node.op_type for node in onnx.load(str(fp32)).graph.node}
    assert int8.stat().st_size < fp32.stat().st_size / 3  # int8 weights
    assert CALIBRATION["inputs"] == 8


@pytest.mark.parametrize("reference", [BLOCK_REFERENCE, NETWORK_REFERENCE])
def test_the_reference_workload_is_exported_in_the_runs_precision(tmp_path, reference):
    """An int8 item alternating with a float workload read slower in blocks than in a plain loop: the reference
    follows the run's precision."""
    ops = {p: {node.op_type for node in onnx.load(reference.model(resolve_device("local", {"precision": p}),
                                                                  tmp_path)["path"]).graph.node}
           for p in ("fp32", "int8")}
    assert "QuantizeLinear" in ops["int8"] and "QuantizeLinear" not in ops["fp32"]


def test_int8_is_refused_where_it_cannot_be_exported_in_one_line():
    unit = Unit.from_key(KEYS[0])
    with pytest.raises(PrecisionError, match=r"for ONNX Runtime and TF-Lite, not torchscript; use --runtime onnxrun"):
        export_unit(unit, "torchscript", "unused", precision="int8")
    with pytest.raises(PrecisionError, match="unknown precision 'int4'; use one of fp32, int8"):
        export_unit(unit, "onnx", "unused", precision="int4")
    with pytest.raises(DeviceError, match="precision int8 is measured with ONNX Runtime and TF-Lite, not torch"):
        resolve_device("local", {"runtime": "torch", "precision": "int8"})
    assert resolve_device("local", {"runtime": "tflite", "precision": "int8"}).precision == "int8"


# --- TF-Lite: litert-torch's PT2E quantizer, the real LiteRT interpreter ----------------------------------------
def _litert(path, x: np.ndarray) -> tuple[np.ndarray, float | None, dict]:
    """The model's output on the NHWC float image ``x`` (quantized and dequantized by the model's own input and
    output parameters where they are int8), the output's quantization step (None for a float output), and the
    input and output types of each op kind."""
    interpreter = litert_interpreter(path.read_bytes(), list(x.shape))
    given, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if given["dtype"] == np.int8:
        scale, zero = given["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    y, step = interpreter.get_tensor(out["index"]), None
    if out["dtype"] == np.int8:
        step, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * step
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    kinds: dict[str, set] = {}
    for op in interpreter._get_ops_details():  # the only place LiteRT's Python API lists the graph's ops
        kinds.setdefault(op["op_name"], set()).add(dtypes[op["inputs"][0]].__name__)
    return y, step, kinds


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS[:2])
def test_an_int8_tflite_unit_is_full_integer_and_close_to_the_float_unit(export_cache, key):
    """A full-integer model: int8 input, convolutions on int8 tensors in the real LiteRT interpreter. Its output
    stays within a few quantization steps of the float unit's (measured on five units and two inputs: medians
    0.26-0.34 steps, 99th percentiles 0.89-1.78; the histogram observer clips rare outliers, so the largest errors
    reach 5-22 steps), and within a few percent of the output's spread where the graph ends in an op the quantizer
    leaves in float (h-swish): relative RMS errors 0.8-2.4%."""
    unit = Unit.from_key(key)
    fp32, int8 = (export_unit(unit, "tflite", export_cache, precision=p) for p in ("fp32", "int8"))
    n, c, h, w = export_target(unit, "tflite").input_shape
    x = np.random.default_rng(1).standard_normal((n, h, w, c)).astype(np.float32)
    (expected, _, _), (actual, step, kinds) = _litert(fp32, x), _litert(int8, x)
    assert kinds["CONV_2D"] == {"int8"} and kinds.get("DEPTHWISE_CONV_2D", {"int8"}) == {"int8"}, kinds
    assert np.sqrt(np.mean((actual - expected) ** 2)) / expected.std() < 0.05
    assert np.corrcoef(actual.ravel(), expected.ravel())[0, 1] > 0.999
    if step is not None:
        steps = np.abs(actual - expected) / step
        assert np.median(steps) <= 0.5 and np.quantile(steps, 0.99) <= 2.5, (np.median(steps), np.quantile(steps, .99))


@pytest.mark.slow
def test_an_int8_tflite_table_is_deterministic_and_states_its_recipe(tmp_path, export_cache, caplog):
    """Isolated TF-Lite int8 rows timed by the Python agent with LiteRT/XNNPACK: the export is byte for byte the
    same from a fresh cache (and converts without litert-torch's training-mode warning), the rows are there, and
    the sidecar states litert-torch's recipe, not ONNX Runtime's."""
    units = [Unit.from_key(key) for key in KEYS[:2]]
    with caplog.at_level("WARNING"):
        again = export_unit(units[1], "tflite", tmp_path / "fresh", precision="int8")
    assert "training mode" not in caplog.text
    assert again.read_bytes() == export_unit(units[1], "tflite", export_cache, precision="int8").read_bytes()
    profile = resolve_device("local", {"runtime": "tflite", "provider": "xnnpack", "precision": "int8"})
    with LocalTransport() as transport:
        table = TableRun(profile, transport, units, tmp_path / "t.csv", export_cache,
                         Protocol(warmup=1, min_count=3, min_time_s=0.0, retries=0, drift_tolerance=0.95)).run()
    assert {row.key for row in table.rows} == {u.key for u in units} and all(r.median_ms > 0 for r in table.rows)
    recipe = json.loads(sidecar_path(tmp_path / "t.csv").read_text())["quantization"]
    assert recipe["format"] == "TF-Lite full integer (PT2E)" and recipe["calibration"] == TFLITE_CALIBRATION
    assert recipe["tool"].startswith("litert-torch ")


def test_precisions_are_never_mixed(tmp_path, capsys):
    """A float table under --precision int8, and a subnet CSV of one precision resumed in another, are refused
    naming both; files from before precisions are fp32."""
    int8 = resolve_device("local", {"precision": "int8"})
    with pytest.raises(DeviceError, match=r"was measured in fp32; device local measures int8.*--precision fp32"):
        check_precision_of(int8, LatencyPredictor(NOTE10).precision, str(NOTE10))
    check_precision_of(int8, "int8", "an int8 table")
    assert main(["--device", "local", "--precision", "int8", "--subnets", "random:2", "--table", str(NOTE10),
                 "--out", str(tmp_path), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "measured in fp32; device local measures int8" in error
    older = tmp_path / "subnets.csv"
    pd.DataFrame({"arch": ["{}"], "measured_ms": [1.0], "anchor_ms": [1.0], "width_mult": [1.0]}).to_csv(older)
    with pytest.raises(OFAProfileError, match="measured in fp32, and this run measures int8"):
        measured_before(older, 1.0, None, BLOCK_REFERENCE, "int8")
    assert measured_before(older, 1.0, None, BLOCK_REFERENCE, "fp32")[1] == 1.0


@pytest.mark.slow
def test_an_int8_table_then_an_int8_search_end_to_end(tmp_path, caplog, export_cache):
    """`--precision int8`: the table carries the precision in its name and sidecar (with the recipe), has every
    row a float table has, and the closed loop delivers int8 subnets under the budget, saying that the accuracy
    it ranks them by is float."""
    common = ["--device", "local", "--width", "1.2", "--resolutions", "160", "--precision", "int8", "--out",
              str(tmp_path), "--cache", str(export_cache), "--min-time", "0.02", "--retries", "0",
              "--profile-runs", "4",
              "--block-ms", "2", "--regime-tolerance", "0.99", "--quiet"]
    assert main(common) == 0
    path = tmp_path / "local_w1.2_onnxruntime_cpu_int8.csv"
    table = read_table(path)
    assert {row.key for row in table.rows} == {u.key for u in all_units(1.2, [160])}
    side = json.loads(sidecar_path(path).read_text())
    assert side["precision"] == "int8" and side["device"]["precision"] == "int8"
    assert side["quantization"]["format"] == "QDQ" and side["quantization"]["calibration"] == CALIBRATION
    fastest, _ = LatencyPredictor(table).minimum()
    budget = round(fastest * 2, 3)
    with caplog.at_level("WARNING"):
        assert main([*common, "--search", "--latency-ms", str(budget), "--generations", "10"]) == 0
    assert "ranking int8 subnets by the float top-1 of OFA's released accuracy predictor" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert search_main(["--table", str(path), "--latency-ms", str(budget), "--generations", "5", "--quiet"]) == 0
    assert "ranking int8 subnets by the float top-1" in caplog.text
    int8 = resolve_device("local", {"precision": "int8"})
    report = pd.read_csv(tmp_path / f"{delivered_stem(int8, [budget])}.csv")
    assert delivered_stem(int8, [budget]).endswith("_int8")
    assert report["met"].all() and (report["measured_ms"] <= report["budget_ms"]).all()
