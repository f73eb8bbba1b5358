"""The closed loop: found subnets measure under their budget and close to it, or the budget is reported as
unmeetable. The devices here are functions of the archs (no device can be made to have a chosen speed), each
standing in for measure_subnets: one mapping per arch with its time at the anchor and as measured now."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictors.accuracy import AccuracyPredictor
from predictors.archs import ArchBatch
from predictors.complexity import MacsPredictor, ParamsPredictor
from predictors.fit_cli import main as fit_main
from predictors.latency import LatencyPredictor
from predictors.latency_model import LatencyModel
from predictors.search import Constraint
from predictors.table_io import Row, Table
from profiler.cli import main
from profiler.closed_loop import closed_loop
from profiler.deliver import delivered_stem
from profiler.devices import resolve_device
from supernet import Arch, ArchSpace, count_macs
from supernet.units import all_units


def _measured(values) -> list[dict]:
    """What measure_subnets returns for these times at the anchor; the device ran 10% slower when measured."""
    return [{"measured_ms": float(v), "absolute_ms": 1.1 * float(v)} for v in values]


@pytest.fixture(scope="module")
def table() -> Table:
    """A w1.2 table at r=160 whose rows grow with the unit's MACs-ish size (deterministic, no device)."""
    rows = []
    for unit in all_units(1.2, [160]):
        size = unit.in_size * unit.in_size * max(unit.mid_chs, unit.in_chs) * unit.kernel_size
        value = 0.01 + size / 2e7
        rows.append(Row(key=unit.key, median_ms=value, mean_ms=value, count=10))
    return Table(tuple(rows), {"width_mult": 1.2, "resolutions": [160], "n_classes": 1000})


def test_a_device_slower_than_the_table_is_met_within_three_rounds(table: Table):
    """A device 15% slower than the raw sums, plus 0.2 ms: round one overshoots, later rounds refit and meet."""
    predictor = LatencyPredictor(table, calibrated=False)
    raw = LatencyPredictor(table, calibrated=False)
    calls = []

    def device(archs):
        calls.append(len(archs))
        return _measured(1.15 * raw.predict(archs) + 0.2)

    space = ArchSpace(resolutions=(160,))
    fastest, _ = predictor.minimum()
    budgets = [(1.15 * fastest + 0.2) * factor for factor in (1.3, 1.8, 2.5)]
    deliveries, refitted = closed_loop(predictor, AccuracyPredictor.default(), space, budgets, device,
                                       generations=30)
    calibration = refitted.calibration
    assert all(d.met and d.measured_ms <= d.budget_ms for d in deliveries)
    assert np.mean([d.rounds for d in deliveries]) <= 3
    assert calibration is not None and calibration.n == sum(calls)  # every measurement once
    assert calibration.a == pytest.approx(1.15, rel=1e-6)
    assert calibration.b == pytest.approx(0.2, abs=1e-6)
    assert all(d.open_loop_measured_ms > d.budget_ms for d in deliveries), "the raw table under-predicts"
    assert all(d.accuracy <= d.open_loop_accuracy + 1e-9 for d in deliveries)


def test_an_unmeetable_budget_reports_the_fastest_subnet(table: Table):
    predictor = LatencyPredictor(table, calibrated=False)
    fastest, _ = predictor.minimum()

    def device(archs):
        return _measured(0.98 * predictor.predict(archs))

    deliveries, _ = closed_loop(predictor, AccuracyPredictor.default(), ArchSpace(resolutions=(160,)),
                                [fastest * 0.5, fastest * 2], device, generations=20)
    impossible, fine = deliveries
    assert not impossible.met and "cannot be met" in impossible.note
    assert impossible.measured_ms == pytest.approx(0.98 * fastest, rel=0.02)
    assert fine.met and fine.slack >= 0 and fine.rounds <= 3


