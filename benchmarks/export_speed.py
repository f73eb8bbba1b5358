"""Seconds per exported unit for ONNX and TF-Lite, and per whole subnet: what a full lookup table costs to export.

Prints JSON on stdout (progress on stderr)::

    .venv/bin/python benchmarks/export_speed.py                      # 20 ONNX units, 5 TF-Lite units
    .venv/bin/python benchmarks/export_speed.py --tflite-units 8 --tflite-jobs 2 --plot export.png
    .venv/bin/python benchmarks/export_speed.py --tflite-tables --tflite-jobs 2   # whole phone tables' exports

``--tflite-tables`` exports every TF-Lite file of a w1.2 five-resolution phone table and of the full w1.0 space
into fresh caches, as ``ofa-profile`` does (rows of one conv or block share a file the runtime resizes), and
states each against the same tables exported a file per row at the per-unit time measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from supernet import ArchSpace, OFAMobileNetV3
from supernet.export import onnx_bytes, tflite_bytes
from supernet.formats import TFLiteUnavailableError
from supernet.model_cache import export_target, export_units
from supernet.unit_modules import build_unit
from supernet.units import Unit, all_units


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _summary(seconds: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(seconds), "median": statistics.median(seconds), "min": min(seconds),
            "max": max(seconds), "n": len(seconds)}


def _time_units(units: Sequence[Unit], to_bytes: Callable[..., bytes]) -> list[float]:
    """Build plus export of each unit, as :func:`supernet.model_cache.export_unit` does (file writing excluded)."""
    seconds = []
    for unit in units:
        start = time.perf_counter()
        to_bytes(build_unit(unit), unit.input_shape)
        seconds.append(time.perf_counter() - start)
        _log(f"  {seconds[-1]:6.3f} s  {unit.key}")
    return seconds


def _sample(units: list[Unit], n: int, rng: random.Random) -> list[Unit]:
    """Blocks first (the bulk of a table), then head rows, in a seeded random order."""
    blocks = [u for u in units if u.kind == "expanded_conv"]
    others = [u for u in units if u.kind != "expanded_conv"]
    return (rng.sample(blocks, len(blocks)) + rng.sample(others, len(others)))[:n]


def _subnet_seconds(width_mult: float, resolution: int, seed: int, to_bytes: Callable[..., bytes]) -> float:
    net = OFAMobileNetV3(width_mult=width_mult).eval()
    subnet = net.extract(net.space.sample(seed).with_resolution(resolution)).eval()
    start = time.perf_counter()
    to_bytes(subnet, (1, 3, resolution, resolution))
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    table = all_units(args.width_mult, [args.resolution])
    n_space = len(all_units(args.width_mult))
    report: dict[str, Any] = {
        "width_mult": args.width_mult, "resolution": args.resolution, "seed": args.seed,
        "units_per_resolution": len(table), "distinct_units_all_resolutions": n_space,
        "torch": torch.__version__, "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
    }

    _log(f"ONNX: {args.onnx_units} units")
    onnx_bytes(build_unit(Unit.pool(7, 8)), (1, 8, 7, 7))  # first call pays one-time exporter set-up
    onnx_seconds = _time_units(_sample(table, args.onnx_units, rng), onnx_bytes)
    report["onnx"] = {"seconds_per_unit": _summary(onnx_seconds),
                      "subnet_seconds": _subnet_seconds(args.width_mult, args.resolution, args.seed, onnx_bytes),
                      "estimated_seconds_all_units": statistics.fmean(onnx_seconds) * n_space}

    if args.tflite_units:
        report["tflite"] = _tflite(args, table, rng, n_space)
    return report


def _tflite(args: argparse.Namespace, table: list[Unit], rng: random.Random, n_space: int) -> dict[str, Any]:
    _log(f"TF-Lite: {args.tflite_units} units")
    start = time.perf_counter()
    try:
        tflite_bytes(build_unit(Unit.pool(7, 8)), (1, 8, 7, 7))  # imports litert-torch and warms it up
    except TFLiteUnavailableError as err:
        return {"error": str(err)}
    result: dict[str, Any] = {"import_and_first_conversion_seconds": time.perf_counter() - start}
    units = _sample(table, args.tflite_units, rng)
    seconds = _time_units(units, tflite_bytes)
    result["seconds_per_unit"] = _summary(seconds)
    result["estimated_seconds_all_units"] = statistics.fmean(seconds) * n_space
    if args.subnet_tflite:
        _log("TF-Lite: one subnet")
        result["subnet_seconds"] = _subnet_seconds(args.width_mult, args.resolution, args.seed, tflite_bytes)
    if args.tflite_tables:
        result["tables"] = [_tflite_table(width, resolutions, args.tflite_jobs, result["seconds_per_unit"]["mean"])
                            for width, resolutions in ((1.2, (160, 176, 192, 208, 224)),
                                                       (1.0, ArchSpace.for_width(1.0).resolutions))]
    if args.tflite_jobs > 1:
        _log(f"TF-Lite: the same units in {args.tflite_jobs} processes (new seed, so nothing is cached)")
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            export_units(units, "tflite", cache, seed=args.seed + 1, jobs=args.tflite_jobs)
            wall = time.perf_counter() - start
        result["parallel"] = {"jobs": args.tflite_jobs, "units": len(units), "wall_seconds": wall,
                              "seconds_per_unit": wall / len(units)}
    return result


def _tflite_table(width: float, resolutions: Sequence[int], jobs: int, per_unit_s: float) -> dict[str, Any]:
    """Wall time of every TF-Lite export of a table into a fresh cache, against a file per row at ``per_unit_s``."""
    rows = all_units(width, resolutions)
    files = len({export_target(unit, "tflite").key for unit in rows})
    _log(f"TF-Lite: the w{width} table at {len(resolutions)} resolutions: {len(rows)} rows, {files} files, "
         f"{jobs} process(es)")
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        export_units(rows, "tflite", cache, jobs=jobs)
        wall = time.perf_counter() - start
    before = per_unit_s * len(rows)
    return {"width_mult": width, "resolutions": list(resolutions), "rows": len(rows), "files": files, "jobs": jobs,
            "wall_seconds": wall, "file_per_row_estimated_seconds": before, "speedup": before / wall}


def _plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = ["ONNX unit"], [report["onnx"]["seconds_per_unit"]["median"]]
    if "seconds_per_unit" in report.get("tflite", {}):
        labels.append("TF-Lite unit")
        values.append(report["tflite"]["seconds_per_unit"]["median"])
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(labels, values)
    ax.set_yscale("log")
    ax.set_ylabel("seconds (median)")
    ax.set_title(f"export time per unit, w{report['width_mult']} at {report['resolution']}")
    fig.tight_layout()
    fig.savefig(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--onnx-units", type=int, default=20, help="units to export to ONNX (default 20)")
    parser.add_argument("--tflite-units", type=int, default=5, help="units to export to TF-Lite; 0 skips TF-Lite")
    parser.add_argument("--no-subnet-tflite", dest="subnet_tflite", action="store_false",
                        help="skip the whole-subnet TF-Lite export (about 10-20 s)")
    parser.add_argument("--tflite-jobs", type=int, default=1, help="also time export_units with this many processes")
    parser.add_argument("--tflite-tables", action="store_true",
                        help="also export whole phone tables (w1.2 at 5 resolutions, w1.0 at all 25) to TF-Lite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH", help="also save a bar chart of the medians")
    args = parser.parse_args(argv)
    if args.resolution not in ArchSpace.for_width(args.width_mult).resolutions:
        parser.error(f"--resolution {args.resolution} is not in the w{args.width_mult} supernet's resolution list")
    if args.onnx_units < 1 or args.tflite_units < 0 or args.tflite_jobs < 1:
        parser.error("--onnx-units must be >= 1, --tflite-units >= 0 and --tflite-jobs >= 1")
    report = run(args)
    print(json.dumps(report, indent=2))
    if args.plot:
        _plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
