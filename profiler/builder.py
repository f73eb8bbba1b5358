"""Build one latency table on one device: batches of items, each timed against the reference, resumably.

The run's truth is its journal (raw samples, fsynced per batch on the host and per item on the device); the CSV
and its sidecar are rewritten atomically from it after every batch. Starting the same command again continues
where a killed run stopped: items in the journal are not measured again, and a batch that was cut off is
recovered from the device's own results file before anything new runs (:mod:`profiler.recovery`). What the items
are, units alone or whole covering subnets, is the strategy's business (:mod:`profiler.rows`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import statistics
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predictors.table_io import Table, write_table
from profiler.agent_run import AgentRun
from profiler.devices import DeviceProfile
from profiler.journal import Journal
from profiler.measure import measure_models
from profiler.protocol import Protocol, spread
from profiler.reconnect import DeviceLost, Reconnector
from profiler.records import result_problem
from profiler.recovery import recover_batches
from profiler.reference import BLOCK_REFERENCE, REFERENCE_NAME, Reference, reference_ms
from profiler.rows import IsolatedRows, Item, RowStrategy
from profiler.run_state import journal_path, load_state
from profiler.sidecar import kept_calibration, now, table_meta
from profiler.steady import check_regime, next_blocks
from profiler.table_lock import table_lock
from profiler.transports.base import Transport
from supernet.errors import OFAProfileError
from supernet.model_cache import export_units
from supernet.units import Unit

__all__ = ["DeviceLost", "MeasurementError", "TableRun", "journal_path"]

log = logging.getLogger(__name__)


class MeasurementError(OFAProfileError, RuntimeError):
    """An item that the device could not measure; the message names it and what the agent said."""


def batch_reference_ms(run: AgentRun) -> float:
    """The reference's median over a batch: from the blocks interleaved with each item, else its own record."""
    interleaved = [value for value in map(reference_ms, run.results.values()) if value]
    if interleaved:
        return statistics.median(interleaved)
    reference = run.results.get(REFERENCE_NAME)
    if reference is None:
        # The agent files a reference that cannot load under every model it could not then time: say its words.
        said = run.errors.get(REFERENCE_NAME) or next(iter(run.errors.values()), {})
        raise MeasurementError(f"the reference workload failed: {said.get('error', 'no result')}")
    return reference["summary"]["median"]


