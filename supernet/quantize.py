"""int8 models for latency: static quantization of this project's exports with each runtime's own tools.

Phones and boards mostly run int8, and ops do not speed up alike under it (pointwise convolutions gain most,
depthwise ones least), so an int8 table is measured on int8 models rather than scaled from a float one.

For ONNX the recipe is what ``onnxruntime.quantization`` recommends for x86-64 and ARM CPUs: QDQ format, weights
int8 per output channel, activations uint8 (U8S8), scales calibrated with min/max over a fixed set of inputs. For
TF-Lite it is litert-torch's PT2E quantizer, static and per channel (``supernet.export.tflite_bytes``): a
full-integer model, int8 weights per channel and int8 activations, run by XNNPACK's QS8 kernels; ops it leaves
unannotated (h-swish, parts of SE) run in float between a dequantize and a quantize, as in any model a user
converts that way.

Tables use the seeded supernet, whose weights are random: only the latency of the quantized graph matters there,
and it does not depend on the scales' values, so the calibration inputs are seeded standard-normal images
(:data:`CALIBRATION`). Accuracy in int8 needs real images and is the training side's job.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OFAProfileError

__all__ = ["CALIBRATION", "PRECISIONS", "TFLITE_CALIBRATION", "PrecisionError", "check_precision", "onnx_int8",
           "recipe", "seeded_images"]

PRECISIONS = ("fp32", "int8")

# How activation scales are found: stated in every int8 table's sidecar and in the export cache's key.
CALIBRATION: dict[str, Any] = {"method": "minmax", "inputs": 8, "source": "standard normal images, seed 0"}
# litert-torch's static PT2E configuration observes activations with a histogram; the same images.
TFLITE_CALIBRATION: dict[str, Any] = {**CALIBRATION, "method": "histogram"}


class PrecisionError(OFAProfileError, ValueError):
    """A precision this project does not know, or one its runtime cannot export."""

    exit_code = 2


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; otherwise a one-line error naming them."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    return precision


def recipe(precision: str, model_format: str = "onnx") -> dict[str, Any]:
    """What a table or an export of ``precision`` records about how its models (``onnx`` or ``tflite`` files) were
    quantized ({} for fp32)."""
    if check_precision(precision) == "fp32":
        return {}
    if model_format == "tflite":
        return {"format": "TF-Lite full integer (PT2E)", "weights": "int8, per channel, symmetric",
                "activations": "int8, per tensor", "calibration": TFLITE_CALIBRATION,
                "tool": f"litert-torch {metadata.version('litert-torch')} (PT2EQuantizer, static, per channel)"}
    return {"format": "QDQ", "weights": "int8, per channel", "activations": "uint8, per tensor",
            "calibration": CALIBRATION, "tool": f"onnxruntime.quantization {metadata.version('onnxruntime')}"}


class _Images:
    """Calibration inputs for the model's one input (a ``CalibrationDataReader`` by its one method, so that
    importing this module does not import the tools)."""

    def __init__(self, input_name: str, images: Iterable[np.ndarray]) -> None:
        self._batches = ({input_name: np.ascontiguousarray(image, dtype=np.float32)} for image in images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def seeded_images(input_shape: Sequence[int]) -> list[np.ndarray]:
    """:data:`CALIBRATION`'s inputs: seeded standard-normal images of ``input_shape`` (latency tables)."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal(tuple(input_shape)).astype(np.float32) for _ in range(CALIBRATION["inputs"])]


def onnx_int8(float_model: bytes, input_shape: Sequence[int], images: Iterable[np.ndarray] | None = None) -> bytes:
    """A float ONNX model statically quantized by :func:`recipe`, deterministic for the same bytes and images.

    Args:
        float_model: The float model's bytes (one input named ``input``).
        input_shape: The NCHW shape the calibration images have (for a model of any resolution, one of them:
            scales hardly change with the resolution, and latency not at all).
        images: Calibration inputs of ``input_shape``; default :func:`seeded_images` (what tables use). Accuracy
            needs real ones: training images, as ``ofa-train eval --precision int8`` gives.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="ofa-int8-") as folder:
        source, prepared, target = (Path(folder) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(float_model)
        # Shape inference and ORT's float optimizations first, as the quantization tools ask.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        reader = _Images("input", seeded_images(input_shape) if images is None else images)
        quantize_static(str(prepared), str(target), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return target.read_bytes()
