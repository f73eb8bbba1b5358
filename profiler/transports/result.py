"""What a command on a device gave back."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Result"]


@dataclass(frozen=True)
class Result:
    """The outcome of one command, kept whole so errors and logs can show it.

    Args:
        device: Name of the device the command ran on.
        command: The exact shell command line sent.
        stdout: Standard output, decoded as UTF-8.
        stderr: Standard error (ADB's shell merges it into ``stdout`` and leaves this empty).
        exited: Exit status; ``-1`` when it never arrived (timeout, lost connection).
    """

    device: str
    command: str
    stdout: str
    stderr: str
    exited: int

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.exited == 0

    def tail(self, lines: int = 10) -> str:
        """The last lines of stdout and stderr, indented, for error messages."""
        parts = []
        for name, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            kept = text.rstrip("\n").splitlines()[-lines:]
            body = "\n".join(f"    {line}" for line in kept) if kept else "    (empty)"
            parts.append(f"  {name}:\n{body}")
        return "\n".join(parts)
