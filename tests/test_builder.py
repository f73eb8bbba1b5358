"""TableRun details that whole-command tests would not single out."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from predictors.calibration import Calibration, fit_calibration
from predictors.table_io import read_table, sidecar_path
from profiler import builder
from profiler.agent_run import AgentRun
from profiler.builder import MeasurementError, TableRun, batch_reference_ms
from profiler.devices import resolve_device
from profiler.protocol import Protocol
from profiler.reference import BLOCK_REFERENCE
from profiler.remeasure import store_calibration, table_anchor
from profiler.run_state import journal_path
from profiler.steady import LADDER
from profiler.transports.local import LocalTransport
from supernet.model_cache import unit_path
from supernet.units import all_units

TINY = Protocol(warmup=0, min_count=3, min_time_s=0.0, retries=0, drift_tolerance=0.95)


def test_the_reference_block_is_also_an_ordinary_row(tmp_path):
    """The drift-watch block is a row of w1.0 tables (r=224): in the same batch, both are measured."""
    assert BLOCK_REFERENCE.unit.key in {u.key for u in all_units(1.0, [224])}
    units = [BLOCK_REFERENCE.unit, *all_units(1.0, [224])[:3]]
    with LocalTransport() as transport:
        table = TableRun(resolve_device("local"), transport, units, tmp_path / "t.csv", tmp_path / "cache", TINY).run()
    assert {row.key for row in table.rows} == {u.key for u in units}
    assert set(pd.read_csv(tmp_path / "t.csv")["key"]) == {u.key for u in units}


def test_a_litert_table_feeds_each_row_its_own_size_from_a_shared_file(tmp_path):
    """LiteRT through the Python agent (a Linux board's path): rows of one layer at 128 and 160 px share a TF-Lite
    file, the agent resizes its input to each row's NHWC shape, and the larger row takes longer."""
    profile = dataclasses.replace(resolve_device("local"), runtime="tflite", provider="xnnpack")
    small = all_units(1.0, [128])[8]
    units = [small, small.at_size(small.in_size * 5 // 4), small.at_size(small.in_size * 2)]
    with LocalTransport() as transport:
        table = TableRun(profile, transport, units, tmp_path / "t.csv", tmp_path / "cache", TINY).run()
    (shared,) = {unit_path(unit, "tflite", tmp_path / "cache") for unit in units}
    assert shared.is_file()
    ms = {row.key: row.median_ms for row in table.rows}
    assert list(ms) == sorted(u.key for u in units)
    assert ms[units[2].key] > 1.5 * ms[units[0].key], ms


@pytest.mark.serial  # the escalated blocks must then agree with the plain loop for real, within 2%
def test_a_batch_whose_blocks_read_slower_than_a_plain_loop_is_measured_again_in_longer_blocks(tmp_path, monkeypatch):
    """A device on which 25 ms blocks read items 1.2x slower than a plain loop (as on the host issue 22 was filed
    on). That regime cannot be produced on demand here, so it is planted: the real agent's blocked samples are
    scaled by 1.5 over six items when it ran 25 ms blocks (1.2 over three hid under this VM's scatter, which
    widens the check for small batches, in 4 of 5 runs on 2026-12-04). The run must discard that batch, journal
    why, escalate to the ladder's next step, keep rows timed there, state it in the sidecar, and a rerun must
    continue in the longer blocks."""
    real = builder.measure_models

    def slow_in_short_blocks(profile, transport, models, protocol, *args, **kwargs):
        run = real(profile, transport, models, protocol, *args, **kwargs)
        if protocol.block_ms == LADDER[0][0]:
            for result in run.results.values():
                if "steady_samples_ms" in result:
                    result["samples_ms"] = [x * 1.5 for x in result["samples_ms"]]
        return run

    monkeypatch.setattr(builder, "measure_models", slow_in_short_blocks)
    units = all_units(1.0, [224])[:6]
    table_csv = tmp_path / "t.csv"
    with LocalTransport() as transport:
        table = TableRun(resolve_device("local"), transport, units, table_csv, tmp_path / "cache", TINY).run()
    records = [json.loads(line) for line in journal_path(table_csv).read_text().splitlines()]
    checks = [r for r in records if r["type"] == "regime"]
    assert not checks[0]["passed"] and checks[0]["median"] > 1.1 and checks[0]["block_ms"] == 25.0
    assert checks[0]["next"] == {"block_ms": LADDER[1][0], "settle_ms": LADDER[1][1]}
    # Usually the next step agrees with the plain loop; on a noisy minute this VM's real scatter can fail it too
    # (CI, 2026-12-06: 50 ms blocks failed, 100 ms passed), and the ladder climbs on, as it must.
    final = checks[-1]["block_ms"]
    assert checks[-1]["passed"] and final in [step[0] for step in LADDER[1:]]
    rows = [r for r in records if r["type"] == "row"]
    assert len(rows) == 6 and all(r["block_ms"] == final and r["steady_samples_ms"] for r in rows)
    timing = table.meta["timing"]
    assert timing["block_ms"] == final and timing["regime"]["failed"] == len(checks) - 1
    assert "back-to-back" in timing["latency"]
    # A rerun (nothing left to measure) continues in the escalated blocks and keeps the sidecar's account.
    with LocalTransport() as transport:
        again = TableRun(resolve_device("local"), transport, units, table_csv, tmp_path / "cache", TINY)
        assert again.protocol.block_ms == final
        again.run()
    assert read_table(table_csv).meta["timing"]["regime"]["checks"] == len(checks)


def test_a_stored_calibration_outlives_a_rerun_and_is_restated_at_a_new_anchor(tmp_path):
    """Issue 25: a rerun of the table command, or --reanchor, rewrote the sidecar without the calibration that
    --calibrate (or the closed loop) had stored in it. Both keep it; re-anchoring restates it at the new anchor
    (sums and measurements scale alike: the slope stays, the intercept and the points scale)."""
    units = all_units(1.0, [224])[:3]
    table_csv = tmp_path / "t.csv"
    with LocalTransport() as transport:
        run = TableRun(resolve_device("local"), transport, units, table_csv, tmp_path / "cache", TINY)
        run.run()
        sums, measured = [1.0, 2.0, 3.0, 4.0], [1.3, 2.2, 3.4, 4.3]
        store_calibration(table_csv, fit_calibration(sums, measured))
        stored = json.loads(sidecar_path(table_csv).read_text())["calibration"]

        TableRun(resolve_device("local"), transport, units, table_csv, tmp_path / "cache", TINY).run()
        assert json.loads(sidecar_path(table_csv).read_text())["calibration"] == stored

        before = table_anchor(read_table(table_csv))
        TableRun(resolve_device("local"), transport, units, table_csv, tmp_path / "cache", TINY).reanchor()
    meta = json.loads(sidecar_path(table_csv).read_text())
    factor = meta["reference"]["anchor"]["anchor_ms"] / before
    assert factor != 1.0
    restated = Calibration.from_dict(meta["calibration"])
    assert restated.a == pytest.approx(stored["a"])
    assert restated.b == pytest.approx(stored["b"] * factor)
    assert restated.sums_ms == pytest.approx([v * factor for v in sums])
    assert restated.measured_ms == pytest.approx([v * factor for v in measured])
    assert restated.loo_rms_pct == pytest.approx(stored["loo_rms_pct"])


def test_a_reference_that_failed_is_reported_in_the_agents_words():
    """Issue 24: a reference the agent could not load was reported as "no result"; the agent files its reason
    under every model it then could not time."""
    said = "the reference workload reference failed: unknown TF-Lite delegate 'cpu'; use xnnpack, gpu or none"
    run = AgentRun(errors={"unit-a": {"type": "error", "name": "unit-a", "error": said}})
    with pytest.raises(MeasurementError, match="unknown TF-Lite delegate 'cpu'"):
        batch_reference_ms(run)
