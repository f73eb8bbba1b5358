"""Measure a list of model files on one device with the profile's runtime and the run's protocol.

The one place that turns a device profile and a protocol into agent settings, so table rows, whole subnets and
calibration runs are all timed the same way; and the one place that knows which agent a profile uses: the
Python agent, or the Android agent for TF-Lite's ``benchmark_model``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from profiler.agent_run import AGENT as PYTHON_AGENT
from profiler.agent_run import AgentRun, parse_results, run_python_agent
from profiler.android_output import parse_agent_output
from profiler.android_run import AGENT as ANDROID_AGENT
from profiler.android_run import RESULTS as ANDROID_RESULTS
from profiler.android_run import run_android_agent
from profiler.devices import DeviceProfile
from profiler.protocol import Protocol, ProtocolError
from profiler.transports.base import Transport
from profiler.transports.errors import Interrupted
from supernet.errors import Stopped
from supernet.files import sha256_of

__all__ = ["agent_files", "agent_python", "measure_models", "read_batch", "result_key", "stop_agent"]

_AGENT_RUNTIMES = {"onnxruntime": "onnxruntime", "tflite": "tflite", "torch": "torch"}


def agent_python(profile: DeviceProfile) -> str:
    """The device's interpreter; on this machine "python3" means the one running us (it has the runtimes)."""
    if profile.transport == "local" and profile.python == "python3":
        return sys.executable
    return profile.python


def agent_settings(profile: DeviceProfile, protocol: Protocol) -> dict[str, Any]:
    settings = {**protocol.agent_settings(), "threads": profile.threads, "provider": profile.provider}
    if profile.affinity:
        settings["affinity"] = profile.affinity
    return settings


def result_key(profile: DeviceProfile, protocol: Protocol, model: Mapping[str, Any],
               reference: Mapping[str, Any] | None = None) -> str:
    """A digest of everything a model's result depends on: the model file's bytes and its entry (input shapes,
    dimensions fixed), the reference's, the device and the agent's settings. A model named by it in a results
    file left by a killed run is the same measurement; any other is measured again (issue 25: a rerun with other
    subnets took a leftover result filed under the same name)."""
    digest = hashlib.sha256()
    for entry in (model, reference):
        if entry is None:
            continue
        digest.update(sha256_of(Path(entry["path"])).encode())
        digest.update(json.dumps({k: v for k, v in entry.items() if k not in ("name", "path")},
                                 sort_keys=True, default=str).encode())
    digest.update(json.dumps({"device": profile.name, "runtime": profile.runtime, "batch": profile.batch,
                              "min_sample_ms": protocol.min_sample_ms, **agent_settings(profile, protocol)},
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


# Settings of the Python agent's drift-proof blocks; benchmark_model times each model in a plain loop of its own.
_BLOCK_SETTINGS = ("block_ms", "settle_ms", "steady_min_count", "profile_runs", "profile_sessions")


def batch_timeout(n_models: int, protocol: Protocol) -> float:
    """Generous: each model's minimum time and as much again for the reference blocks interleaved with it, plus
    start-up, loading (benchmark_model starts a process per invocation) and slow runtimes' margin."""
    return 120.0 + n_models * (protocol.min_time_s * 40 + 30)


def measure_models(
    profile: DeviceProfile,
    transport: Transport,
    models: Sequence[Mapping[str, Any]],
    protocol: Protocol,
    remote_dir: str,
    scratch: Path,
    cleanup: bool = True,
    reference: Mapping[str, Any] | None = None,
    files_dir: str | None = None,
) -> AgentRun:
    """Time ``models`` (``name``, local ``path``, ``inputs``) on the device, each against ``reference``.

    Raw samples come back per model, except from benchmark_model, which prints only aggregates (see
    :mod:`profiler.android_run`). With ``reference``, each record also holds the reference's samples and the
    per-sample ratios (:mod:`profiler.reference`). ``files_dir``: where the Python agent's model files are kept
    between runs (see :func:`~profiler.agent_run.run_python_agent`).
    """
    results = scratch / f".{Path(remote_dir).name}.results"
    options = {
        "remote_dir": remote_dir,
        "results": results,
        "cleanup": cleanup,
        "timeout": batch_timeout(len(models), protocol),
    }
    settings = agent_settings(profile, protocol)
    try:
        if profile.runtime == "benchmark_model":
            if protocol.evict_cache_mb:
                raise ProtocolError(
                    f"{profile.name}: --evict-cache-mb needs the Python agent; benchmark_model "
                    f"times with warm caches: correct sums with --calibrate instead"
                )
            settings = {k: v for k, v in settings.items() if k not in _BLOCK_SETTINGS}
            return run_android_agent(
                transport,
                models,
                benchmark_model=profile.benchmark_model,
                settings=settings,
                reference=reference,
                **options,
            )
        settings["runtime"] = _AGENT_RUNTIMES[profile.runtime]
        settings["min_sample_ms"] = protocol.min_sample_ms
        return run_python_agent(
            transport, models, python=agent_python(profile), settings=settings, reference=reference,
            files_dir=files_dir, **options
        )
    except (Stopped, Interrupted):
        # The Android agent runs detached, and an agent whose connection closed stops only at its next check.
        transport.last_word(_stop_command(profile, remote_dir), within_s=1.0)
        raise
    finally:
        results.unlink(missing_ok=True)


def agent_files(profile: DeviceProfile) -> tuple[str, str]:
    """The profile's agent script name and the name of its results file on the device."""
    if profile.runtime == "benchmark_model":
        return ANDROID_AGENT.name, ANDROID_RESULTS
    return PYTHON_AGENT.name, "results.jsonl"


def stop_agent(profile: DeviceProfile, transport: Transport, remote_dir: str) -> None:
    """Stop an agent a killed run left measuring under ``remote_dir``: it would compete for the CPU."""
    transport.run(_stop_command(profile, transport.join(remote_dir, ".*")), timeout=30, check=False)


def _stop_command(profile: DeviceProfile, folder: str) -> list[str]:
    """Stop the agents whose script lies in ``folder`` (a pattern: ``.*`` stands for any batch)."""
    script, _ = agent_files(profile)
    # "[p]ython_agent.py" matches the agent but not this pkill's own command line, which holds the brackets.
    return ["pkill", "-f", f"{folder.rstrip('/')}/[{script[0]}]{script[1:]}"]


def read_batch(profile: DeviceProfile, transport: Transport, remote: str, local: Path) -> AgentRun | None:
    """The records in a batch folder's results file on the device (pulled via ``local``), None if it has none."""
    _, name = agent_files(profile)
    results = transport.join(remote, name)
    if transport.remote_sha256(results) is None:
        return None
    transport.pull(results, local)
    try:
        text = local.read_text()
    finally:
        local.unlink()
    return parse_agent_output(text) if profile.runtime == "benchmark_model" else parse_results(text)
