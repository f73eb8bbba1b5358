"""Calibrating table sums against whole networks: measured ≈ a · sum + b, with an interval from its residuals.

Units timed alone run with warm caches that the whole network does not have (docs/ofa_reference.md §6: sums
came out 8-20% low here). A few whole subnets, timed the way their table was, fit a line that is stored in the
table's sidecar and applied by :class:`~predictors.latency.LatencyPredictor` (and so ``ofa-search``) by default.
The fit keeps its points, so a later run (the closed loop measuring found subnets) can refit with more of them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from supernet.errors import OFAProfileError

__all__ = ["MIN_CALIBRATION_SUBNETS", "Calibration", "CalibrationError", "fit_calibration", "refit_calibration"]

log = logging.getLogger(__name__)

# The interval spans these quantiles of the leave-one-out residuals. A 5% quantile lies inside the sample only
# from 1 / 0.05 = 20 points on; with fewer, the smallest and largest residual are the honest bounds.
_INTERVAL_QUANTILES = (0.05, 0.95)
_MIN_POINTS_FOR_QUANTILES = 20
# A line through fewer points has no leave-one-out error to state.
MIN_CALIBRATION_SUBNETS = 3
# Sidecars written before the residuals were kept: about ±2 leave-one-out RMS errors.
_LEGACY_INTERVAL_RMS = 2.0
_REQUIRED = ("a", "b", "n", "rms_pct_before", "rms_pct_after", "loo_rms_pct")


class CalibrationError(OFAProfileError, ValueError):
    """Too few or degenerate measurements to fit a calibration, or a stored one that cannot be used."""


@dataclass(frozen=True)
class Calibration:
    """``measured ≈ a · table_sum + b`` (milliseconds), with how well it fitted and the points it was fitted on.

    Attributes:
        a: Slope (positive: a bigger sum predicts a slower network, so the table's fastest arch stays fastest).
        b: Intercept in ms.
        n: Subnets it was fitted on.
        rms_pct_before: RMS relative error of the plain sums on those subnets.
        rms_pct_after: RMS relative error after calibration, on the same subnets.
        loo_rms_pct: Leave-one-out RMS relative error: the honest estimate for new subnets.
        residual_lo, residual_hi: Low and high quantile (5%, 95%; min and max under 20 subnets) of the relative
            leave-one-out residuals ``measured / loo_prediction - 1``; :meth:`interval` scales predictions by them.
        sums_ms, measured_ms: The fit's points (table sum and measured latency per subnet), kept for
            :meth:`refit`; empty for calibrations stored before they were kept.
    """

    a: float
    b: float
    n: int
    rms_pct_before: float
    rms_pct_after: float
    loo_rms_pct: float
    residual_lo: float
    residual_hi: float
    sums_ms: tuple[float, ...] = ()
    measured_ms: tuple[float, ...] = ()

    def apply(self, table_sum_ms: np.ndarray | float) -> np.ndarray | float:
        """Calibrated latency of table sums (same shape)."""
        return self.a * table_sum_ms + self.b

    def interval(self, pred_ms: np.ndarray | float) -> tuple[np.ndarray | float, np.ndarray | float]:
        """Where measurements of calibrated predictions ``pred_ms`` fell on the fit's own subnets: (low, high)."""
        return pred_ms * (1 + self.residual_lo), pred_ms * (1 + self.residual_hi)

    def refit(self, sums_ms: Sequence[float], measured_ms: Sequence[float]) -> Calibration:
        """A new fit on this calibration's points plus the new ones (table sums and measured latency per subnet)."""
        if not self.sums_ms:
            raise CalibrationError("this calibration was stored without its fit points, so it cannot be refitted; "
                                   "run ofa-profile --calibrate again")
        return fit_calibration([*self.sums_ms, *sums_ms], [*self.measured_ms, *measured_ms])

    def restated(self, factor: float) -> Calibration:
        """The same fit with both sides stated at another anchor (``factor`` = new anchor / old): sums and
        measurements scale alike, so the slope and every relative figure stay, and the intercept scales."""
        if not (math.isfinite(factor) and factor > 0):
            raise CalibrationError(f"cannot restate a calibration by {factor!r}: the anchors must be positive")
        return replace(self, b=self.b * factor, sums_ms=tuple(v * factor for v in self.sums_ms),
                       measured_ms=tuple(v * factor for v in self.measured_ms))

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``calibrated: measured = 1.021·sum + 0.30 ms (20 subnets, ...)``."""
        sign = "+" if self.b >= 0 else "-"
        return (f"calibrated: measured = {self.a:.3f}·sum {sign} {abs(self.b):.2f} ms ({self.n} subnets, "
                f"leave-one-out RMS {self.loo_rms_pct:.1f}%)")

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's ``calibration`` entry (plain JSON types)."""
        values = asdict(self)
        values["sums_ms"], values["measured_ms"] = list(self.sums_ms), list(self.measured_ms)
        return {"model": "measured = a * table_sum + b", **values}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Calibration:
        """Read a sidecar's ``calibration``; older ones without residuals or points get a ±2·RMS interval."""
        missing = [k for k in _REQUIRED if k not in values]
        if missing:
            raise CalibrationError(f"calibration in the sidecar lacks {missing}; run ofa-profile --calibrate again")
        for key in (*_REQUIRED, "residual_lo", "residual_hi"):
            value = values.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CalibrationError(f"calibration in the sidecar has {key} = {value!r}, not a finite number; "
                                       f"run ofa-profile --calibrate again")
        sums, measured = tuple(values.get("sums_ms", ())), tuple(values.get("measured_ms", ()))
        if len(sums) != len(measured):
            raise CalibrationError(f"calibration in the sidecar has {len(sums)} sums_ms but {len(measured)} "
                                   f"measured_ms; run ofa-profile --calibrate again")
        spread = _LEGACY_INTERVAL_RMS * float(values["loo_rms_pct"]) / 100
        return cls(**{k: values[k] for k in _REQUIRED}, residual_lo=values.get("residual_lo", -spread),
                   residual_hi=values.get("residual_hi", spread), sums_ms=tuple(float(v) for v in sums),
                   measured_ms=tuple(float(v) for v in measured))


def _rms_pct(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((predicted - measured) / measured) ** 2)) * 100)


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    # Relative errors matter, not absolute ones: weight each subnet by 1/measured.
    slope, intercept = np.polyfit(x, y, 1, w=1 / y)
    return float(slope), float(intercept)


