"""What measuring whole subnets will cost, stated before it starts: a run that cannot fit is refused, and a long one
waits for ``--yes``.

Each subnet is exported (a file of about its weights' size, kept in the cache) and timed for a second or two, so
``--subnets`` with tens of thousands of archs asks for days and hundreds of GB; a user should hear that before the
first export, not discover it from a full disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from profiler.devices import DeviceProfile
from supernet import Arch
from supernet.complexity import count_params
from supernet.errors import UsageError

__all__ = ["LONG_RUN_S", "Cost", "check_cost", "subnets_cost"]

# Seconds to time one subnet, by runtime, at the default protocol: 241 subnet measurements of a full w1.0 table took
# 6.0 min with ONNX Runtime on this project's 2-core build VM. benchmark_model starts a process per invocation, and
# times each model in 5 rounds between invocations of the reference.
_MEASURE_S = {"onnxruntime": 1.5, "tflite": 1.5, "torch": 1.5, "benchmark_model": 10.0}
# Seconds to export one subnet, by file format (here), and what int8 quantization adds.
_EXPORT_S = {"onnx": 0.3, "tflite": 2.0, "torchscript": 0.5}
_QUANTIZE_S = 1.3
# Bytes per weight in the file, and a file's overhead beyond its weights.
_WEIGHT_BYTES = {"fp32": 4, "int8": 1}
_FILE_OVERHEAD = 200_000
# Runs longer than this wait for --yes.
LONG_RUN_S = 2 * 3600.0


@dataclass(frozen=True)
class Cost:
    """Time and disk a run of ``subnets`` whole subnets asks for, at most (cached exports cost no disk)."""

    subnets: int
    seconds: float
    export_bytes: int

    def describe(self) -> str:
        hours = self.seconds / 3600
        time = f"{hours:.1f} h" if hours >= 1 else f"{self.seconds / 60:.0f} min"
        return f"{self.subnets:,} subnets: about {time} and up to {self.export_bytes / 1e9:.1f} GB of exports"


def subnets_cost(archs: Sequence[Arch], profile: DeviceProfile, width_mult: float, n_classes: int) -> Cost:
    """The cost of exporting and timing ``archs`` on ``profile``'s device (remote devices add their transfers)."""
    per_subnet = (_MEASURE_S.get(profile.runtime, 1.5) + _EXPORT_S[profile.model_format]
                  + (_QUANTIZE_S if profile.precision != "fp32" else 0.0))
    weights = sum(count_params(arch, width_mult, n_classes) for arch in archs)
    export_bytes = weights * _WEIGHT_BYTES[profile.precision] + len(archs) * _FILE_OVERHEAD
    return Cost(len(archs), len(archs) * per_subnet, int(export_bytes))


def check_cost(cost: Cost, cache_dir: Path, yes: bool) -> None:
    """Refuse a run whose exports cannot fit in ``cache_dir``'s free space; one longer than :data:`LONG_RUN_S`
    unless ``yes``. Both in one line with the figures and what to do."""
    folder = next((p for p in (Path(cache_dir), *Path(cache_dir).absolute().parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(folder).free
    if cost.export_bytes > free:
        raise UsageError(f"{cost.describe()}, and {folder} has {free / 1e9:.1f} GB free",
                         "measure fewer subnets, or give --cache a folder with room")
    if cost.seconds > LONG_RUN_S and not yes:
        raise UsageError(f"{cost.describe()}", "add --yes to start it (a killed run resumes), or measure fewer")
