"""The failures a transport can raise, as one small tree.

Every message names the device, the command (when there is one), what came back, and what to try next, so a
failed profiling run can be fixed without reading a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supernet.errors import OFAProfileError

if TYPE_CHECKING:
    from profiler.transports.result import Result

__all__ = [
    "AuthenticationFailed",
    "CommandTimedOut",
    "ConnectionFailed",
    "DeviceBusy",
    "HostKeyError",
    "Interrupted",
    "TransferFailed",
    "TransportError",
    "UnexpectedExit",
]


class Interrupted(OFAProfileError):
    """The transport was interrupted (SIGINT or SIGTERM) while it ran a command or moved a file."""


class TransportError(OFAProfileError):
    """Base of every transport failure.

    Args:
        device: Human-readable name of the device, e.g. ``ssh://root@10.0.0.7:22``.
        problem: What went wrong.
        hint: What to try next.
    """

    def __init__(self, device: str, problem: str, hint: str = "") -> None:
        super().__init__(f"{device}: {problem}", hint)
        self.device = device
        self.problem = problem
        self.hint = hint


class ConnectionFailed(TransportError):
    """The device could not be reached, or the connection dropped."""


class AuthenticationFailed(ConnectionFailed):
    """The device refused our key."""


class HostKeyError(ConnectionFailed):
    """The SSH host key is unknown or changed: we refuse to talk to a host we cannot identify."""


class DeviceBusy(ConnectionFailed):
    """Another program (usually an ``adb`` server) holds the USB device."""


class TransferFailed(TransportError):
    """A push or pull did not complete."""


class _CommandError(TransportError):
    """A failure that carries the (partial) result of a command."""

    def __init__(self, result: Result, problem: str, hint: str = "") -> None:
        self.result = result
        detail = f"{problem}\n  command: {result.command}\n{result.tail()}"
        super().__init__(result.device, detail, hint)


class UnexpectedExit(_CommandError):
    """A command exited non-zero while the caller asked for success."""

    def __init__(self, result: Result) -> None:
        super().__init__(result, f"command exited with status {result.exited}")


class CommandTimedOut(_CommandError):
    """A command outlived its timeout and was abandoned."""

    def __init__(self, result: Result, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(
            result,
            f"command did not finish within {timeout:g} s",
            "raise the timeout, or check the device is not stuck (load, thermal throttling, a hung runtime)",
        )
