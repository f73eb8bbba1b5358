"""The fitting methods a :class:`~predictors.latency_model.LatencyModel` chooses among, each fitted with scikit-learn,
predicted with NumPy alone and stored as plain arrays (no pickles): ``arrays()`` gives them, ``from_arrays`` reads
them back.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .calibration import fit_calibration

__all__ = ["FLOOR_MS", "METHOD_CLASSES", "CalibratedSum", "PriorMix", "Ridge", "RidgeBoosting", "RidgeMLP", "Trees",
           "simplest_within_one_se", "sub_arrays"]

FLOOR_MS = 1e-3  # a ridge that extrapolates below zero still leaves a positive base for the residual models


class Ridge:
    """Linear in the features, least squares on relative error, penalty chosen by GCV.

    With a table (``offset`` the table sum's column), it starts from the calibrated sum and learns a relative
    correction to it, so the penalty shrinks it towards the calibrated sum rather than towards a constant. With
    priors (``priors`` their columns), it starts from their :class:`PriorMix` the same way.
    """

    def __init__(self, offset: int = -1, priors: tuple[int, ...] = ()) -> None:
        self.offset, self.priors = offset, tuple(priors)

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> Ridge:
        from sklearn.linear_model import RidgeCV

        self.mean, self.scale = _standardisation(x)
        ridge = RidgeCV(alphas=np.logspace(-4, 3, 15))
        self.line, self.mix = np.zeros(2), None
        if self.priors:
            self.mix = PriorMix(self.priors).fit(x, y, seed)
        elif self.offset >= 0:
            self.line = CalibratedSum(self.offset).fit(x, y, seed).line
        if self._based:
            ridge.fit((x - self.mean) / self.scale, y / self._base(x) - 1)
        else:
            ridge.fit((x - self.mean) / self.scale, y, sample_weight=y**-2.0)
        self.coef, self.intercept = ridge.coef_, np.asarray(ridge.intercept_)
        return self

    @property
    def _based(self) -> bool:
        return self.mix is not None or self.offset >= 0

    def _base(self, x: np.ndarray) -> np.ndarray:
        base = self.mix.predict(x) if self.mix is not None else self.line[0] * x[:, self.offset] + self.line[1]
        return np.maximum(base, FLOOR_MS)

    def predict(self, x: np.ndarray) -> np.ndarray:
        linear = (x - self.mean) / self.scale @ self.coef + self.intercept
        return np.maximum(self._base(x) * (1 + linear) if self._based else linear, FLOOR_MS)

    def arrays(self) -> dict[str, np.ndarray]:
        mix = {f"mix.{k}": v for k, v in self.mix.arrays().items()} if self.mix is not None else {}
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept,
                "offset": np.array(self.offset), "line": self.line, **mix}

    @classmethod
    def from_arrays(cls, a: Mapping[str, np.ndarray]) -> Ridge:
        ridge = cls(int(a["offset"]))
        ridge.mean, ridge.scale, ridge.coef, ridge.intercept = a["mean"], a["scale"], a["coef"], a["intercept"]
        ridge.line = a["line"]
        mix = sub_arrays(a, "mix")
        ridge.mix = PriorMix.from_arrays(mix) if mix else None
        ridge.priors = ridge.mix.columns if ridge.mix is not None else ()
        return ridge


class PriorMix:
    """Latency on a new device from other devices' predictions (the prior columns), in log space:
    ``log t = b + Σ w_j log p_j``.

    It starts from the priors' consensus. Each prior's starting weight is how likely the measured subnets are under
    the line of slope one ``log t = log p_j + b``, a device uniformly some factor slower or faster than that prior:
    the Gaussian likelihood of its residuals, normalised over the priors (Bayesian model averaging with equal odds).
    The exponents ``w`` then move away from that start under a ridge penalty ``α |w − w_start|²``, with ``α`` chosen
    by exact leave-one-out error and the one-standard-error rule over a grid that includes an infinite penalty (the
    consensus itself). So a handful of subnets keep the consensus, and each subnet more lets the mix fit a slope and
    lean on the priors that explain what the consensus misses (stacking, as in Wolpert's *Stacked generalization*
    and Breiman's *Stacked regressions*, on log latencies).

    With ``shares`` (``(numerator, denominator)`` column pairs: the network's depthwise MACs in 5x5 and in 7x7
    kernels over its MACs), each share may be one more term of the mix, ``+ c_k · share_k`` on standardised shares,
    starting at 0 under the same penalty. The same rule keeps them at 0 unless their leave-one-out error is more
    than a standard error below the priors' alone: fitted always, they raised the mix's cross-validated error on
    20 subnets of ONNX Runtime at batch 4 from 1.6% to 2.3%. A device whose large depthwise kernels cost more or
    less than every prior's, as LiteRT/XNNPACK's 7x7 kernels do here, is then one term away from the priors
    rather than a reason to drop them (README, "A new device from a few subnets: priors").
    """

    ALPHAS = (*np.logspace(-3, 4, 15), np.inf)

    def __init__(self, columns: tuple[int, ...], shares: tuple[tuple[int, int], ...] = ()) -> None:
        self.columns = tuple(int(c) for c in columns)
        self.shares = tuple((int(top), int(bottom)) for top, bottom in shares)

    def _logs(self, x: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(x[:, list(self.columns)], FLOOR_MS))

    def _shares(self, x: np.ndarray) -> np.ndarray:
        return np.stack([x[:, top] / x[:, bottom] for top, bottom in self.shares], axis=1) if self.shares else \
            np.zeros((len(x), 0))

    def _design(self, x: np.ndarray) -> np.ndarray:
        """Columns [1, log p_1, ..., standardised share_1, ...]: the first unpenalised."""
        shares = (self._shares(x) - self.share_mean) / self.share_scale
        return _with_intercept(np.concatenate([self._logs(x), shares], axis=1))

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> PriorMix:
        shares = self._shares(x)
        self.share_mean, self.share_scale = _standardisation(shares)
        logs, target = self._logs(x), np.log(y)
        self.start = _consensus(logs, target)
        design, rest = self._design(x), target - logs @ self.start
        # Simplest first: the priors alone, then with the shares; within each, the largest penalty first.
        priors_only = 1 + len(self.columns)
        squared = {(terms, alpha): _loo_errors(design[:, :terms], rest, alpha) ** 2
                   for terms in dict.fromkeys((priors_only, design.shape[1])) for alpha in reversed(self.ALPHAS)}
        terms, alpha = simplest_within_one_se(squared)
        self.alpha = float(alpha)
        self.coef = np.concatenate([[0.0], self.start, np.zeros(len(self.shares))])
        self.coef[:terms] += _solve(design[:, :terms], rest, self.alpha)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self._design(x) @ self.coef)

    def weights(self) -> np.ndarray:
        """The exponent of each prior in the fitted mix (``t ∝ Π p_j^w_j``), in column order."""
        return self.coef[1:1 + len(self.columns)]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"columns": np.array(self.columns), "start": self.start, "alpha": np.array(self.alpha),
                "coef": self.coef, "shares": np.array(self.shares, dtype=np.int64).reshape(-1, 2),
                "share_mean": self.share_mean, "share_scale": self.share_scale}

    @classmethod
    def from_arrays(cls, a: Mapping[str, np.ndarray]) -> PriorMix:
        shares = tuple(map(tuple, a["shares"])) if "shares" in a else ()  # format 4 mixed priors alone
        mix = cls(tuple(int(c) for c in np.atleast_1d(a["columns"])), shares)
        mix.share_mean = a["share_mean"] if shares else np.zeros(0)
        mix.share_scale = a["share_scale"] if shares else np.ones(0)
        mix.alpha, mix.coef = float(a["alpha"]), a["coef"]
        if "best" in a:  # format 3 stored the best prior's line and the others' scaled departures from it
            best = int(a["best"])
            with np.errstate(divide="ignore", invalid="ignore"):  # format 3 never stored a zero scale
                others = a["coef"][2:] / a["scale"]
            mix.coef = np.concatenate([a["coef"][:1], np.insert(others, best, a["coef"][1] - others.sum())])
            if not np.isfinite(mix.coef).all():
                raise ValueError("a prior mix with a zero scale")
            mix.start = np.eye(len(mix.columns))[best]
        else:
            mix.start = a["start"]
        return mix


def simplest_within_one_se(errors: Mapping[Any, Sequence[float]]) -> Any:
    """The first key (keys ordered from the simplest model) whose mean error is within one standard error of the
    smallest mean: differences smaller than the errors' own spread are noise, and the simpler model extrapolates
    more safely (the one-standard-error rule of Breiman et al., *Classification and Regression Trees*)."""
    means = {key: float(np.mean(values)) for key, values in errors.items()}
    best = errors[min(means, key=means.get)]
    bound = min(means.values()) + (float(np.std(best, ddof=1) / np.sqrt(len(best))) if len(best) > 1 else 0.0)
    return next(key for key in errors if means[key] <= bound)


def _standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation, a constant column's taken as 1 so that it standardises to 0."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    return mean, scale


def _consensus(logs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Each prior's likelihood as the line of slope one through the measured subnets, normalised: the mean squared
    residual about the best offset, to the power ``-n/2`` (floored, so a prior that fits exactly is not a 0/0)."""
    spread = np.maximum(np.var(target[:, None] - logs, axis=0), 1e-12)
    likelihood = np.exp(-len(target) / 2 * np.log(spread / spread.min()))
    return likelihood / likelihood.sum()


def _with_intercept(logs: np.ndarray) -> np.ndarray:
    """Columns [1, log p_1, ...]: the first unpenalised."""
    return np.concatenate([np.ones((len(logs), 1)), logs], axis=1)


def _penalty(design: np.ndarray, alpha: float) -> np.ndarray:
    """The ridge penalty on all but the intercept; an infinite one keeps the start (a tiny ridge keeps the intercept
    solvable)."""
    diagonal = np.full(design.shape[1], 1e-9)
    diagonal[1:] = 1e12 if np.isinf(alpha) else alpha
    return np.diag(diagonal)


def _solve(design: np.ndarray, target: np.ndarray, alpha: float) -> np.ndarray:
    return np.linalg.solve(design.T @ design + _penalty(design, alpha), design.T @ target)


def _loo_errors(design: np.ndarray, target: np.ndarray, alpha: float) -> np.ndarray:
    """Leave-one-out residuals of the penalised least squares fit, exactly, from its hat matrix."""
    inverse = np.linalg.inv(design.T @ design + _penalty(design, alpha))
    leverage = np.einsum("ij,jk,ik->i", design, inverse, design)
    residual = target - design @ (inverse @ design.T @ target)
    return residual / np.maximum(1 - leverage, 1e-6)


class CalibratedSum:
    """``a · table sum + b``, fitted as ``ofa-profile --calibrate`` fits it."""

    def __init__(self, column: int) -> None:
        self.column = column

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> CalibratedSum:
        fit = fit_calibration(x[:, self.column], y)
        self.line = np.array([fit.a, fit.b])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.line[0] * x[:, self.column] + self.line[1]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"line": self.line, "column": np.array(self.column)}

    @classmethod
    def from_arrays(cls, a: Mapping[str, np.ndarray]) -> CalibratedSum:
        model = cls(int(a["column"]))
        model.line = a["line"]
        return model


class Trees:
    """Gradient-boosted regression trees as complete binary trees of one depth, walked for all trees at once.

    A leaf above the full depth becomes a split that always goes left with the leaf's value on both sides, so
    every tree is three flat arrays and prediction is ``depth`` vectorised steps. Inputs are compared in float32
    as scikit-learn's trees compare them, so the predictions equal its own.
    """

    def __init__(self, depth: int, init: float, feature: np.ndarray, threshold: np.ndarray, leaf: np.ndarray):
        self.depth, self.init = depth, float(init)
        self.feature, self.threshold, self.leaf = feature, threshold, leaf

    @classmethod
    def from_sklearn(cls, model, x_example: np.ndarray) -> Trees:
        depth = int(model.max_depth)
        n_inner = 2**depth - 1
        trees = model.estimators_[:, 0]
        feature = np.zeros((len(trees), n_inner), dtype=np.intp)
        threshold = np.full((len(trees), n_inner), np.inf)
        leaf = np.zeros((len(trees), 2**depth))
        for t, estimator in enumerate(trees):
            tree = estimator.tree_
            stack = [(0, 0, 0)]  # (sklearn node, position in the complete tree, level)
            while stack:
                node, position, level = stack.pop()
                if level == depth:
                    leaf[t, position - n_inner] = tree.value[node, 0, 0] * model.learning_rate
                    continue
                left, right = tree.children_left[node], tree.children_right[node]
                if left == -1:  # a leaf above the full depth: both sides carry its value
                    left = right = node
                else:
                    feature[t, position], threshold[t, position] = tree.feature[node], tree.threshold[node]
                stack += [(left, 2 * position + 1, level + 1), (right, 2 * position + 2, level + 1)]
        init = float(np.ravel(model.init_.predict(x_example[:1]))[0])
        return cls(depth, init, feature, threshold, leaf)

    def predict(self, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
        x = x.astype(np.float32).astype(np.float64)
        out = np.empty(len(x))
        trees = np.arange(len(self.feature))
        for start in range(0, len(x), chunk):
            part = x[start:start + chunk]
            position = np.zeros((len(part), len(trees)), dtype=np.intp)
            for _ in range(self.depth):
                values = np.take_along_axis(part, self.feature[trees, position], axis=1)
                position = 2 * position + 1 + (values > self.threshold[trees, position])
            out[start:start + chunk] = self.init + self.leaf[trees, position - (2**self.depth - 1)].sum(axis=1)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"depth": np.array(self.depth), "init": np.array(self.init), "feature": self.feature,
                "threshold": self.threshold, "leaf": self.leaf}

    @classmethod
    def from_arrays(cls, a: Mapping[str, np.ndarray]) -> Trees:
        return cls(int(a["depth"]), float(a["init"]), a["feature"], a["threshold"], a["leaf"])


class RidgeBoosting:
    """The ridge, times ``exp`` of boosted trees fitted on its log-residuals."""

    def __init__(self, offset: int = -1) -> None:
        self.offset = offset

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> RidgeBoosting:
        from sklearn.ensemble import GradientBoostingRegressor

        self.ridge = Ridge(self.offset).fit(x, y, seed)
        boost = GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.05, subsample=0.8,
                                          random_state=seed).fit(x, np.log(y / self.ridge.predict(x)))
        self.trees = Trees.from_sklearn(boost, x)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.ridge.predict(x) * np.exp(self.trees.predict(x))

    def arrays(self) -> dict[str, np.ndarray]:
        return {**{f"ridge.{k}": v for k, v in self.ridge.arrays().items()},
                **{f"trees.{k}": v for k, v in self.trees.arrays().items()}}

    @classmethod
    def from_arrays(cls, a: Mapping[str, np.ndarray]) -> RidgeBoosting:
        model = cls()
        model.ridge, model.trees = Ridge.from_arrays(sub_arrays(a, "ridge")), Trees.from_arrays(sub_arrays(a, "trees"))
        model.offset = model.ridge.offset
        return model


