"""Export units and subnets to ONNX, TF-Lite and TorchScript, deterministically, cached by the export recipe.

A full lookup table needs one model file per unit (about 1,250 distinct units for w1.0 over its 25 resolutions), so
export speed and caching matter:

- ONNX uses the TorchScript exporter (``dynamo=False``, opset 17), 20-100x faster per block than the dynamo
  exporter, with the weights inside the file. It folds BN into the convs.
- TF-Lite uses ``litert-torch`` (no TensorFlow), an optional extra of about 1.1 GB imported only when needed. Inputs
  (and 4-D outputs) are NHWC through ``to_channel_last_io``, so a block's model is only the block: no TRANSPOSE ops
  at its edges, as on a device where the previous layer already produced NHWC. A conversion costs about a second,
  so a unit is converted once for every resolution: at :data:`TFLITE_SHARED_SIZE`, and the runtime resizes its
  input to each row's size (LiteRT ``resize_tensor_input``, ``benchmark_model --input_layer_shape``). Resized, the
  models give torch's outputs, and ran within 0.2-0.7% of models converted at the row's own size here (14 units,
  up and down from 160 to 224 px tables, against a 0.4% bias of the same timing with one model on both sides).
  A full w1.0 table then needs 99 conversions instead of 1,257 (74 convs and blocks, 25 pools).
- TorchScript (``torch.jit.trace``) for devices measured with torch itself (``--runtime torch``, CPU or CUDA).

ONNX and TF-Lite exports are deterministic: the same module gives the same bytes (TorchScript mangles class names
per trace within a process, so its bytes can differ while the model is the same). So the cache key,
:func:`content_hash`, is a hash of the *recipe* (unit key, seed, runtime, export format and exporter versions)
rather than of the file: it is known before the slow export runs, and it changes when an upgrade of torch or
litert-torch could change the bytes. :func:`export_unit` writes each file once, atomically, under that hash, with
a digest of its bytes in ``.sha256/`` beside it: a file whose bytes no longer match is exported again.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import cache
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .arch import Arch, Layout
from .errors import OFAProfileError, raise_if_stopped
from .files import atomic_write, sha256_of
from .ofa_supernet import SUPERNETS, OFASupernet
from .plan import MOBILENETV3, family_of
from .quantize import PrecisionError, check_precision, onnx_int8, seeded_images
from .quantize import recipe as quantization_recipe
from .unit_modules import build_unit
from .units import Unit

__all__ = [
    "EXPORT_FORMAT",
    "INT8_CALIBRATION_SIZE",
    "ONNX_FREE_DIMS",
    "ONNX_OPSET",
    "RUNTIMES",
    "TFLITE_INPUT_NAME",
    "TFLITE_SHARED_SIZE",
    "ExportError",
    "TFLiteUnavailableError",
    "agent_model",
    "cache_store",
    "cached",
    "content_hash",
    "export_module",
    "export_subnet",
    "export_target",
    "export_unit",
    "export_units",
    "onnx_bytes",
    "seeded_supernet",
    "subnet_model",
    "tflite_bytes",
    "torchscript_bytes",
    "unit_path",
]

log = logging.getLogger(__name__)

RUNTIMES = ("onnx", "tflite", "torchscript")
# The formats an int8 model is exported in (supernet.quantize).
QUANTIZED_RUNTIMES = ("onnx", "tflite")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "torchscript": ".pt"}
ONNX_OPSET = 17
# The symbolic input dimensions of an ONNX subnet exported for any resolution.
ONNX_FREE_DIMS = ("height", "width")
# Bump when the export recipe changes (names, layouts, options) so that cached files are not reused.
EXPORT_FORMAT = 1
_VERSIONED = {"onnx": ("torch", "onnx"), "tflite": ("torch", "litert-torch", "litert-converter"),
              "torchscript": ("torch",)}
_INSTALL_TFLITE = "pip install 'ofa-profile[tflite]'"
# The input size TF-Lite units are converted at; the runtime resizes the input to each row's size.
TFLITE_SHARED_SIZE = 32
_RESIZED = ("Conv", "expanded_conv", "Conv_1")
# The input tensor name litert-torch gives a converted module (what benchmark_model's --input_layer names).
TFLITE_INPUT_NAME = "serving_default_args_0"


class ExportError(OFAProfileError, ValueError):
    """An export that cannot run as asked (unknown runtime, bad input shape); the message says what to pass."""


class TFLiteUnavailableError(OFAProfileError, ImportError):
    """TF-Lite export was asked for but its optional extra, litert-torch, is not installed."""


def _check_precision(runtime: str, precision: str) -> None:
    if check_precision(precision) != "fp32" and runtime not in QUANTIZED_RUNTIMES:
        raise PrecisionError(f"{precision} models are exported for ONNX Runtime and TF-Lite, not {runtime}",
                             "use --runtime onnxruntime or tflite, or --precision fp32")


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ExportError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Export the eval-mode network (as ``torch.onnx.export`` does) and give the caller back its mode."""
    training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(training)