def test_a_budget_left_open_gets_the_best_subnet_measured_under_it_not_the_fastest(table: Table):
    """A device that runs anything predicted over the tight budget 25% slower (a step no calibration fits): the
    loose budget's own subnet measures over it, so after its one round it gets the tight budget's subnet, which
    measured under both, rather than the fastest subnet of the space."""
    predictor = LatencyPredictor(table, calibrated=False)
    fastest, _ = predictor.minimum()
    tight, loose = 1.5 * fastest, 2.2 * fastest

    def device(archs):
        sums = predictor.predict(archs)
        return _measured(np.where(sums > tight, 1.25 * sums, sums))

    accuracy = AccuracyPredictor.default()
    deliveries, _ = closed_loop(predictor, accuracy, ArchSpace(resolutions=(160,)), [tight, loose], device,
                                max_rounds=1, generations=30)
    first, second = deliveries
    assert first.met and second.met and second.arch == first.arch and second.measured_ms == first.measured_ms
    assert "best subnet the loop measured under it" in second.note
    assert second.open_loop_measured_ms > loose
    assert second.measured_ms > 1.2 * fastest  # the fastest subnet measures at `fastest`


def test_a_device_faster_than_the_table_gets_subnets_close_to_its_budgets(table: Table):
    """A device 20% faster than the raw sums: round one's subnets leave about a fifth of each budget unused. The
    loop must take that back: later rounds search above the budget and deliver subnets with little slack."""
    raw = LatencyPredictor(table, calibrated=False)
    fastest, _ = raw.minimum()
    budgets = [0.8 * fastest * factor for factor in (1.5, 2.0, 2.5)]
    deliveries, _ = closed_loop(raw, AccuracyPredictor.default(), ArchSpace(resolutions=(160,)), budgets,
                                lambda archs: _measured(0.8 * raw.predict(archs)), generations=40)
    first_round_slack = [(d.budget_ms - d.open_loop_measured_ms) / d.budget_ms for d in deliveries]
    assert min(first_round_slack) > 0.1
    assert all(d.met and 0 <= d.slack <= 0.05 for d in deliveries), [d.slack for d in deliveries]
    assert all(d.slack == pytest.approx((d.budget_ms - d.measured_ms) / d.budget_ms) for d in deliveries)
    assert all(d.absolute_ms == pytest.approx(1.1 * d.measured_ms) for d in deliveries)
    assert all(d.accuracy >= d.open_loop_accuracy for d in deliveries)  # the slack taken back buys accuracy


def test_a_guard_keeps_that_share_of_every_budget_free(table: Table):
    """guard=0.05: delivered subnets measure at least 5% under their budgets (what a device whose timing moves a
    few percent between runs needs), slack is still stated against the budget, and a budget only the guard makes
    unmeetable says so."""
    raw = LatencyPredictor(table, calibrated=False)
    fastest, _ = raw.minimum()
    budgets = [fastest * factor for factor in (1.5, 2.0, 2.5)]

    def device(archs):
        return _measured(raw.predict(archs))  # the table is exact here

    plain, _ = closed_loop(raw, AccuracyPredictor.default(), ArchSpace(resolutions=(160,)), budgets, device,
                           generations=40)
    guarded, _ = closed_loop(raw, AccuracyPredictor.default(), ArchSpace(resolutions=(160,)), budgets, device,
                             generations=40, guard=0.05)
    assert all(d.met and d.measured_ms <= 0.95 * d.budget_ms for d in guarded), [d.slack for d in guarded]
    assert all(0.05 <= d.slack <= 0.1 for d in guarded), [d.slack for d in guarded]
    assert all(d.slack == pytest.approx((d.budget_ms - d.measured_ms) / d.budget_ms) for d in guarded)
    assert any(d.slack < 0.05 for d in plain), "without a guard the loop comes closer to its budgets"

    (inside,), _ = closed_loop(raw, AccuracyPredictor.default(), ArchSpace(resolutions=(160,)),
                               [fastest * 1.02], device, generations=20, guard=0.05)
    assert not inside.met and "the guarded budget" in inside.note

