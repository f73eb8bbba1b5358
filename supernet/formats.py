"""The formats models are exported in: runtimes, file suffixes, the ONNX opset and input names, and the errors of
asking for one that cannot be. Shared by the exporters (:mod:`supernet.export`, torch) and the model cache
(:mod:`supernet.model_cache`, no torch)."""

from __future__ import annotations

from .errors import OFAProfileError
from .quantize import PrecisionError, check_precision

__all__ = [
    "EXPORT_FORMAT",
    "INSTALL_TFLITE",
    "INT8_CALIBRATION_SIZE",
    "ONNX_FREE_DIMS",
    "ONNX_OPSET",
    "RUNTIMES",
    "SUFFIXES",
    "SUPERNET_SEED",
    "TFLITE_INPUT_NAME",
    "TFLITE_SHARED_SIZE",
    "ExportError",
    "TFLiteUnavailableError",
    "check_export",
]

RUNTIMES = ("onnx", "tflite", "torchscript")
# The formats an int8 model is exported in (supernet.quantize).
QUANTIZED_RUNTIMES = ("onnx", "tflite")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "torchscript": ".pt"}
ONNX_OPSET = 17
# The symbolic input dimensions of an ONNX subnet exported for any resolution.
ONNX_FREE_DIMS = ("height", "width")
# Bump when the export recipe changes (names, layouts, options) so that cached files are not reused.
EXPORT_FORMAT = 1
INSTALL_TFLITE = "pip install 'ofa-profile[tflite]'"
# The input size TF-Lite units are converted at; the runtime resizes the input to each row's size.
TFLITE_SHARED_SIZE = 32
# The input tensor name litert-torch gives a converted module (what benchmark_model's --input_layer names).
TFLITE_INPUT_NAME = "serving_default_args_0"
# The seed of the supernet whose subnets are exported: latency does not depend on the weights' values.
SUPERNET_SEED = 0
# The size an int8 subnet of any resolution is calibrated at (its file serves every resolution, as a float one's).
INT8_CALIBRATION_SIZE = 160


class ExportError(OFAProfileError, ValueError):
    """An export that cannot run as asked (unknown runtime, bad input shape); the message says what to pass."""


class TFLiteUnavailableError(OFAProfileError, ImportError):
    """TF-Lite export was asked for but its optional extra, litert-torch, is not installed."""


def check_export(runtime: str, precision: str = "fp32") -> None:
    """Refuse a runtime no model is exported for, and a precision its models are not quantized in."""
    if runtime not in RUNTIMES:
        raise ExportError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if check_precision(precision) != "fp32" and runtime not in QUANTIZED_RUNTIMES:
        raise PrecisionError(f"{precision} models are exported for ONNX Runtime and TF-Lite, not {runtime}",
                             "use --runtime onnxruntime or tflite, or --precision fp32")