# Exporters keep process-wide state (torch.onnx's GLOBALS, the thread count set below): threads of one process
# (a fleet measured concurrently) take turns.
_EXPORT_LOCK = threading.RLock()


@contextmanager
def _one_thread() -> Iterator[None]:
    """Trace alone, on one intra-op thread: a batch-1 trace gains nothing from more, and on a busy host the extra
    threads only contend (an ONNX block export took 0.12-0.2 s with 2 threads, 0.03 s with 1, on a loaded 2-core
    machine).
    """
    with _EXPORT_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _sample(input_shape: Sequence[int]) -> torch.Tensor:
    if len(input_shape) != 4:
        raise ExportError(f"input_shape {tuple(input_shape)} must be NCHW, e.g. (1, 3, 224, 224)")
    return torch.zeros(tuple(input_shape))


# --- ONNX ------------------------------------------------------------------------------------------------
def onnx_bytes(module: nn.Module, input_shape: Sequence[int], any_resolution: bool = False) -> bytes:
    """The module as an ONNX model (opset 17, NCHW input named ``input``, weights inside).

    With ``any_resolution`` the input's height and width are the symbolic dimensions ``height`` and ``width``,
    which a runtime fixes when it loads the model (ONNX Runtime: ``add_free_dimension_override_by_name``).
    """
    sample = _sample(input_shape)
    buffer = io.BytesIO()
    dynamic_axes = {"input": dict(zip((2, 3), ONNX_FREE_DIMS, strict=True))} if any_resolution else None
    with _eval_mode(module), _one_thread(), warnings.catch_warnings():
        # NOTE: the TorchScript exporter is deprecated but 20-100x faster than dynamo here (docs/ofa_reference.md §6).
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        torch.onnx.export(module, (sample,), buffer, opset_version=ONNX_OPSET, dynamo=False,
                          input_names=["input"], output_names=["output"], dynamic_axes=dynamic_axes)
    return buffer.getvalue()


# --- TF-Lite ---------------------------------------------------------------------------------------------
# What TensorFlow's C++ side writes to stderr while it starts, before its log level applies (TF_CPP_MIN_LOG_LEVEL
# does not reach them): absl's notice that logging is not set up yet, and oneDNN's note on round-off.
_TENSORFLOW_STARTUP = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called|oneDNN custom operations are on")


