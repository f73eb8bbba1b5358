"""The one bounded wait of the test suite: poll a condition until it holds, a stop condition holds, or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0, interval_s: float = 0.01,
               stop: Callable[[], bool] | None = None) -> bool:
    """True once ``condition()`` holds; False if ``stop()`` holds first; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if stop is not None and stop():
            return False
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def when_running(command_line: str, action: Callable[[], None]) -> Callable[[], None]:
    """On a thread: once a process whose whole command line is ``command_line`` runs, call ``action``.

    Returns the thread's join. This replaces a timer guessing when a command has started on the peer.
    """
    import subprocess
    import threading

    def running() -> bool:
        return subprocess.run(["pgrep", "-fx", command_line], capture_output=True).returncode == 0

    def watch() -> None:
        wait_until(running, f"{command_line!r} to run")
        action()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread.join
