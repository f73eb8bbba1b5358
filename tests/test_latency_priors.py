"""Few-shot latency models: priors from other devices' tables and models, the priors method, files and CLI.

The devices here are stand-ins with a known truth, built from the shipped Note10 table's per-stage sums: the
table itself is one prior; a second device runs early stages slower (stage weights 2.0 ... 0.4); the new device
lies between them. Few-shot fitting on real measurements of this machine's runtimes is scored in
benchmarks/fewshot_latency.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictors.archs import ArchBatch
from predictors.fit_cli import main as fit_main
from predictors.latency import LatencyPredictor
from predictors.latency_features import ArchFeatures
from predictors.latency_methods import PriorMix
from predictors.latency_model import FORMAT_VERSION, LatencyModel, LatencyModelError, Prior
from predictors.latency_priors import informative_subnets, load_prior, load_priors, shipped_priors
from profiler.cli import main as profile_main
from profiler.deliver import delivered_stem
from profiler.devices import resolve_device
from supernet import ArchSpace
from supernet.errors import OFAProfileError
from supernet.plan import MOBILENETV3
from tests.paths import NOTE10

RESOLUTIONS = (160, 176, 192, 208, 224)
SLOW_EARLY = np.array([2.0, 1.0, 0.6, 0.5, 0.4])  # the second device's cost of each stage, relative to Note10's
BETWEEN = np.array([1.5, 1.0, 0.8, 0.7, 0.6])  # the new device's


def _device(table: LatencyPredictor, weights: np.ndarray, scale: float, archs, noise: float, seed: int):
    fixed, stages = table.cost.parts(ArchBatch.coerce(archs))
    truth = scale * (1.2 * fixed + stages @ weights)
    return truth * np.exp(np.random.default_rng(seed).normal(0, noise, len(truth)))


@pytest.fixture(scope="module")
def world():
    """The Note10 table prior, the second device's model prior (fitted on 60 of its subnets), and 5 measured and
    200 test subnets of the new device (1% noise)."""
    table = LatencyPredictor(NOTE10, calibrated=False)
    space = ArchSpace.for_width(1.2)
    archs = [a.with_resolution(RESOLUTIONS[i % 5]) for i, a in enumerate(space.samples(265, seed=5))]
    second = LatencyModel("ridge", width_mult=1.2).fit(archs[:60], _device(table, SLOW_EARLY, 0.8, archs[:60], 0.01, 1))
    priors = (Prior("note10", "0" * 64, "test", table.cost, MOBILENETV3, 1.2),
              Prior("slow-early", "1" * 64, "test", second, MOBILENETV3, 1.2))
    new = archs[60:]
    measured = _device(table, BETWEEN, 0.5, new, 0.01, 2)
    truth = _device(table, BETWEEN, 0.5, new, 0.0, 2)
    return priors, second, new[:5], measured[:5], new[5:], truth[5:]


def _within(predicted, truth, bound):
    return float(np.mean(np.abs(predicted / truth - 1) <= bound))


def test_five_subnets_and_two_priors_predict_a_new_device(world):
    """From 5 measured subnets the model with priors chooses a prior method and puts 99% of 200 test subnets within
    ±10%, ahead at ±5% of the same 5 subnets without priors and of either prior alone on a line. Five subnets keep
    the priors' consensus (the one-standard-error rule cannot tell a mix from it yet); with 3 more the mix earns its
    weights and 95% are within ±5%."""
    priors, _, archs, measured, test, truth = world
    few = LatencyModel(width_mult=1.2, priors=priors).fit(archs, measured)
    plain = LatencyModel(width_mult=1.2).fit(archs, measured)
    assert few.method_ in ("priors", "priors+ridge"), few.cv_report_
    assert _within(few.predict(test), truth, 0.10) >= 0.99, few.describe()
    assert _within(plain.predict(test), truth, 0.05) < 0.8
    for prior in priors:
        alone = LatencyModel("priors", width_mult=1.2, priors=(prior,)).fit(archs, measured)
        assert _within(alone.predict(test), truth, 0.05) < _within(few.predict(test), truth, 0.05), prior.name
    assert "from 2 prior(s) (note10, slow-early)" in few.describe()
    three_more = truth[:3] * np.exp(np.random.default_rng(3).normal(0, 0.01, 3))  # the fixture's 1% noise
    more = LatencyModel(width_mult=1.2, priors=priors).fit([*archs, *test[:3]], [*measured, *three_more])
    assert _within(more.predict(test[3:]), truth[3:], 0.05) >= 0.95, more.describe()


def test_the_mix_starts_from_the_consensus_and_moves_as_the_subnets_demand():
    """With one prior and 30 subnets the mix is the line log t = a log p + b; a device that is exactly
    p1^0.5 p2^0.5 gets those exponents back; when the device is one prior plus noise, the consensus is that prior
    and the other gets next to no weight."""
    rng = np.random.default_rng(0)
    p = np.exp(rng.normal(size=(30, 2)))
    line = PriorMix((0,)).fit(p, 2 * p[:, 0] ** 0.9, seed=0)
    assert np.allclose(line.predict(p), 2 * p[:, 0] ** 0.9)
    mixed = PriorMix((0, 1)).fit(p, 3 * np.sqrt(p[:, 0] * p[:, 1]), seed=0)
    assert np.allclose(mixed.weights(), [0.5, 0.5], atol=0.01)
    noise_only = PriorMix((0, 1)).fit(p, p[:, 1] * np.exp(rng.normal(0, 0.01, 30)), seed=0)
    assert noise_only.start[1] > 0.99 and abs(noise_only.weights()[0]) < 0.01
    again = PriorMix.from_arrays(mixed.arrays())
    assert np.array_equal(again.predict(p), mixed.predict(p))


def test_a_device_whose_7x7_kernels_cost_more_than_every_prior_s_is_one_term_from_the_mix(world):
    """LiteRT/XNNPACK's case on this project's VM, where 7x7 depthwise kernels cost far more per MAC than on every
    other device. Here the fixture's new device runs each subnet (1 + 2 · share7) times slower, share7 being the
    share of its MACs in 7x7 depthwise kernels (0.01-0.24 over these subnets). From 20 measured subnets the priors
    method fits that share's term: 95% of 240 others within ±5%. The priors alone, mixed without the shares, cannot
    follow a cost no prior has: under 80% there. The fixture's own device, whose kernels cost what the priors
    say, keeps the mix of priors alone: the shares' terms stay 0."""
    priors, _, _, _, archs, truth = world
    features = ArchFeatures(1.2)
    x = features.transform(archs)
    names = features.names
    shares = ((names.index("dw5_macs_m"), names.index("macs_m")), (names.index("dw7_macs_m"), names.index("macs_m")))
    slow7 = truth * (1 + 2 * x[:, shares[1][0]] / x[:, shares[1][1]])
    measured = slow7[:20] * np.exp(np.random.default_rng(4).normal(0, 0.01, 20))
    model = LatencyModel("priors", width_mult=1.2, priors=priors).fit(archs[:20], measured)
    assert _within(model.predict(archs[20:]), slow7[20:], 0.05) >= 0.95, model.describe()
    with_priors = np.column_stack([x, *(prior.predict(ArchBatch.coerce(archs)) for prior in priors)])
    columns = (x.shape[1], x.shape[1] + 1)
    alone = PriorMix(columns).fit(with_priors[:20], measured, seed=0)
    assert _within(alone.predict(with_priors[20:]), slow7[20:], 0.05) < 0.8
    plain = LatencyModel("priors", width_mult=1.2, priors=priors).fit(archs[:20], truth[:20] * measured / slow7[:20])
    assert np.all(plain.estimator_.coef[-2:] == 0) and np.any(model.estimator_.coef[-2:] != 0)
    again = PriorMix.from_arrays(model.estimator_.arrays())
    assert again.shares == shares and np.array_equal(again.predict(with_priors), model.estimator_.predict(with_priors))