@contextmanager
def _without_tensorflow_startup_lines() -> Iterator[None]:
    """Everything written to file descriptor 2 inside, except TensorFlow's start-up lines, which ``--quiet`` users
    saw on every TF-Lite run. Other lines, an error's included, are written back once the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not _TENSORFLOW_STARTUP.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _litert_torch() -> ModuleType:
    """Import litert-torch on first use: it takes about 6 s and is an optional extra."""
    # NOTE: litert-torch prints a progress tree on stdout unless told not to; a caller's explicit choice wins.
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines, several per conversion
    # Its imports warn about the libraries themselves (torchao's CUDA kernels that a CPU machine cannot load,
    # an Enum registration torch deprecated), once per process: nothing a user can act on. A level set by the
    # caller wins.
    for name in ("torchao", "torch.utils._pytree"):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with _without_tensorflow_startup_lines():
            return importlib.import_module("litert_torch")
    except ImportError as err:
        raise TFLiteUnavailableError(f"TF-Lite export needs litert-torch, an optional extra of about 1.1 GB "
                                     f"({err}); install it with: {_INSTALL_TFLITE}") from None


def tflite_bytes(module: nn.Module, input_shape: Sequence[int], precision: str = "fp32") -> bytes:
    """The module as a TF-Lite model with an NHWC input (and NHWC output when 4-D), without edge transposes.

    Args:
        module: The module to convert; it runs in eval mode.
        input_shape: The NCHW shape the module takes; the model takes its NHWC permutation.
        precision: ``fp32``, or ``int8``: full-integer quantization by litert-torch's PT2E quantizer
            (:func:`supernet.quantize.recipe`), calibrated on :func:`supernet.quantize.seeded_images`.
    """
    litert_torch = _litert_torch()
    sample = _sample(input_shape)
    with _eval_mode(module), _one_thread(), torch.no_grad(), warnings.catch_warnings():
        # litert-torch still checks treespecs the old way, once per conversion: torch's FutureWarning is for it,
        # not for users (it flooded ofa-profile's stderr, and the test suite's summary).
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        out_rank = module(sample).dim()
        channel_last = litert_torch.to_channel_last_io(module, args=[0], outputs=[0] if out_rank == 4 else []).eval()
        nhwc = sample.permute(0, 2, 3, 1).contiguous()
        if check_precision(precision) == "int8":
            images = [torch.from_numpy(image).permute(0, 2, 3, 1).contiguous() for image in seeded_images(input_shape)]
            model = _pt2e_int8(litert_torch, channel_last, nhwc, images)
        else:
            model = litert_torch.convert(channel_last, (nhwc,))
    return bytes(model.model_content())


def _pt2e_int8(litert_torch: ModuleType, module: nn.Module, sample: torch.Tensor,
               images: Sequence[torch.Tensor]) -> Any:
    """Full-integer quantization as litert-torch documents it: ``torch.export``, PT2E's prepare with its quantizer
    (static, weights per channel), the calibration images through the observers, convert, then litert-torch's
    converter, which writes int8 kernels where the graph is annotated."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(torch.export.export(module, (sample,)).module(), quantizer)
    for image in images:
        prepared(image)
    converted = convert_pt2e(prepared, fold_quantize=False)
    # The graph was captured from the module in eval mode (inference batch norm), but a module unlifted from
    # torch.export keeps nn.Module's training flag at True, which litert-torch reads to warn of training mode.
    converted.training = False
    return litert_torch.convert(converted, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer))


# --- TorchScript -----------------------------------------------------------------------------------------
def torchscript_bytes(module: nn.Module, input_shape: Sequence[int]) -> bytes:
    """The module traced to TorchScript (what the agent's torch runtime loads with ``torch.jit.load``)."""
    sample = _sample(input_shape)
    buffer = io.BytesIO()
    with _eval_mode(module), _one_thread(), torch.no_grad(), warnings.catch_warnings():
        # NOTE: TorchScript is deprecated in favour of torch.export, but it is what torch.jit.load reads on boards.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit\.")
        torch.jit.save(torch.jit.trace(module, (sample,), check_trace=False), buffer)
    return buffer.getvalue()


# --- files and the cache ---------------------------------------------------------------------------------
_EXPORTERS = {"onnx": onnx_bytes, "tflite": tflite_bytes, "torchscript": torchscript_bytes}


def _to_bytes(module: nn.Module, runtime: str, input_shape: Sequence[int], precision: str = "fp32") -> bytes:
    """The module exported for ``runtime`` in ``precision``: ONNX is quantized after export, TF-Lite while it is
    converted (PT2E works on the torch graph)."""
    _check_runtime(runtime)
    _check_precision(runtime, precision)
    if runtime == "tflite":
        return tflite_bytes(module, input_shape, precision)
    model = _EXPORTERS[runtime](module, input_shape)
    return model if precision == "fp32" else onnx_int8(model, input_shape)


def export_module(module: nn.Module, runtime: str, path: str | os.PathLike, input_shape: Sequence[int]) -> Path:
    """Export any module (a unit, a whole subnet) to ``path`` for ``runtime`` (``"onnx"`` or ``"tflite"``)."""
    path = Path(path)
    atomic_write(path, _to_bytes(module, runtime, input_shape))
    return path


@cache
def _exporter_versions(runtime: str) -> dict[str, str]:
    versions = {}
    for dist in _VERSIONED[runtime]:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if dist == "litert-torch":
                raise TFLiteUnavailableError(f"TF-Lite export needs litert-torch, an optional extra; install it "
                                             f"with: {_INSTALL_TFLITE}") from None
            versions[dist] = "absent"
    return versions


def export_target(unit: Unit, runtime: str) -> Unit:
    """The unit whose model file serves ``unit``: itself, or for TF-Lite convs and blocks the same layer at
    :data:`TFLITE_SHARED_SIZE`, which the runtime resizes to the row's input size. (A pool's window is its input,
    so each resolution has its own; the 1x1 head layers are the same at every resolution anyway.)"""
    return unit.at_size(TFLITE_SHARED_SIZE) if runtime == "tflite" and unit.kind in _RESIZED else unit


