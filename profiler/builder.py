"""Build one latency table on one device: resumable, batched, with drift checks and re-measured wide rows.

The run's truth is its journal (raw samples, fsynced per batch on the host and per row on the device); the CSV
and its sidecar are rewritten atomically from it after every batch. Starting the same command again continues
where a killed run stopped: rows in the journal are not measured again, and a batch that was cut off is
recovered from the device's own results file before anything new runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predictors.table_io import Row, Table, write_table
from profiler.agent_run import AgentRun
from profiler.devices import DeviceProfile
from profiler.journal import Journal
from profiler.measure import agent_files, measure_models, read_batch, stop_agent
from profiler.protocol import Protocol, spread
from profiler.transports.base import Transport
from profiler.transports.errors import (
    AuthenticationFailed,
    CommandTimedOut,
    ConnectionFailed,
    HostKeyError,
    TransferFailed,
    TransportError,
)
from supernet.export import export_unit, export_units
from supernet.units import Unit

__all__ = [
    "REFERENCE_SEED",
    "REFERENCE_UNIT",
    "DeviceLost",
    "MeasurementError",
    "TableRun",
    "journal_path",
    "rows_from_journal",
]

log = logging.getLogger(__name__)

# A mid-sized block, timed before every batch: when its median moves, the device has drifted.
REFERENCE_UNIT = Unit.block(28, 40, 40, 160, 5, 1, idskip=True, se=True, hs=False)
REFERENCE_NAME = "reference"
REFERENCE_SEED = 1
AGENT_VERSION = "1"


class DeviceLost(TransportError):
    """The device stayed unreachable through every reconnect; the run's rows are safe in its journal."""


class MeasurementError(RuntimeError):
    """A row that the device could not measure; the message names the row and what the agent said."""


def journal_path(table: Path) -> Path:
    return table.with_name(table.stem + ".samples.jsonl")


@dataclass
class _State:
    """What the journal says so far: the kept record per key, attempts per key, the reference baseline."""

    kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    baseline_ms: float | None = None
    environment: dict[str, Any] | None = None
    batches: set[str] = field(default_factory=set)


def _load_state(journal: Journal) -> _State:
    state = _State()
    for record in journal.records():
        kind = record.get("type")
        if "batch" in record:
            state.batches.add(record["batch"])
        if kind == "row":
            key = record["key"]
            state.attempts[key] = max(state.attempts.get(key, 0), record["attempt"])
            kept = state.kept.get(key)
            if kept is None or record["cv"] < kept["cv"]:
                state.kept[key] = record
        elif kind == "reference":
            state.baseline_ms = record["median_ms"]
        elif kind == "environment" and state.environment is None:
            state.environment = record["environment"]
    return state


def _rows(kept: dict[str, dict[str, Any]]) -> list[Row]:
    """Table rows from the kept record of each key, sorted by key."""
    rows = []
    for record in kept.values():
        s = record["summary"]
        rows.append(
            Row(
                key=record["key"],
                median_ms=s["median"],
                mean_ms=s["mean"],
                std_ms=s["std"],
                p10_ms=s["p10"],
                p90_ms=s["p90"],
                count=s["count"],
            )
        )
    return sorted(rows, key=lambda row: row.key)


def rows_from_journal(path: Path) -> list[Row]:
    """The table rows a journal holds: per key, the attempt with the lowest spread."""
    return _rows(_load_state(Journal(path)).kept)


