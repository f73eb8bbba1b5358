"""Ways to take rows: the covering set, rows from hand-made records, the anchor, and a real in-network table."""

from __future__ import annotations

import collections
import json

import numpy as np
import pandas as pd
import pytest

from predictors.latency import LatencyPredictor
from predictors.table_io import read_table
from profiler.builder import TableRun
from profiler.devices import resolve_device
from profiler.protocol import Protocol
from profiler.reference import NETWORK_REFERENCE, stats_ms
from profiler.rows import InNetworkRows, IsolatedRows, StrategyError, strategy_for
from profiler.run_state import journal_path
from profiler.transports.local import LocalTransport
from supernet import Arch, ArchSpace
from supernet.arch import N_BLOCKS
from supernet.units import all_units, units_of

TINY = Protocol(warmup=1, min_count=3, min_time_s=0.0, retries=0, drift_tolerance=0.95, block_ms=1.0, profile_runs=2)


def test_covering_subnets_hold_every_choice_repeats_times_and_every_row():
    strategy = InNetworkRows(1.0, (160, 224), repeats=2)
    archs = strategy.covering_archs
    assert len(archs) == 2 * 2 * 9 and all(a.d == (4,) * 5 for a in archs.values())
    for r in (160, 224):
        at_r = [a for a in archs.values() if a.r == r]
        for position in range(N_BLOCKS):
            counts = collections.Counter((a.ks[position], a.e[position]) for a in at_r)
            assert len(counts) == 9 and set(counts.values()) == {2}
    shapes = {r: sorted((a.ks, a.e) for a in archs.values() if a.r == r) for r in (160, 224)}
    assert shapes[160] == shapes[224], "the same subnets at every resolution, so each is exported once"
    covered = {u.key for a in archs.values() for u in units_of(a, 1.0)}
    assert covered == strategy.planned_keys() == {u.key for u in all_units(1.0, [160, 224])}


def test_shards_split_the_covering_set():
    strategy = InNetworkRows(1.0, (160,))
    names = [sorted(i.name for i in strategy.shard(k, 3).items()) for k in range(3)]
    assert sorted(name for shard in names for name in shard) == sorted(strategy.covering_archs)
    assert all(len(n) == 3 for n in names)


def test_stats_are_ratios_times_the_anchor():
    record = {"summary": {"median": 5.0, "mean": 5.1, "std": 0.1, "p10": 4.9, "p90": 5.3, "count": 7},
              "ratio": {"median": 20.0, "mean": 21.0, "std": 1.0, "p10": 19.0, "p90": 23.0, "count": 7}}
    assert stats_ms(record, 0.25) == {"median": 5.0, "mean": 5.25, "std": 0.25, "p10": 4.75, "p90": 5.75, "count": 7}
    assert stats_ms(record, None)["median"] == 5.0  # no anchor: as measured
    assert stats_ms({"summary": record["summary"]}, 0.25)["mean"] == 5.1  # timed alone: as measured


def test_in_network_rows_by_hand():
    """Two subnets holding one key: the row is the mean of its ratio share times the anchor."""
    strategy = InNetworkRows(1.0, (160,))
    arch = ArchSpace.for_width(1.0).uniform(ks=3, e=3, d=2, r=160)
    units = units_of(arch, 1.0)
    n = len(units)
    nodes = [["/first_conv/c", "Conv", 10.0], *[[f"/blocks.{i}/c", "Conv", 5.0] for i in range(n - 5)],
             ["/final_expand_layer/c", "Conv", 5.0], ["/ReduceMean", "ReduceMean", 5.0],
             ["/feature_mix_layer/c", "Conv", 5.0], ["/classifier/g", "Gemm", 5.0]]
    total = sum(us for _, _, us in nodes)

    def record(ratio: float) -> dict:
        stats = {"median": ratio, "mean": ratio, "std": 0.0, "p10": ratio, "p90": ratio, "count": 5}
        return {"arch": arch.to_json(), "node_times_us": nodes, "summary": {**stats, "median": 99.0},
                "ratio": stats}

    rows = {row.key: row for row in strategy.rows({"a": record(40.0), "b": record(60.0)}, anchor_ms=0.5)}
    first_conv = rows[units[0].key]
    assert first_conv.median_ms == pytest.approx(0.5 * 50.0 * 10.0 / total)
    assert first_conv.count == 2 and first_conv.std_ms == pytest.approx(0.5 * 10.0 * 10.0 / total)
    assert first_conv.extra["networks"] == "2"


