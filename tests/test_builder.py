"""TableRun details that whole-command tests would not single out."""

from __future__ import annotations

import dataclasses

import pandas as pd

from profiler.builder import TableRun
from profiler.devices import resolve_device
from profiler.protocol import Protocol
from profiler.reference import BLOCK_REFERENCE
from profiler.transports.local import LocalTransport
from supernet.export import unit_path
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
