"""ONNX and TF-Lite exports of units and subnets: outputs equal PyTorch's, layouts, determinism and the cache.

TF-Lite conversion takes 1-2 s per block and 10-20 s per subnet, so each TF-Lite model is converted once, in a
module-scoped fixture, for a few well-chosen units and two shallow subnets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from supernet import ArchSpace, OFAMobileNetV3
from supernet.arch import PROXYLESS_LAYOUT
from supernet.export import export_module, onnx_bytes, seeded_supernet, tflite_bytes
from supernet.formats import ONNX_FREE_DIMS, TFLITE_INPUT_NAME, TFLITE_SHARED_SIZE, ExportError, TFLiteUnavailableError
from supernet.model_cache import content_hash, export_subnet, export_target, export_unit, export_units, unit_path
from supernet.unit_modules import build_unit
from supernet.units import Unit, all_units
from tests.paths import ROOT
from tests.peers.models import litert_interpreter

TOL = 1e-4
# Rows of the w1.0 table at 128 covering each kind of block: stride 1/2, SE or not, ReLU or h-swish, k 3/5/7,
# shortcut or not, and block 0 (no expand conv).
BLOCK_KEYS = (
    "expanded_conv-input:64x64x16-output:64x64x16-expand:16-kernel:3-stride:1-idskip:1-se:0-hs:0",
    "expanded_conv-input:64x64x16-output:32x32x24-expand:64-kernel:5-stride:2-idskip:0-se:0-hs:0",
    "expanded_conv-input:16x16x40-output:16x16x40-expand:160-kernel:7-stride:1-idskip:1-se:1-hs:0",
    "expanded_conv-input:16x16x40-output:8x8x80-expand:240-kernel:3-stride:2-idskip:0-se:0-hs:1",
    "expanded_conv-input:8x8x112-output:4x4x160-expand:672-kernel:5-stride:2-idskip:0-se:1-hs:1",
)
HEAD_KEYS = (
    "Conv-input:128x128x3-output:64x64x16",
    "Conv_1-input:4x4x160-output:4x4x960",
    "AvgPool2D-input:4x4x960-output:1x1x960",
    "Conv_2-input:1x1x960-output:1x1x1280",
    "Logits-input:1x1x1280-output:1000",
)


def _torch_out(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module(x).numpy()


def _run_onnx(model: bytes, x: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # batch-1 checks: more threads only contend with the rest of the suite
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


def _run_tflite(model: bytes, x_nchw: torch.Tensor) -> np.ndarray:
    """Run on the NHWC input (resizing the model's input to it); give back NCHW (4-D outputs) so it compares with
    torch directly."""
    x = x_nchw.permute(0, 2, 3, 1).numpy()
    interpreter = litert_interpreter(model, list(x.shape))
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


def _ops(model: bytes) -> list[str]:
    return [op["op_name"] for op in litert_interpreter(model)._get_ops_details()]


def _assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert expected.std() > 10 * TOL, f"{what}: outputs too flat ({expected.std():.1e}) for the check to mean much"
    err = float(np.abs(actual - expected).max())
    assert err <= TOL, f"{what}: max abs difference {err:.2e} > {TOL} (output scale {np.abs(expected).max():.2f})"


@torch.no_grad()
def _randomise_bn(net: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics, so BN folding is really tested (fresh BN is the identity)."""
    generator = torch.Generator().manual_seed(seed)
    for bn in net.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.weight.copy_(0.5 + torch.rand(n, generator=generator))
            bn.bias.copy_(0.1 * torch.randn(n, generator=generator))
            bn.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return net.eval()


@pytest.fixture(scope="module")
def supernets() -> dict[float, OFAMobileNetV3]:
    torch.manual_seed(0)
    return {w: _randomise_bn(OFAMobileNetV3(width_mult=w, n_classes=100), seed=1) for w in (1.0, 1.2)}


def test_the_chosen_rows_are_real_rows():
    """The keys under test are rows of the w1.0 table at 128 (so the test covers what a table times)."""
    keys = {u.key for u in all_units(1.0, [128])}
    assert set(BLOCK_KEYS + HEAD_KEYS) <= keys


# --- ONNX ------------------------------------------------------------------------------------------------
def test_every_unit_of_a_table_matches_in_onnx_runtime():
    """All 96 rows of the w1.0 table at 128, exported to ONNX, give PyTorch's outputs in ONNX Runtime."""
    for unit in all_units(1.0, [128]):
        module = build_unit(unit, seed=3)
        x = torch.randn(unit.input_shape)
        _assert_close(_run_onnx(onnx_bytes(module, unit.input_shape), x), _torch_out(module, x), unit.key)


@pytest.mark.parametrize(("width", "r", "seed"), [(1.0, 128, 0), (1.0, 160, 1), (1.0, 192, 2), (1.0, 224, 3),
                                                   (1.2, 160, 4), (1.2, 224, 5)])
def test_subnets_match_in_onnx_runtime(supernets, width, r, seed):
    """Whole extracted subnets at several resolutions, both widths, give PyTorch's logits in ONNX Runtime."""
    arch = ArchSpace.for_width(width).sample(seed).with_resolution(r)
    subnet = supernets[width].extract(arch).eval()
    x = torch.randn(1, 3, r, r)
    _assert_close(_run_onnx(onnx_bytes(subnet, x.shape), x), _torch_out(subnet, x), f"w{width} {arch}")


def test_onnx_export_is_deterministic(tmp_path):
    """The same unit exported twice, into two caches, gives the same bytes; the opset is 17, weights inside."""
    import onnx

    unit = Unit.from_key(BLOCK_KEYS[-1])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # not the 1 thread export runs on (the suite runs on 1: tests/conftest.py)
    try:
        a, b = export_unit(unit, "onnx", tmp_path / "a"), export_unit(unit, "onnx", tmp_path / "b")
        assert torch.get_num_threads() == 2, "export must give the caller back its thread count"
    finally:
        torch.set_num_threads(threads)
    assert a.name == b.name
    assert a.read_bytes() == b.read_bytes()
    model = onnx.load_from_string(a.read_bytes())
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert not (tmp_path / "a").with_suffix(".data").exists() and not list((tmp_path / "a").glob("*.data"))


# --- TF-Lite ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tflite_units() -> dict[str, tuple[nn.Module, bytes]]:
    """The chosen block and head rows, each built (seed 5) and converted once."""
    models = {}
    for key in BLOCK_KEYS + HEAD_KEYS:
        unit = Unit.from_key(key)
        module = build_unit(unit, seed=5)
        models[key] = module, tflite_bytes(module, unit.input_shape)
    return models


@pytest.mark.parametrize("key", BLOCK_KEYS + HEAD_KEYS)
def test_tflite_units_match_pytorch(tflite_units, key):
    """Each chosen row, converted to TF-Lite, gives PyTorch's output in LiteRT."""
    module, model = tflite_units[key]
    x = torch.randn(Unit.from_key(key).input_shape)
    _assert_close(_run_tflite(model, x), _torch_out(module, x), key)


@pytest.mark.parametrize("key", BLOCK_KEYS + HEAD_KEYS)
def test_tflite_units_are_nhwc_without_edge_transposes(tflite_units, key):
    """A TF-Lite unit takes NHWC and is only the unit: no TRANSPOSE anywhere, so none at its edges."""
    unit = Unit.from_key(key)
    interpreter = litert_interpreter(tflite_units[key][1])
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, unit.in_size, unit.in_size, unit.in_chs]
    ops = _ops(tflite_units[key][1])
    assert "TRANSPOSE" not in ops, f"{key}: ops {ops}"