def test_a_memory_limit_holds_by_prediction_and_by_measurement(table: Table):
    """With a memory limit the search keeps to subnets the memory model puts under it, and a subnet whose measured
    memory is over it does not count, however fast. The model here says 4 bytes a parameter plus 3 MB; the device
    uses 8% more, so round one's subnets measure over the limit, and later searches keep further under it."""
    raw = LatencyPredictor(table, calibrated=False)
    params = ParamsPredictor(1.2, resolutions=(160,))

    class Memory:
        def predict(self, archs):
            return params.predict(archs) * 4 / 2**20 + 3.0

    model = Memory()

    def device(archs):
        return [{**m, "memory_mb": 1.08 * float(used)}
                for m, used in zip(_measured(raw.predict(archs)), model.predict(archs), strict=True)]

    fastest, _ = raw.minimum()
    space = ArchSpace(resolutions=(160,))
    (free,), _ = closed_loop(raw, AccuracyPredictor.default(), space, [2.5 * fastest], device, generations=40)
    limit = 0.9 * free.memory_mb  # the subnet found without a limit uses more
    (held,), _ = closed_loop(raw, AccuracyPredictor.default(), space, [2.5 * fastest], device, generations=40,
                             memory=Constraint("memory_mb", model, limit))
    assert held.met and held.memory_mb <= limit and held.measured_ms <= held.budget_ms
    assert held.accuracy <= free.accuracy
    assert held.open_loop_measured_ms is not None and held.rounds >= 2, "round one's subnet measured over the limit"

def test_ranked_by_macs_the_loop_delivers_the_largest_subnet_it_finds_under_each_budget(table: Table):
    """With a MACs predictor to maximise (no accuracy predictor exists, as in the ProxylessNAS space), deliveries
    state no accuracy and carry the subnet's MACs; a looser budget gets no smaller a network."""
    predictor = LatencyPredictor(table, calibrated=False)
    fastest, _ = predictor.minimum()
    budgets = [fastest * 1.5, fastest * 2.5]
    deliveries, _ = closed_loop(predictor, MacsPredictor(1.2, resolutions=(160,)), ArchSpace(resolutions=(160,)),
                                budgets, lambda archs: _measured(1.1 * predictor.predict(archs)), generations=30,
                                ranked_by="macs")
    assert all(d.met and d.measured_ms <= d.budget_ms for d in deliveries)
    assert all(d.ranked_by == "macs" and d.accuracy is None and d.open_loop_accuracy is None for d in deliveries)
    assert [d.macs for d in deliveries] == [count_macs(Arch.from_json(d.arch), 1.2) for d in deliveries]
    assert deliveries[0].macs <= deliveries[1].macs


def test_a_fitted_latency_model_closes_the_loop_too(table: Table):
    """A model fitted on 30 subnets of a device that is not additive (a per-block overhead) meets the budgets, and
    is refitted with the loop's measurements."""
    raw = LatencyPredictor(table, calibrated=False)
    space = ArchSpace(resolutions=(160,))

    def device_ms(archs):
        blocks = np.array([sum(a.d) for a in archs])
        return 1.1 * raw.predict(archs) + 0.05 * blocks

    def device(archs):
        return _measured(device_ms(archs))

    archs = list(space.samples(30, seed=5))
    model = LatencyModel(width_mult=1.2, cv=3).fit(archs, device_ms(archs))
    budgets = [float(np.mean(device_ms(archs))) * f for f in (0.8, 1.0, 1.2)]
    deliveries, refitted = closed_loop(model, AccuracyPredictor.default(), space, budgets, device, generations=20)
    assert all(d.met and d.measured_ms <= d.budget_ms for d in deliveries)
    assert len(refitted.train_ms_) > 30 and len(model.train_ms_) == 30


