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
from predictors.fit_cli import main as fit_main
from predictors.latency import LatencyPredictor
from predictors.latency_features import ArchFeatures
from predictors.latency_model import LatencyModel, LatencyModelError
from predictors.table_io import Row, Table, TableError, read_table, write_table
from predictors.train import RidgeAccuracyRegressor, as_predictor, train_from_csv
from supernet import ArchError, ArchSpace, count_macs, count_params
from supernet.arch import PROXYLESS_LAYOUT
from supernet.plan import PROXYLESS
from supernet.units import all_units, units_of
from tests.paths import NOTE10

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
    assert read_table(bare).family.name == "proxyless"
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


@pytest.fixture(scope="module")
def measured_device(table_path):
    """80 subnets of a made-up device whose latency is 1.2 x the table's sums plus 0.3 ms and a cost per block
    that the sums miss, with 1% noise: 50 to fit on, 30 held out."""
    batch = sample_batch(80, SPACE, np.random.default_rng(4))
    archs = batch.to_archs()
    truth = 1.2 * LatencyPredictor(table_path, calibrated=False).predict(batch) + 0.3 + 0.02 * batch.d.sum(axis=1)
    measured = truth * np.exp(np.random.default_rng(5).normal(0, 0.01, len(archs)))
    return archs[:50], measured[:50], archs[50:], truth[50:]


def test_latency_models_fit_proxyless_subnets_with_its_six_stages(table_path, measured_device, tmp_path):
    """The features are the space's own (six stages, no SE). Held out, a model with the table predicts every subnet
    within 5%, one without it 80% within 5% and all within 10% (the made-up rows are not linear in MACs); each
    reloads the same, and refuses archs or tables of the other space."""
    archs, measured, held_out, truth = measured_device
    features = ArchFeatures(1.3, layout=PROXYLESS_LAYOUT)
    x = pd.DataFrame(features.transform(archs), columns=features.names)
    assert (x[[f"stage{s}_blocks" for s in range(6)]].to_numpy() == [a.d for a in archs]).all()
    assert (x[[f"stage{s}_se_macs_m" for s in range(6)]].to_numpy() == 0).all()
    same_r = [a for a in archs if a.r == 160][:4]
    macs = pd.DataFrame(features.transform(same_r), columns=features.names)["macs_m"]
    assert np.allclose(np.diff(macs), np.diff([count_macs(a, 1.3) / 1e6 for a in same_r]))

    table = LatencyPredictor(table_path, calibrated=False)
    for model, within in ((LatencyModel(width_mult=1.3, cv=3), 0.10), (LatencyModel(table=table, cv=3), 0.05)):
        model.fit(archs, measured)
        assert model.family_ == PROXYLESS and model.supported_resolutions() == RESOLUTIONS
        error = np.abs(model.predict(held_out) / truth - 1)
        assert np.all(error <= within) and np.mean(error <= 0.05) >= 0.8, (model.describe(), error.round(3))
        model.save(tmp_path / "model")
        again = LatencyModel.load(tmp_path / "model")
        assert again.family_ == PROXYLESS and np.array_equal(again.predict(held_out), model.predict(held_out))
    assert json.loads((tmp_path / "model.json").read_text())["space"] == "proxyless"
    with pytest.raises(LatencyModelError, match="fitted on proxyless subnets, not mobilenetv3 ones"):
        again.predict([ArchSpace.for_width(1.0).uniform(3, 3, 2, 160)])
    mobilenet = ArchSpace((160,)).samples(10, seed=0)
    with pytest.raises(LatencyModelError, match="the table is for the proxyless space, the subnets are mobilenetv3"):
        LatencyModel(table=table).fit(mobilenet, np.ones(10))
    with pytest.raises(LatencyModelError, match=r"give --width \(1.3 for the released proxyless supernets\)"):
        LatencyModel().fit(archs, measured)


def test_fit_a_proxyless_latency_model_then_search_with_it(table_path, measured_device, tmp_path, capsys):
    """ofa-fit latency on an ofa-profile --subnets CSV of the space, then ofa-search --latency-model: the space
    comes from the model, and the found 21-block subnet meets the limit by the model."""
    archs, measured, *_ = measured_device
    data = tmp_path / "measured.csv"
    pd.DataFrame({"arch": [a.to_json() for a in archs], "measured_ms": measured, "width_mult": 1.3}).to_csv(
        data, index=False)
    assert fit_main(["latency", str(data), "--out", str(tmp_path / "model"), "--cv", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 50
    limit = float(np.median(measured))
    out = tmp_path / "found.json"
    assert search_main(["--latency-model", str(tmp_path / "model"), "--latency-ms", str(limit), "--rank", "macs",
                        "--generations", "30", "--out", str(out), "--quiet"]) == 0
    document = json.loads(out.read_text())
    entry = document["subnets"][0]
    assert document["settings"]["space"] == "proxyless" and len(entry["arch"]["ks"]) == 21
    assert entry["latency_ms"]["model"] <= limit
    assert search_main(["--latency-model", str(tmp_path / "model"), "--table", str(NOTE10), "--latency-ms", "30",
                        "--rank", "macs", "--quiet"]) == 2
    assert "model is for the proxyless space, width 1.3, 1000 classes; the search is for mobilenetv3" in \
        capsys.readouterr().err