def test_tflite_ops_show_the_block(tflite_units):
    """The SE h-swish stride-2 block converts to its real ops: explicit PAD, depthwise conv, HARD_SWISH, MEAN."""
    ops = _ops(tflite_units[BLOCK_KEYS[-1]][1])
    assert ops[0] == "CONV_2D" and ops[-1] == "CONV_2D", ops
    assert {"PAD", "DEPTHWISE_CONV_2D", "HARD_SWISH", "MEAN", "MUL"} <= set(ops), ops


@pytest.mark.slow
@pytest.mark.parametrize(("width", "r", "seed"), [(1.0, 128, 6), (1.2, 160, 7)])
def test_subnets_match_in_litert(supernets, width, r, seed):
    """Whole subnets (depth 2, to keep conversion short) give PyTorch's logits in LiteRT, from NHWC input."""
    arch = ArchSpace.for_width(width).sample(seed).with_resolution(r)
    arch = type(arch)(ks=arch.ks, e=arch.e, d=(2,) * 5, r=r)
    subnet = supernets[width].extract(arch).eval()
    x = torch.randn(1, 3, r, r)
    model = tflite_bytes(subnet, x.shape)
    assert "TRANSPOSE" not in _ops(model), _ops(model)
    _assert_close(_run_tflite(model, x), _torch_out(subnet, x), f"w{width} {arch}")