def test_when_every_found_subnet_overshoots_a_model_s_own_subnet_is_measured_again_and_delivered(table: Table):
    """A device that runs every subnet the search finds 30% slower than the model's own 30 subnets suggest (a
    step no refit learns in one round): the budget gets the best of those 30 that measured under it, measured
    again, not the fastest subnet of the space."""
    raw = LatencyPredictor(table, calibrated=False)
    space = ArchSpace(resolutions=(160,))
    archs = list(space.samples(30, seed=5))
    own = {arch.to_json() for arch in archs}
    calls = []

    def device(found):
        calls.append(list(found))
        return _measured([(1.0 if a.to_json() in own else 1.3) * float(raw.predict([a])[0]) for a in found])

    model = LatencyModel(width_mult=1.2, cv=3).fit(archs, raw.predict(archs))
    budget = float(np.median(raw.predict(archs)))
    accuracy = AccuracyPredictor.default()
    (delivery,), refitted = closed_loop(model, accuracy, space, [budget], device, max_rounds=1, generations=20)
    under = [a for a in archs if raw.predict([a])[0] <= budget]
    best = max(under, key=lambda a: float(accuracy.predict(ArchBatch.coerce([a]))[0]))
    assert delivery.met and delivery.arch == best.to_json() and delivery.measured_ms <= budget
    assert "fitted on under it, measured again" in delivery.note and delivery.rounds == 2
    assert [len(c) for c in calls] == [1, 1] and calls[1] == [best]  # the search's subnet, then the model's again
    assert len(refitted.train_ms_) == 32


@pytest.mark.slow
@pytest.mark.serial  # a table, then subnets timed at its anchor: a shared machine moved them 2x apart once
def test_search_command_end_to_end_with_an_unmeetable_budget(tmp_path, export_cache):
    """`ofa-profile --device local --search --latency-ms ...` builds the table, delivers and reports."""
    common = ["--device", "local", "--width", "1.2", "--resolutions", "160", "--out", str(tmp_path), "--cache",
              str(export_cache), "--min-time", "0.02", "--retries", "0", "--block-ms", "2", "--profile-runs", "4",
              "--quiet"]
    assert main(common) == 0
    fastest, _ = LatencyPredictor(tmp_path / "local_w1.2_onnxruntime_cpu.csv").minimum()
    budgets = [round(fastest * 0.3, 3), round(fastest * 1.5, 3)]
    assert main([*common, "--search", "--latency-ms", ",".join(map(str, budgets)), "--generations", "20"]) == 0
    stem = tmp_path / delivered_stem(resolve_device("local"), budgets)
    report = pd.read_csv(f"{stem}.csv")
    assert list(report["budget_ms"]) == budgets
    impossible, possible = report.itertuples()
    assert not impossible.met and "cannot be met" in impossible.note
    assert possible.met and possible.measured_ms <= possible.budget_ms and possible.rounds <= 3
    assert possible.slack == pytest.approx((possible.budget_ms - possible.measured_ms) / possible.budget_ms)
    assert possible.absolute_ms > 0
    document = json.loads(Path(f"{stem}.json").read_text())
    assert [s["budget_ms"] for s in document["subnets"]] == budgets and "ks" in document["subnets"][1]["arch"]
    assert Path(f"{stem}.png").stat().st_size > 0
    # The same loop with a latency model fitted on random subnets measured at the table's anchor, and a memory
    # model fitted on the memory the same subnets added, with a limit above all of them.
    assert main([*common, "--subnets", "random:8"]) == 0
    measured = tmp_path / "local_w1.2_random_r160_seed0.csv"
    assert fit_main(["latency", str(measured), "--out", str(tmp_path / "model"), "--cv", "3"]) == 0
    assert json.loads((tmp_path / "model.json").read_text())["meta"]["anchor_ms"] > 0
    assert fit_main(["memory", str(measured), "--out", str(tmp_path / "memory"), "--cv", "3"]) == 0
    limit = 1.5 * pd.read_csv(measured)["memory_mb"].max()
    assert main([*common, "--search", "--latency-ms", str(budgets[1]), "--latency-model", str(tmp_path / "model"),
                 "--memory-model", str(tmp_path / "memory"), "--memory-mb", str(limit), "--generations", "20"]) == 0
    report = pd.read_csv(tmp_path / f"{delivered_stem(resolve_device('local'), budgets[1:])}.csv")
    assert report["met"].all() and (report["measured_ms"] <= report["budget_ms"]).all()
    assert (report["memory_mb"] > 0).all() and (report["memory_mb"] <= limit).all()
    assert (tmp_path / "model.refit.json").is_file()