def test_a_mix_saved_by_format_4_predicts_as_it_did():
    """Format 4 mixed the priors alone: read back, the mix has no shares and predicts exp(c0 + sum c_j log p_j)."""
    p = np.exp(np.random.default_rng(2).normal(size=(20, 2)))
    coef = np.array([0.3, 0.6, 0.5])
    old = PriorMix.from_arrays({"columns": np.array([0, 1]), "start": np.array([0.4, 0.6]),
                                "alpha": np.array(10.0), "coef": coef})
    assert old.shares == () and np.allclose(old.predict(p), np.exp(coef[0] + np.log(p) @ coef[1:]))
    assert np.allclose(PriorMix.from_arrays(old.arrays()).predict(p), old.predict(p))


def test_a_mix_saved_by_format_3_predicts_as_it_did():
    """Format 3 stored the best prior's line and the other priors' departures from it, each scaled; read back, the
    mix predicts exp(c0 + c1 log p_best + sum c_k (log p_k - log p_best) / scale_k) as it did then."""
    p = np.exp(np.random.default_rng(1).normal(size=(20, 3)))
    coef, scale = np.array([0.3, 0.9, 0.2, -0.1]), np.array([0.5, 2.0])
    old = PriorMix.from_arrays({"columns": np.array([0, 1, 2]), "best": np.array(1), "scale": scale,
                                "alpha": np.array(np.inf), "coef": coef})
    logs = np.log(p)
    departures = (logs[:, [0, 2]] - logs[:, [1]]) / scale
    assert np.allclose(old.predict(p), np.exp(coef[0] + coef[1] * logs[:, 1] + departures @ coef[2:]))
    assert np.allclose(PriorMix.from_arrays(old.arrays()).predict(p), old.predict(p))
    with pytest.raises(ValueError, match="zero scale"):
        PriorMix.from_arrays({"columns": np.array([0, 1, 2]), "best": np.array(1), "scale": np.array([0.5, 0.0]),
                              "alpha": np.array(np.inf), "coef": coef})


