"""Measure a list of model files on one device with the profile's runtime and the run's protocol.

The one place that turns a device profile and a protocol into agent settings, so table rows, whole subnets and
calibration runs are all timed the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from profiler.agent_run import AgentRun, run_python_agent
from profiler.devices import DeviceProfile
from profiler.protocol import Protocol
from profiler.transports.base import Transport

__all__ = ["agent_python", "measure_models"]

_AGENT_RUNTIMES = {"onnxruntime": "onnxruntime", "tflite": "tflite", "torch": "torch"}


def agent_python(profile: DeviceProfile) -> str:
    """The device's interpreter; on this machine "python3" means the one running us (it has the runtimes)."""
    if profile.transport == "local" and profile.python == "python3":
        return sys.executable
    return profile.python


def agent_settings(profile: DeviceProfile, protocol: Protocol) -> dict[str, Any]:
    settings = {**protocol.agent_settings(), "threads": profile.threads, "runtime": _AGENT_RUNTIMES[profile.runtime],
                "provider": profile.provider}
    if profile.affinity:
        settings["affinity"] = profile.affinity
    return settings


def batch_timeout(n_models: int, protocol: Protocol) -> float:
    """Generous: each model's minimum time, plus start-up, loading and slow runtimes' margin."""
    return 120.0 + n_models * (protocol.min_time_s * 20 + 10)


def measure_models(profile: DeviceProfile, transport: Transport, models: Sequence[Mapping[str, Any]],
                   protocol: Protocol, remote_dir: str, scratch: Path, cleanup: bool = True) -> AgentRun:
    """Time ``models`` (``name``, local ``path``, ``inputs``) on the device; raw samples come back per model."""
    results = scratch / f".{Path(remote_dir).name}.results.jsonl"
    try:
        return run_python_agent(transport, models, remote_dir=remote_dir, results=results,
                                timeout=batch_timeout(len(models), protocol), python=agent_python(profile),
                                settings=agent_settings(profile, protocol), cleanup=cleanup)
    finally:
        results.unlink(missing_ok=True)
