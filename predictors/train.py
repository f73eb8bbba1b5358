"""Accuracy predictors for new spaces and supernets, trained from a CSV of (arch, measured accuracy).

Two regressors in scikit-learn's style (``__init__`` stores arguments, ``fit`` returns self, fitted state ends in
``_``, ``predict`` checks it is fitted), both over :class:`~predictors.accuracy.ArchEncoding` features: OFA's MLP
(torch) and a scikit-learn ridge regression. Both save as plain files with a version, never as pickles:
the MLP as an :class:`~predictors.accuracy.AccuracyPredictor` (``.pt`` state dict + JSON), the ridge as JSON.
scikit-learn is needed to fit the ridge model and for the estimator base classes.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import Ridge
from sklearn.utils.validation import check_is_fitted
from torch import nn

from supernet.arch import Arch
from supernet.errors import OFAProfileError
from supernet.files import atomic_write, json_loads, read_input
from supernet.quantize import PRECISIONS

from .accuracy import FORMAT_VERSION, AccuracyPredictor, ArchEncoding, build_mlp
from .archs import ArchBatch
from .ranks import kendall_tau, spearman_rho

__all__ = [
    "AccuracyData",
    "AccuracyDataError",
    "MLPAccuracyRegressor",
    "RidgeAccuracyRegressor",
    "as_predictor",
    "evaluate",
    "fit_held_out",
    "read_accuracy_csv",
    "train_from_csv",
]

log = logging.getLogger(__name__)


class AccuracyDataError(OFAProfileError, ValueError):
    """An accuracy dataset that cannot train a predictor (missing columns, a bad arch, too few rows); names the
    file and says what to do."""


class AccuracyData(NamedTuple):
    """An accuracy dataset: its archs, their top-1 (0..1), and the one precision they were measured in."""

    archs: ArchBatch
    accuracy: np.ndarray
    precision: str


def read_accuracy_csv(path: str | os.PathLike) -> AccuracyData:
    """Archs and accuracies of a CSV with columns ``arch`` (OFA JSON), ``accuracy`` (0..1) and optionally
    ``precision`` (one per file; fp32 when absent), one row per distinct arch (repeats averaged)."""
    data = read_input(path)  # a regular file within the size limit: not a FIFO, not /dev/zero
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise AccuracyDataError(f"{path}: not a readable CSV ({err})",
                                "give the CSV ofa-train dataset wrote") from None
    missing = {"arch", "accuracy"} - set(frame.columns)
    if missing:
        raise AccuracyDataError(f"{path}: missing column(s) {sorted(missing)}",
                                "give a CSV with arch (OFA JSON) and accuracy (0..1), as ofa-train dataset writes")
    if frame.empty:
        raise AccuracyDataError(f"{path}: no rows under its header", "give the CSV ofa-train dataset wrote")
    precisions = sorted(set(frame["precision"].astype(str))) if "precision" in frame.columns else []
    if len(precisions) > 1 or not set(precisions) <= set(PRECISIONS):
        raise AccuracyDataError(f"{path}: the precision column holds {', '.join(precisions)}",
                                f"a dataset holds one of {', '.join(PRECISIONS)}: build one per precision")
    accuracy = pd.to_numeric(frame["accuracy"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(accuracy) & (accuracy >= 0) & (accuracy <= 1)))
    if len(bad):
        raw = frame["accuracy"].iloc[bad[0]]
        shown = repr(raw) if isinstance(raw, str) else f"{float(raw):g}"
        raise AccuracyDataError(f"{path}: line {bad[0] + 2}: accuracy {shown} is not a "
                                f"number from 0 to 1 ({len(bad)} such row(s))",
                                "accuracies are fractions (0.765, not 76.5); drop or fix those rows")
    by_arch: dict[str, tuple[Arch, list[float]]] = {}
    for i, (text, value) in enumerate(zip(frame["arch"], accuracy, strict=True)):
        try:
            arch = Arch.from_json(text)
        except (TypeError, ValueError) as err:
            raise AccuracyDataError(f"{path}: line {i + 2}: {err}", "fix that row or rebuild the dataset") from None
        by_arch.setdefault(arch.to_json(), (arch, []))[1].append(float(value))
    repeated = len(frame) - len(by_arch)
    if repeated:
        # One arch in both a training and a held-out fold flatters every score (issue 25: Kendall tau 0.29 read
        # as 0.61): each arch is one row, its accuracy the mean of its repeats.
        log.info("%s: %d repeated arch row(s) averaged into their arch's one row", path, repeated)
    return AccuracyData(ArchBatch.from_archs([arch for arch, _ in by_arch.values()]),
                        np.array([np.mean(values) for _, values in by_arch.values()], dtype=np.float64),
                        precisions[0] if precisions else "fp32")


def evaluate(model: RegressorMixin, features: np.ndarray, accuracy: np.ndarray) -> dict[str, float]:
    """Held-out RMSE and rank correlations (Kendall tau, Spearman rho) of a fitted model."""
    predicted = model.predict(features)
    return {"rmse": float(np.sqrt(np.mean((predicted - accuracy) ** 2))),
            "kendall_tau": kendall_tau(predicted, accuracy), "spearman_rho": spearman_rho(predicted, accuracy),
            "n": len(accuracy)}


class MLPAccuracyRegressor(RegressorMixin, BaseEstimator):
    """OFA's predictor MLP fitted with Adam on mean squared error.

    Args:
        hidden_sizes: Widths of the hidden layers (OFA: 400, 400, 400).
        epochs: Passes over the training set.
        lr: Adam learning rate.
        batch_size: Rows per step.
        weight_decay: Adam weight decay.
        random_state: Seed for initialisation and shuffling.
    """

    def __init__(self, hidden_sizes: Sequence[int] = (400, 400, 400), epochs: int = 200, lr: float = 1e-3,
                 batch_size: int = 256, weight_decay: float = 0.0, random_state: int = 0) -> None:
        self.hidden_sizes = hidden_sizes
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> MLPAccuracyRegressor:
        """Fit on features ``X`` of shape (n_samples, n_features) and accuracies ``y`` of shape (n_samples,)."""
        X, y = np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.float32)
        if X.ndim != 2 or len(X) != len(y) or len(y) < 2:
            raise ValueError(f"X of shape {X.shape} and y of shape {y.shape}: expected (n, n_features) and (n,), "
                             f"n >= 2")
        generator = torch.Generator().manual_seed(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            model = build_mlp(X.shape[1], tuple(self.hidden_sizes))
        # Start the output at the mean accuracy, so training refines rather than first finds the offset.
        with torch.no_grad():
            model[-1].bias.fill_(float(y.mean()))
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        features, target = torch.from_numpy(X), torch.from_numpy(y)
        for _ in range(self.epochs):
            for batch in torch.randperm(len(X), generator=generator).split(self.batch_size):
                optimizer.zero_grad()
                loss = nn.functional.mse_loss(model(features[batch])[:, 0], target[batch])
                loss.backward()
                optimizer.step()
        self.model_ = model.eval()
        self.n_features_in_ = X.shape[1]
        return self

    @torch.inference_mode()
    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_(torch.from_numpy(np.asarray(X, dtype=np.float32))).numpy()[:, 0].astype(np.float64)

    def to_predictor(self, encoding: ArchEncoding | None = None, meta: dict | None = None) -> AccuracyPredictor:
        """The fitted MLP as an :class:`AccuracyPredictor` (what the search uses; ``save`` writes it)."""
        check_is_fitted(self, "model_")
        return AccuracyPredictor(self.model_, encoding, {"trained_with": self.get_params(), **(meta or {})})


class RidgeAccuracyRegressor(RegressorMixin, BaseEstimator):
    """Ridge regression over the one-hot features: a fast, robust baseline for small datasets.

    Args:
        alpha: L2 penalty (scikit-learn's ``Ridge(alpha)``).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray) -> RidgeAccuracyRegressor:
        ridge = Ridge(alpha=self.alpha).fit(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))
        self.coef_ = ridge.coef_
        self.intercept_ = float(ridge.intercept_)
        self.n_features_in_ = ridge.n_features_in_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "coef_")
        return np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_

    def save(self, path: str | os.PathLike, encoding: ArchEncoding | None = None) -> Path:
        """Write the coefficients as JSON, with the format version and the scikit-learn version."""
        import sklearn

        check_is_fitted(self, "coef_")
        path = Path(path)
        document = {"format_version": FORMAT_VERSION, "kind": "ofa-profile accuracy predictor (ridge)",
                    "alpha": self.alpha, "coef": self.coef_.tolist(), "intercept": self.intercept_,
                    "encoding": vars(encoding or ArchEncoding()), "sklearn_version": sklearn.__version__}
        return atomic_write(path, json.dumps(document) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> RidgeAccuracyRegressor:
        document = json_loads(Path(path).read_text(encoding="utf-8"))
        if document.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {document.get('format_version')!r} is not {FORMAT_VERSION}")
        model = cls(alpha=document["alpha"])
        model.coef_ = np.asarray(document["coef"], dtype=np.float64)
        model.intercept_ = float(document["intercept"])
        model.n_features_in_ = len(model.coef_)
        return model


def train_from_csv(path: str | os.PathLike, model: RegressorMixin | None = None, test_fraction: float = 0.2,
                   seed: int = 0, encoding: ArchEncoding | None = None) -> tuple[RegressorMixin, dict[str, float]]:
    """Fit ``model`` (default: the MLP) on a random ``1 - test_fraction`` of the CSV; report on the rest."""
    batch, accuracy, _ = read_accuracy_csv(path)
    features = (encoding or ArchEncoding(n_blocks=batch.layout.n_blocks)).transform(batch)
    return fit_held_out(features, accuracy, model, test_fraction, seed, where=str(path))


def fit_held_out(features: np.ndarray, accuracy: np.ndarray, model: RegressorMixin | None = None,
                 test_fraction: float = 0.2, seed: int = 0,
                 where: str = "the data") -> tuple[RegressorMixin, dict[str, float]]:
    """Fit ``model`` (default: the MLP) on a seeded random ``1 - test_fraction`` of the rows; report on the rest."""
    if not 0 < test_fraction < 1:
        raise AccuracyDataError(f"test_fraction = {test_fraction} is not strictly between 0 and 1",
                                "give --test-fraction between 0 and 1, such as 0.2")
    order = np.random.default_rng(seed).permutation(len(accuracy))
    n_test = max(2, round(test_fraction * len(accuracy)))
    if len(accuracy) - n_test < 2:
        raise AccuracyDataError(f"{where}: {len(accuracy)} rows are too few to hold out {n_test}",
                                "measure more archs, or lower --test-fraction")
    test, train = order[:n_test], order[n_test:]
    model = model if model is not None else MLPAccuracyRegressor(random_state=seed)
    model.fit(features[train], accuracy[train])
    return model, evaluate(model, features[test], accuracy[test])


def as_predictor(model: RegressorMixin, encoding: ArchEncoding | None = None,
                 meta: dict | None = None) -> AccuracyPredictor:
    """A fitted MLP or ridge model as the :class:`AccuracyPredictor` that ``ofa-search --predictor`` loads (a
    ridge model is one linear layer: an MLP without hidden layers)."""
    if isinstance(model, MLPAccuracyRegressor):
        return model.to_predictor(encoding, meta)
    check_is_fitted(model, "coef_")
    linear = build_mlp(len(model.coef_), ())
    with torch.no_grad():
        linear[0].weight.copy_(torch.as_tensor(model.coef_, dtype=torch.float32).view(1, -1))
        linear[0].bias.fill_(model.intercept_)
    return AccuracyPredictor(linear, encoding, {"trained_with": model.get_params(), **(meta or {})})