def test_in_network_rows_need_onnx():
    with pytest.raises(StrategyError, match="--rows isolated"):
        InNetworkRows(1.0, (160,)).models([], "tflite", None, 1)
    with pytest.raises(StrategyError, match="unknown way"):
        strategy_for("magic", 1.0, [160], 1000)
    assert isinstance(strategy_for("isolated", 1.0, [160], 1000), IsolatedRows)


@pytest.mark.slow
def test_in_network_table_predicts_its_own_subnets_and_reanchors(tmp_path):
    """A real table from nine subnets: the covering subnets' table sums add up to their measured times;
    re-anchoring scales every value by the new anchor and keeps the ratios."""
    table_path = tmp_path / "t.csv"
    with LocalTransport() as transport:
        run = TableRun(resolve_device("local"), transport, InNetworkRows(1.0, (128,)), table_path,
                       tmp_path / "cache", TINY, reference=NETWORK_REFERENCE)
        table = run.run()
        assert {row.key for row in table.rows} == {u.key for u in all_units(1.0, [128])}
        records = [json.loads(line) for line in journal_path(table_path).open()]
        rows = [r for r in records if r["type"] == "row"]
        assert len(rows) == 9 and all(r["ratio_samples"] and r["node_times_us"] for r in rows)
        anchor = read_table(table_path).meta["reference"]["anchor"]["anchor_ms"]
        predicted = LatencyPredictor(table, calibrated=False).predict([Arch.from_json(r["arch"]) for r in rows])
        # Block rows come from one subnet each and the shared rows (stem, head) are means over all nine, so the
        # nine table sums add up to the nine measured times exactly, however noisy any one measurement was.
        assert float(np.sum(predicted)) == pytest.approx(sum(r["ratio"]["median"] * anchor for r in rows), rel=1e-6)
        before = pd.read_csv(table_path).set_index("key")
        reanchored = run.reanchor()
    after = pd.read_csv(table_path).set_index("key")
    new_anchor = reanchored.meta["reference"]["anchor"]["anchor_ms"]
    assert reanchored.meta["reference"]["anchor"]["from"].startswith("the reference timed alone")
    assert np.allclose(after["median_ms"], before["median_ms"] * new_anchor / anchor)
    assert np.allclose(after["ratio"], before["ratio"])
    assert reanchored.meta["reference"]["id"] == NETWORK_REFERENCE.id
    assert Arch.from_json(reanchored.meta["reference"]["subnet"]) == NETWORK_REFERENCE.arch


@pytest.mark.slow
def test_a_journal_of_another_reference_is_measured_again(tmp_path, caplog):
    """Journals written before there were two references name none: their ratios are to the block, so a block run
    continues them, and a run against the network sets them aside (saying so) and measures every subnet again
    instead of mixing references."""
    table_path = tmp_path / "t.csv"
    strategy = InNetworkRows(1.0, (128,), only=("net-r128-00", "net-r128-01"))

    def run(**reference) -> None:
        TableRun(resolve_device("local"), transport, strategy, table_path, tmp_path / "cache", TINY, **reference).run()

    with LocalTransport() as transport:
        run()
        journal = journal_path(table_path)
        older = [{k: v for k, v in json.loads(line).items() if k != "reference_id"} for line in journal.open()]
        journal.write_text("".join(json.dumps(record) + "\n" for record in older))
        run()
        with caplog.at_level("WARNING"):
            run(reference=NETWORK_REFERENCE)
    rows = [record for record in map(json.loads, journal.open()) if record["type"] == "row"]
    assert [r.get("reference_id") for r in rows] == [None, None, "network", "network"]
    assert "timed against the block reference" in caplog.text
    assert read_table(table_path).meta["reference"]["id"] == "network"