@pytest.mark.parametrize("method", ["priors", "priors+ridge"])
def test_a_model_with_priors_saves_them_and_predicts_the_same_after_loading(world, method, tmp_path):
    priors, _, archs, measured, test, _ = world
    model = LatencyModel(method, width_mult=1.2, priors=priors, cv=3).fit(archs, measured)
    json_path, _ = model.save(tmp_path / "new")
    document = json.loads(json_path.read_text())
    assert (document["format_version"], document["method"]) == (FORMAT_VERSION, method)
    assert [(p["name"], p["kind"], p["sha256"]) for p in document["priors"]] == [
        ("note10", "table", "0" * 64), ("slow-early", "model", "1" * 64)]
    assert document["priors"][1]["model"]["n_train"] == 60
    again = LatencyModel.load(tmp_path / "new")
    assert [p.name for p in again.priors_] == ["note10", "slow-early"]
    assert np.array_equal(again.predict(test), model.predict(test))
    refitted = again.refit(test[:5], model.predict(test[:5]))
    assert refitted.method_ == method and len(refitted.train_ms_) == 10 and refitted.priors_ == again.priors_


def test_priors_that_cannot_serve(world):
    priors, _, archs, measured, _, _ = world
    w10 = [a.with_resolution(192) for a in ArchSpace.for_width(1.0).samples(5, seed=0)]
    with pytest.raises(LatencyModelError, match=r"prior note10 is for mobilenetv3 w1\.2, the subnets are .* w1;"):
        LatencyModel(width_mult=1.0, priors=priors).fit(w10, measured)
    outside = [a.with_resolution(184) for a in archs]  # between Note10's resolutions: no row for it
    with pytest.raises(LatencyModelError, match="prior note10 has no latency at resolution 184"):
        LatencyModel(width_mult=1.2, priors=priors).fit(outside, measured)
    with pytest.raises(LatencyModelError, match="needs priors"):
        LatencyModel("priors", width_mult=1.2).fit(archs, measured)
    with pytest.raises(LatencyModelError, match="not both"):
        LatencyModel(table=LatencyPredictor(NOTE10, calibrated=False), priors=priors).fit(archs, measured)


