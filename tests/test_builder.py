"""TableRun details that whole-command tests would not single out."""

from __future__ import annotations

import pandas as pd

from profiler.builder import TableRun
from profiler.devices import resolve_device
from profiler.protocol import Protocol
from profiler.reference import BLOCK_REFERENCE
from profiler.transports.local import LocalTransport
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
