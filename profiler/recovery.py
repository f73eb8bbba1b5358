"""Keep what a killed run measured: stop its agent, collect each batch the journal lacks, clean up the device."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from pathlib import Path

from profiler.agent_run import AgentRun
from profiler.devices import DeviceProfile
from profiler.measure import read_batch, stop_agent
from profiler.reference import REFERENCE_NAME
from profiler.transports.base import Transport

__all__ = ["recover_batches"]

log = logging.getLogger(__name__)


def recover_batches(
    profile: DeviceProfile,
    transport: Transport,
    remote_dir: str,
    journaled: Collection[str],
    scratch: Path,
    ingest: Callable[[AgentRun, str], None],
) -> None:
    """Ingest every leftover batch folder under ``remote_dir`` not in ``journaled``; remove the others.

    Each batch has its own folder, named by an id the journal records with its rows, so a leftover is collected
    exactly once. A model cut off mid-measurement is measured again, not reported as failed.
    """
    stop_agent(profile, transport, remote_dir)
    listing = transport.run(["ls", "-1", remote_dir], timeout=30, check=False)
    leftovers = [name for name in listing.stdout.split() if name.startswith("b")] if listing.ok else []
    for batch_id in leftovers:
        remote = transport.join(remote_dir, batch_id)
        local = scratch / f".{batch_id}.results"
        run = None if batch_id in journaled else read_batch(profile, transport, remote, local)
        if run is None:
            transport.remove(remote)
            continue
        run.results.pop(REFERENCE_NAME, None)
        run.errors.clear()
        log.info("recovered %d rows of an interrupted batch from %s", len(run.results), transport)
        ingest(run, batch_id)