def agent_model(name: str, path: str | os.PathLike, input_shape: Sequence[int], runtime: str) -> dict[str, Any]:
    """The mapping an agent times a model file by: its name, path and the input it is fed, from the NCHW
    ``input_shape``; a TF-Lite model is fed NHWC, and its input is named (benchmark_model resizes it by name)."""
    n, c, h, w = input_shape
    if runtime == "tflite":
        return {"name": name, "path": str(path), "inputs": [[n, h, w, c]], "input_names": [TFLITE_INPUT_NAME]}
    return {"name": name, "path": str(path), "inputs": [[n, c, h, w]]}


def content_hash(unit: Unit, runtime: str, seed: int = 0, batch: int = 1, precision: str = "fp32") -> str:
    """SHA-256 of the export recipe: the key of the unit exported (:func:`export_target`), seed, runtime, export
    format, exporter versions, batch, the unit's family where it is not MobileNetV3, and the quantization recipe
    of an int8 model.

    Exports are deterministic, so the recipe fixes the bytes; unlike a hash of the file, it is known before
    the export runs, which is what a cache key needs. Batch 1 and fp32 are left out, so those hashes stay as
    they were before batches and precisions were exported.
    """
    _check_runtime(runtime)
    _check_precision(runtime, precision)
    recipe: dict[str, Any] = {"key": export_target(unit, runtime).key, "seed": seed, "runtime": runtime,
                              "format": EXPORT_FORMAT, "opset": ONNX_OPSET if runtime == "onnx" else None,
                              "versions": _exporter_versions(runtime)}
    if batch != 1:
        recipe["batch"] = batch
    if unit.family != MOBILENETV3.name:  # the same key names other layers there (ReLU6, not h-swish)
        recipe["family"] = unit.family
    if precision != "fp32":
        recipe["quantization"] = quantization_recipe(precision, runtime)
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _digest_path(path: Path) -> Path:
    return path.parent / ".sha256" / path.name


def cache_store(path: str | os.PathLike, data: bytes) -> Path:
    """Write an export into the cache with the digest that vouches for it: the model first, so that a crash in
    between leaves a file no digest vouches for, which is exported again."""
    path = Path(path)
    atomic_write(path, data)
    atomic_write(_digest_path(path), hashlib.sha256(data).hexdigest() + "\n")
    return path


def cached(path: Path) -> bool:
    """Whether the cache holds a sound export at ``path``: one whose bytes match the digest written with it.

    A damaged file (a disk error, a copy cut short, an edit) would otherwise be reused by every run after it; it
    is reported and exported again. A file without a digest (from before digests, or a crash) is exported again:
    exports are deterministic, so nothing changes but the time.
    """
    if not path.is_file():
        return False
    try:
        expected = _digest_path(path).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    if sha256_of(path) == expected:
        return True
    log.warning("%s: damaged (its bytes do not match the digest written with it); exporting it again", path)
    return False


def unit_path(unit: Unit, runtime: str, cache_dir: str | os.PathLike, seed: int = 0, batch: int = 1,
              precision: str = "fp32") -> Path:
    """Where :func:`export_unit` keeps this unit's model (the kind keeps listings readable); TF-Lite rows of one
    layer at different resolutions share it."""
    digest = content_hash(unit, runtime, seed, batch, precision)[:24]
    return Path(cache_dir) / f"{unit.kind}-{digest}{SUFFIXES[runtime]}"


def export_unit(unit: Unit, runtime: str, cache_dir: str | os.PathLike, seed: int = 0, batch: int = 1,
                precision: str = "fp32") -> Path:
    """The unit's model file in ``cache_dir`` for ``batch`` images per run, exported (and quantized, for int8)
    only if no file with its content hash is there."""
    path = unit_path(unit, runtime, cache_dir, seed, batch, precision)
    if not cached(path):
        raise_if_stopped()
        target = export_target(unit, runtime)
        input_shape = (batch, *target.input_shape[1:])
        cache_store(path, _to_bytes(build_unit(target, seed), runtime, input_shape, precision))
    return path


def _export_chunk(units: Sequence[Unit], runtime: str, cache_dir: str, seed: int, batch: int,
                  precision: str) -> list[str]:
    return [str(export_unit(u, runtime, cache_dir, seed, batch, precision)) for u in units]