@dataclass
class TableRun:
    """One table on one device target.

    Args:
        profile: The device profile (runtime, provider, threads, affinity, batch).
        transport: An open or openable transport to the device.
        units: The rows to measure.
        table: The CSV to write; the journal and sidecar sit beside it.
        cache_dir: Host cache of exported models.
        protocol: Measurement settings.
        meta: Extra sidecar fields (width, resolutions, n_classes, command).
        on_rows: Called with the number of rows newly kept, for progress bars.
    """

    profile: DeviceProfile
    transport: Transport
    units: Sequence[Unit]
    table: Path
    cache_dir: Path
    protocol: Protocol = field(default_factory=Protocol)
    meta: dict[str, Any] = field(default_factory=dict)
    on_rows: Callable[[int], None] = lambda n: None
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self.table = Path(self.table)
        self.journal = Journal(journal_path(self.table))
        self.state = _load_state(self.journal)
        name = self.table.stem
        self.remote_dir = (self.profile.remote_dir or "/tmp/ofa-profile").rstrip("/") + f"/{name}"
        if self.profile.transport == "local":
            self.remote_dir = str(self.table.parent / f".{name}.work")

    # --- the plan ------------------------------------------------------------------------------------------
    def _finished(self, key: str) -> bool:
        kept = self.state.kept.get(key)
        if kept is None:
            return False
        return kept["cv"] <= self.protocol.max_cv or self.state.attempts.get(key, 0) > self.protocol.retries

    def pending(self) -> list[Unit]:
        """Rows still to measure, in the run's shuffled order (the same order on every restart)."""
        units = sorted({u.key: u for u in self.units}.values(), key=lambda u: u.key)
        random.Random(self.protocol.seed).shuffle(units)
        return [u for u in units if not self._finished(u.key)]

    # --- running -------------------------------------------------------------------------------------------
    def run(self) -> Table:
        """Measure every pending row, then write the final table; returns it."""
        self._patiently(self._recover)
        self.write()
        while pending := self.pending():
            self._patiently(self._measure_batch, pending[: self.protocol.batch_rows])
        self._patiently(self.transport.remove, self.remote_dir)
        return self.write()

    def _measure_batch(self, batch: Sequence[Unit]) -> None:
        """One batch, measured again after a cool-down while the reference workload says the device drifted."""
        for tries in range(self.protocol.max_drift_retries + 1):
            run, batch_id, drifted = self._measure(batch)
            if not drifted:
                break
            self.transport.remove(self.transport.join(self.remote_dir, batch_id))
            if tries < self.protocol.max_drift_retries:
                log.warning(
                    "reference workload drifted; cooling down %.0f s and measuring the batch again",
                    self.protocol.cooldown_s,
                )
                self.sleep(self.protocol.cooldown_s)
        else:
            # The drift outlasted every cool-down: this is the device's state now; measure against it.
            self._set_baseline(run.results[REFERENCE_NAME]["summary"]["median"], rebaseline=True)
        self._ingest(run, batch_id, drift_seen=drifted)
        self.write()

    def _patiently(self, step: Callable[..., Any], *args: Any) -> Any:
        """Run one step; when the device goes away, reconnect with backoff and keep what it measured meanwhile."""
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
                        f"every measured row is kept in {self.journal.path}; bring the device back and rerun the "
                        f"same command to continue",
                    ) from err
                wait = self.protocol.backoff_s * 2**attempt
                log.warning("%s: %s; reconnecting in %.0f s (%d of %d)", self.transport, err.problem, wait,
                            attempt + 1, self.protocol.reconnects)
                self.transport.close()
                self.sleep(wait)
                with contextlib.suppress(TransportError):  # still away: the next try counts it
                    self._recover()

    def _models(self, batch: Sequence[Unit]) -> list[dict[str, Any]]:
        """The reference workload, then the batch's rows: names, exported files and input shapes."""
        fmt = self.profile.model_format
        # The reference block is also a row of some tables: its own seed keeps its file apart from that row's.
        reference = export_unit(REFERENCE_UNIT, fmt, self.cache_dir, seed=REFERENCE_SEED)
        paths = [reference, *export_units(batch, fmt, self.cache_dir)]
        names = [REFERENCE_NAME, *(u.key for u in batch)]
        units = [REFERENCE_UNIT, *batch]
        return [
            {"name": name, "path": str(path), "inputs": [[self.profile.batch, *unit.input_shape[1:]]]}
            for name, unit, path in zip(names, units, paths, strict=True)
        ]

    def _set_baseline(self, median_ms: float, rebaseline: bool = False) -> None:
        self.state.baseline_ms = median_ms
        self.journal.append({"type": "reference", "median_ms": median_ms, "rebaseline": rebaseline, "time": _now()})

    def _measure(self, batch: Sequence[Unit]) -> tuple[AgentRun, str, bool]:
        """Run one batch and journal it; also say whether the reference workload drifted meanwhile.

        Each batch has its own folder on the device, named by an id that the journal records with the batch's
        rows: a killed run's leftover folders are recovered exactly once (see :meth:`_recover`).
        """
        batch_id = "b" + uuid.uuid4().hex[:12]
        remote = self.transport.join(self.remote_dir, batch_id)
        run = measure_models(
            self.profile, self.transport, self._models(batch), self.protocol, remote, self.table.parent, cleanup=False
        )
        reference = run.results.get(REFERENCE_NAME)
        if reference is None:
            raise MeasurementError(
                f"{self.transport}: the reference workload failed: "
                f"{run.errors.get(REFERENCE_NAME, {}).get('error', 'no result')}"
            )
        median = reference["summary"]["median"]
        if self.state.baseline_ms is None:
            self._set_baseline(median)
        drifted = abs(median - self.state.baseline_ms) / self.state.baseline_ms > self.protocol.drift_tolerance
        if drifted:
            self.journal.append(
                {
                    "type": "drift",
                    "batch": batch_id,
                    "median_ms": median,
                    "baseline_ms": self.state.baseline_ms,
                    "time": _now(),
                }
            )
        return run, batch_id, drifted

    def _ingest(self, run: AgentRun, batch_id: str, drift_seen: bool = False) -> None:
        """Journal a batch's rows (one fsynced write), then remove its folder from the device."""
        if self.state.environment is None and run.environments:
            self.state.environment = run.environments[0]
            self.journal.append({"type": "environment", "environment": run.environments[0]})
        failed = {name: record for name, record in run.errors.items() if name != REFERENCE_NAME}
        records, new = [], 0
        for name, result in run.results.items():
            if name == REFERENCE_NAME or self._finished(name):
                continue
            attempt = self.state.attempts.get(name, 0) + 1
            record = {
                "type": "row",
                "key": name,
                "batch": batch_id,
                "attempt": attempt,
                "cv": spread(result),
                "summary": result["summary"],
                "samples_ms": result["samples_ms"],
                "device": str(self.transport),
                "drift_seen": drift_seen,
                "time": _now(),
            }
            records.append(record)
            new += name not in self.state.kept
            self.state.attempts[name] = attempt
            if name not in self.state.kept or record["cv"] < self.state.kept[name]["cv"]:
                self.state.kept[name] = record
        self.journal.append(*records, {"type": "batch", "batch": batch_id, "rows": len(records), "time": _now()})
        self.state.batches.add(batch_id)
        self.transport.remove(self.transport.join(self.remote_dir, batch_id))
        self.on_rows(new)
        if failed:
            name, record = next(iter(failed.items()))
            raise MeasurementError(
                f"{self.transport}: could not measure {name}: {record.get('error')}. "
                f"{len(failed)} row(s) failed; the others are kept, rerun the same command "
                f"after fixing the runtime"
            )

    def _recover(self) -> None:
        """Keep what a killed run measured: stop its agent, ingest each batch the journal lacks, clean up."""
        stop_agent(self.profile, self.transport, self.remote_dir)
        listing = self.transport.run(["ls", "-1", self.remote_dir], timeout=30, check=False)
        leftovers = [name for name in listing.stdout.split() if name.startswith("b")] if listing.ok else []
        for batch_id in leftovers:
            remote = self.transport.join(self.remote_dir, batch_id)
            local = self.table.parent / f".{self.table.stem}.{batch_id}.results"
            run = None if batch_id in self.state.batches else read_batch(self.profile, self.transport, remote, local)
            if run is None:
                self.transport.remove(remote)
                continue
            run.results.pop(REFERENCE_NAME, None)
            run.errors.clear()  # a model cut off mid-measurement is measured again, not reported
            log.info("recovered %d rows of an interrupted batch from %s", len(run.results), self.transport)
            self._ingest(run, batch_id)

    # --- output --------------------------------------------------------------------------------------------
    def write(self) -> Table:
        rows = tuple(_rows(self.state.kept))
        wide = sum(1 for r in self.state.kept.values() if r["cv"] > self.protocol.max_cv)
        meta = {
            **self.meta,
            "device": dataclasses.asdict(self.profile),
            "runtime": self.profile.runtime,
            "provider": self.profile.provider,
            "environment": self.state.environment,
            "agent": {"name": agent_files(self.profile)[0], "version": AGENT_VERSION},
            "settings": self.protocol.to_dict(),
            "statistic": "median_ms is the median of the raw samples kept in the journal",
            "journal": journal_path(self.table).name,
            "rows_measured": len(rows),
            "rows_planned": len({u.key for u in self.units}),
            "rows_above_max_cv": wide,
            "reference_median_ms": self.state.baseline_ms,
            "updated": _now(),
        }
        table = Table(rows=rows, meta=meta)
        write_table(self.table, table)
        return table


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