@dataclass
class TableRun:
    """One table on one device target.

    Args:
        profile: The device profile (runtime, provider, threads, affinity, batch).
        transport: An open or openable transport to the device.
        rows: How rows are taken (:mod:`profiler.rows`); a list of units means each timed alone.
        table: The CSV to write; the journal and sidecar sit beside it.
        cache_dir: Host cache of exported models.
        protocol: Measurement settings.
        meta: Extra sidecar fields (width, resolutions, n_classes, command).
        on_rows: Called with the number of items newly kept, for progress bars.
        sleep: How to wait (cool-downs, reconnect backoff); by default the transport's, which an interrupt
            cuts short.
        reference: The workload every item is timed against (:mod:`profiler.reference`).
    """

    profile: DeviceProfile
    transport: Transport
    rows: RowStrategy | Sequence[Unit]
    table: Path
    cache_dir: Path
    protocol: Protocol = field(default_factory=Protocol)
    meta: dict[str, Any] = field(default_factory=dict)
    on_rows: Callable[[int], None] = lambda n: None
    sleep: Callable[[float], None] | None = None
    reference: Reference = BLOCK_REFERENCE

    def __post_init__(self) -> None:
        if not hasattr(self.rows, "kind"):
            self.rows = IsolatedRows(tuple(self.rows))
        self.strategy: RowStrategy = self.rows
        self.sleep = self.sleep or self.transport.pause
        self.table = Path(self.table)
        self.journal = Journal(journal_path(self.table))
        self.names = {item.name for item in self.strategy.items()}
        name = self.table.stem
        self.remote_dir = (self.profile.remote_dir or "/tmp/ofa-profile").rstrip("/") + f"/{name}"
        if self.profile.transport == "local":
            self.remote_dir = str(self.table.parent / f".{name}.work")
        self.reconnector = Reconnector(self.transport, self.protocol, self.journal.path, self._recover, self.sleep)
        self.state = load_state(self.journal, self.names, self.reference.id)
        self._continue_blocks()

    def _continue_blocks(self) -> None:
        """A rerun goes on in the blocks the journal escalated to, not back at the start of the ladder."""
        blocks = self.state.blocks
        if blocks and blocks["block_ms"] > self.protocol.block_ms:
            self.protocol = dataclasses.replace(self.protocol, block_ms=blocks["block_ms"],
                                                settle_ms=max(blocks["settle_ms"], self.protocol.settle_ms))

    def _reload(self) -> None:
        """Fold the journal again under the lock (another run may have added to it), reporting what it skips."""
        self.journal.repair()
        self.state = load_state(self.journal, self.names, self.reference.id)
        self._continue_blocks()
        if self.state.set_aside:
            lines = "; ".join(f"line {n}: {why}" for n, why in self.state.set_aside[:5])
            more = f" (and {len(self.state.set_aside) - 5} more)" if len(self.state.set_aside) > 5 else ""
            log.warning("%s: %d line(s) set aside, measured again where needed: %s%s", self.journal.path,
                        len(self.state.set_aside), lines, more)
        if self.state.outside:
            log.info("%s: %d row(s) of items outside this run's plan stay in the journal, not in the table",
                     self.journal.path, self.state.outside)

    # --- the plan ------------------------------------------------------------------------------------------
    def _finished(self, name: str) -> bool:
        kept = self.state.kept.get(name)
        if kept is None:
            return False
        return kept["cv"] <= self.protocol.max_cv or self.state.attempts.get(name, 0) > self.protocol.retries

    def pending(self) -> list[Item]:
        """Items still to measure, in the run's shuffled order (the same order on every restart)."""
        items = sorted(self.strategy.items(), key=lambda item: item.name)
        random.Random(self.protocol.seed).shuffle(items)
        return [item for item in items if not self._finished(item.name)]

    def total(self) -> int:
        return len(self.names)

    # --- running -------------------------------------------------------------------------------------------
    def run(self) -> Table:
        """Measure every pending item, then write the final table; returns it.

        The table is locked meanwhile (:mod:`profiler.table_lock`): a second run on it is refused.
        """
        with table_lock(self.table, self.meta.get("command", "")):
            self._reload()
            self.reconnector.call(self._recover)
            self.write()
            self._convert_ahead()
            while pending := self.pending():
                self.reconnector.call(self._measure_batch, pending[: self.protocol.batch_rows])
            self.reconnector.call(self.transport.remove, self.remote_dir)
            return self.write()

    def _convert_ahead(self) -> None:
        """TF-Lite conversions take one to two seconds each: convert every pending unit's file first, in parallel
        (a w1.2 five-resolution phone table's 98 files took 86 s in 2 processes here), rather than batch by batch
        while the device waits."""
        units = [item.unit for item in self.pending() if item.unit is not None]
        if self.profile.model_format == "tflite" and units:
            export_units(units, "tflite", self.cache_dir, jobs=min(4, os.cpu_count() or 1), batch=self.profile.batch)

    def _recover(self) -> None:
        recover_batches(self.profile, self.transport, self.remote_dir, self.state.batches, self.table.parent,
                        self._ingest)

    def _measure_batch(self, batch: Sequence[Item]) -> None:
        """One batch, measured again after a cool-down while the reference workload says the device drifted."""
        for tries in range(self.protocol.max_drift_retries + 1):
            run, batch_id, median = self._measure(batch)
            drifted = abs(median - self.state.baseline_ms) / self.state.baseline_ms > self.protocol.drift_tolerance
            if not drifted:
                break
            self.journal.append({"type": "drift", "batch": batch_id, "median_ms": median,
                                 "baseline_ms": self.state.baseline_ms, "time": now()})
            self.transport.remove(self.transport.join(self.remote_dir, batch_id))
            if tries < self.protocol.max_drift_retries:
                log.warning("reference workload drifted; cooling down %.0f s and measuring the batch again",
                            self.protocol.cooldown_s)
                self.sleep(self.protocol.cooldown_s)
        else:
            # The drift outlasted every cool-down: this is the device's state now; measure against it.
            self._set_baseline(median, rebaseline=True)
        self._ingest(run, batch_id, drift_seen=drifted, sent=[item.name for item in batch])
        self.write()

    def _set_baseline(self, median_ms: float, rebaseline: bool = False) -> None:
        self.state.baseline_ms = median_ms
        self.journal.append({"type": "reference", "median_ms": median_ms, "rebaseline": rebaseline,
                             "reference_id": self.reference.id, "time": now()})

    def _measure(self, batch: Sequence[Item]) -> tuple[AgentRun, str, float]:
        """Run one batch on the device; return what came back, the batch's id and the reference's median.

        Each batch has its own folder on the device, named by an id that the journal records with the batch's
        rows: a killed run's leftover folders are recovered exactly once.
        """
        batch_id = "b" + uuid.uuid4().hex[:12]
        remote = self.transport.join(self.remote_dir, batch_id)
        models = self.strategy.models(batch, self.profile.model_format, self.cache_dir, self.profile.batch,
                                      self.profile.precision)
        run = measure_models(self.profile, self.transport, models, self.protocol, remote, self.table.parent,
                             cleanup=False, reference=self.reference.model(self.profile, self.cache_dir),
                             files_dir=self.transport.join(self.remote_dir, "models"))
        self._screen(run, [item.name for item in batch])
        try:
            median = batch_reference_ms(run)
        except MeasurementError as err:
            raise MeasurementError(f"{self.transport}: {err}") from None
        if self.state.baseline_ms is None:
            self._set_baseline(median)
        return run, batch_id, median

    def _record(self, name: str, result: Mapping[str, Any], batch_id: str, drift_seen: bool) -> dict[str, Any]:
        record = {
            "type": "row",
            "key": name,
            "batch": batch_id,
            "attempt": self.state.attempts.get(name, 0) + 1,
            "cv": spread(result),
            "summary": result["summary"],
            "samples_ms": result["samples_ms"],
            "device": str(self.transport),
            "drift_seen": drift_seen,
            "time": now(),
            "settings": self.protocol.to_dict(),
            "command": self.meta.get("command", ""),
        }
        if result.get("reference"):
            record.update(reference_id=self.reference.id, reference_ms=reference_ms(result),
                          reference_samples_ms=result["reference"]["samples_ms"], ratio=result["ratio"],
                          ratio_samples=result["ratio_samples"])
        for key in ("steady_samples_ms", "block_ms", "settle_ms"):
            if key in result:
                record[key] = result[key]
        return {**record, **self.strategy.journal_fields(name, result)}

    def _screen(self, run: AgentRun, sent: Collection[str] | None) -> None:
        """Move every result the device should not have sent, or whose numbers are not finite and positive, to
        the run's errors: it is never journaled, and the item is measured again."""
        expected = self.names if sent is None else set(sent)
        for name, result in list(run.results.items()):
            if name == REFERENCE_NAME:
                continue
            problem = result_problem(result) if name in expected else "it is not an item the device was sent"
            if problem is not None:
                log.warning("%s: result %r set aside: %s", self.transport, name[:80], problem)
                del run.results[name]
                if name in expected:
                    run.errors.setdefault(name, {"error": f"the device's result is not valid: {problem}"})
        for name in [name for name in run.errors if name not in expected and name != REFERENCE_NAME]:
            del run.errors[name]

    def _ingest(self, run: AgentRun, batch_id: str, drift_seen: bool = False,
                sent: Collection[str] | None = None) -> None:
        """Journal a batch's valid items (one fsynced write), then remove its folder from the device."""
        self._screen(run, sent)
        if self.state.environment is None and run.environments and isinstance(run.environments[0], dict):
            self.state.environment = run.environments[0]
            self.journal.append({"type": "environment", "environment": run.environments[0]})
        failed = {name: record for name, record in run.errors.items() if name != REFERENCE_NAME}
        records, new = [], 0
        regime_holds = self._regime_holds(run, batch_id)
        for name, result in run.results.items():
            if not regime_holds or name == REFERENCE_NAME or self._finished(name):
                continue
            record = self._record(name, result, batch_id, drift_seen)
            records.append(record)
            new += name not in self.state.kept
            self.state.keep(record)
        self.journal.append(*records, {"type": "batch", "batch": batch_id, "rows": len(records), "time": now()})
        self.state.batches.add(batch_id)
        self.transport.remove(self.transport.join(self.remote_dir, batch_id))
        self.on_rows(new)
        if failed:
            name, record = next(iter(failed.items()))
            raise MeasurementError(
                f"{self.transport}: could not measure {name}: {record.get('error')}. "
                f"{len(failed)} item(s) failed; the others are kept, rerun the same command "
                f"after fixing the runtime"
            )

    def _regime_holds(self, run: AgentRun, batch_id: str) -> bool:
        """Check the batch's blocked timing against its plain loops (:mod:`profiler.steady`) and journal the check.

        Where it fails, the batch's rows are not kept: the run escalates to longer, settled blocks and the items
        are measured again. Past the ladder's last step, the rows are kept with a warning.
        """
        items = [result for name, result in run.results.items() if name != REFERENCE_NAME]
        check = check_regime(items, self.protocol)
        if check is None:
            return True
        escalate = None if check.passed else next_blocks(check.block_ms, check.settle_ms)
        self.journal.append({"type": "regime", "batch": batch_id, **check.to_dict(), "next": escalate,
                             "time": now()})
        self.state.regime_checks.append(check.to_dict())
        if check.passed:
            return True
        if escalate is None:
            log.warning("%s: blocked timing still disagrees with a plain loop in the longest blocks (%s); rows kept",
                        self.transport, check.describe())
            return True
        log.warning("%s: blocked timing disagrees with a plain loop (%s); measuring the batch again in %g ms "
                    "blocks settling %g ms", self.transport, check.describe(), escalate["block_ms"],
                    escalate["settle_ms"])
        self.state.blocks = escalate
        self._continue_blocks()
        return False

    def reanchor(self) -> Table:
        """State the table at the device's speed now: time the reference alone and make that the anchor.

        Rows keep their ratios; their values in ms become those ratios times the new anchor, and a stored
        calibration is restated at it (:func:`~profiler.sidecar.kept_calibration`).
        """
        with table_lock(self.table, self.meta.get("command", "")):
            self._reload()
            return self._reanchor()

    def _reanchor(self) -> Table:
        model = self.reference.model(self.profile, self.cache_dir)
        run = self.reconnector.call(
            measure_models, self.profile, self.transport, [model], self.protocol,
            self.transport.join(self.remote_dir, "reanchor"), self.table.parent,
        )
        result = run.results.get(REFERENCE_NAME)
        if result is None:
            error = run.errors.get(REFERENCE_NAME, {}).get("error", "no result")
            raise MeasurementError(f"{self.transport}: the reference workload failed: {error}")
        record = {"type": "anchor", "anchor_ms": result["summary"]["median"], "count": result["summary"]["count"],
                  "reference_id": self.reference.id, "time": now()}
        self.journal.append(record)
        self.state.reanchored = {k: record[k] for k in ("anchor_ms", "time", "count")}
        return self.write()

    # --- output --------------------------------------------------------------------------------------------
    def write(self) -> Table:
        rows = tuple(self.strategy.rows(self.state.kept, self.state.anchor_ms))
        meta = table_meta(self.meta, self.profile, self.protocol, self.strategy, self.reference, self.state,
                          journal_path(self.table).name, len(rows))
        calibration = kept_calibration(self.table, self.state.anchor_ms)
        if calibration is not None:
            meta["calibration"] = calibration
        table = Table(rows=rows, meta=meta)
        write_table(self.table, table)
        return table