def test_fit_with_priors_from_files_on_the_command_line(world, tmp_path, capsys):
    """A table CSV and a model stem as --prior: the report names them, the model records their content hashes, and
    what cannot be a prior is one line that says what to give."""
    _, second, archs, measured, test, truth = world
    second.save(tmp_path / "second.latency")
    data = tmp_path / "new.csv"
    pd.DataFrame({"arch": [a.to_json() for a in archs], "measured_ms": measured, "width_mult": 1.2}).to_csv(
        data, index=False)
    out = tmp_path / "new"
    assert fit_main(["latency", str(data), "--prior", str(NOTE10), "--prior", str(tmp_path / "second.latency"),
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "from 2 prior(s) (note10_w1.2_tflite, second.latency)" in printed and "<- kept" in printed
    document = json.loads((tmp_path / "new.json").read_text())
    table_hash = hashlib.sha256(NOTE10.read_bytes() + NOTE10.with_suffix(".json").read_bytes()).hexdigest()
    model_hash = hashlib.sha256((tmp_path / "second.latency.json").read_bytes()
                                + (tmp_path / "second.latency.npz").read_bytes()).hexdigest()
    assert [(p["sha256"], p["source"]) for p in document["priors"]] == [
        (table_hash, str(NOTE10)), (model_hash, str(tmp_path / "second.latency"))]
    assert _within(LatencyModel.load(out).predict(test), truth, 0.10) >= 0.99

    assert fit_main(["latency", str(data), "--prior", str(tmp_path / "nothing"), "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such table, latency model or shipped prior" in err
    assert fit_main(["latency", str(data), "--prior", str(NOTE10), "--table", str(NOTE10), "--out", str(out)]) != 0
    assert "not both" in capsys.readouterr().err
    with pytest.raises(OFAProfileError, match="given more than once"):
        load_priors([NOTE10, NOTE10])
    copy = tmp_path / "copy.csv"
    copy.write_bytes(NOTE10.read_bytes())
    (tmp_path / "copy.json").write_bytes(NOTE10.with_suffix(".json").read_bytes())
    with pytest.raises(OFAProfileError, match="are the same file"):
        load_priors([NOTE10, copy])
    assert load_prior(copy).kind == "table"


def test_informative_subnets_spread_over_the_latency_range_and_the_resolutions(world):
    """One subnet per stratum of the priors' predicted latency, every resolution, and (with two priors) further
    apart in what the priors disagree on than the strata's medians are."""
    priors, *_ = world
    candidates = ArchBatch.from_archs([a.with_resolution(RESOLUTIONS[i % 5])
                                       for i, a in enumerate(ArchSpace.for_width(1.2).samples(1000, seed=9))])
    picked = informative_subnets(priors, candidates, 10)
    assert len(set(picked.tolist())) == 10 and set(candidates.r[picked].tolist()) == set(RESOLUTIONS)
    level = np.log(priors[0].predict(candidates))
    ranks = np.argsort(np.argsort(level))[picked]
    assert np.histogram(ranks, bins=10, range=(0, 1000))[0].max() <= 2  # strata are by the priors' mean, not one's
    one = informative_subnets(priors[:1], candidates, 10)
    assert sorted(np.argsort(np.argsort(level))[one] // 100) == list(range(10))  # one prior: a median per stratum

    def spread(indices):
        logs = np.log(np.stack([p.predict(candidates[indices]) for p in priors], axis=1))
        return np.std(logs[:, 1] - logs[:, 0])

    assert spread(picked) > spread(one)
    with pytest.raises(ValueError, match="cannot pick 0"):
        informative_subnets(priors, candidates, 0)


@pytest.mark.slow
def test_a_new_device_from_a_shipped_prior_to_delivered_subnets(tmp_path, capsys, export_cache):
    """The local CPU at batch 2 as a new device: `--subnets fewshot:6 --prior local-ort-t1` measures the six
    subnets the shipped prior picks, `ofa-fit latency --prior` fits them, and the closed loop delivers from that
    model and refits it; the whole job measures few subnets."""
    common = ["--device", "local", "--width", "1.0", "--resolutions", "160", "--batch", "2", "--out", str(tmp_path),
              "--cache", str(export_cache), "--min-time", "0.02", "--retries", "0", "--block-ms", "2",
              "--profile-runs", "4",
              "--quiet"]
    assert profile_main([*common, "--subnets", "fewshot:6", "--prior", "local-ort-t1"]) == 0
    measured = tmp_path / "local_w1.0_fewshot6_r160_seed0.csv"
    assert capsys.readouterr().out.strip() == str(measured)
    frame = pd.read_csv(measured)
    assert len(frame) == 6 and frame["arch"].nunique() == 6
    assert fit_main(["latency", str(measured), "--prior", "local-ort-t1", "--out", str(tmp_path / "m"),
                     "--cv", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["priors"][0]["name"] == "local-ort-t1" and report["priors"][0]["source"].startswith("shipped")
    budget = round(float(frame["measured_ms"].median()), 3)
    assert profile_main([*common, "--search", "--latency-ms", str(budget), "--latency-model", str(tmp_path / "m"),
                         "--rank", "macs", "--generations", "20"]) == 0
    stem = tmp_path / delivered_stem(resolve_device("local", {"batch": 2}), [budget])
    delivered = pd.read_csv(f"{stem}.csv")
    assert delivered["met"].all() and (delivered["measured_ms"] <= budget).all()
    loop = json.loads(Path(f"{stem}.json").read_text())
    assert len(frame) + len(loop["measured"]) <= 12
    refit = json.loads((tmp_path / "m.refit.json").read_text())
    assert [p["name"] for p in refit["priors"]] == ["local-ort-t1"] and refit["n_train"] > 6


def test_fewshot_needs_priors_and_priors_need_fewshot(tmp_path, capsys):
    for argv in (["--subnets", "fewshot:6"], ["--subnets", "random:6", "--prior", "local-ort-t1"]):
        with pytest.raises(SystemExit) as exit_info:
            profile_main(["--device", "local", "--out", str(tmp_path), *argv])
        assert exit_info.value.code == 2 and "give both" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--width", "1.0", "--resolutions", "160"], "prior note10-tflite-w1.2 is for mobilenetv3 w1.2, the subnets are "
                                                 "mobilenetv3 w1; give priors of the supernet the subnets came from "
                                                 "(or --width 1.2 for this one)"),
    (["--width", "1.2", "--resolutions", "184"], "prior note10-tflite-w1.2 has no latency at resolution 184 (it "
                                                 "covers [160, 176, 192, 208, 224]); give --resolutions within"),
])
def test_fewshot_refuses_priors_that_cannot_predict_the_run_before_measuring(tmp_path, capsys, argv, message):
    assert profile_main(["--device", "local", "--out", str(tmp_path), "--subnets", "fewshot:5", "--prior",
                         "note10-tflite-w1.2", *argv, "--quiet"]) == 2
    assert message in capsys.readouterr().err and not list(tmp_path.glob("*.csv"))


def test_every_shipped_prior_loads_and_says_where_it_came_from(capsys):
    """`ofa-fit priors` lists the library; each entry loads by name, is what its index says, and states its
    source; the Note10 table is byte for byte the repository's copy."""
    shipped = shipped_priors()
    assert {"note10-tflite-w1.2", "local-ort-t1", "local-tflite", "local-ort-int8"} <= {e["name"] for e in shipped}
    assert fit_main(["priors"]) == 0
    listed = capsys.readouterr().out
    for entry in shipped:
        prior = load_prior(entry["name"])
        assert (prior.kind, prior.width_mult, list(prior.resolutions)) == (
            entry["kind"], entry["width_mult"], entry["resolutions"]), entry["name"]
        assert prior.source.startswith("shipped with ofa-profile: ") and entry["source"] in listed
        assert entry["name"] in listed and entry["device"] in listed
    assert load_prior("note10-tflite-w1.2").sha256 == hashlib.sha256(
        NOTE10.read_bytes() + NOTE10.with_suffix(".json").read_bytes()).hexdigest()
