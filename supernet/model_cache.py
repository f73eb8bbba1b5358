"""Model files cached by their export recipe: where each one lives, whether the cache holds it sound, and the
mapping an agent runs it by. Exported through :mod:`supernet.export` on a miss.

ONNX and TF-Lite exports are deterministic: the same module gives the same bytes (TorchScript mangles class names
per trace within a process, so its bytes can differ while the model is the same). So the cache key,
:func:`content_hash`, is a hash of the *recipe* (unit key, seed, runtime, export format and exporter versions)
rather than of the file: it is known before the slow export runs, and it changes when an upgrade of torch or
litert-torch could change the bytes. :func:`export_unit` writes each file once, atomically, under that hash, with
a digest of its bytes in ``.sha256/`` beside it: a file whose bytes no longer match is exported again.

This module imports no torch: a run whose models are all cached (a table resumed after a kill or a dropped link,
subnets measured again) starts without the 2 s torch takes to import here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from .arch import Arch
from .errors import raise_if_stopped
from .files import atomic_write, sha256_of
from .formats import (
    EXPORT_FORMAT,
    INSTALL_TFLITE,
    INT8_CALIBRATION_SIZE,
    ONNX_FREE_DIMS,
    ONNX_OPSET,
    SUFFIXES,
    SUPERNET_SEED,
    TFLITE_INPUT_NAME,
    TFLITE_SHARED_SIZE,
    ExportError,
    TFLiteUnavailableError,
    check_export,
)
from .plan import MOBILENETV3
from .quantize import recipe as quantization_recipe
from .units import Unit

__all__ = [
    "agent_model",
    "cache_store",
    "cached",
    "content_hash",
    "export_subnet",
    "export_target",
    "export_unit",
    "export_units",
    "subnet_model",
    "unit_path",
]

log = logging.getLogger(__name__)

_VERSIONED = {"onnx": ("torch", "onnx"), "tflite": ("torch", "litert-torch", "litert-converter"),
              "torchscript": ("torch",)}
# The units whose TF-Lite file serves every resolution (resized by the runtime).
_RESIZED = ("Conv", "expanded_conv", "Conv_1")


@cache
def _exporter_versions(runtime: str) -> dict[str, str]:
    versions = {}
    for dist in _VERSIONED[runtime]:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if dist == "litert-torch":
                raise TFLiteUnavailableError(f"TF-Lite export needs litert-torch, an optional extra; install it "
                                             f"with: {INSTALL_TFLITE}") from None
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
    check_export(runtime, precision)
    recipe: dict[str, Any] = {"key": export_target(unit, runtime).key, "seed": seed, "runtime": runtime,
                              "format": EXPORT_FORMAT, "opset": ONNX_OPSET if runtime == "onnx" else None,
                              "versions": _exporter_versions(runtime)}
    if batch != 1:
        recipe["batch"] = batch
    if unit.family != MOBILENETV3.name:  # the same key names other layers there (ReLU6, not h-swish)
        recipe["family"] = unit.family
    if precision != "fp32":
        recipe["quantization"] = quantization_recipe(precision, runtime)
    return _recipe_hash(recipe)


def _recipe_hash(recipe: dict[str, Any]) -> str:
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
        from .export import unit_bytes  # torch: only when something is exported

        raise_if_stopped()
        cache_store(path, unit_bytes(export_target(unit, runtime), runtime, batch, seed, precision))
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


def export_subnet(arch: Arch, width_mult: float, n_classes: int, runtime: str, cache_dir: str | os.PathLike,
                  batch: int = 1, precision: str = "fp32") -> Path:
    """A whole subnet of the seeded supernet as one model (:func:`supernet.export.subnet_bytes`), cached by arch,
    width, classes, batch and recipe. An ONNX subnet is one file for every resolution."""
    check_export(runtime, precision)
    resolution = "any" if runtime == "onnx" else arch.r
    recipe = {"arch": json.dumps({**arch.canonical().to_dict(), "r": [resolution]}), "width": width_mult,
              "classes": n_classes, "batch": batch, "seed": SUPERNET_SEED, "runtime": runtime,
              "format": EXPORT_FORMAT, "versions": _exporter_versions(runtime)}
    if precision != "fp32":  # an ONNX file serves every resolution and is calibrated at one
        recipe["quantization"] = {**quantization_recipe(precision, runtime),
                                  **({"size": INT8_CALIBRATION_SIZE} if runtime == "onnx" else {})}
    digest = _recipe_hash(recipe)[:24]
    path = Path(cache_dir) / f"subnet-{digest}{SUFFIXES[runtime]}"
    if not cached(path):
        from .export import subnet_bytes  # torch: only when something is exported

        raise_if_stopped()
        cache_store(path, subnet_bytes(arch, width_mult, n_classes, runtime, batch, precision))
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
