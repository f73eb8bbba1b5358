"""Run the Android agent on a phone: push, start it detached, poll with bounded calls, pull, parse.

Phones have no Python, so ``agents/android_agent.sh`` drives TF-Lite's ``benchmark_model`` binary. It runs under
``setsid nohup``, appends each model's output to a results file on the phone and writes a ``done`` file last: a
dropped USB cable stops only the polling, and calling again finds the agent still running, or its work done, and
continues from the results on the phone.

benchmark_model prints aggregates, never per-run times. Timed alone, a result's ``samples_ms`` is empty and its
summary holds what the binary printed: ``median`` is benchmark_model's ``median=`` where the build prints it and
its ``avg=`` otherwise (``median_from`` says which); ``p10`` and ``p90`` are None (no build prints them).

Timed against a ``reference`` (the phone's speed drifts by several percent within minutes, but the ratio of a
model's time to a fixed workload's, timed interleaved, holds), each model is run in ``rounds`` invocations, each
bracketed by invocations of the reference, with the runs and seconds split among them. Then ``samples_ms`` holds
one value per model invocation (its ``median=``, or ``avg=``, as above), ``summary`` summarizes those, and the
record has the Python agent's ``reference`` (its own ``samples_ms`` and ``summary``), ``ratio_samples`` (each
model value over the mean of the reference values just before and after it) and ``ratio``, plus ``rounds``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from profiler.agent_run import AgentRun
from profiler.android_output import AGENT_NAME, parse_agent_output
from profiler.transports.base import Transport
from profiler.transports.errors import TransportError

__all__ = ["AGENT", "RESULTS", "AgentFailed", "benchmark_flags", "run_android_agent"]

AGENT = Path(__file__).resolve().parents[1] / "agents" / AGENT_NAME
RESULTS = "results.txt"
_SETTINGS = ("threads", "affinity", "warmup", "min_count", "min_time_s", "provider")
_DEFAULTS = {"threads": 1, "warmup": 10, "min_count": 50, "min_time_s": 1.0, "provider": "cpu"}
# "cpu" adds no flag: the binary's own default (XNNPACK on builds since TF 2.3).
_DELEGATE_FLAGS = {
    "cpu": (),
    "xnnpack": ("--use_xnnpack=true",),
    "gpu": ("--use_gpu=true",),
    "nnapi": ("--use_nnapi=true",),
}
_CALL_TIMEOUT = 30.0
_WARMUP_MIN_SECS = 0.5  # benchmark_model's own default for --warmup_min_secs
# Below this many values, p10 and p90 would be little more than the min and the max.


class AgentFailed(TransportError):
    """The agent on the phone stopped before finishing, failed, or outlived its time; its results stay there."""


def benchmark_flags(settings: Mapping[str, Any], rounds: int = 1) -> list[str]:
    """The benchmark_model flags for agent settings (threads, warmup, min_count, min_time_s, provider).

    With ``rounds`` > 1 (a model timed in that many invocations), each invocation gets its share of the timed
    runs, the seconds and the warm-up seconds, so the model costs about the device time it costs in one; the
    warm-up runs stay whole, since each invocation is a fresh process.

    Raises:
        ValueError: A provider that benchmark_model has no delegate flag for.
    """
    values = {**_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    provider = str(values["provider"]).lower()
    if provider not in _DELEGATE_FLAGS:
        raise ValueError(
            f"provider {values['provider']!r} has no benchmark_model delegate; expected one of "
            f"{', '.join(_DELEGATE_FLAGS)} (set provider in devices.toml or --provider)"
        )
    split = [f"--warmup_min_secs={_WARMUP_MIN_SECS / rounds:g}"] if rounds > 1 else []
    return [
        f"--num_threads={int(values['threads'])}",
        f"--warmup_runs={int(values['warmup'])}",
        *split,
        f"--num_runs={max(1, int(values['min_count']) // rounds)}",
        f"--min_secs={float(values['min_time_s']) / rounds:g}",
        *_DELEGATE_FLAGS[provider],
    ]


def _field(value: str, what: str) -> str:
    """A manifest field: the agent splits lines on TAB, so TAB and newline cannot be in one."""
    if not value or any(c in value for c in "\t\n\r"):
        raise ValueError(
            f"{what} {value!r} cannot go in the Android agent's manifest: it must be non-empty, "
            f"without TAB or newline; rename it"
        )
    return value


def _affinity(affinity: str | Sequence[int] | None) -> str:
    if not affinity:
        return "none"
    if isinstance(affinity, str):
        return affinity
    return ",".join(str(int(cpu)) for cpu in affinity)


def _input_flags(model: Mapping[str, Any]) -> list[str]:
    """benchmark_model's flags that resize a model's named inputs to the shapes it is to be timed at."""
    names, shapes = model.get("input_names"), model.get("inputs")
    if not names or not shapes:
        return []
    if len(names) != len(shapes):
        raise ValueError(f"{model['name']}: {len(names)} input names for {len(shapes)} input shapes")
    shape_text = ":".join(",".join(str(int(dim)) for dim in shape) for shape in shapes)
    return [f"--input_layer={_field(','.join(names), 'input name')}", f"--input_layer_shape={shape_text}"]


def _manifest(
    binary: str,
    affinity: str,
    models: Sequence[tuple[str, str, str]],
    reference: tuple[str, str, str] | None,
    rounds: int,
) -> str:
    lines = [
        "# ofa-profile manifest for agents/android_agent.sh (TAB-separated; see the script's header)",
        f"binary\t{_field(binary, 'benchmark_model path')}",
        f"affinity\t{affinity}",
    ]
    if reference is not None:
        lines += ["reference\t" + "\t".join(reference), f"rounds\t{rounds}"]
    lines += ["model\t" + "\t".join(entry) for entry in models]
    return "\n".join(lines) + "\n"


def run_android_agent(
    transport: Transport,
    models: Sequence[Mapping[str, Any]],
    *,
    remote_dir: str,
    results: Path,
    timeout: float,
    benchmark_model: str = "/data/local/tmp/benchmark_model",
    settings: Mapping[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None,
    rounds: int = 5,
    cleanup: bool = True,
    poll_interval: float = 1.0,
) -> AgentRun:
    """Measure TF-Lite models on a phone with benchmark_model, through the Android agent.

    Args:
        transport: How to reach the phone (ADB in practice; any transport with a POSIX sh works).
        models: One mapping per model: ``name``, local ``path`` (a .tflite), optionally ``inputs`` (NHWC, batch 1
            only) with ``input_names``: benchmark_model then resizes the named inputs to those shapes, so rows of
            one layer at several resolutions share a file (pushed once).
        remote_dir: Working folder on the phone; created if missing, removed after a complete run.
        results: Local path the phone's results file is pulled to.
        timeout: Seconds the agent may run in all; each call to the phone has its own shorter bound.
        benchmark_model: Path of the binary on the phone.
        settings: threads, affinity (``"fast"``, CPU ids or empty), warmup, min_count, min_time_s, provider.
        reference: One more model mapping, a fixed workload: each model is then timed in ``rounds`` invocations
            alternating with invocations of it (reference first and last), and its record carries ratios.
        rounds: Model invocations per model when timed against ``reference``; min_count and min_time_s are
            split among them. Unused without ``reference``.
        cleanup: Remove ``remote_dir`` after the results were pulled.
        poll_interval: Seconds between status checks.

    Raises:
        ValueError: Unknown settings, a provider without a delegate flag, a batch other than 1, two different
            files with the same name, a name the manifest cannot hold, or rounds below 1.
        AgentFailed: The agent stopped early, failed (e.g. no binary at ``benchmark_model``) or ran too long.
        TransportError: The phone went away; the agent goes on there, and calling again continues the run.
    """
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise ValueError(f"unknown agent settings {unknown}; expected some of {list(_SETTINGS)}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a whole number of at least 1, got {rounds!r}")
    flags = benchmark_flags(settings, rounds if reference is not None else 1)
    entries, files = [], {}
    for model in [*models, *([reference] if reference is not None else [])]:
        local = Path(model["path"])
        if files.get(local.name, local) != local:
            raise ValueError(f"two models share the file name {local.name!r}; rename one")
        if any(shape[0] != 1 for shape in model.get("inputs") or []):
            raise ValueError(f"{model['name']}: benchmark_model times batch 1 only; set batch = 1 in the profile")
        files[local.name] = local
        entries.append((_field(model["name"], "model name"), _field(local.name, "model file"),
                        " ".join([*flags, *_input_flags(model)])))
    reference_entry = entries.pop() if reference is not None else None
    transport.make_dirs(remote_dir)
    agent = transport.join(remote_dir, AGENT.name)
    manifest = transport.join(remote_dir, "manifest.txt")
    remote_results = transport.join(remote_dir, RESULTS)
    with tempfile.TemporaryDirectory() as scratch:
        manifest_file = Path(scratch) / "manifest.txt"
        manifest_file.write_text(
            _manifest(benchmark_model, _affinity(settings.get("affinity")), entries, reference_entry, rounds)
        )
        transport.push_all({agent: AGENT, **{transport.join(remote_dir, name): local for name, local in files.items()},
                            manifest: manifest_file})
    transport.run(["sh", agent, "start", manifest, remote_results], timeout=_CALL_TIMEOUT)
    _wait(transport, ["sh", agent, "status", manifest, remote_results], timeout, poll_interval)
    transport.pull(remote_results, results)
    if cleanup:
        transport.remove(remote_dir)
    return parse_agent_output(results.read_text())


def _wait(transport: Transport, status_command: list[str], timeout: float, poll_interval: float) -> None:
    """Poll the agent's status until it is done; every poll is one short, bounded call."""
    deadline = time.monotonic() + timeout
    while True:
        state, *rest = transport.run(status_command, timeout=_CALL_TIMEOUT).stdout.split(maxsplit=2) or [""]
        if state == "done":
            code, message = rest[0], (rest[1] if len(rest) > 1 else "")
            if code == "0":
                return
            raise AgentFailed(
                transport.device,
                f"the Android agent failed with status {code}: {message}",
                "fix what the message says, then run again (measured models are kept)",
            )
        if state == "stopped":
            raise AgentFailed(
                transport.device,
                "the Android agent stopped before finishing (killed, or the phone rebooted)",
                "run again: it continues from the results kept on the phone",
            )
        if state != "running":
            raise AgentFailed(
                transport.device,
                f"unexpected agent status {' '.join([state, *rest])!r}",
                "check that the phone's sh runs agents/android_agent.sh (sh android_agent.sh status)",
            )
        left = deadline - time.monotonic()
        if left <= 0:
            raise AgentFailed(
                transport.device,
                f"the Android agent still runs after {timeout:g} s",
                "raise the timeout, or check the phone (screen-off throttling, heat); the agent keeps going, "
                "and running again picks up its results",
            )
        transport.pause(min(poll_interval, left))
