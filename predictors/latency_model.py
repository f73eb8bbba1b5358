"""Latency models fitted on whole subnets measured on a device, for devices where table sums do not add up.

A table sum assumes a network's units add up; GPUs, batched runs and NPUs fuse, overlap and batch work, and there
the sum misses. :class:`LatencyModel` learns latency from a few dozen whole subnets measured on the device
(``ofa-profile --subnets random:N``), with or without a table, choosing among a few fitting methods by
cross-validation:

- ``calibrated-sum``: ``a · table sum + b``, the table's calibration (only with a table);
- ``ridge``: a linear model on the per-stage features of :mod:`predictors.latency_features` (and the table's
  sums), fitted for relative error: latency as a learned sum of per-stage work and traffic;
- ``ridge+boosting``: gradient-boosted trees on what the ridge leaves, as a factor;
- ``ridge+mlp``: a small MLP on what the ridge leaves, with OFA's 128-dim arch encoding among its inputs.

With priors (other devices' tables or models, :class:`Prior`), a new device needs only a few measured subnets:

- ``priors``: the priors' predictions mixed in log space, starting from their consensus, with a term for each
  depthwise kernel size's share of the subnet's MACs (:class:`~predictors.latency_methods.PriorMix`);
- ``priors+ridge``: the ridge, starting from that mix instead of from a constant.

scikit-learn fits them; predictions run in NumPy alone, and the saved model is two plain files (JSON and npz,
no pickles) with a format version.

The same methods learn a subnet's peak memory (``ofa-fit memory``): memory, like latency on fusing hardware, is a
property of the whole network, measured on whole subnets; the saved model then states ``quantity: memory_mb``.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from supernet.arch import Arch, ArchSpace
from supernet.errors import OFAProfileError, raise_if_stopped
from supernet.files import atomic_write, json_loads, read_input, stem_of
from supernet.plan import MOBILENETV3, Family, family_named, family_of

from ._additive import AdditiveCost
from .accuracy import ArchEncoding
from .archs import ArchBatch
from .latency import LatencyResult
from .latency_features import KERNEL_FEATURES, ArchFeatures
from .latency_methods import (
    METHOD_CLASSES,
    CalibratedSum,
    PriorMix,
    Ridge,
    RidgeMLP,
    simplest_within_one_se,
    sub_arrays,
)
from .ranks import spearman_rho

__all__ = ["FORMAT_VERSION", "METHODS", "PRIOR_METHODS", "QUANTITIES", "LatencyModel", "LatencyModelError", "Prior",
           "latency_metrics"]

FORMAT = "ofa-profile latency model"
FORMAT_VERSION = 5  # 2: models with priors; 3: the fitting method under "method" (before, "family"); 4: a prior mix
# stores its exponents and start (before, the best prior's line and scaled departures: still read); 5: a prior mix
# may fit the depthwise kernels' shares of the MACs (format 4 mixes, without them, are still read)
METHODS = ("calibrated-sum", "priors", "ridge", "priors+ridge", "ridge+boosting", "ridge+mlp")
PRIOR_METHODS = ("priors", "priors+ridge")  # only with priors
_MIN_SUBNETS = 5
# Measured values a device can give, in ms or MB (1 ns to 11 days): beyond them the fits lose all precision.
_PLAUSIBLE = (1e-6, 1e9)
_CHUNK = 1 << 15  # archs per prediction step
_SUFFIXES = (".json", ".npz")  # a model's two files
# What a model predicts (its meta's ``quantity``), and the word its messages use.
QUANTITIES = {"latency_ms": "latency", "memory_mb": "memory"}


class LatencyModelError(OFAProfileError, ValueError):
    """A latency model that cannot be fitted, read or used; the message says what to do."""


def latency_metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Share within ±10% and ±5%, Spearman rank correlation, RMS, mean, 5% and 95% quantile of the relative error
    ``predicted / measured - 1`` (all but Spearman in percent)."""
    error = np.asarray(predicted, float) / np.asarray(measured, float) - 1
    rho = spearman_rho(predicted, measured)
    low, high = np.quantile(error, [0.05, 0.95]) if len(error) else (math.nan, math.nan)
    return {"within_10_pct": float(np.mean(np.abs(error) <= 0.10) * 100),
            "error_p5_pct": float(low * 100), "error_p95_pct": float(high * 100),
            "within_5_pct": float(np.mean(np.abs(error) <= 0.05) * 100),
            "spearman_rho": float(rho), "rms_pct": float(np.sqrt(np.mean(error**2)) * 100),
            "mean_error_pct": float(np.mean(error) * 100), "n": len(error)}


