"""Small test models: one ONNX (TorchScript exporter), one TF-Lite (litert_torch), one TorchScript, one broken;
stand-ins for a table's TF-Lite exports, for the fake benchmark_model; and a LiteRT interpreter that lists ops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from profiler.reference import BLOCK_REFERENCE
from supernet.model_cache import cache_store, unit_path
from supernet.units import Unit

SHAPE = (1, 3, 32, 32)

# litert_torch takes about 6 s to import and registers global torch hooks: convert in a child process.
_TFLITE_SCRIPT = """
import sys, torch, litert_torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
litert_torch.convert(net, (torch.randn(1, 3, 32, 32),)).export(sys.argv[1])
"""


def litert_interpreter(model: bytes, input_shape: list[int] | None = None):
    """The TF-Lite ``model`` in LiteRT, its input resized to ``input_shape`` (NHWC) where that differs from the
    model's, and without the default XNNPACK delegate, so the op list shows every builtin op (not one DELEGATE)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    declared = interpreter.get_input_details()[0]
    if input_shape is not None and list(declared["shape"]) != input_shape:
        interpreter.resize_tensor_input(declared["index"], input_shape)
    interpreter.allocate_tensors()
    return interpreter


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()


def make_onnx(path: Path) -> Path:
    """A conv + ReLU at 1x3x32x32, exported with the fast TorchScript exporter, opset 17."""
    torch.onnx.export(
        _net(),
        (torch.randn(SHAPE),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["output"],
    )
    return path


def make_tflite(path: Path) -> Path:
    """The same net as TF-Lite, converted by litert_torch."""
    subprocess.run([sys.executable, "-c", _TFLITE_SCRIPT, str(path)], check=True, capture_output=True, timeout=300)
    return path


def make_torchscript(path: Path) -> Path:
    """The same net as TorchScript, for the agent's torch runtime."""
    torch.jit.trace(_net(), torch.randn(SHAPE)).save(str(path))
    return path


def make_broken(path: Path) -> Path:
    """A file named like a model that no runtime can load."""
    path.write_bytes(b"this is not a model\n" * 10)
    return path


def stand_in_tflite(units: list[Unit], cache: Path, kind: str = "new") -> None:
    """Cache entries for the units' TF-Lite exports (and the reference's), holding the fake's output choice: the
    fake benchmark_model reads no model, and converting every unit would take minutes."""
    paths = [unit_path(unit, "tflite", cache) for unit in units]
    paths.append(unit_path(BLOCK_REFERENCE.unit, "tflite", cache, seed=BLOCK_REFERENCE.seed))
    for path in paths:
        cache_store(path, f"{kind}\n".encode())
