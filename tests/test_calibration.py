"""Calibration of table sums: the fit, its leave-one-out interval, refits on more points, and older sidecars."""

from __future__ import annotations

import json

import numpy as np
import pytest

from predictors.calibration import Calibration, CalibrationError, fit_calibration

SUMS = np.array([2.0, 3.0, 5.0, 8.0, 13.0])


def _noisy_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sums = rng.uniform(5, 40, n)
    return sums, (1.12 * sums + 0.4) * (1 + rng.normal(0, 0.03, n))


def test_fit_recovers_a_known_line():
    """Points on measured = 1.1·sum + 0.5 give that line back, with no error left."""
    fit = fit_calibration(SUMS, 1.1 * SUMS + 0.5)
    assert fit.a == pytest.approx(1.1) and fit.b == pytest.approx(0.5)
    assert fit.rms_pct_after == pytest.approx(0, abs=1e-9) and fit.rms_pct_before > 5
    assert fit.residual_lo == pytest.approx(0, abs=1e-9) and fit.residual_hi == pytest.approx(0, abs=1e-9)
    assert fit.sums_ms == tuple(SUMS) and fit.measured_ms == tuple(1.1 * SUMS + 0.5)


@pytest.mark.parametrize(
    ("sums", "measured", "message"),
    [([1.0, 2.0], [1.1, 2.2], "at least 3 subnets"), ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0], "same table sum"),
     ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], "slope -1.000")],
)
def test_fit_refuses_bad_data(sums, measured, message):
    """Too few subnets, equal sums or a falling line: one CalibrationError saying which."""
    with pytest.raises(CalibrationError, match=message):
        fit_calibration(sums, measured)


def test_interval_of_three_points_by_hand():
    """Three points: each leave-one-out fit is the line through the other two, so the residuals are hand-made.

    (1, 2), (2, 3), (3, 5): leaving out x=1 predicts 1 (r = 1), x=2 predicts 3.5 (r = -1/7), x=3 predicts 4
    (r = 1/4). Under 20 points the interval spans the smallest and largest residual.
    """
    fit = fit_calibration([1.0, 2.0, 3.0], [2.0, 3.0, 5.0])
    assert fit.residual_lo == pytest.approx(-1 / 7) and fit.residual_hi == pytest.approx(1.0)
    low, high = fit.interval(10.0)
    assert low == pytest.approx(10 * 6 / 7) and high == pytest.approx(20.0)
    np.testing.assert_allclose(fit.interval(np.array([7.0, 14.0])), [[6.0, 12.0], [14.0, 28.0]])


def test_interval_from_quantiles_with_20_points_or_more():
    """From 20 points on, the interval spans the 5% and 95% quantiles of measured / leave-one-out fit - 1."""
    sums, measured = _noisy_points(25, seed=0)
    fit = fit_calibration(sums, measured)
    loo = np.empty(25)
    for i in range(25):
        keep = np.arange(25) != i
        slope, intercept = np.polyfit(sums[keep], measured[keep], 1, w=1 / measured[keep])
        loo[i] = slope * sums[i] + intercept
    residuals = measured / loo - 1
    lo, hi = np.quantile(residuals, [0.05, 0.95])
    assert (fit.residual_lo, fit.residual_hi) == (pytest.approx(lo), pytest.approx(hi))
    assert residuals.min() < fit.residual_lo < 0 < fit.residual_hi < residuals.max()
    assert fit.interval(20.0) == (pytest.approx(20 * (1 + lo)), pytest.approx(20 * (1 + hi)))


def test_refit_equals_a_fit_on_all_points():
    """A refit on new points is the fit on the old and new points together, and keeps them all."""
    sums, measured = _noisy_points(15, seed=1)
    first = fit_calibration(sums[:10], measured[:10])
    refitted = first.refit(sums[10:], measured[10:])
    assert refitted == fit_calibration(sums, measured)
    assert refitted.n == 15 and len(refitted.sums_ms) == 15 and refitted.a != first.a


def test_sidecar_round_trip_is_plain_json():
    """to_dict writes the points as lists; JSON and from_dict give the same calibration back."""
    sums, measured = _noisy_points(8, seed=2)
    fit = fit_calibration(sums, measured)
    stored = json.loads(json.dumps(fit.to_dict()))
    assert isinstance(stored["sums_ms"], list) and stored["model"] == "measured = a * table_sum + b"
    assert Calibration.from_dict(stored) == fit


@pytest.mark.parametrize(("field", "value", "message"), [
    ("b", float("nan"), "b = nan, not a finite number"),
    ("a", "fast", "a = 'fast', not a finite number"),
    ("residual_hi", float("inf"), "residual_hi = inf"),
])
def test_a_tampered_calibration_is_refused_naming_the_field(field, value, message):
    """Issue 25: calibration b = NaN predicted NaN with exit 0, and a = "fast" was an internal error. (A slope
    below 0 is refused by the table's predictor, naming the table.)"""
    stored = {**fit_calibration(*_noisy_points(8, seed=2)).to_dict(), field: value}
    with pytest.raises(CalibrationError, match=message):
        Calibration.from_dict(stored)


def test_older_sidecar_loads_with_a_two_rms_interval():
    """A sidecar written before residuals and points were kept: ±2 leave-one-out RMS, and no refit."""
    old = {"model": "measured = a * table_sum + b", "a": 1.1, "b": 0.5, "n": 20, "rms_pct_before": 12.0,
           "rms_pct_after": 2.5, "loo_rms_pct": 3.0}
    calibration = Calibration.from_dict(old)
    assert calibration.apply(10.0) == pytest.approx(11.5)
    assert calibration.interval(10.0) == (pytest.approx(9.4), pytest.approx(10.6))
    with pytest.raises(CalibrationError, match="ofa-profile --calibrate again"):
        calibration.refit([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(CalibrationError, match="loo_rms_pct"):
        Calibration.from_dict({k: v for k, v in old.items() if k != "loo_rms_pct"})


def test_describe_is_one_line():
    """describe() states the line, the number of subnets and the leave-one-out error."""
    calibration = Calibration.from_dict({"a": 1.021, "b": 0.3, "n": 20, "rms_pct_before": 12.0, "rms_pct_after": 2.5,
                                         "loo_rms_pct": 3.1})
    assert calibration.describe() == "calibrated: measured = 1.021·sum + 0.30 ms (20 subnets, leave-one-out RMS 3.1%)"
    negative = Calibration.from_dict({**calibration.to_dict(), "b": -0.3})
    assert "1.021·sum - 0.30 ms" in negative.describe()
