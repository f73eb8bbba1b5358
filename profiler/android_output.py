"""Read the Android agent's results file: one block per model, result, error and environment records.

``agents/android_agent.sh`` writes, per model, a block between ``=== ofa-agent begin NAME`` and ``=== ofa-agent end
NAME`` lines holding each benchmark_model invocation's output, command and status (the reference's invocations
interleaved where it has one), and, per run, environment blocks. What the records hold is described in
:mod:`profiler.android_run`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from profiler.agent_run import AgentRun
from profiler.benchmark_model import BenchmarkModelError, BenchmarkModelResult, parse_benchmark_output

__all__ = ["AGENT_NAME", "MARK", "parse_agent_output"]

AGENT_NAME = "android_agent.sh"
MARK = "=== ofa-agent "
_MIN_FOR_PERCENTILES = 10


def parse_agent_output(text: str) -> AgentRun:
    """Split the phone's results file into result, error and environment records.

    A model's block counts only once its ``end`` line is there: a block cut off mid-write is ignored, and the
    agent measures that model again on its next run.
    """
    run = AgentRun()
    block: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    for line in text.splitlines():
        if line.startswith(MARK):
            word, _, rest = line[len(MARK) :].partition(" ")
            # Lines, command and status go to the invocation the block is in (the block itself when timed alone).
            current = block["invocations"][-1] if block and block["invocations"] else block
            if word == "begin":
                block = {**_new_invocation(), "name": rest, "reference": None, "rounds": None, "invocations": []}
                environment = None
            elif word == "environment":
                block, environment = None, _new_environment(rest)
                run.environments.append(environment)
            elif block is not None and word == "reference":
                block["reference"] = rest
            elif block is not None and word == "rounds":
                block["rounds"] = _whole(rest)
            elif block is not None and word == "invocation":
                role, _, number = rest.partition(" ")
                block["invocations"].append({**_new_invocation(), "role": role, "round": _whole(number)})
            elif current is not None and word == "command":
                current["command"] = rest
            elif current is not None and word == "status":
                current["status"] = _whole(rest)
            elif block is not None and word == "end" and rest == block["name"]:
                record = _block_record(block)
                (run.results if record["type"] == "result" else run.errors)[record["name"]] = record
                block = None
        elif block is not None:
            (block["invocations"][-1] if block["invocations"] else block)["lines"].append(line)
        elif environment is not None:
            _add_environment_line(environment, line)
    return run


def _whole(text: str) -> int | None:
    """A number the agent printed; None for anything else (a garbled line), which the record then reports."""
    try:
        return int(text)
    except ValueError:
        return None


def _new_invocation() -> dict[str, Any]:
    return {"lines": [], "command": "", "status": None}


def _block_record(block: Mapping[str, Any]) -> dict[str, Any]:
    if block["reference"] is None:
        return _model_record(block["name"], "\n".join(block["lines"]), block["status"], block["command"])
    return _interleaved_record(block)


def _run_result(output: str, status: int | None) -> BenchmarkModelResult:
    """One invocation's timings.

    Raises:
        BenchmarkModelError: The binary failed (the message quotes its last lines) or printed no timings.
    """
    if status != 0:
        tail = "\n".join(output.strip().splitlines()[-5:])
        raise BenchmarkModelError(f"benchmark_model exited with status {status}:\n{tail}")
    return parse_benchmark_output(output)


def _model_record(name: str, output: str, status: int | None, command: str) -> dict[str, Any]:
    """A result record shaped like the Python agent's, or an error record quoting what went wrong."""
    base = {"name": name, "runtime": "benchmark_model", "command": command}
    try:
        parsed = _run_result(output, status)
    except BenchmarkModelError as exc:
        return {**base, "type": "error", "error": str(exc)}
    if parsed.count is None or parsed.std_ms is None:
        return {
            **base,
            "type": "error",
            "error": "benchmark_model printed no 'count=.. std=..' line, so the run has no spread to judge",
        }
    median_from = "median" if parsed.median_ms is not None else "avg"
    summary = {
        "median": parsed.median_ms if parsed.median_ms is not None else parsed.avg_ms,
        "mean": parsed.avg_ms,
        "std": parsed.std_ms,
        "p10": None,
        "p90": None,
        "count": parsed.count,
        "min": parsed.min_ms,
        "max": parsed.max_ms,
    }
    return {
        **base,
        "type": "result",
        "summary": summary,
        "median_from": median_from,
        "samples_ms": [],
        "init_ms": parsed.init_ms,
        "warmup_ms": parsed.warmup_ms,
        **_memory_fields(parsed),
    }