@pytest.mark.slow
def test_tflite_export_is_deterministic(tmp_path, tflite_units):
    """Exporting a unit twice gives the bytes of the first conversion (so caching by recipe is sound)."""
    unit = Unit.from_key(BLOCK_KEYS[2])
    path = export_unit(unit, "tflite", tmp_path)
    target = export_target(unit, "tflite")
    assert path.read_bytes() == tflite_bytes(build_unit(target, 0), target.input_shape)
    assert path.read_bytes() != tflite_units[BLOCK_KEYS[2]][1], "another seed must give other weights"


def test_rows_of_one_layer_share_one_tflite_file_resized_to_each_row(tmp_path):
    """A layer's rows in 128, 160 and 224 px tables are one TF-Lite file, converted at TFLITE_SHARED_SIZE: resized by
    LiteRT to each row's input, it gives torch's output for that row (the first conv, a block, the final expand).
    A pool's window is its input, so its rows keep a file each."""
    pool = Unit.from_key(HEAD_KEYS[2])
    assert unit_path(pool, "tflite", tmp_path) != unit_path(pool.at_size(5), "tflite", tmp_path)
    for key in (HEAD_KEYS[0], BLOCK_KEYS[2], HEAD_KEYS[1]):
        first = Unit.from_key(key)
        rows = [first.at_size(first.in_size * scale // 4) for scale in (4, 5, 7)]
        paths = {export_unit(row, "tflite", tmp_path, seed=5) for row in rows}
        assert len(paths) == 1, key
        model, target = paths.pop().read_bytes(), export_target(first, "tflite")
        assert target.in_size == TFLITE_SHARED_SIZE
        # what benchmark_model names
        assert litert_interpreter(model).get_input_details()[0]["name"] == TFLITE_INPUT_NAME
        module = build_unit(target, 5)
        for row in rows:
            x = torch.randn(row.input_shape)
            _assert_close(_run_tflite(model, x), _torch_out(module, x), row.key)


def test_missing_litert_says_how_to_install_it(monkeypatch):
    """Without litert-torch, TF-Lite export raises an error with the pip command for the extra."""
    # A None entry in sys.modules makes `import litert_torch` raise ImportError, exactly as on a host without the
    # extra; uninstalling it for real is not possible inside the test run.
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    unit = Unit.from_key(HEAD_KEYS[-1])
    with pytest.raises(TFLiteUnavailableError, match=r"pip install 'ofa-profile\[tflite\]'"):
        tflite_bytes(build_unit(unit), unit.input_shape)


def test_a_tflite_conversion_in_a_fresh_process_writes_nothing_to_stderr():
    """Issue 24, silence by default: TensorFlow's C++ start-up lines (absl's "All log messages before
    absl::InitializeLog()" and oneDNN's notice), which its log level does not reach, reached every --quiet TF-Lite
    run's stderr, as did torchao's and torch's import warnings before them. A process of its own: they come once per
    process, when litert-torch is first imported."""
    script = ("import torch\nfrom supernet.export import tflite_bytes\n"
              "assert tflite_bytes(torch.nn.Conv2d(3, 4, 3), (1, 3, 8, 8))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0 and run.stderr == "", run.stderr


# --- hashes, the cache and batch export ------------------------------------------------------------------
def test_content_hash_names_the_recipe():
    """Same unit, runtime and seed: same hash; change any of them: another hash."""
    a, b = Unit.from_key(BLOCK_KEYS[0]), Unit.from_key(BLOCK_KEYS[1])
    assert content_hash(a, "onnx") == content_hash(Unit.from_key(BLOCK_KEYS[0]), "onnx", seed=0)
    hashes = {content_hash(a, "onnx"), content_hash(b, "onnx"), content_hash(a, "tflite"), content_hash(a, "onnx", 1)}
    assert len(hashes) == 4


def test_units_export_at_the_batch_the_device_runs(tmp_path):
    """--batch N runs N images per inference: units (and the reference) are exported for that batch, under their
    own hash, while batch-1 hashes stay as they were."""
    unit = Unit.from_key(BLOCK_KEYS[0])
    assert content_hash(unit, "onnx", batch=1) == content_hash(unit, "onnx")
    assert content_hash(unit, "onnx", batch=8) != content_hash(unit, "onnx")
    path = export_unit(unit, "onnx", tmp_path, batch=3)
    x = np.random.default_rng(0).normal(size=(3, *unit.input_shape[1:])).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = build_unit(unit, 0).eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-5)


def test_torchscript_subnets_match_pytorch(tmp_path, supernets):
    """--runtime torch loads TorchScript: a subnet traced at its batch and resolution equals the eager subnet, and
    a second export computes the same (its bytes may differ: TorchScript mangles class names per trace)."""
    arch = ArchSpace.for_width(1.0).sample(4).with_resolution(128)
    path = export_subnet(arch, 1.0, 1000, "torchscript", tmp_path, batch=2)
    assert path.suffix == ".pt"
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = seeded_supernet(1.0, 1000).extract(arch).eval()(x)
        got = torch.jit.load(str(path))(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    again = export_subnet(arch, 1.0, 1000, "torchscript", tmp_path / "again", batch=2)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(again))(x), got, rtol=0, atol=0)


def test_export_unit_reuses_the_cached_file(tmp_path):
    """A second export_unit finds the file by its hash and does not export again (an export would replace the
    file, atomically: a new inode); no temp files remain."""
    unit = Unit.from_key(HEAD_KEYS[1])
    path = export_unit(unit, "onnx", tmp_path)
    written = path.stat()
    assert export_unit(unit, "onnx", tmp_path) == path
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sha256", path.name]


def test_a_damaged_cache_file_is_exported_again(tmp_path, caplog):
    """A cached export whose bytes changed after it was written (a disk error, a copy cut short) is reported and
    exported again, not reused by every run after it; a file without its digest is exported again too."""
    unit = Unit.from_key(HEAD_KEYS[1])
    path = export_unit(unit, "onnx", tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with caplog.at_level("WARNING", logger="supernet.model_cache"):
        assert export_units([unit], "onnx", tmp_path) == [path]
    assert path.read_bytes() == good and f"{path}: damaged" in caplog.text
    (tmp_path / ".sha256" / path.name).unlink()
    path.write_bytes(b"junk")
    assert export_unit(unit, "onnx", tmp_path) == path and path.read_bytes() == good
    subnet = export_subnet(ArchSpace.for_width(1.0).uniform(3, 3, 2, 128), 1.0, 1000, "onnx", tmp_path)
    whole = subnet.read_bytes()
    subnet.write_bytes(whole[:-1])
    assert export_subnet(ArchSpace.for_width(1.0).uniform(3, 3, 2, 128), 1.0, 1000, "onnx", tmp_path) == subnet
    assert subnet.read_bytes() == whole


def test_export_module_writes_a_subnet(tmp_path, supernets):
    """export_module writes any module (here a whole subnet) to the given path."""
    arch = ArchSpace.for_width(1.0).uniform(3, 3, 2, r=128)
    subnet = supernets[1.0].extract(arch).eval()
    path = export_module(subnet, "onnx", tmp_path / "sub" / "net.onnx", (1, 3, 128, 128))
    x = torch.randn(1, 3, 128, 128)
    _assert_close(_run_onnx(path.read_bytes(), x), _torch_out(subnet, x), "export_module")


@pytest.mark.parametrize("width", [1.0, 1.2])
def test_one_onnx_subnet_file_serves_every_resolution(tmp_path, width):
    """One file for all resolutions, fixed by name in ONNX Runtime, gives PyTorch's logits at each of them."""
    arch = ArchSpace.for_width(width).sample(7)
    resolutions = (160, 176, 224)  # in both widths' lists
    files = {export_subnet(arch.with_resolution(r), width, 1000, "onnx", tmp_path) for r in resolutions}
    assert len(files) == 1 and list(tmp_path.glob("subnet-*")) == list(files)
    for r in resolutions:
        options = ort.SessionOptions()
        for dim in ONNX_FREE_DIMS:
            options.add_free_dimension_override_by_name(dim, r)
        session = ort.InferenceSession(str(next(iter(files))), options, providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape == [1, 3, r, r]
        x = torch.randn(1, 3, r, r)
        subnet = seeded_supernet(width, 1000).extract(arch.with_resolution(r))
        _assert_close(session.run(None, {"input": x.numpy()})[0], _torch_out(subnet, x), f"w{width} r{r}")


def test_export_units_in_processes_equals_serial(tmp_path):
    """Batch export with two processes writes the same files as one process, paths in input order."""
    units = all_units(1.0, [128])[:6]
    serial = export_units(units, "onnx", tmp_path / "serial")
    parallel = export_units([*units, units[0]], "onnx", tmp_path / "parallel", jobs=2)
    assert [p.name for p in parallel] == [p.name for p in serial] + [serial[0].name]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(serial, parallel, strict=False))
    assert parallel[0] == unit_path(units[0], "onnx", tmp_path / "parallel")


@pytest.mark.parametrize(("call", "match"), [
    (lambda d: export_unit(Unit.from_key(HEAD_KEYS[0]), "coreml", d), "unknown runtime 'coreml'"),
    (lambda d: export_units([Unit.from_key(HEAD_KEYS[0])], "onnx", d, jobs=0), "jobs = 0"),
    (lambda d: onnx_bytes(nn.Identity(), (3, 8, 8)), "must be NCHW"),
])
def test_bad_export_requests_say_what_to_pass(tmp_path: Path, call, match):
    """Unknown runtimes, bad job counts and non-NCHW shapes raise ExportError naming the fix."""
    with pytest.raises(ExportError, match=match):
        call(tmp_path)


# --- the ProxylessNAS space ------------------------------------------------------------------------------
def test_every_proxyless_unit_matches_in_onnx_runtime_and_tflite_rows_in_litert():
    """All 103 rows of the ProxylessNAS w1.3 table at 128 give PyTorch's outputs in ONNX Runtime; its stem, a
    block, the feature mix and the pooled classifier do in LiteRT too, with no TRANSPOSE (NHWC throughout)."""
    from supernet.plan import PROXYLESS

    units = all_units(1.3, [128], family=PROXYLESS)
    for unit in units:
        module = build_unit(unit, seed=3)
        x = torch.randn(unit.input_shape)
        _assert_close(_run_onnx(onnx_bytes(module, unit.input_shape), x), _torch_out(module, x), unit.key)
    for unit in (units[0], units[5], units[-2], units[-1]):
        module = build_unit(unit, seed=4)
        x = torch.randn(unit.input_shape)
        model = tflite_bytes(module, unit.input_shape)
        _assert_close(_run_tflite(model, x), _torch_out(module, x), unit.key)
        assert "TRANSPOSE" not in _ops(model), unit.key


def test_proxyless_rows_do_not_share_files_with_mobilenetv3_rows_of_the_same_key(tmp_path):
    """A ProxylessNAS first conv has MobileNetV3's key where the widths agree, but ReLU6, not h-swish: its own
    file. A whole ProxylessNAS subnet exports as its own family and runs like PyTorch in ONNX Runtime."""
    ours, theirs = Unit.first_conv(128, 24, "proxyless"), Unit.first_conv(128, 24)
    assert ours.key == theirs.key
    assert content_hash(ours, "onnx") != content_hash(theirs, "onnx")
    assert export_unit(ours, "onnx", tmp_path) != export_unit(theirs, "onnx", tmp_path)
    arch = ArchSpace.for_width(1.3, PROXYLESS_LAYOUT).sample(2).with_resolution(144)
    path = export_subnet(arch, 1.3, 1000, "onnx", tmp_path)
    x = torch.randn(1, 3, 144, 144)
    expected = seeded_supernet(1.3, 1000, PROXYLESS_LAYOUT).extract(arch).eval()
    _assert_close(_run_onnx(path.read_bytes(), x), _torch_out(expected, x), str(arch))