@pytest.mark.parametrize(("argv", "message"), [
    (["--search", "--latency-ms", "5", "--memory-mb", "40"], "--memory-mb and --memory-model go together"),
    (["--memory-model", "memory", "--memory-mb", "40"], "--memory-mb is for --search"),
])
def test_memory_limits_need_their_model_and_the_closed_loop(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "local", *argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--max-slack", "--guard"])
def test_max_slack_and_guard_must_be_fractions(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "local", "--search", "--latency-ms", "5", flag, "1.5", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"{flag}: 1.5 is not a fraction from 0 up to 1" in capsys.readouterr().err


def test_a_refit_keeps_the_statistic_it_sums():
    from tests.paths import NOTE10

    predictor = LatencyPredictor(NOTE10, "mean_ms", calibrated=False)
    archs = list(ArchSpace(resolutions=(160,)).samples(6, seed=1))
    refitted = predictor.refit(archs, 1.1 * predictor.predict(archs))
    assert refitted.statistic == "mean_ms" and refitted.calibration is not None
    assert "of mean_ms" in refitted.describe()


@pytest.mark.slow
def test_a_budget_on_the_90th_percentile_holds_the_slow_runs(tmp_path, export_cache):
    """`--percentile 90`: the search sums the table's p90 column, each subnet is held to the p90 of its runs, the
    report says so in its name and document, and the p90 refit stays out of the sidecar (whose calibration is of
    medians)."""
    common = ["--device", "local", "--width", "1.0", "--resolutions", "128", "--out", str(tmp_path), "--cache",
              str(export_cache), "--min-time", "0.02", "--retries", "0", "--block-ms", "2", "--profile-runs", "4",
              "--regime-tolerance", "0.99", "--quiet"]
    assert main(common) == 0
    table = tmp_path / "local_w1.0_onnxruntime_cpu.csv"
    p90 = LatencyPredictor(table, "p90_ms", calibrated=False)
    budget = round(float(p90.minimum()[0]) * 2, 3)
    assert main([*common, "--search", "--latency-ms", str(budget), "--percentile", "90", "--rank", "macs",
                 "--generations", "10"]) == 0
    stem = tmp_path / delivered_stem(resolve_device("local"), [budget], 90)
    assert stem.name.endswith("ms_p90")
    document = json.loads(Path(f"{stem}.json").read_text())
    assert document["latency_statistic"] == "p90"
    # Reports are named by budgets: the document says which settings made it (issue 25: a rerun with --guard 0.05
    # replaced a report that never stated its guard).
    assert document["settings"]["guard"] == 0 and document["settings"]["generations"] == 10
    assert document["settings"]["source"] == str(table) and document["settings"]["rank"] == "macs"
    report = pd.read_csv(f"{stem}.csv")
    assert report["met"].all() and (report["measured_ms"] <= budget).all()
    assert "calibration" not in json.loads(table.with_suffix(".json").read_text())


def test_a_percentile_needs_a_table_and_the_closed_loop(tmp_path, capsys):
    model = tmp_path / "model.json"
    model.write_text("{}")
    assert main(["--device", "local", "--search", "--latency-ms", "5", "--percentile", "90", "--latency-model",
                 str(model), "--out", str(tmp_path), "--quiet"]) == 2
    assert "a fitted model learns medians" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "local", "--percentile", "90", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "--percentile is for --search" in capsys.readouterr().err
