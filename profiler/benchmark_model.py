"""Parse the output of TF-Lite's ``benchmark_model`` (newer and older formats), failing loudly on bad flags."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BenchmarkModelError", "BenchmarkModelResult", "parse_benchmark_output"]

_STATS = re.compile(r"count=(\d+)((?:\s+\w+=[-\d.e+]+)+)")
_FIELD = re.compile(r"(\w+)=([-\d.e+]+)")
_NEW_TIMINGS = re.compile(
    r"Inference timings in us: Init: ([\d.e+]+), First inference: ([\d.e+]+), "
    r"Warmup \(avg\): ([\d.e+]+), Inference \(avg\): ([\d.e+]+)"
)
# Older builds call the steady-state mean "Inference" or, before that, "no stats".
_OLD_TIMINGS = re.compile(
    r"Average inference timings in us: Warmup: ([\d.e+]+), Init: ([\d.e+]+), (?:Inference|no stats): ([\d.e+]+)"
)


class BenchmarkModelError(ValueError):
    """benchmark_model's output cannot be trusted or read; the message quotes the offending line."""


@dataclass(frozen=True)
class BenchmarkModelResult:
    """Timings in ms from one benchmark_model run.

    Args:
        avg_ms: Mean steady-state inference time.
        init_ms: Interpreter initialisation time.
        warmup_ms: Mean warm-up inference time.
        count: Number of timed inference runs (None when the output has no ``count=`` line).
        std_ms, min_ms, max_ms, median_ms: From the ``count=`` line where printed (median on newer builds only).
    """

    avg_ms: float
    init_ms: float
    warmup_ms: float
    count: int | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    median_ms: float | None = None


def parse_benchmark_output(text: str) -> BenchmarkModelResult:
    """Read one benchmark_model run's output (values in microseconds; returned in ms).

    Raises:
        BenchmarkModelError: ``Unconsumed cmdline flags`` (a misspelled flag was ignored, so the run did not
            measure what was asked), or no timing summary at all.
    """
    for line in text.splitlines():
        if "Unconsumed cmdline flags" in line:
            raise BenchmarkModelError(
                f"benchmark_model ignored flags it does not know: {line.strip()!r}; fix the flag names "
                "(this build's --help lists them) and run again"
            )
    new, old = _NEW_TIMINGS.search(text), _OLD_TIMINGS.search(text)
    if new:
        init, _first, warmup, avg = (float(value) / 1000 for value in new.groups())
    elif old:
        warmup, init, avg = (float(value) / 1000 for value in old.groups())
    else:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise BenchmarkModelError(f"no 'Inference timings' line in benchmark_model output; last lines:\n{tail}")
    stats = _steady_state_stats(text)
    return BenchmarkModelResult(
        avg_ms=avg,
        init_ms=init,
        warmup_ms=warmup,
        count=int(stats["count"]) if stats else None,
        std_ms=stats["std"] / 1000 if stats and "std" in stats else None,
        min_ms=stats["min"] / 1000 if stats and "min" in stats else None,
        max_ms=stats["max"] / 1000 if stats and "max" in stats else None,
        median_ms=stats["median"] / 1000 if stats and "median" in stats else None,
    )


def _steady_state_stats(text: str) -> dict[str, float] | None:
    """The last ``count=`` line: benchmark_model prints warm-up stats first, then the timed runs."""
    lines = list(_STATS.finditer(text))
    if not lines:
        return None
    last = lines[-1]
    fields = {"count": float(last.group(1))}
    fields.update((name, float(value)) for name, value in _FIELD.findall(last.group(2)))
    return fields