def _residual_bounds(residuals: np.ndarray) -> tuple[float, float]:
    if len(residuals) < _MIN_POINTS_FOR_QUANTILES:
        return float(residuals.min()), float(residuals.max())
    lo, hi = np.quantile(residuals, _INTERVAL_QUANTILES)
    return float(lo), float(hi)


def fit_calibration(table_sums_ms: Sequence[float], measured_ms: Sequence[float]) -> Calibration:
    """Fit ``measured ≈ a · sum + b`` on subnets' table sums and their whole-network medians."""
    x, y = np.asarray(table_sums_ms, dtype=float), np.asarray(measured_ms, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise CalibrationError(f"need one table sum per measured subnet, got {x.shape} and {y.shape}")
    if len(x) < MIN_CALIBRATION_SUBNETS:
        raise CalibrationError(f"a calibration needs at least {MIN_CALIBRATION_SUBNETS} subnets, got {len(x)}; "
                               f"use --calibrate 10 or more")
    if np.ptp(x) <= 1e-9 * np.max(np.abs(x)):
        raise CalibrationError("all subnets have the same table sum: calibrate on subnets of different sizes")
    a, b = _fit_line(x, y)
    if a <= 0:
        raise CalibrationError(f"the fit gives slope {a:.3f}: bigger subnets did not measure slower, so the "
                               f"measurements are too noisy. Calibrate on an idle device, with more subnets or a "
                               f"longer --min-time")
    loo = np.empty_like(y)
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        ai, bi = _fit_line(x[keep], y[keep])
        loo[i] = ai * x[i] + bi
    lo, hi = _residual_bounds(y / loo - 1)
    return Calibration(a=a, b=b, n=len(x), rms_pct_before=_rms_pct(x, y), rms_pct_after=_rms_pct(a * x + b, y),
                       loo_rms_pct=_rms_pct(loo, y), residual_lo=lo, residual_hi=hi,
                       sums_ms=tuple(x.tolist()), measured_ms=tuple(y.tolist()))


def refit_calibration(stored: Calibration | None, sums_ms: Sequence[float],
                      measured_ms: Sequence[float]) -> Calibration | None:
    """A calibration on these measurements plus the stored one's points where it has them; the stored one (or
    None) while there are too few to fit."""
    if stored is not None:
        try:
            return stored.refit(sums_ms, measured_ms)
        except CalibrationError as err:
            log.info("stored calibration not refitted (%s); fitting on the new measurements", err)
    try:
        return fit_calibration(sums_ms, measured_ms)
    except CalibrationError as err:
        log.info("no calibration fitted yet: %s", err)
        return stored
