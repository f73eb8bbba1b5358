"""Run the Python agent on a device through any transport: push, run, pull, parse, clean up.

The results file stays on the device until it has been pulled whole, so a run cut off by a lost connection
is simply started again: the agent skips the models it already measured.
"""

from __future__ import annotations

import json
import posixpath
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler.transports.base import Transport
from supernet.files import json_loads

__all__ = ["AGENT", "AgentRun", "parse_results", "run_python_agent"]

AGENT = Path(__file__).resolve().parents[1] / "agents" / "python_agent.py"
_SETTINGS = (
    *("threads", "affinity", "warmup", "min_count", "min_time_s", "min_sample_ms", "evict_cache_mb"),
    *("runtime", "provider", "block_ms", "settle_ms", "steady_min_count", "profile_runs", "profile_sessions"),
)


@dataclass
class AgentRun:
    """The records an agent wrote, split by kind."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    environments: list[dict[str, Any]] = field(default_factory=list)


def parse_results(text: str) -> AgentRun:
    """Parse a results file; a torn last line (the device lost power mid-write) or any other line that is not a
    record is skipped (what is left is checked before it is journaled, see :mod:`profiler.records`)."""
    run = AgentRun()
    for line in text.splitlines():
        try:
            record = json_loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        kind = record.get("type")
        if kind in ("result", "error") and not isinstance(record.get("name"), str):
            continue
        if kind == "result":
            run.results[record["name"]] = record
        elif kind == "error":
            run.errors[record["name"]] = record
        elif kind == "environment":
            run.environments.append(record)
    return run


def run_python_agent(
    transport: Transport,
    models: Sequence[Mapping[str, Any]],
    *,
    remote_dir: str,
    results: Path,
    timeout: float,
    python: str = "python3",
    settings: Mapping[str, Any] | None = None,
    cleanup: bool = True,
    reference: Mapping[str, Any] | None = None,
    files_dir: str | None = None,
) -> AgentRun:
    """Measure models on a device with the Python agent.

    Args:
        transport: How to reach the device.
        models: One mapping per model: ``name``, local ``path``, and optionally ``inputs``, ``runtime``,
            ``provider``, ``dim_overrides`` (ONNX symbolic input dimensions to fix, by name).
        remote_dir: Working folder on the device; created if missing, removed after a complete run.
        results: Local path the device's results file is pulled to.
        timeout: Seconds the agent may run in all.
        python: The device's Python interpreter.
        settings: Manifest settings (threads, affinity, warmup, min_count, min_time_s, runtime, provider).
        cleanup: Remove ``remote_dir`` after the results were pulled.
        reference: A model (``name``, local ``path``, ``inputs``) that every model is timed against, in
            alternating blocks; records then carry the reference's samples and per-sample ratios.
        files_dir: A device folder for the model files, shared by runs (default: ``remote_dir``). A file the
            device already holds there is not sent again, so a run cut off by a flaky link and started again
            (in a new ``remote_dir``) only sends its manifest.

    Raises:
        ValueError: Unknown settings, or two different files with the same name (models may share a file,
            which is pushed once).
        TransportError: The device failed; its files stay, and calling again continues the run.
    """
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise ValueError(f"unknown agent settings {unknown}; expected some of {list(_SETTINGS)}")
    files_dir = files_dir or remote_dir
    relative = posixpath.relpath(files_dir, remote_dir)  # the agent resolves paths from its manifest's folder
    entries, files = [], {}
    for model in [*models, *([reference] if reference else [])]:
        local = Path(model["path"])
        if files.get(local.name, local) != local:
            raise ValueError(f"two models share the file name {local.name!r}; rename one")
        files[local.name] = local
        entries.append({**model, "path": posixpath.normpath(posixpath.join(relative, local.name))})
    if reference:
        settings["reference"] = entries.pop()
    transport.make_dirs(remote_dir, files_dir)
    agent = transport.join(remote_dir, AGENT.name)
    manifest = transport.join(remote_dir, "manifest.json")
    remote_results = transport.join(remote_dir, "results.jsonl")
    with tempfile.TemporaryDirectory() as scratch:
        manifest_file = Path(scratch) / "manifest.json"
        manifest_file.write_text(json.dumps({**settings, "models": entries}, indent=1))
        transport.push_all({agent: AGENT, **{transport.join(files_dir, name): local for name, local in files.items()},
                            manifest: manifest_file})
    transport.run([python, agent, manifest, remote_results], timeout=timeout)
    transport.pull(remote_results, results)
    if cleanup:
        transport.remove(remote_dir)
    return parse_results(results.read_text())