@dataclasses.dataclass(frozen=True)
class Prior:
    """Another device's latency that a few-shot model starts from: a table's raw sums or a latency model.

    Attributes:
        name: What reports call it (the file's stem, or the shipped prior's name).
        sha256: The content hash of its file(s), recorded in every model fitted with it.
        source: Where it came from (a path, or the shipped prior's provenance).
        predictor: The table's :class:`~predictors._additive.AdditiveCost` or the :class:`LatencyModel`.
        family, width_mult: The supernet it predicts for.
    """

    name: str
    sha256: str
    source: str
    predictor: AdditiveCost | LatencyModel
    family: Family
    width_mult: float

    @property
    def kind(self) -> str:
        return "table" if isinstance(self.predictor, AdditiveCost) else "model"

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Table priors: the table's resolutions; model priors: those they were fitted on (they predict between)."""
        return tuple(self.predictor.resolutions if self.kind == "table" else self.predictor.resolutions_)

    def covers(self, r: int) -> bool:
        if self.kind == "table":
            return r in self.resolutions
        return self.resolutions[0] <= r <= self.resolutions[-1]

    def predict(self, batch: ArchBatch) -> np.ndarray:
        return self.predictor.total(batch) if self.kind == "table" else self.predictor.predict(batch)

    def check(self, family: Family, width_mult: float, resolutions: Iterable[int] = (),
              fix: str = "give priors that cover the subnets' resolutions") -> None:
        """Refuse, in one line, subnets this prior cannot predict: another supernet or width, or a resolution it
        does not cover (``fix`` says what to do about that one)."""
        if self.family != family or self.width_mult != width_mult:
            raise LatencyModelError(f"prior {self.name} is for {self.family.name} w{self.width_mult:g}, the subnets "
                                    f"are {family.name} w{width_mult:g}",
                                    f"give priors of the supernet the subnets came from (or --width "
                                    f"{self.width_mult:g} for this one)")
        missing = sorted({int(r) for r in resolutions if not self.covers(int(r))})
        if missing:
            raise LatencyModelError(f"prior {self.name} has no latency at resolution {missing[0]} (it covers "
                                    f"{list(self.resolutions)})", fix)

    def provenance(self) -> dict[str, Any]:
        """What a model fitted with it records: name, kind, hash, source, and what the prior itself states."""
        stated = {"resolutions": list(self.resolutions)}
        if self.kind == "model":
            stated["description"] = self.predictor.describe()
        return {"name": self.name, "kind": self.kind, "sha256": self.sha256, "source": self.source, **stated}


