"""Run one step of a table run; when the device goes away, reconnect with backoff and keep what it measured."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.protocol import Protocol
from profiler.transports.base import Transport
from profiler.transports.errors import (
    AuthenticationFailed,
    CommandTimedOut,
    ConnectionFailed,
    HostKeyError,
    TransferFailed,
    TransportError,
)

__all__ = ["DeviceLost", "Reconnector"]

log = logging.getLogger(__name__)


class DeviceLost(TransportError):
    """The device stayed unreachable through every reconnect; the run's rows are safe in its journal."""


@dataclass
class Reconnector:
    """Retries a step through lost connections: ``protocol.reconnects`` times, waiting backoff·2^n seconds.

    ``on_reconnect`` runs after each reconnect (collecting what the device measured while away); if the device
    is still away it fails quietly and the next try counts.
    """

    transport: Transport
    protocol: Protocol
    journal: Path
    on_reconnect: Callable[[], None]
    sleep: Callable[[float], None]

    def call(self, step: Callable[..., Any], *args: Any) -> Any:
        for attempt in itertools.count():
            try:
                return step(*args)
            except (AuthenticationFailed, HostKeyError):
                raise  # waiting does not fix a key
            except (ConnectionFailed, TransferFailed, CommandTimedOut) as err:
                if attempt >= self.protocol.reconnects:
                    raise DeviceLost(
                        str(self.transport),
                        f"still unreachable after {attempt} reconnect(s): {err.problem}",
                        f"every measured row is kept in {self.journal}; bring the device back and rerun the "
                        f"same command to continue",
                    ) from err
                wait = self.protocol.backoff_s * 2**attempt
                log.warning("%s: %s; reconnecting in %.0f s (%d of %d)", self.transport, err.problem, wait,
                            attempt + 1, self.protocol.reconnects)
                self.transport.close()
                self.sleep(wait)
                with contextlib.suppress(TransportError):
                    self.on_reconnect()
