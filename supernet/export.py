"""Torch modules to model bytes: ONNX, TF-Lite and TorchScript, deterministically.

A full lookup table needs one model file per unit (about 1,250 distinct units for w1.0 over its 25 resolutions), so
export speed matters (and :mod:`supernet.model_cache` exports each file once):

- ONNX uses the TorchScript exporter (``dynamo=False``, opset 17), 20-100x faster per block than the dynamo
  exporter, with the weights inside the file. It folds BN into the convs.
- TF-Lite uses ``litert-torch`` (no TensorFlow), an optional extra of about 1.1 GB imported only when needed. Inputs
  (and 4-D outputs) are NHWC through ``to_channel_last_io``, so a block's model is only the block: no TRANSPOSE ops
  at its edges, as on a device where the previous layer already produced NHWC. A conversion costs about a second,
  so a unit is converted once for every resolution: at :data:`~supernet.formats.TFLITE_SHARED_SIZE`, and the
  runtime resizes its input to each row's size (LiteRT ``resize_tensor_input``, ``benchmark_model
  --input_layer_shape``). Resized, the models give torch's outputs, and ran within 0.2-0.7% of models converted at
  the row's own size here (14 units, up and down from 160 to 224 px tables, against a 0.4% bias of the same timing
  with one model on both sides). A full w1.0 table then needs 99 conversions instead of 1,257 (74 convs and
  blocks, 25 pools).
- TorchScript (``torch.jit.trace``) for devices measured with torch itself (``--runtime torch``, CPU or CUDA).
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .arch import Arch, Layout
from .files import atomic_write
from .formats import (
    INSTALL_TFLITE,
    INT8_CALIBRATION_SIZE,
    ONNX_FREE_DIMS,
    ONNX_OPSET,
    SUPERNET_SEED,
    ExportError,
    TFLiteUnavailableError,
    check_export,
)
from .ofa_supernet import SUPERNETS, OFASupernet
from .plan import MOBILENETV3, family_of
from .quantize import check_precision, onnx_int8, seeded_images
from .unit_modules import build_unit
from .units import Unit

__all__ = [
    "export_module",
    "model_bytes",
    "onnx_bytes",
    "seeded_supernet",
    "subnet_bytes",
    "tflite_bytes",
    "torchscript_bytes",
    "unit_bytes",
]


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
                                     f"({err}); install it with: {INSTALL_TFLITE}") from None


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


# --- bytes of what the tables measure ----------------------------------------------------------------------
_EXPORTERS = {"onnx": onnx_bytes, "tflite": tflite_bytes, "torchscript": torchscript_bytes}


def model_bytes(module: nn.Module, runtime: str, input_shape: Sequence[int], precision: str = "fp32") -> bytes:
    """The module exported for ``runtime`` in ``precision``: ONNX is quantized after export, TF-Lite while it is
    converted (PT2E works on the torch graph)."""
    check_export(runtime, precision)
    if runtime == "tflite":
        return tflite_bytes(module, input_shape, precision)
    model = _EXPORTERS[runtime](module, input_shape)
    return model if precision == "fp32" else onnx_int8(model, input_shape)


def export_module(module: nn.Module, runtime: str, path: str | os.PathLike, input_shape: Sequence[int]) -> Path:
    """Export any module (a unit, a whole subnet) to ``path`` for ``runtime`` (``"onnx"`` or ``"tflite"``)."""
    path = Path(path)
    atomic_write(path, model_bytes(module, runtime, input_shape))
    return path


@cache
def seeded_supernet(width_mult: float, n_classes: int, layout: Layout = MOBILENETV3.layout) -> OFASupernet:
    """Seeded random weights: latency does not depend on their values, and exports stay reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SUPERNET_SEED)
        return SUPERNETS[family_of(layout)](width_mult=width_mult, n_classes=n_classes).eval()




def unit_bytes(unit: Unit, runtime: str, batch: int = 1, seed: int = 0, precision: str = "fp32") -> bytes:
    """The unit's model for ``batch`` images per run, its weights seeded."""
    return model_bytes(build_unit(unit, seed), runtime, (batch, *unit.input_shape[1:]), precision)


def subnet_bytes(arch: Arch, width_mult: float, n_classes: int, runtime: str, batch: int = 1,
                 precision: str = "fp32") -> bytes:
    """A whole subnet of the seeded supernet as one model.

    ONNX node names keep the module paths (``/blocks.7/conv/...``), which is what attributing a runtime
    profiler's node times to table rows relies on. An ONNX subnet serves every resolution, with the input's
    height and width left as :data:`~supernet.formats.ONNX_FREE_DIMS`: a table's 25 resolutions cost one export
    and one file per subnet instead of 25. ONNX Runtime fixes them when it loads the model, and then runs as fast
    as with a static export (within 1% here; a model left symbolic at run time is 1-2% slower). An int8 subnet's
    scales are calibrated at :data:`~supernet.formats.INT8_CALIBRATION_SIZE` px, whatever resolution it then
    runs at.
    """
    check_export(runtime, precision)
    subnet = seeded_supernet(float(width_mult), int(n_classes), arch.layout).extract(arch)
    input_shape = (batch, 3, arch.r, arch.r)
    if runtime != "onnx":
        return model_bytes(subnet, runtime, input_shape, precision)
    data = onnx_bytes(subnet, input_shape, any_resolution=True)
    return data if precision == "fp32" else onnx_int8(data, (batch, 3, INT8_CALIBRATION_SIZE, INT8_CALIBRATION_SIZE))
