"""Predicting and searching the ProxylessNAS space: table sums, MACs and params, a predictor trained on its archs,
and ofa-search under all three limits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from predictors.accuracy import AccuracyPredictor, ArchEncoding
from predictors.archs import sample_batch
from predictors.cli import main as search_main
from predictors.complexity import MacsPredictor, ParamsPredictor
from predictors.latency import LatencyPredictor
from predictors.table_io import Row, Table, TableError, read_table, write_table
from predictors.train import RidgeAccuracyRegressor, as_predictor, train_from_csv
from supernet import ArchError, ArchSpace, count_macs, count_params
from supernet.arch import PROXYLESS_LAYOUT
from supernet.plan import PROXYLESS
from supernet.units import all_units, units_of

RESOLUTIONS = (128, 160)
SPACE = ArchSpace(RESOLUTIONS, layout=PROXYLESS_LAYOUT)


def _ms(unit) -> float:
    """A made-up latency that grows with the unit's work, so sums differ between archs."""
    return 0.01 + 1e-8 * unit.in_chs * max(unit.mid_chs, unit.out_chs) * unit.in_size**2 * unit.kernel_size


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    rows = [Row(key=u.key, median_ms=_ms(u), mean_ms=_ms(u), count=9, resolution=r)
            for r in RESOLUTIONS for u in all_units(1.3, [r], family=PROXYLESS)]
    path = tmp_path_factory.mktemp("proxyless") / "dev_proxyless_w1.3.csv"
    meta = {"space": "proxyless", "width_mult": 1.3, "n_classes": 1000, "resolutions": list(RESOLUTIONS)}
    return write_table(path, Table(tuple(rows), meta))


def test_table_sums_macs_and_params_of_a_batch_equal_those_of_each_arch(table_path):
    """Vectorized predictions over 200 random ProxylessNAS archs equal the per-arch sums and counts."""
    batch = sample_batch(200, SPACE, np.random.default_rng(0))
    archs = batch.to_archs()
    assert {a.d[-1] for a in archs} == {1}
    table = read_table(table_path)
    latency = LatencyPredictor(table)
    assert (latency.family.name, latency.width_mult) == ("proxyless", 1.3)
    values = {r: table.values(r) for r in RESOLUTIONS}
    expected = [sum(values[a.r][u.key] for u in units_of(a, 1.3)) for a in archs]
    np.testing.assert_allclose(latency.predict(batch), expected, rtol=1e-12)
    macs = MacsPredictor(1.3, resolutions=RESOLUTIONS, layout=PROXYLESS_LAYOUT)
    params = ParamsPredictor(1.3, resolutions=RESOLUTIONS, layout=PROXYLESS_LAYOUT)
    assert list(macs.predict(batch)) == [count_macs(a, 1.3) for a in archs]
    assert list(params.predict(batch)) == [count_params(a, 1.3) for a in archs]
    smallest = SPACE.uniform(3, 3, 2, 128)
    assert latency.minimum() == (pytest.approx(latency.predict([smallest])[0]), 128)
    assert macs.minimum() == (count_macs(smallest, 1.3), 128)


def test_a_table_of_both_spaces_or_of_another_than_its_sidecar_says_is_refused(table_path, tmp_path):
    table = read_table(table_path)
    mobilenet = next(u for u in all_units(1.2, [160]) if u.kind == "expanded_conv")
    mixed = Table((*table.rows, Row(key=mobilenet.key, median_ms=1.0, mean_ms=1.0, count=1)), table.meta)
    with pytest.raises(TableError, match="both the mobilenetv3 and the proxyless space"):
        write_table(tmp_path / "mixed.csv", mixed)
    with pytest.raises(TableError, match="the sidecar says space 'mobilenetv3'"):
        write_table(tmp_path / "wrong.csv", Table(table.rows, {**table.meta, "space": "mobilenetv3"}))
    bare = tmp_path / "bare.csv"
    write_table(bare, Table(table.rows, {"resolutions": list(RESOLUTIONS)}))
    (tmp_path / "bare.json").unlink()
    assert read_table(bare).space == "proxyless"
    assert LatencyPredictor(bare).width_mult == 1.3


@pytest.fixture(scope="module")
def predictor_path(tmp_path_factory):
    """A ridge predictor trained on 400 ProxylessNAS archs with a known additive 'accuracy'."""
    folder = tmp_path_factory.mktemp("acc")
    batch = sample_batch(400, SPACE, np.random.default_rng(1))
    encoding = ArchEncoding.for_resolutions(RESOLUTIONS, n_blocks=21)
    features = encoding.transform(batch)
    accuracy = 0.7 + features @ np.random.default_rng(2).normal(0, 0.003, features.shape[1])
    csv = folder / "acc.csv"
    pd.DataFrame({"arch": [a.to_json() for a in batch.to_archs()], "accuracy": accuracy}).to_csv(csv, index=False)
    model, report = train_from_csv(csv, RidgeAccuracyRegressor(alpha=1e-3), encoding=encoding)
    assert report["kendall_tau"] > 0.9
    as_predictor(model, encoding).save(folder / "proxyless_acc")
    return folder / "proxyless_acc.json"


def test_search_by_a_trained_predictor_under_latency_macs_and_params(table_path, predictor_path, tmp_path, capsys):
    """ofa-search with a predictor trained on the space finds a ProxylessNAS arch that meets all three limits."""
    latency = LatencyPredictor(table_path)
    limit = 1.5 * latency.minimum()[0]
    out = tmp_path / "found.json"
    assert search_main(["--table", str(table_path), "--predictor", str(predictor_path), "--latency-ms", str(limit),
                        "--macs", "400M", "--params", "8M", "--generations", "40", "--out", str(out),
                        "--quiet"]) == 0
    entry = json.loads(out.read_text())["subnets"][0]
    arch = entry["arch"]
    assert (len(arch["ks"]), len(arch["d"]), arch["d"][-1]) == (21, 6, 1)
    assert entry["latency_ms"][table_path.stem] <= limit and entry["macs"] <= 400e6 and entry["params"] <= 8e6
    assert 0.5 < entry["accuracy"] < 0.9


def test_the_mobilenetv3_predictor_refuses_proxyless_archs():
    batch = sample_batch(3, SPACE, np.random.default_rng(3))
    with pytest.raises(ArchError, match="encodes archs of 20 blocks; these are proxyless archs of 21"):
        AccuracyPredictor.default().predict(batch)
