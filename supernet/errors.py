"""The project's one error base class, and the one boundary where both command lines turn errors into a line.

Every error a user can fix derives from :class:`OFAProfileError` and carries ``problem`` (what is wrong) and
``fix`` (what to do). It lives in the lowest package so that ``supernet``, ``predictors`` and ``profiler`` can
all raise it; :func:`run_command` is the only place that catches it.
"""

from __future__ import annotations

import errno
import logging
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from types import FrameType

__all__ = ["HostError", "OFAProfileError", "Stopped", "UsageError", "host_error", "raise_if_stopped", "run_command"]

log = logging.getLogger(__name__)


class OFAProfileError(Exception):
    """A problem the user can fix. ``str()`` is one line: the problem, then the fix."""

    exit_code = 1

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


class UsageError(OFAProfileError, ValueError):
    """A command line that cannot run; the message says what to change."""

    exit_code = 2


class HostError(OFAProfileError, OSError):
    """This machine (not the device) failed: a full disk, a folder that is not writable, a missing file."""


class Stopped(OFAProfileError):
    """SIGINT or SIGTERM arrived; whatever was measured is kept."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}", "every finished row is kept")


# The signal that asked this process to stop (0: none). Signals reach only the main thread; work running in a
# worker thread (ofa-profile's per-device runs) checks this between steps.
_STOP_SIGNAL = [0]


def raise_if_stopped() -> None:
    """Raise :class:`Stopped` if SIGINT or SIGTERM has arrived: long loops (a search's generations, a closed loop's
    rounds, a batch of exports) call this between steps, so that a stop acts within the promised 2 s whichever
    thread runs them."""
    if _STOP_SIGNAL[0]:
        raise Stopped(_STOP_SIGNAL[0])


_OS_FIXES = {
    errno.ENOSPC: "free some space there or give another folder",
    errno.EDQUOT: "free some space there or give another folder",
    errno.EACCES: "make it writable for this user or give another folder",
    errno.EPERM: "make it writable for this user or give another folder",
    errno.EROFS: "that file system is read-only: give a folder on another one",
    errno.ENOTDIR: "a part of that path is a file, not a folder: give another path",
    errno.EISDIR: "that path is a folder: give a file path",
    errno.EEXIST: "it exists already: remove it or give another path",
    errno.ENOENT: "check the path",
}


def host_error(err: OSError) -> HostError:
    """An ``OSError`` raised on this machine as a :class:`HostError` naming the path and what to do."""
    path = err.filename if err.filename is not None else "a file"
    where = f"{path} (and {err.filename2})" if err.filename2 else f"{path}"
    reason = err.strerror or str(err)
    fix = _OS_FIXES.get(err.errno or 0, "check the path and this machine")
    return HostError(f"on this machine, {where}: {reason}", fix)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_command(prog: str, body: Callable[[list[str]], int], argv: Sequence[str] | None,
                on_stop: Callable[[int], None] | None = None) -> int:
    """Run a command line's ``body`` inside the project's one error boundary.

    User errors print ``prog: error: problem; fix`` on one line and exit non-zero (2 for usage errors);
    host OS errors say that the host, not the device, failed, naming the path. SIGINT and SIGTERM call
    ``on_stop`` (which interrupts running work) and end with the command to rerun. ``--debug`` shows tracebacks.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    rerun = shlex.join([prog, *argv])
    previous = {}

    def stop(signum: int, frame: FrameType | None) -> None:
        _STOP_SIGNAL[0] = signum
        if on_stop is not None:
            on_stop(signum)
        raise Stopped(signum)

    if threading.current_thread() is threading.main_thread():
        _STOP_SIGNAL[0] = 0
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, stop)
    try:
        return body(argv)
    except Stopped as err:
        print(f"{prog}: {err.problem}; {err.fix}. Rerun the same command to continue: {rerun}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to continue: {rerun}", file=sys.stderr)
        return 130
    except OFAProfileError as err:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(str(host_error(err)))}", file=sys.stderr)
        return 1
    except Exception as err:  # a bug, not a user error: say so in one line, and how to see more
        if debug:
            raise
        print(f"{prog}: internal error: {type(err).__name__}: {_one_line(str(err))}; rerun with --debug for the "
              f"traceback and report it", file=sys.stderr)
        return 70
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

