"""Training accuracy predictors from a CSV, and building that CSV from a supernet on a tiny dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError

from predictors.accuracy import AccuracyPredictor, ArchEncoding
from predictors.archs import sample_batch
from predictors.train import (
    AccuracyDataError,
    MLPAccuracyRegressor,
    RidgeAccuracyRegressor,
    read_accuracy_csv,
    train_from_csv,
)
from supernet import ArchSpace, OFAMobileNetV3
from supernet.plan import MOBILENETV3
from supernet.training.dataset import build_accuracy_csv

SPACE = ArchSpace.for_width(1.0)


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
    """600 archs whose 'accuracy' is a known additive function of kernel, expand, depth and resolution."""
    path = tmp_path_factory.mktemp("acc") / "acc.csv"
    batch = sample_batch(600, SPACE, np.random.default_rng(0))
    features = ArchEncoding().transform(batch)
    weights = np.random.default_rng(1).normal(0, 0.004, features.shape[1])
    accuracy = 0.7 + features @ weights
    pd.DataFrame({"arch": [a.to_json() for a in batch.to_archs()], "accuracy": accuracy}).to_csv(path, index=False)
    return path


def test_ridge_learns_an_additive_accuracy(synthetic_csv, tmp_path):
    """Ridge on the encoding recovers an additive target: low RMSE, high rank correlation; saved as JSON."""
    model, report = train_from_csv(synthetic_csv, RidgeAccuracyRegressor(alpha=1e-3))
    assert report["rmse"] < 1e-3 and report["kendall_tau"] > 0.9 and report["n"] == 120
    path = model.save(tmp_path / "ridge.json")
    assert json.loads(path.read_text())["format_version"] == 1
    batch = read_accuracy_csv(synthetic_csv).archs
    features = ArchEncoding().transform(batch)
    np.testing.assert_array_equal(RidgeAccuracyRegressor.load(path).predict(features), model.predict(features))


def test_mlp_trains_and_saves_as_a_predictor(synthetic_csv, tmp_path):
    """The MLP fits the same data with useful rank correlation and saves as an AccuracyPredictor (.pt + .json)."""
    model, report = train_from_csv(synthetic_csv, MLPAccuracyRegressor(hidden_sizes=(64, 64), epochs=40, lr=3e-3))
    assert report["kendall_tau"] > 0.3 and report["rmse"] < 0.02
    predictor = model.to_predictor(meta={"width_mult": 1.0})
    predictor.save(tmp_path / "mlp")
    batch = read_accuracy_csv(synthetic_csv).archs
    np.testing.assert_allclose(AccuracyPredictor.load(tmp_path / "mlp.json").predict(batch),
                               model.predict(ArchEncoding().transform(batch)), rtol=1e-6)


def test_estimators_follow_sklearn_habits():
    """get_params returns the init arguments; predict before fit raises NotFittedError."""
    assert MLPAccuracyRegressor(epochs=3).get_params()["epochs"] == 3
    with pytest.raises(NotFittedError):
        RidgeAccuracyRegressor().predict(np.zeros((1, 128)))
    with pytest.raises(NotFittedError):
        MLPAccuracyRegressor().predict(np.zeros((1, 128)))


def test_bad_csv_names_the_line(tmp_path):
    """An invalid arch in the CSV: the error gives its line."""
    path = tmp_path / "bad.csv"
    path.write_text('arch,accuracy\n"{""ks"": [3]}",0.5\n')
    with pytest.raises(ValueError, match="line 2"):
        read_accuracy_csv(path)


@pytest.mark.parametrize(("value", "shown"), [("nan", "nan"), ("76.5", "76.5"), ("-0.1", "-0.1"), ("high", "'high'")])
def test_accuracies_that_are_not_fractions_are_refused_naming_the_line(tmp_path, value, shown):
    """Issue 25: a NaN accuracy gave a predictor with RMSE nan, and accuracies x100 or negative were accepted."""
    path = tmp_path / "acc.csv"
    archs = [a.to_json() for a in sample_batch(3, SPACE, np.random.default_rng(0)).to_archs()]
    pd.DataFrame({"arch": archs, "accuracy": ["0.5", value, "0.6"]}).to_csv(path, index=False)
    with pytest.raises(AccuracyDataError, match=rf"line 3: accuracy {shown} is not a number from 0 to 1"):
        read_accuracy_csv(path)


def test_repeated_archs_become_one_row_so_no_arch_is_in_two_folds(tmp_path):
    """Issue 25: repeats of an arch landed in training and held-out folds, flattering the scores."""
    path = tmp_path / "acc.csv"
    a, b = (arch.to_json() for arch in sample_batch(2, SPACE, np.random.default_rng(3)).to_archs())
    pd.DataFrame({"arch": [a, b, a, a], "accuracy": [0.5, 0.7, 0.6, 0.7]}).to_csv(path, index=False)
    batch, accuracy, _ = read_accuracy_csv(path)
    assert [arch.to_json() for arch in batch.to_archs()] == [a, b]
    assert accuracy == pytest.approx([0.6, 0.7])


def test_build_csv_on_a_tiny_dataset_and_resume(tmp_path):
    """Sampled subnets of a small supernet are extracted, BN-recalibrated and scored; a rerun adds nothing."""
    torch.manual_seed(0)
    net = OFAMobileNetV3(width_mult=0.5, n_classes=10).eval()
    images, labels = torch.randn(16, 3, 96, 96), torch.arange(16) % 10
    loader = [(images[:8], labels[:8]), (images[8:], labels[8:])]
    space = ArchSpace(resolutions=(128,))
    out = build_accuracy_csv(net, tmp_path / "acc.csv", 2, loader, loader, n_bn_images=16, space=space,
                             progress=False)
    batch, accuracy, _ = read_accuracy_csv(out)
    assert len(accuracy) == 2 and ((accuracy >= 0) & (accuracy <= 1)).all() and (batch.r == 128).all()
    before = out.read_text()
    build_accuracy_csv(net, out, 2, loader, loader, n_bn_images=16, space=space, progress=False)
    assert out.read_text() == before


def test_a_distributed_build_shards_the_archs_resumes_and_merges(tmp_path):
    """Two ranks (run here one after the other) each measure their share into a shard; an interrupted shard
    resumes without repeats; the merge holds every arch once and removes the shards."""
    from supernet.training.dataset import merge_shards, shard_path

    torch.manual_seed(0)
    net = OFAMobileNetV3(width_mult=0.25, n_classes=10, resolutions=[32]).eval()
    loader = [(torch.randn(8, 3, 32, 32), torch.arange(8) % 10)]
    out = tmp_path / "acc.csv"
    archs = list(ArchSpace((32,)).samples(6, seed=1))
    build_accuracy_csv(net, out, 0, loader, loader, n_bn_images=8, archs=archs[:2], progress=False, rank=0, world=2)
    assert len(read_accuracy_csv(shard_path(out, 0)).accuracy) == 1 and not out.exists()  # a rank killed early
    for rank in (0, 1):
        build_accuracy_csv(net, out, 0, loader, loader, n_bn_images=8, archs=archs, progress=False, rank=rank,
                           world=2)
    merge_shards(out)
    batch = read_accuracy_csv(out).archs
    merged = batch.to_archs()
    assert len(merged) == len(set(archs)) and set(merged) == set(archs)
    assert not list(tmp_path.glob(".acc.csv.rank*"))


def test_ofa_fit_saves_a_predictor_ofa_search_reads(tmp_path, capsys):
    """A ridge fit on a small space's rows becomes a one-layer predictor with an encoding for its resolutions."""
    from predictors.accuracy import AccuracyPredictor, ArchEncoding
    from predictors.fit_cli import main

    encoding_for = ArchEncoding.for_resolutions

    archs = list(ArchSpace((32, 40)).samples(60, seed=2))
    rows = ["arch,accuracy"] + [f'"{a.to_json().replace(chr(34), chr(34) * 2)}",{0.5 + 0.01 * sum(a.d) + a.r / 1000}'
                                for a in archs]
    data = tmp_path / "acc.csv"
    data.write_text("\n".join(rows) + "\n")
    assert main(["accuracy", str(data), "--out", str(tmp_path / "p"), "--model", "ridge", "--alpha", "0.01"]) == 0
    assert "held-out RMSE" in capsys.readouterr().out
    predictor = AccuracyPredictor.load(tmp_path / "p")
    assert predictor.encoding == encoding_for([32, 40]) and predictor.resolutions([28, 32, 40, 48]) == (32, 40)
    expected = np.array([0.5 + 0.01 * sum(a.d) + a.r / 1000 for a in archs[:5]])
    assert np.allclose(predictor.predict(archs[:5]), expected, atol=0.02)
    assert encoding_for(range(128, 225, 4)) == encoding_for([160]) == type(predictor.encoding)()
    assert main(["accuracy", str(tmp_path / "none.csv"), "--out", str(tmp_path / "q")]) == 2


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--lr", "-1", "must be a number above 0"),  # was exit 70: Adam's "Invalid learning rate"
    ("--weight-decay", "-1", "must be a number of 0 or more"),  # was exit 70
    ("--alpha", "-1", "must be a number of 0 or more"),  # a negative ridge penalty fitted
])
def test_fit_settings_out_of_range_are_refused_by_the_parser(flag, value, message, synthetic_csv, tmp_path, capsys):
    """Issue 25: one line naming the flag, and no predictor written."""
    from predictors.fit_cli import main

    with pytest.raises(SystemExit) as caught:
        main(["accuracy", str(synthetic_csv), "--out", str(tmp_path / "p"), "--model", "mlp", f"{flag}={value}"])
    assert caught.value.code == 2 and f"argument {flag}: {value} {message}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_proxyless_supernet_gives_a_dataset_and_a_predictor_of_its_space(tmp_path, capsys):
    """The way to an accuracy predictor for the ProxylessNAS space, which OFA did not release: its subnets scored
    on your images, then ofa-fit accuracy; the predictor encodes 21 blocks and predicts that space's archs."""
    from predictors.accuracy import AccuracyPredictor
    from predictors.fit_cli import main
    from supernet import OFAProxylessNASNets
    from supernet.arch import PROXYLESS_LAYOUT

    torch.manual_seed(0)
    net = OFAProxylessNASNets(width_mult=0.25, n_classes=10, resolutions=[32, 40]).eval()
    loader = [(torch.randn(8, 3, 32, 32), torch.arange(8) % 10)]
    out = build_accuracy_csv(net, tmp_path / "acc.csv", 12, loader, loader, n_bn_images=8, progress=False)
    batch, accuracy, _ = read_accuracy_csv(out)
    assert batch.layout == PROXYLESS_LAYOUT and len(accuracy) == 12 and (batch.d[:, -1] == 1).all()
    assert main(["accuracy", str(out), "--out", str(tmp_path / "p"), "--model", "ridge"]) == 0
    capsys.readouterr()
    predictor = AccuracyPredictor.load(tmp_path / "p")
    assert predictor.encoding.n_blocks == 21 and predictor.encoding.n_features == 21 * 6 + 2
    assert predictor.predict(batch).shape == (12,)