def _memory_fields(parsed: BenchmarkModelResult) -> dict[str, Any]:
    """``memory_mb`` (init, overall, peak) as the build printed it; absent where it printed none."""
    memory = {key: getattr(parsed, f"{key}_mb") for key in ("init", "overall", "peak")}
    memory = {key: value for key, value in memory.items() if value is not None}
    return {"memory_mb": memory} if memory else {}


def _interleaved_record(block: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a model timed against the reference: one sample and one ratio per model invocation."""
    reference = block["reference"]
    models = [item for item in block["invocations"] if item["role"] == "model"]
    base = {"name": block["name"], "runtime": "benchmark_model", "command": models[0]["command"] if models else ""}
    parsed: dict[tuple[str, int], BenchmarkModelResult] = {}
    for item in block["invocations"]:
        try:
            parsed[item["role"], item["round"]] = _run_result("\n".join(item["lines"]), item["status"])
        except BenchmarkModelError as exc:
            if item["role"] == "reference":
                who, count = f"the reference {reference!r}", block["rounds"] + 1
            else:
                who, count = "the model", block["rounds"]
            error = f"{who} failed in its invocation {item['round'] + 1} of {count} for this model: {exc}"
            return {**base, "command": item["command"], "type": "error", "error": error}
    references = {number: result for (role, number), result in parsed.items() if role == "reference"}
    if not models or any(item["round"] not in references for item in models):
        return {
            **base,
            "type": "error",
            "error": f"not every one of the {len(models)} model invocations follows one of the reference "
            f"{reference!r} ({len(references)} in the block)",
        }
    # One statistic for every value of the record, so that ratios compare like with like.
    median_from = "median" if all(result.median_ms is not None for result in parsed.values()) else "avg"

    def value(result: BenchmarkModelResult) -> float:
        return result.median_ms if median_from == "median" else result.avg_ms

    samples, ratios = [], []
    for item in models:
        before, after = references[item["round"]], references.get(item["round"] + 1)
        scale = (value(before) + value(after)) / 2 if after is not None else value(before)
        samples.append(value(parsed["model", item["round"]]))
        ratios.append(samples[-1] / scale)
    reference_samples = [value(references[number]) for number in sorted(references)]
    model_results = [parsed["model", item["round"]] for item in models]
    return {
        **base,
        "type": "result",
        "summary": _summarize(samples),
        "median_from": median_from,
        "samples_ms": samples,
        "init_ms": float(np.median([result.init_ms for result in model_results])),
        "warmup_ms": float(np.median([result.warmup_ms for result in model_results])),
        "reference": {"name": reference, "samples_ms": reference_samples, "summary": _summarize(reference_samples)},
        "ratio_samples": ratios,
        "ratio": _summarize(ratios),
        "rounds": block["rounds"],
    }


def _summarize(values: Sequence[float]) -> dict[str, Any]:
    """The Python agent's summary fields; p10 and p90 are None for fewer than ten values."""
    array = np.asarray(values, dtype=np.float64)
    few = array.size < _MIN_FOR_PERCENTILES
    return {
        "median": float(np.median(array)),
        "mean": float(array.mean()),
        "std": float(array.std()),
        "p10": None if few else float(np.percentile(array, 10)),
        "p90": None if few else float(np.percentile(array, 90)),
        "min": float(array.min()),
        "max": float(array.max()),
        "count": int(array.size),
    }


def _new_environment(phase: str) -> dict[str, Any]:
    return {
        "type": "environment",
        "phase": phase,
        "agent": AGENT_NAME,
        "runtime": "benchmark_model",
        "cpus": [],
        "thermal": [],
        "props": {},
        "affinity_mask": None,
    }


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _add_environment_line(environment: dict[str, Any], line: str) -> None:
    kind, _, rest = line.partition(" ")
    words = rest.split()
    if kind == "cpu" and len(words) == 4:
        cpu, governor, cur, top = words
        environment["cpus"].append(
            {
                "cpu": _number(cpu),
                "governor": None if governor == "-" else governor,
                "cur_khz": _number(cur),
                "max_khz": _number(top),
            }
        )
    elif kind == "thermal" and len(words) == 3:
        millideg = words[2].lstrip("-")
        temp = int(words[2]) / 1000 if millideg.isdigit() else None
        environment["thermal"].append({"zone": words[0], "type": words[1], "temp_c": temp})
    elif kind == "prop":
        name, _, value = rest.partition(" ")
        environment["props"][name] = value
    elif kind == "mask":
        environment["affinity_mask"] = rest or None
