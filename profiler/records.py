"""What a device's results and a journal's rows must look like before they are trusted.

A device's word is checked before it is journaled: a result named outside the batch, or a time that is not a
finite positive number, would otherwise end up in every later table built from the journal. A journal line that
fails the same checks (an older or hand-edited journal) is set aside and reported, never fatal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["result_problem", "row_problem"]

_OPTIONAL = ("mean", "p10", "p90")  # None where the device's tool does not print them (benchmark_model)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _summary_problem(summary: Any, what: str) -> str | None:
    if not isinstance(summary, Mapping):
        return f"{what} is not an object"
    if not (_number(summary.get("median")) and summary["median"] > 0):
        return f"{what}.median = {summary.get('median')!r} is not a finite positive number"
    for name in _OPTIONAL:
        if summary.get(name) is not None and not (_number(summary[name]) and summary[name] > 0):
            return f"{what}.{name} = {summary[name]!r} is not a finite positive number"
    if summary.get("std") is not None and not (_number(summary["std"]) and summary["std"] >= 0):
        return f"{what}.std = {summary['std']!r} is not a finite number >= 0"
    count = summary.get("count")
    if not (isinstance(count, int) and not isinstance(count, bool) and count >= 1):
        return f"{what}.count = {count!r} is not a positive whole number"
    return None


def _samples_problem(samples: Any, what: str, allow_empty: bool = False) -> str | None:
    if not isinstance(samples, list) or not (samples or allow_empty):
        return f"{what} is not a non-empty list"
    bad = next((s for s in samples if not (_number(s) and s > 0)), None)
    return None if bad is None else f"{what} holds {bad!r}, not a finite positive number"


def _nodes_problem(nodes: Any) -> str | None:
    if not isinstance(nodes, list) or not nodes:
        return "node_times_us is not a non-empty list"
    for node in nodes:
        if not (isinstance(node, list) and len(node) == 3 and isinstance(node[0], str) and isinstance(node[1], str)
                and _number(node[2]) and node[2] >= 0):
            return f"node_times_us holds {node!r}, not [name, op_type, microseconds >= 0]"
    return None


def _timing_problem(record: Mapping[str, Any]) -> str | None:
    """Samples, summaries, ratios and node times: the fields results and journaled rows share."""
    problem = _summary_problem(record.get("summary"), "summary")
    if problem is None and "samples_ms" in record:
        # benchmark_model prints aggregates only, so its records have no raw samples
        problem = _samples_problem(record["samples_ms"], "samples_ms", allow_empty=True)
    if problem is None and record.get("ratio") is not None:
        problem = (_summary_problem(record["ratio"], "ratio")
                   or _samples_problem(record.get("ratio_samples"), "ratio_samples"))
    if problem is None and record.get("steady_samples_ms") is not None:
        problem = _samples_problem(record["steady_samples_ms"], "steady_samples_ms")
    if problem is None and record.get("node_times_us") is not None:
        problem = _nodes_problem(record["node_times_us"])
    return problem


def result_problem(result: Any) -> str | None:
    """Why an agent's result record cannot be used, or None when it can."""
    if not isinstance(result, Mapping):
        return "the result is not an object"
    problem = _timing_problem(result)
    if problem is None and result.get("ratio") is not None:
        reference = result.get("reference")
        if not isinstance(reference, Mapping):
            return "a ratio without the reference it was timed against"
        problem = (_summary_problem(reference.get("summary"), "reference.summary")
                   or _samples_problem(reference.get("samples_ms"), "reference.samples_ms"))
    return problem


def row_problem(record: Any) -> str | None:
    """Why a journaled row cannot be used, or None when it can."""
    if not isinstance(record, Mapping):
        return "not an object"
    if not isinstance(record.get("key"), str) or not record["key"]:
        return f"key {record.get('key')!r} is not a name"
    attempt = record.get("attempt")
    if not (isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1):
        return f"attempt = {attempt!r} is not a positive whole number"
    if not (_number(record.get("cv")) and record["cv"] >= 0):
        return f"cv = {record.get('cv')!r} is not a finite number >= 0"
    if not isinstance(record.get("time"), str):
        return "it has no time"
    problem = _timing_problem(record)
    if problem is None and record.get("ratio") is not None:
        if not (_number(record.get("reference_ms")) and record["reference_ms"] > 0):
            return f"reference_ms = {record.get('reference_ms')!r} is not a finite positive number"
        problem = _samples_problem(record.get("reference_samples_ms"), "reference_samples_ms")
    return problem
