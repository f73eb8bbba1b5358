"""Latency models fitted on measured subnets: features, the NumPy predictions of each method, files, CLI, search.

The "device" here is the shipped Note10 table scaled by 1.3 with 1% noise, so the truth is known; the local-CPU
measurement path (``ofa-profile --subnets random:N``) is tested end to end in test_remeasure.py.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.neural_network import MLPRegressor

from predictors.archs import ArchBatch, batch_from_dicts
from predictors.cli import main as search_main
from predictors.complexity import ParamsPredictor
from predictors.fit_cli import main as fit_main
from predictors.latency import LatencyPredictor
from predictors.latency_features import ArchFeatures
from predictors.latency_methods import RidgeMLP, Trees
from predictors.latency_model import FORMAT_VERSION, LatencyModel, LatencyModelError
from supernet import ArchSpace, count_macs
from supernet.arch import ArchError
from tests.paths import NOTE10

RESOLUTIONS = (160, 176, 192, 208, 224)


@pytest.fixture(scope="module")
def device():
    """60 training and 40 test subnets of a device whose latency is 1.3 x the Note10 sums, with 1% noise."""
    table = LatencyPredictor(NOTE10, calibrated=False)
    space = ArchSpace.for_width(1.2)
    archs = [a.with_resolution(RESOLUTIONS[i % 5]) for i, a in enumerate(space.samples(100, seed=3))]
    truth = 1.3 * table.predict(archs)
    measured = truth * np.exp(np.random.default_rng(0).normal(0, 0.01, len(archs)))
    return table, archs[:60], measured[:60], archs[60:], truth[60:]


@pytest.fixture(scope="module")
def fitted(device):
    table, archs, measured, _, _ = device
    return LatencyModel(width_mult=1.2).fit(archs, measured), LatencyModel(table=table).fit(archs, measured)


def test_features_are_per_stage_sums_of_the_arch(device):
    """MACs differences between archs equal supernet.count_macs', and the table columns equal the table's sums."""
    table, archs, *_ = device
    features = ArchFeatures(1.2, table.cost)
    x = pd.DataFrame(features.transform(archs), columns=features.names)
    same_r = [a for a in archs if a.r == 192][:4]
    xr = pd.DataFrame(features.transform(same_r), columns=features.names)
    macs = np.array([count_macs(a, 1.2, 1000) for a in same_r]) / 1e6
    assert np.allclose(np.diff(xr["macs_m"]), np.diff(macs))
    assert np.allclose(x["table_sum_ms"], table.predict(archs))
    stages = x[[f"table_stage{s}_ms" for s in range(5)]].sum(axis=1)
    assert np.allclose(x["table_fixed_ms"] + stages, x["table_sum_ms"])
    assert (x[[f"stage{s}_blocks" for s in range(5)]].to_numpy() == [a.d for a in archs]).all()


def test_models_recover_the_device(fitted, device):
    """Without a table: every held-out subnet within ±5%; with it, the kept method is at least as good as a·sum+b."""
    alone, with_table = fitted
    *_, test_archs, truth = device
    for model in (alone, with_table):
        error = model.predict(test_archs) / truth - 1
        assert np.mean(np.abs(error) <= 0.05) == 1.0, model.describe()
    assert set(with_table.cv_report_) == {"calibrated-sum", "ridge", "ridge+boosting", "ridge+mlp"}
    assert set(alone.cv_report_) == {"ridge", "ridge+boosting", "ridge+mlp"}  # no table, no priors
    kept, line = with_table.cv_report_[with_table.method_], with_table.cv_report_["calibrated-sum"]
    assert (kept["within_10_pct"], kept["within_5_pct"]) >= (line["within_10_pct"], line["within_5_pct"])


def test_kernel_columns_are_the_network_s_depthwise_macs_in_5x5_and_7x7_kernels():
    """All-3x3 archs have none; an all-7x7 arch has all its depthwise MACs in the 7x7 column; a mixed arch splits
    them, and the three kernels' shares add up to the stages' depthwise MACs."""
    features = ArchFeatures(1.0)
    space = ArchSpace.for_width(1.0)
    archs = [space.uniform(3, 4, 3, 192), space.uniform(7, 4, 3, 192), *space.samples(5, seed=2)]
    x = pd.DataFrame(features.transform(archs), columns=features.names)
    depthwise = x[[f"stage{s}_dw_macs_m" for s in range(5)]].sum(axis=1)
    assert (x.loc[0, ["dw5_macs_m", "dw7_macs_m"]] == 0).all()
    assert x.loc[1, "dw5_macs_m"] == 0 and x.loc[1, "dw7_macs_m"] == pytest.approx(depthwise[1])
    threes = ArchFeatures(1.0).transform([a.__class__(tuple(3 for _ in a.ks), a.e, a.d, a.r) for a in archs[2:]])
    three_dw = pd.DataFrame(threes, columns=features.names)[[f"stage{s}_dw_macs_m" for s in range(5)]].sum(axis=1)
    # A 5x5 kernel does 25/9 of a 3x3's depthwise MACs, a 7x7 49/9: what the 3x3 version of the arch does is the rest.
    rest = depthwise[2:].to_numpy() - x.loc[2:, "dw5_macs_m"].to_numpy() - x.loc[2:, "dw7_macs_m"].to_numpy()
    assert np.allclose(rest + x.loc[2:, "dw5_macs_m"] * 9 / 25 + x.loc[2:, "dw7_macs_m"] * 9 / 49, three_dw)
    assert not {"dw5_macs_m", "dw7_macs_m"} & set(ArchFeatures(1.0, by_kernel=False).names)


def test_models_saved_before_the_kernel_columns_still_load(device, tmp_path, monkeypatch):
    """A model fitted without the kernel columns (as every model was before them) loads and predicts the same."""
    import predictors.latency_model as latency_model

    _, archs, measured, test_archs, _ = device
    monkeypatch.setattr(latency_model, "ArchFeatures", functools.partial(ArchFeatures, by_kernel=False))
    old = LatencyModel("ridge", width_mult=1.2, cv=3).fit(archs, measured)
    old.save(tmp_path / "old")
    monkeypatch.undo()
    again = LatencyModel.load(tmp_path / "old")
    assert "dw7_macs_m" not in again.features_.names and "dw7_macs_m" in LatencyModel("ridge", width_mult=1.2).fit(
        archs, measured).features_.names
    assert np.array_equal(again.predict(test_archs), old.predict(test_archs))


def test_each_method_predicts_and_reloads_the_same(device, tmp_path):
    table, archs, measured, test_archs, _ = device
    for method in ("calibrated-sum", "ridge", "ridge+boosting", "ridge+mlp"):
        model = LatencyModel(method, table=table, cv=3).fit(archs, measured)
        json_path, npz_path = model.save(tmp_path / f"{method}.w1.2")  # a stem with dots keeps them
        assert (json_path.name, npz_path.name) == (f"{method}.w1.2.json", f"{method}.w1.2.npz")
        document = json.loads(json_path.read_text())
        assert (document["format_version"], document["method"]) == (FORMAT_VERSION, method)
        with np.load(npz_path, allow_pickle=False) as stored:
            assert all(stored[k].dtype != object for k in stored.files)
        again = LatencyModel.load(tmp_path / f"{method}.w1.2")
        assert np.array_equal(again.predict(test_archs), model.predict(test_archs)), method


def test_files_of_earlier_format_versions_still_load(fitted, device, tmp_path):
    """Versions 1 and 2 named the fitting method "family" (the priors this package shipped until 2026-12-07 were
    such files)."""
    alone, _ = fitted
    json_path, _ = alone.save(tmp_path / "m")
    document = json.loads(json_path.read_text())
    method = document.pop("method")
    for version in (1, 2):
        json_path.write_text(json.dumps({**document, "format_version": version, "family": method}))
        again = LatencyModel.load(tmp_path / "m")
        assert again.method_ == method
        assert np.array_equal(again.predict(device[3]), alone.predict(device[3]))


def test_numpy_trees_and_mlp_equal_scikit_learn():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 6))
    y = np.sin(x[:, 0]) + x[:, 1] ** 2
    boost = GradientBoostingRegressor(n_estimators=40, max_depth=3, subsample=0.8, random_state=0).fit(x, y)
    assert np.allclose(Trees.from_sklearn(boost, x).predict(x), boost.predict(x), atol=1e-12)

    ms = np.exp(0.1 * x[:, 2]) + 5
    model = RidgeMLP(n_base=4).fit(x, ms, seed=0)
    residual = np.log(ms / model.ridge.predict(x[:, :4]))
    mlp = MLPRegressor(hidden_layer_sizes=(32,), alpha=1.0, solver="lbfgs", max_iter=2000, random_state=0)
    mlp.fit((x - model.mean) / model.scale, (residual - model.target[0]) / model.target[1])
    expected = model.ridge.predict(x[:, :4]) * np.exp(mlp.predict((x - model.mean) / model.scale) * model.target[1]
                                                      + model.target[0])
    assert np.allclose(model.predict(x), expected, rtol=1e-10)


def test_refit_adds_measurements(fitted, device):
    alone, _ = fitted
    *_, test_archs, truth = device
    refitted = alone.refit(test_archs[:10], truth[:10])
    assert len(refitted.train_ms_) == 70 and refitted.method_ == alone.method_
    assert len(alone.train_ms_) == 60


def test_model_files_that_cannot_be_used(fitted, tmp_path):
    alone, _ = fitted
    json_path, _ = alone.save(tmp_path / "m")
    document = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**document, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(LatencyModelError, match="newer than this ofa-profile reads"):
        LatencyModel.load(tmp_path / "m")
    json_path.write_text(json.dumps({**document, "features": document["features"][:-1]}))
    with pytest.raises(LatencyModelError, match="other features"):
        LatencyModel.load(tmp_path / "m")
    with pytest.raises(LatencyModelError, match="no such file"):
        LatencyModel.load(tmp_path / "missing")
    with pytest.raises(LatencyModelError, match=r"outside 160\.\.224"):
        alone.predict([ArchSpace.for_width(1.0).sample(0).with_resolution(128)])
    with pytest.raises(LatencyModelError, match="at least 5"):
        LatencyModel(width_mult=1.0).fit(ArchBatch.from_archs([ArchSpace.for_width(1.0).sample(0)]), [1.0])
    with pytest.raises(LatencyModelError, match="needs one"):
        LatencyModel().fit([ArchSpace.for_width(1.0).sample(i) for i in range(5)], [1.0] * 5)


def test_damaged_model_files_are_one_error_naming_the_file(fitted, tmp_path):
    """Issue 25: a truncated .npz was `internal error: BadZipFile`, tampered JSON a KeyError or AttributeError, and
    NaN coefficients predicted nan with exit 0."""
    alone, _ = fitted
    json_path, npz_path = alone.save(tmp_path / "m")
    document, stored = json.loads(json_path.read_text()), npz_path.read_bytes()
    npz_path.write_bytes(stored[: len(stored) // 2])
    with pytest.raises(LatencyModelError, match=f"{tmp_path / 'm'}: not a readable latency model"):
        LatencyModel.load(tmp_path / "m")
    npz_path.write_bytes(stored)
    for tampered in ({k: v for k, v in document.items() if k != "method"}, {**document, "encoding": 3}, [1]):
        json_path.write_text(json.dumps(tampered))
        with pytest.raises(LatencyModelError, match=str(tmp_path / "m")):
            LatencyModel.load(tmp_path / "m")
    json_path.write_text(json.dumps(document))
    with np.load(npz_path) as arrays:
        poisoned = dict(arrays)
    name = next(k for k, v in poisoned.items() if k.startswith("estimator") and v.dtype.kind == "f")
    poisoned[name] = np.full_like(poisoned[name], np.nan)
    np.savez(npz_path, **poisoned)
    with pytest.raises(LatencyModelError, match=f"{name} holds values that are not finite"):
        LatencyModel.load(tmp_path / "m")


def test_batch_from_dicts_names_the_bad_arch():
    archs = [a.to_dict() for a in ArchSpace.for_width(1.0).samples(3, seed=0)]
    assert batch_from_dicts(archs, "x").r.tolist() == [a["r"][0] for a in archs]
    archs[1]["d"] = [2, 3, 5, 2, 2]
    with pytest.raises(ArchError, match=r"f\.json: arch 2: d\[2\] = 5"):
        batch_from_dicts(archs, "f.json")
    # A cast to integers took these for 160 and 3 (issue 25); whole numbers written as floats still read.
    for field, value, message in (("r", [160.5], r"resolution 160\.5 must be an int"), ("ks", 3.5, r"ks\[0\] = 3\.5")):
        bad = [dict(a) for a in archs[:1]]
        bad[0][field] = value if field == "r" else [value, *bad[0]["ks"][1:]]
        with pytest.raises(ArchError, match=rf"f\.json: arch 1: {message}"):
            batch_from_dicts(bad, "f.json")
    whole = [{**archs[0], "ks": [float(k) for k in archs[0]["ks"]]}]
    assert batch_from_dicts(whole, "f.json").ks.tolist() == [archs[0]["ks"]]


def _measured_csv(path, archs, measured):
    pd.DataFrame({"arch": [a.to_json() for a in archs], "measured_ms": measured, "width_mult": 1.2,
                  "other": "ignored"}).to_csv(path, index=False)


def test_fit_predict_and_search_from_the_command_line(device, tmp_path, capsys):
    _, archs, measured, test_archs, truth = device
    data = tmp_path / "measured.csv"
    _measured_csv(data, archs, measured)
    assert fit_main(["latency", str(data), "--out", str(tmp_path / "model"), "--table", str(NOTE10),
                     "--cv", "3"]) == 0
    out = capsys.readouterr().out
    for method in ("calibrated-sum", "ridge", "ridge+boosting", "ridge+mlp"):
        assert method in out
    assert "<- kept" in out and "ofa-search --latency-model" in out

    archs_json = tmp_path / "archs.json"
    archs_json.write_text(json.dumps([a.to_dict() for a in test_archs]))
    assert fit_main(["predict", str(tmp_path / "model"), str(archs_json), "--out", str(tmp_path / "p.csv")]) == 0
    predicted = pd.read_csv(tmp_path / "p.csv")
    assert list(predicted.columns) == ["arch", "predicted_ms"] and len(predicted) == len(test_archs)
    assert np.allclose(predicted["predicted_ms"], truth, rtol=0.05)
    assert fit_main(["predict", str(tmp_path / "model"), str(data)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(archs) + 1

    assert search_main(["--latency-model", str(tmp_path / "model"), "--latency-ms", "25", "--generations", "20",
                        "--json", "--quiet"]) == 0
    document = json.loads(capsys.readouterr().out)
    found = document["subnets"][0]
    assert found["latency_ms"]["model"] <= 25
    assert found["latency_low_ms"]["model"] <= found["latency_ms"]["model"] <= found["latency_high_ms"]["model"]
    assert document["latency_model"]["model"]["fitted_model"] in ("calibrated-sum", "ridge", "ridge+boosting",
                                                                   "ridge+mlp")
    assert set(found["arch"]["r"]) <= set(RESOLUTIONS)


def test_fit_a_memory_model_then_search_under_a_memory_limit(device, tmp_path, capsys):
    """ofa-fit memory learns a whole subnet's peak memory with the latency methods, and ofa-search limits by it.

    The "device" here adds 4 bytes a parameter plus 3 MB, with 1% noise: a stand-in with a known truth (the agent's
    measured peak memory is tested in test_agent_e2e.py, and measured subnets are scored in
    benchmarks/memory_model.py)."""
    _, archs, measured, test_archs, _ = device
    params = ParamsPredictor(1.2, resolutions=RESOLUTIONS)

    def memory(batch):
        return params.predict(batch) * 4 / 2**20 + 3.0

    noisy = memory(archs) * np.exp(np.random.default_rng(1).normal(0, 0.01, len(archs)))
    data = tmp_path / "measured.csv"
    frame = pd.DataFrame({"arch": [a.to_json() for a in archs], "measured_ms": measured, "memory_mb": noisy,
                          "width_mult": 1.2})
    frame.loc[0, "memory_mb"] = None  # the agent could not tell this one
    frame.to_csv(data, index=False)
    model = tmp_path / "memory"
    assert fit_main(["memory", str(data), "--out", str(model), "--cv", "3"]) == 0
    out = capsys.readouterr().out
    assert f"on {len(archs) - 1} measured subnets (1 row(s) without a memory figure left out)" in out
    assert "ofa-search --memory-model" in out and "calibrated-sum" not in out

    archs_json = tmp_path / "archs.json"
    archs_json.write_text(json.dumps([a.to_dict() for a in test_archs]))
    assert fit_main(["predict", str(model), str(archs_json), "--out", str(tmp_path / "p.csv")]) == 0
    predicted = pd.read_csv(tmp_path / "p.csv")
    assert list(predicted.columns) == ["arch", "predicted_mb"]
    assert np.mean(np.abs(predicted["predicted_mb"] / memory(test_archs) - 1) <= 0.05) >= 0.9

    limit = float(np.median(memory(test_archs)))
    assert search_main(["--memory-model", str(model), "--memory-mb", str(limit), "--generations", "20", "--json",
                        "--quiet"]) == 0
    document = json.loads(capsys.readouterr().out)
    found = document["subnets"][0]
    assert found["memory_mb"] <= limit and found["limits"]["memory_mb"] == limit
    assert document["settings"]["memory_model"] == str(model)

    assert search_main(["--latency-model", str(model), "--latency-ms", "25", "--quiet"]) == 1
    assert "is a memory model, not a latency one; give a model of ofa-fit latency" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        search_main(["--macs", "300M", "--memory-mb", "20"])
    assert "--memory-mb needs a --memory-model" in capsys.readouterr().err

def test_fit_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"arch": ["{}"], "latency": [1.0]}).to_csv(bad, index=False)
    assert fit_main(["latency", str(bad), "--out", str(tmp_path / "m")]) == 1
    assert "missing column(s) ['measured_ms']" in capsys.readouterr().err
    assert fit_main(["latency", str(tmp_path / "none.csv"), "--out", str(tmp_path / "m")]) == 2
    assert "ofa-profile --subnets random:100" in capsys.readouterr().err
    # Header-only files were internal errors (exit 70: an empty ArchBatch, an IndexError in the encoding).
    header = tmp_path / "header.csv"
    for command, columns in (("latency", "arch,measured_ms"), ("memory", "arch,memory_mb"),
                             ("accuracy", "arch,accuracy")):
        header.write_text(columns + "\n")
        assert fit_main([command, str(header), "--out", str(tmp_path / "m")]) == 1
        assert f"{header}: no rows under its header" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        search_main(["--latency-ms", "20"])
    assert "--table or --latency-model" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--cv", "1"], "--cv: 1 must be 2 or more"),  # was exit 70: scikit-learn's KFold
    (["--width", "-1"], "--width: -1 must lie above 0"),  # was exit 70
    (["--width", "1e300"], "--width: 1e300 must lie above 0 and at most 10"),  # was exit 70: an OverflowError
    (["--width", "0"], "--width: 0 must lie above 0"),  # was taken as no width at all
])
def test_fit_and_search_settings_out_of_range_are_refused_by_the_parser(argv, message, device, tmp_path, capsys):
    """Issue 25: one line naming the flag, from ofa-fit and from ofa-search alike."""
    _, archs, measured, _, _ = device
    data = tmp_path / "measured.csv"
    _measured_csv(data, archs, measured)
    with pytest.raises(SystemExit) as caught:
        fit_main(["latency", str(data), "--out", str(tmp_path / "m"), *argv])
    assert caught.value.code == 2 and message in capsys.readouterr().err
    if argv[0] == "--width":
        with pytest.raises(SystemExit) as caught:
            search_main(["--table", str(NOTE10), "--latency-ms", "20", *argv])
        assert caught.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("value", [1e300, 1e-300, float("nan"), -1.0])
def test_measurements_no_device_gives_are_refused_before_any_fit(value, device, tmp_path, capsys):
    """Issue 25: 1e300 ms was an internal error (numpy's SVD, exit 70) and 1e-300 ms numpy's overflow and a
    polyfit warning on stderr. Now one line naming the value and where it is."""
    _, archs, measured, _, _ = device
    data = tmp_path / "measured.csv"
    _measured_csv(data, archs, [*measured[:3], value, *measured[4:]])
    assert fit_main(["latency", str(data), "--out", str(tmp_path / "m"), "--table", str(NOTE10)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"measured value {value!r} (measurement 4 of {len(measured)})" in err, err


def test_auto_compares_each_method_on_its_own_inputs(device, fitted):
    """Each method's cross-validation under auto equals that method fitted alone, so whichever is kept predicts."""
    table, archs, measured, _, _ = device
    _, auto = fitted
    for method, report in auto.cv_report_.items():
        alone = LatencyModel(method, table=table).fit(archs, measured)
        assert alone.cv_report_[method] == report, method


def test_a_space_outside_ofa_resolutions_gets_its_own_encoding(tmp_path):
    """A supernet trained at 32/40 px (ofa-train on small images): the MLP's arch encoding bins those resolutions,
    and the saved model keeps its bins."""
    space = ArchSpace(resolutions=(32, 40))
    archs = list(space.samples(30, seed=1))
    measured = 0.5 + ArchFeatures(0.25).transform(archs)[:, :30].sum(axis=1)
    model = LatencyModel("ridge+mlp", width_mult=0.25, cv=3).fit(archs, measured)
    assert (model.encoding_.resolution_start, model.encoding_.resolution_step) == (32, 8)
    model.save(tmp_path / "small")
    again = LatencyModel.load(tmp_path / "small")
    assert again.encoding_ == model.encoding_
    assert np.array_equal(again.predict(archs), model.predict(archs))