class RidgeMLP:
    """The ridge, times ``exp`` of a one-hidden-layer MLP fitted on its log-residuals, from the features and OFA's
    arch encoding (columns past ``n_base``)."""

    def __init__(self, n_base: int, offset: int = -1) -> None:
        self.n_base, self.offset = n_base, offset

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> RidgeMLP:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        self.ridge = Ridge(self.offset).fit(x[:, :self.n_base], y, seed)
        residual = np.log(y / self.ridge.predict(x[:, :self.n_base]))
        self.mean, self.scale = _standardisation(x)
        self.target = np.array([residual.mean(), residual.std() or 1.0])
        mlp = MLPRegressor(hidden_layer_sizes=(32,), alpha=1.0, solver="lbfgs", max_iter=2000, random_state=seed)
        with warnings.catch_warnings():  # lbfgs stopping at max_iter is the intended early stop, not a failure
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp.fit((x - self.mean) / self.scale, (residual - self.target[0]) / self.target[1])
        self.weights = [w for pair in zip(mlp.coefs_, mlp.intercepts_, strict=True) for w in pair]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        first = self.weights[0] / self.scale[:, None]  # the standardisation, folded into the first layer
        h = x @ first + (self.weights[1] - (self.mean / self.scale) @ self.weights[0])
        for i in range(2, len(self.weights), 2):
            h = np.maximum(h, 0) @ self.weights[i] + self.weights[i + 1]
        return self.ridge.predict(x[:, :self.n_base]) * np.exp(h[:, 0] * self.target[1] + self.target[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {**{f"ridge.{k}": v for k, v in self.ridge.arrays().items()}, "n_base": np.array(self.n_base),
                "mean": self.mean, "scale": self.scale, "target": self.target,
                **{f"layer{i}": w for i, w in enumerate(self.weights)}}

    @classmethod
    def from_arrays(cls, a: Mapping[str, np.ndarray]) -> RidgeMLP:
        model = cls(int(a["n_base"]))
        model.ridge = Ridge.from_arrays(sub_arrays(a, "ridge"))
        model.offset = model.ridge.offset
        model.mean, model.scale, model.target = a["mean"], a["scale"], a["target"]
        model.weights = [a[f"layer{i}"] for i in range(sum(k.startswith("layer") for k in a))]
        return model


def sub_arrays(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}


METHOD_CLASSES = {"calibrated-sum": CalibratedSum, "priors": PriorMix, "ridge": Ridge, "priors+ridge": Ridge,
                  "ridge+boosting": RidgeBoosting, "ridge+mlp": RidgeMLP}