# --- the model users fit, save, load and predict with -----------------------------------------------------------
class LatencyModel:
    """Latency of archs learned from whole subnets measured on one device, with scikit-learn's habits.

    Args:
        method: One of :data:`METHODS`, or ``"auto"``: the simplest method whose cross-validated RMS relative
            error is within one standard error (over the folds) of the best one's (``calibrated-sum`` only with a
            table; with one, every other method starts from the calibrated sum).
        table: A :class:`~predictors.latency.LatencyPredictor` (its raw sums become features), or None.
        width_mult: Supernet width; default the table's (required without a table).
        n_classes: Classifier outputs of the measured subnets (recorded, and checked against the table's).
        cv: Folds of the cross-validation that compares methods.
        random_state: Seed of the folds and of the boosted trees and MLP.
        priors: Other devices' :class:`Prior` s, of the same supernet: their predictions become the
            ``priors`` and ``priors+ridge`` methods' inputs, so a few measured subnets suffice.

    Attributes (after :meth:`fit`):
        method_: The method kept. cv_report_: Per method, its cross-validated :func:`latency_metrics`.
        meta_: Where its data came from (``fitted_on``, ``table``, ``anchor_ms``: the reference latency the
            measurements are stated at), as :meth:`save` was given it.
        resolutions_: The resolutions it was fitted on. It predicts any resolution between the smallest and the
            largest (the features are smooth in r), but the search keeps to these, as it keeps to a table's.

    Example:
        >>> model = LatencyModel(width_mult=1.0).fit(archs, measured_ms)   # doctest: +SKIP
        >>> model.save("runs/local-ort.latency")                           # doctest: +SKIP
        >>> LatencyModel.load("runs/local-ort.latency").predict(archs)     # doctest: +SKIP
    """

    def __init__(self, method: str = "auto", table=None, width_mult: float | None = None,
                 n_classes: int | None = None, cv: int = 5, random_state: int = 0,
                 priors: Sequence[Prior] = ()) -> None:
        self.method = method
        self.table = table
        self.width_mult = width_mult
        self.n_classes = n_classes
        self.cv = cv
        self.random_state = random_state
        self.priors = priors

    # --- fitting ---------------------------------------------------------------------------------------------
    def _setup(self, family: Family) -> None:
        if self.method != "auto" and self.method not in METHODS:
            raise LatencyModelError(f"unknown fitting method {self.method!r}", f"choose auto or one of {METHODS}")
        if self.method == "calibrated-sum" and self.table is None:
            raise LatencyModelError("the calibrated-sum method needs a table", "give a table, or another method")
        if self.method in PRIOR_METHODS and not self.priors:
            raise LatencyModelError(f"the {self.method} method needs priors", "give --prior, or another method")
        if self.priors and self.table is not None:
            raise LatencyModelError("a model starts from the device's own table or from other devices' priors, "
                                    "not both", "drop the table, or the priors")
        width, n_classes = self.width_mult, self.n_classes
        if self.table is not None:
            if self.table.family != family:
                raise LatencyModelError(f"the table is for the {self.table.family.name} space, the subnets are "
                                        f"{family.name} ones", "use a table of the supernet the subnets came from")
            for name, given, stated in (("width", width, self.table.width_mult),
                                        ("classes", n_classes, self.table.n_classes)):
                if given is not None and float(given) != float(stated):
                    raise LatencyModelError(f"the table is for {name} {stated}, the subnets for {given}",
                                            "use a table of the supernet the subnets came from")
            width, n_classes = self.table.width_mult, self.table.n_classes
        if width is None:
            widths = " or ".join(str(w) for w in family.released_widths)
            raise LatencyModelError("no supernet width: a model without a table needs one",
                                    f"give --width ({widths} for the released {family.name} supernets)")
        self.family_, self.width_mult_, self.n_classes_ = family, float(width), int(n_classes or 1000)
        self.priors_ = tuple(self.priors)
        cost = self.table.cost if self.table is not None else None
        self.features_ = ArchFeatures(self.width_mult_, cost, family.layout)

    def fit(self, archs: ArchBatch | Iterable[Arch], measured_ms: Sequence[float]) -> LatencyModel:
        """Compare the methods by cross-validation, keep the best, and refit it on every subnet."""
        from sklearn.model_selection import KFold

        batch = ArchBatch.coerce(archs)
        self._setup(family_of(batch.layout))
        self._check_priors_cover(batch, "give priors that cover the measured subnets' resolutions")
        y = np.asarray(measured_ms, dtype=float)
        if len(y) != len(batch):
            raise LatencyModelError(f"{len(batch)} archs but {len(y)} latencies")
        if len(y) < _MIN_SUBNETS:
            raise LatencyModelError(f"a latency model needs at least {_MIN_SUBNETS} measured subnets, got {len(y)}",
                                    "measure more: ofa-profile --subnets random:50")
        implausible = np.flatnonzero(~((y >= _PLAUSIBLE[0]) & (y <= _PLAUSIBLE[1])))  # NaN included
        if len(implausible):
            first = implausible[0]
            raise LatencyModelError(
                f"measured value {float(y[first])!r} (measurement {first + 1} of {len(y)}) is not a time in ms or a "
                f"size in MB: values must lie between {_PLAUSIBLE[0]:g} and {_PLAUSIBLE[1]:g}",
                "fix or drop those rows")
        methods = [self.method] if self.method != "auto" else [
            f for f in METHODS if (f != "calibrated-sum" or self.table is not None)
            and (f not in PRIOR_METHODS or self.priors_)]
        self.encoding_ = ArchEncoding.for_resolutions(batch.r.tolist(), batch.layout.n_blocks)
        inputs = {f: self._inputs(batch, f) for f in methods}
        folds = KFold(n_splits=min(self.cv, len(y)), shuffle=True, random_state=self.random_state)
        self.cv_report_ = {}
        for method in methods:
            x, held_out, fold_rms = inputs[method], np.empty_like(y), []
            for train, test in folds.split(x):
                raise_if_stopped()
                estimator = self._estimator(method).fit(x[train], y[train], self.random_state)
                held_out[test] = estimator.predict(x[test])
                fold_rms.append(float(np.sqrt(np.mean((held_out[test] / y[test] - 1) ** 2)) * 100))
            self.cv_report_[method] = {**latency_metrics(held_out, y), "fold_rms_pct": fold_rms}
        self.method_ = simplest_within_one_se(  # METHODS lists the simplest first
            {method: self.cv_report_[method]["fold_rms_pct"] for method in METHODS if method in self.cv_report_})
        self.estimator_ = self._estimator(self.method_).fit(inputs[self.method_], y, self.random_state)
        self.train_batch_, self.train_ms_ = batch, y
        self.resolutions_ = tuple(sorted({int(r) for r in batch.r}))
        self.meta_ = {}
        return self

    def _check_priors_cover(self, batch: ArchBatch, fix: str) -> None:
        for prior in self.priors_:
            prior.check(self.family_, self.width_mult_, batch.r.tolist(), fix)

    def _estimator(self, method: str):
        names = self.features_.names
        offset = names.index("table_sum_ms") if "table_sum_ms" in names else -1
        priors = tuple(range(len(names), len(names) + len(self.priors_)))
        if method == "calibrated-sum":
            return CalibratedSum(offset)
        if method == "priors":
            return PriorMix(priors, tuple((names.index(k), names.index("macs_m")) for k in KERNEL_FEATURES
                                          if k in names))
        if method == "priors+ridge":
            return Ridge(priors=priors)
        if method == "ridge+mlp":
            return RidgeMLP(len(names), offset)
        return METHOD_CLASSES[method](offset)

    def _inputs(self, batch: ArchBatch, method: str) -> np.ndarray:
        """The features a method reads: the arch's (and the table's), then the priors' predictions or OFA's arch
        encoding."""
        parts = [self.features_.transform(batch)]
        if method in PRIOR_METHODS:
            parts += [np.stack([p.predict(batch) for p in self.priors_], axis=1)]
        elif method == "ridge+mlp":
            parts += [self.encoding_.transform(batch)]
        return np.concatenate(parts, axis=1)

    # --- predicting ------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "estimator_"):
            raise LatencyModelError("this latency model is not fitted", "call fit() or LatencyModel.load()")

    def predict(self, archs: ArchBatch | Iterable[Arch]) -> np.ndarray:
        """Latency in ms of each arch, shape (n,)."""
        self._check_fitted()
        batch = ArchBatch.coerce(archs)
        if len(batch) and batch.layout != self.family_.layout:
            raise LatencyModelError(f"this latency model was fitted on {self.family_.name} subnets, not "
                                    f"{batch.layout.family} ones", "fit one on subnets of that space")
        lo, hi = self.resolutions_[0], self.resolutions_[-1]
        outside = sorted({int(r) for r in batch.r if not lo <= r <= hi})
        if outside:
            raise LatencyModelError(f"resolution(s) {outside} lie outside {lo}..{hi}, where this model was fitted",
                                    "measure subnets at those resolutions and fit again")
        if self.method_ in PRIOR_METHODS:
            self._check_priors_cover(batch, "search at the resolutions the priors cover")
        out = np.empty(len(batch))
        for start in range(0, len(batch), _CHUNK):  # chunks keep the feature matrices in cache, not in GBs
            part = batch[slice(start, start + _CHUNK)]
            out[start:start + _CHUNK] = self.estimator_.predict(self._inputs(part, self.method_))
        return out

    def predict_result(self, archs: ArchBatch | Iterable[Arch]) -> LatencyResult:
        """Predictions with an interval: where the measured latency fell, relative to held-out predictions, for
        90% of the cross-validation's subnets."""
        predicted = self.predict(archs)
        m = self.cv_report_[self.method_]
        low, high = predicted / (1 + m["error_p95_pct"] / 100), predicted / (1 + m["error_p5_pct"] / 100)
        return LatencyResult(predicted, np.zeros(len(predicted), dtype=bool), predicted, low, high, calibrated=True)

    def supported_resolutions(self, space: ArchSpace | None = None) -> tuple[int, ...]:
        """Resolutions of ``space`` it was fitted on (a table's model only fits on the table's resolutions)."""
        self._check_fitted()
        space = space or ArchSpace.for_width(self.width_mult_, self.family_.layout)
        priors = self.priors_ if self.method_ in PRIOR_METHODS else ()
        return tuple(r for r in space.resolutions if r in self.resolutions_ and all(p.covers(r) for p in priors))

    @property
    def family(self) -> Family:
        self._check_fitted()
        return self.family_

    @property
    def width(self) -> float:
        self._check_fitted()
        return self.width_mult_

    @property
    def classes(self) -> int:
        self._check_fitted()
        return self.n_classes_

    @property
    def precision(self) -> str:
        """The precision of the subnets it was fitted on (as ``ofa-fit`` records it; older models: fp32)."""
        self._check_fitted()
        return self.meta_.get("precision") or "fp32"

    def report(self) -> dict[str, Any]:
        """What its latency is, for reports: the method kept, how it cross-validated, how many subnets it saw."""
        self._check_fitted()
        return {"fitted_model": self.method_, "cross_validation": self.cv_report_[self.method_],
                "n_train": len(self.train_ms_), "description": self.describe()}

    @property
    def quantity(self) -> str:
        """What it predicts: ``latency_ms``, or ``memory_mb`` for a model ``ofa-fit memory`` saved."""
        return str(getattr(self, "meta_", {}).get("quantity", "latency_ms"))

    def describe(self) -> str:
        """One line for logs: the method, what it was fitted on, and its cross-validated accuracy."""
        self._check_fitted()
        m = self.cv_report_[self.method_]
        table = " with a table" if self.features_.table_cost is not None else ""
        if self.method_ in PRIOR_METHODS:
            table = f" from {len(self.priors_)} prior(s) ({', '.join(p.name for p in self.priors_)})"
        return (f"{QUANTITIES[self.quantity]} model {self.method_}{table}, fitted on "
                f"{len(self.train_ms_)} measured {self.family_.name} "
                f"w{self.width_mult_:g} subnets: "
                f"cross-validated {m['within_10_pct']:.0f}% within ±10%, {m['within_5_pct']:.0f}% within ±5%, "
                f"Spearman {m['spearman_rho']:.3f}")

    # --- files -----------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
        """Write ``PATH.json`` (what it is, how it cross-validated, ``meta``: where its data came from) and
        ``PATH.npz`` (its arrays)."""
        import io

        self._check_fitted()
        stem = stem_of(path, _SUFFIXES)
        document, arrays = self._stored()
        document["meta"] = {**document["meta"], **(meta or {})}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        json_path, npz_path = _files(stem)
        atomic_write(npz_path, buffer.getvalue())
        atomic_write(json_path, json.dumps(document, indent=2) + "\n")
        return json_path, npz_path

    def _stored(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The JSON document and the arrays of this model, its priors' nested under ``priors`` and ``priorN.``."""
        arrays = {f"estimator.{k}": np.asarray(v) for k, v in self.estimator_.arrays().items()}
        cost = self.features_.table_cost
        if cost is not None:
            arrays |= _cost_arrays(cost, "table")
        b = self.train_batch_
        arrays |= {"train.ks": b.ks, "train.e": b.e, "train.d": b.d, "train.r": b.r, "train.ms": self.train_ms_}
        priors = []
        for i, prior in enumerate(self.priors_):
            entry = {**prior.provenance(), "space": prior.family.name, "width_mult": prior.width_mult}
            if prior.kind == "table":
                arrays |= _cost_arrays(prior.predictor, f"prior{i}")
            else:
                entry["model"], nested = prior.predictor._stored()
                arrays |= {f"prior{i}.{k}": v for k, v in nested.items()}
            priors.append(entry)
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, "method": self.method_,
                    "space": self.family_.name, "width_mult": self.width_mult_, "n_classes": self.n_classes_,
                    "resolutions": list(self.resolutions_), "features": self.features_.names,
                    "with_table": cost is not None, "n_train": len(self.train_ms_), "cv_folds": self.cv,
                    "random_state": self.random_state, "cross_validation": self.cv_report_,
                    "encoding": dataclasses.asdict(self.encoding_), "priors": priors, "meta": dict(self.meta_)}
        return document, arrays

    @classmethod
    def load(cls, path: str | os.PathLike, quantity: str | None = None) -> LatencyModel:
        """Read a model :meth:`save` wrote; refuses files of a newer format or of other features, and with
        ``quantity``, a model of another quantity (a memory model given where latency is searched)."""
        model = cls._load(path)
        if quantity is not None and model.quantity != quantity:
            raise LatencyModelError(f"{stem_of(path, _SUFFIXES)} is a {QUANTITIES[model.quantity]} model, not a "
                                    f"{QUANTITIES[quantity]} one", f"give a model of ofa-fit {QUANTITIES[quantity]}")
        return model

    @classmethod
    def _load(cls, path: str | os.PathLike) -> LatencyModel:
        stem = stem_of(path, _SUFFIXES)
        try:
            json_path, npz_path = _files(stem)
            document = json_loads(read_input(json_path))
            with np.load(io.BytesIO(read_input(npz_path)), allow_pickle=False) as stored:
                arrays = dict(stored)
        except FileNotFoundError as err:
            raise LatencyModelError(f"{err.filename}: no such file", "fit one with ofa-fit latency") from None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise LatencyModelError(f"{stem}: not a readable latency model ({err})", "fit it again") from None
        if not isinstance(document, dict):
            raise LatencyModelError(f"{stem}.json is not an ofa-profile latency model", "give the --out of ofa-fit")
        # Trees mark a split that always goes left with an infinite threshold, and a prior mix that is the plain line
        # has an infinite penalty; nothing else may be other than finite.
        damaged = [name for name, array in arrays.items() if array.dtype.kind == "f" and (
            np.isnan(array).any() or (not name.endswith((".threshold", ".alpha")) and np.isinf(array).any()))]
        if damaged:
            raise LatencyModelError(f"{stem}.npz: {damaged[0]} holds values that are not finite numbers",
                                    "the file is damaged: fit the model again")
        try:
            model = cls._from_stored(stem, document, arrays)
            # What predictions and reports read, used once here: a damaged field fails now, naming the file, not
            # at the first search.
            model.predict_result(model.train_batch_[slice(0, 1)])
            model.describe()
            return model
        except LatencyModelError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise LatencyModelError(f"{stem}: a field of the model is missing or damaged ({type(err).__name__}: "
                                    f"{err})", "fit the model again") from None

    @classmethod
    def _from_stored(cls, stem: Path, document: dict[str, Any], arrays: dict[str, np.ndarray]) -> LatencyModel:
        if document.get("format") != FORMAT:
            raise LatencyModelError(f"{stem}.json is not an ofa-profile latency model", "give the --out of ofa-fit")
        version = document.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise LatencyModelError(f"{stem}.json has format version {version}, newer than this ofa-profile reads "
                                    f"({FORMAT_VERSION})", "upgrade ofa-profile, or fit the model again")
        method = document["method"] if version >= 3 else document["family"]
        model = cls(method=method, cv=document["cv_folds"], random_state=document["random_state"])
        cost = _cost_from(sub_arrays(arrays, "table")) if document["with_table"] else None
        model.priors_ = tuple(cls._prior_from_stored(stem, entry, sub_arrays(arrays, f"prior{i}"))
                              for i, entry in enumerate(document.get("priors") or []))
        try:  # files from before ProxylessNAS name no family ("space"): they are MobileNetV3's
            model.family_ = family_named(document.get("space", MOBILENETV3.name))
        except ValueError as err:
            raise LatencyModelError(f"{stem}.json: {err}", "upgrade ofa-profile, or fit the model again") from None
        model.width_mult_, model.n_classes_ = float(document["width_mult"]), int(document["n_classes"])
        model.features_ = ArchFeatures(model.width_mult_, cost, model.family_.layout,
                                       by_kernel=KERNEL_FEATURES[0] in document["features"])
        if model.features_.names != document["features"]:
            raise LatencyModelError(f"{stem}.json was fitted on other features than this ofa-profile computes",
                                    "fit the model again with this version")
        model.method_, model.cv_report_ = method, document["cross_validation"]
        model.resolutions_ = tuple(document["resolutions"])
        if not (model.resolutions_ and all(isinstance(r, int) and r > 0 for r in model.resolutions_)
                and list(model.resolutions_) == sorted(model.resolutions_)):
            raise ValueError(f"resolutions {document['resolutions']!r} are not positive integers, in order")
        if not (math.isfinite(model.width_mult_) and model.width_mult_ > 0 and model.n_classes_ > 0):
            raise ValueError(f"width {model.width_mult_} and classes {model.n_classes_} must be positive")
        model.encoding_ = ArchEncoding(**document["encoding"])
        model.estimator_ = METHOD_CLASSES[model.method_].from_arrays(sub_arrays(arrays, "estimator"))
        model.train_batch_ = ArchBatch(arrays["train.ks"], arrays["train.e"], arrays["train.d"], arrays["train.r"])
        model.train_ms_ = arrays["train.ms"]
        model.meta_ = dict(document.get("meta") or {})
        if model.quantity not in QUANTITIES:
            raise ValueError(f"quantity {model.quantity!r} is none of {sorted(QUANTITIES)}")
        return model

    @classmethod
    def _prior_from_stored(cls, stem: Path, entry: dict[str, Any], arrays: dict[str, np.ndarray]) -> Prior:
        if entry["kind"] == "table":
            predictor: AdditiveCost | LatencyModel = _cost_from(arrays)
        else:
            predictor = cls._from_stored(stem, entry["model"], arrays)
        return Prior(str(entry["name"]), str(entry["sha256"]), str(entry["source"]), predictor,
                     family_named(entry["space"]), float(entry["width_mult"]))

    def fitted_on(self) -> tuple[ArchBatch, np.ndarray]:
        """The whole subnets this model was fitted on and their measured latencies (at its anchor)."""
        self._check_fitted()
        return self.train_batch_, self.train_ms_

    def refit(self, archs: ArchBatch | Iterable[Arch], measured_ms: Sequence[float]) -> LatencyModel:
        """A model of the same method fitted on its own subnets plus these (the closed loop's new measurements)."""
        self._check_fitted()
        batch = ArchBatch.concat([self.train_batch_, ArchBatch.coerce(archs)])
        y = np.concatenate([self.train_ms_, np.asarray(measured_ms, dtype=float)])
        model = copy.copy(self)
        x = self._inputs(batch, self.method_)
        model.estimator_ = self._estimator(self.method_).fit(x, y, self.random_state)
        model.train_batch_, model.train_ms_ = batch, y
        model.resolutions_ = tuple(sorted({int(r) for r in batch.r}))
        return model


def _cost_arrays(cost: AdditiveCost, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.resolutions": np.asarray(cost.resolutions), f"{prefix}.fixed": cost.fixed,
            f"{prefix}.block": cost.block}


def _cost_from(arrays: Mapping[str, np.ndarray]) -> AdditiveCost:
    return AdditiveCost(arrays["resolutions"], arrays["fixed"], arrays["block"])


def _files(stem: Path) -> tuple[Path, Path]:
    """STEM.json and STEM.npz, appended (a stem such as ``local_w1.0.latency`` keeps its dots)."""
    return stem.with_name(f"{stem.name}.json"), stem.with_name(f"{stem.name}.npz")
