"""Accuracy predictor: the released MLP through our encoding gives the reference AccuracyPredictor's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from predictors.accuracy import AccuracyPredictor, ArchEncoding, PredictorFileError
from predictors.archs import sample_batch
from supernet import ArchSpace
from tests.ofa_oracle import reference_utils

RELEASED = Path(__file__).resolve().parent / "data" / "ofa-release" / "acc_predictor.pth"
W12 = ArchSpace.for_width(1.2)


@pytest.fixture(scope="module")
def reference():
    """The reference tutorial AccuracyPredictor with the released weights (its loader downloads; we load)."""
    reference_utils()
    from ofa.tutorial.accuracy_predictor import AccuracyPredictor as Reference

    predictor = Reference(pretrained=False, device="cpu")
    predictor.model.load_state_dict(torch.load(RELEASED, map_location="cpu", weights_only=True))
    return predictor


def test_default_predictor_equals_reference(reference):
    """1,000 random w1.2 archs: the shipped predictor's outputs equal the reference's (max abs diff 1e-6)."""
    batch = sample_batch(1000, W12, np.random.default_rng(0))
    expected = reference.predict_accuracy([a.to_dict() for a in batch.to_archs()]).numpy()[:, 0]
    got = AccuracyPredictor.default().predict(batch)
    assert np.abs(got - expected).max() <= 1e-6
    assert expected.std() > 0.005


def test_encoding_equals_reference_features(reference):
    """Our 128-dim features equal the reference's spec2feats, skipped blocks zeroed."""
    for arch in sample_batch(200, W12, np.random.default_rng(1)).to_archs():
        expected = reference.spec2feats(list(arch.ks), list(arch.e), list(arch.d), arch.r).numpy()
        np.testing.assert_array_equal(ArchEncoding().transform([arch])[0], expected)


def test_released_file_and_shipped_copy_agree(tmp_path):
    """Reading OFA's .pth, saving in our format and loading it back changes no output."""
    batch = sample_batch(300, W12, np.random.default_rng(2))
    released = AccuracyPredictor.from_ofa_release(RELEASED)
    weights, sidecar = released.save(tmp_path / "pred.v1")
    assert weights.name == "pred.v1.pt" and sidecar.name == "pred.v1.json"
    np.testing.assert_array_equal(AccuracyPredictor.load(sidecar).predict(batch), released.predict(batch))
    np.testing.assert_array_equal(AccuracyPredictor.default().predict(batch), released.predict(batch))


def test_shipped_predictor_has_provenance():
    """The shipped JSON names the release, author and licence, and the format version."""
    meta = AccuracyPredictor.default().meta
    assert meta["format_version"] == 1 and meta["width_mult"] == 1.2
    assert meta["provenance"]["author"] == "Han Cai" and "MIT" in meta["provenance"]["license"]
    assert len(meta["provenance"]["source_sha256"]) == 64


def test_bad_files_are_refused(tmp_path):
    """A missing sidecar or another format version: errors that say what to do."""
    with pytest.raises(PredictorFileError, match="from_ofa_release"):
        AccuracyPredictor.load(tmp_path / "nothing.pt")
    _, sidecar = AccuracyPredictor.from_ofa_release(RELEASED).save(tmp_path / "p")
    info = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**info, "format_version": 7}))
    with pytest.raises(PredictorFileError, match="format_version 7"):
        AccuracyPredictor.load(sidecar)


def test_resolution_outside_encoding_is_refused():
    """r=256 has no one-hot bin in OFA's encoding."""
    arch = ArchSpace(resolutions=(256,)).uniform(3, 3, 2, 256)
    with pytest.raises(ValueError, match=r"outside this predictor.s encoding range 112\.\.239"):
        AccuracyPredictor.default().predict([arch])


def test_numpy_predictions_equal_the_torch_mlp(tmp_path):
    """The shipped arrays and the shipped .pt are the same MLP: NumPy and torch agree within 1e-6, a predictor saved
    without its arrays loads through torch, and a module edited in place is what predicts."""
    batch = sample_batch(2000, W12, np.random.default_rng(3))
    numpy_predictor = AccuracyPredictor.default()
    torch_mlp = numpy_predictor.model  # built from the arrays
    with torch.no_grad():
        expected = torch_mlp(torch.from_numpy(ArchEncoding().transform(batch))).numpy()[:, 0]
    assert np.abs(AccuracyPredictor.default().predict(batch) - expected).max() <= 1e-6
    weights, sidecar = numpy_predictor.save(tmp_path / "p")
    assert (tmp_path / "p.npz").is_file() and json.loads(sidecar.read_text())["arrays"] == "p.npz"
    (tmp_path / "p.npz").unlink()
    from_pt = AccuracyPredictor.load(weights)
    assert np.abs(from_pt.predict(batch) - expected).max() <= 1e-6
    with torch.no_grad():
        from_pt.model[0].bias.add_(1.0)
    assert not np.allclose(from_pt.predict(batch), expected)