def export_units(units: Sequence[Unit], runtime: str, cache_dir: str | os.PathLike, seed: int = 0,
                 jobs: int = 1, batch: int = 1, precision: str = "fp32") -> list[Path]:
    """Export many units (cached ones are skipped), in ``jobs`` processes; paths come back in input order.

    Worth ``jobs > 1`` for TF-Lite (about 2 s a unit, after about 6 s to import litert-torch in each process);
    ONNX (a few hundredths of a second a unit) is fastest in one process.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ExportError(f"jobs = {jobs!r} must be a positive int (processes to export with)")
    paths = [unit_path(u, runtime, cache_dir, seed, batch, precision) for u in units]
    todo = list({p: u for p, u in zip(paths, units, strict=True) if not cached(p)}.values())
    if jobs == 1 or len(todo) < 2:
        for unit in todo:
            export_unit(unit, runtime, cache_dir, seed, batch, precision)
        return paths
    chunks = [todo[i::jobs] for i in range(min(jobs, len(todo)))]
    # NOTE: spawn, not fork: forking a process that has started torch's thread pools can deadlock.
    with ProcessPoolExecutor(len(chunks), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_export_chunk, chunk, runtime, str(cache_dir), seed, batch, precision)
                   for chunk in chunks]
        for future in futures:
            future.result()
    return paths


SUPERNET_SEED = 0

# The size an int8 subnet of any resolution is calibrated at (its file serves every resolution, as a float one's).
INT8_CALIBRATION_SIZE = 160


@cache
def seeded_supernet(width_mult: float, n_classes: int, layout: Layout = MOBILENETV3.layout) -> OFASupernet:
    """Seeded random weights: latency does not depend on their values, and exports stay reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SUPERNET_SEED)
        return SUPERNETS[family_of(layout)](width_mult=width_mult, n_classes=n_classes).eval()


def export_subnet(arch: Arch, width_mult: float, n_classes: int, runtime: str, cache_dir: str | os.PathLike,
                  batch: int = 1, precision: str = "fp32") -> Path:
    """A whole subnet of the seeded supernet as one model, cached by arch, width, classes, batch and recipe.

    ONNX node names keep the module paths (``/blocks.7/conv/...``), which is what attributing a runtime
    profiler's node times to table rows relies on. An ONNX subnet is one file for every resolution, with the
    input's height and width left as :data:`ONNX_FREE_DIMS`: a table's 25 resolutions cost one export and one
    file per subnet instead of 25. ONNX Runtime fixes them when it loads the model, and then runs as fast as
    with a static export (within 1% here; a model left symbolic at run time is 1-2% slower). An int8 subnet's
    scales are calibrated at :data:`INT8_CALIBRATION_SIZE` px, whatever resolution it then runs at.
    """
    _check_runtime(runtime)
    _check_precision(runtime, precision)
    resolution = "any" if runtime == "onnx" else arch.r
    recipe = {"arch": json.dumps({**arch.canonical().to_dict(), "r": [resolution]}), "width": width_mult,
              "classes": n_classes, "batch": batch, "seed": SUPERNET_SEED, "runtime": runtime,
              "format": EXPORT_FORMAT, "versions": _exporter_versions(runtime)}
    if precision != "fp32":  # an ONNX file serves every resolution and is calibrated at one
        recipe["quantization"] = {**quantization_recipe(precision, runtime),
                                  **({"size": INT8_CALIBRATION_SIZE} if runtime == "onnx" else {})}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"subnet-{digest}{SUFFIXES[runtime]}"
    if not cached(path):
        raise_if_stopped()
        subnet = seeded_supernet(float(width_mult), int(n_classes), arch.layout).extract(arch)
        input_shape = (batch, 3, arch.r, arch.r)
        if runtime == "onnx":
            data = onnx_bytes(subnet, input_shape, any_resolution=True)
            if precision != "fp32":
                data = onnx_int8(data, (batch, 3, INT8_CALIBRATION_SIZE, INT8_CALIBRATION_SIZE))
        else:
            data = _to_bytes(subnet, runtime, input_shape, precision)
        cache_store(path, data)
    return path


def subnet_model(name: str, arch: Arch, width_mult: float, n_classes: int, runtime: str, cache_dir: str | os.PathLike,
                 batch: int = 1, precision: str = "fp32") -> dict[str, Any]:
    """A whole subnet as a model mapping for the agents (:func:`agent_model`), exported by :func:`export_subnet`.

    An ONNX subnet's file serves every resolution; ``dim_overrides`` tells the agent which one to fix.
    """
    path = export_subnet(arch, width_mult, n_classes, runtime, cache_dir, batch, precision)
    model = agent_model(name, path, (batch, 3, arch.r, arch.r), runtime)
    if runtime == "onnx":
        model["dim_overrides"] = dict.fromkeys(ONNX_FREE_DIMS, arch.r)
    return model