def test_a_constant_prediction_scores_nan_without_a_library_warning(recwarn):
    """Issue 25: scipy's ConstantInputWarning reached stderr when a fitter predicted one value for all."""
    from predictors.ranks import kendall_tau, spearman_rho

    assert np.isnan(spearman_rho([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert np.isnan(kendall_tau([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]))
    assert spearman_rho([1.0, 2.0, 3.0], [1.0, 3.0, 9.0]) == pytest.approx(1.0)
    assert not recwarn.list


def test_an_int8_dataset_stays_int8_and_teaches_a_predictor_of_int8_accuracy(tmp_path, capsys, caplog):
    """`ofa-train dataset --precision int8`'s builder: every subnet measured quantized, every row says int8. A build
    of the other precision into that file, or shards of two precisions, are refused naming both; a file written
    before the column is fp32 and keeps its rows when extended. ofa-fit records the precision in the predictor,
    and ranking subnets of another precision by it is said."""
    from predictors.accuracy import warn_precision_mismatch
    from predictors.fit_cli import main
    from supernet.errors import UsageError
    from supernet.training.dataset import merge_shards, shard_path

    torch.manual_seed(0)
    net = OFAMobileNetV3(width_mult=0.25, n_classes=10, resolutions=[32]).eval()
    loader = [(torch.randn(8, 3, 32, 32), torch.arange(8) % 10)]
    archs = list(ArchSpace((32,)).samples(6, seed=3))
    out = build_accuracy_csv(net, tmp_path / "int8.csv", 0, loader, loader, n_bn_images=8, archs=archs,
                             progress=False, precision="int8")
    data = read_accuracy_csv(out)
    assert data.precision == "int8" and len(data.accuracy) == 6 and set(pd.read_csv(out)["precision"]) == {"int8"}
    before = out.read_text()
    with pytest.raises(UsageError, match=r"int8\.csv holds int8; this build measures fp32"):
        build_accuracy_csv(net, out, 0, loader, loader, n_bn_images=8, archs=archs, progress=False)
    assert out.read_text() == before

    lines = before.splitlines()
    mixed = tmp_path / "mixed.csv"
    shard_path(mixed, 0).write_text("\n".join(lines[:2]) + "\n")
    shard_path(mixed, 1).write_text("\n".join([lines[0], lines[2].replace(",int8", ",fp32")]) + "\n")
    with pytest.raises(UsageError, match=r"holds int8.*holds fp32"):
        merge_shards(mixed)
    assert shard_path(mixed, 1).exists() and not mixed.exists()
    with pytest.raises(AccuracyDataError, match="the precision column holds fp32, int8"):
        read_accuracy_csv(_write_lines(tmp_path / "both.csv", [lines[0], lines[1], lines[2].replace(",int8", ",fp32")]))

    older = _write_lines(tmp_path / "older.csv", ["arch,accuracy", *(line.rsplit(",", 1)[0] for line in lines[1:3])])
    assert read_accuracy_csv(older).precision == "fp32"
    build_accuracy_csv(net, older, 0, loader, loader, n_bn_images=8, archs=archs[:3], progress=False)
    rows = pd.read_csv(older)
    assert list(rows.columns) == ["arch", "accuracy", "precision"] and set(rows["precision"]) == {"fp32"}
    assert list(rows["accuracy"][:2]) == list(pd.read_csv(out)["accuracy"][:2])  # measured before: kept

    assert main(["accuracy", str(out), "--out", str(tmp_path / "p"), "--model", "ridge", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "int8"
    predictor = AccuracyPredictor.load(tmp_path / "p")
    assert predictor.precision == "int8" and AccuracyPredictor.shipped_for(MOBILENETV3, 1.2).precision == "fp32"
    with caplog.at_level("WARNING"):
        warn_precision_mismatch(["int8"], predictor, tmp_path / "p")
        assert not caplog.text
        warn_precision_mismatch(["fp32", "int8"], predictor, tmp_path / "p")
    assert "ranking fp32 subnets by the int8 top-1 of" in caplog.text


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path
