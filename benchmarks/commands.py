"""The project's commands as the benchmarks run them: in this process, with a user's arguments, and a failure stops
the benchmark with the command line and its exit code rather than measuring on from a half-made table."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from profiler.cli import main as profile_main

__all__ = ["run"]


def run(argv: Sequence[str], main: Callable[[list[str]], int] = profile_main, name: str = "ofa-profile") -> None:
    """``main(argv)`` (``ofa-profile``'s by default); SystemExit naming the command unless it returned 0."""
    code = main(list(argv))
    if code != 0:
        raise SystemExit(f"{name} {' '.join(argv)}: exit code {code}")
