"""Calibrating table sums against whole networks: measured ≈ a · sum + b.

Units timed alone run with warm caches that the whole network does not have (SPEC §6: sums came out 8-20% low
here). A few whole subnets, measured in the same batch as their own units (shuffled together, so drift hits
both alike), fit a line that is stored in the table's sidecar, reported, and applied when the user asks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Calibration", "CalibrationError", "fit_calibration"]


class CalibrationError(ValueError):
    """Too few or degenerate measurements to fit a calibration."""


@dataclass(frozen=True)
class Calibration:
    """``measured ≈ a · table_sum + b`` (milliseconds), with how well it fitted.

    Attributes:
        a: Slope.
        b: Intercept in ms.
        n: Subnets it was fitted on.
        rms_pct_before: RMS relative error of the plain sums on those subnets.
        rms_pct_after: RMS relative error after calibration, on the same subnets.
        loo_rms_pct: Leave-one-out RMS relative error: the honest estimate for new subnets.
    """

    a: float
    b: float
    n: int
    rms_pct_before: float
    rms_pct_after: float
    loo_rms_pct: float

    def apply(self, table_sum_ms: np.ndarray | float) -> np.ndarray | float:
        return self.a * table_sum_ms + self.b

    def to_dict(self) -> dict[str, Any]:
        return {"model": "measured = a * table_sum + b", **asdict(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Calibration:
        try:
            return cls(**{k: values[k] for k in ("a", "b", "n", "rms_pct_before", "rms_pct_after", "loo_rms_pct")})
        except KeyError as err:
            raise CalibrationError(
                f"calibration in the sidecar lacks {err}; run ofa-profile --calibrate again"
            ) from None


def _rms_pct(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((predicted - measured) / measured) ** 2)) * 100)


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    # Relative errors matter, not absolute ones: weight each subnet by 1/measured.
    slope, intercept = np.polyfit(x, y, 1, w=1 / y)
    return float(slope), float(intercept)


def fit_calibration(table_sums_ms: Sequence[float], measured_ms: Sequence[float]) -> Calibration:
    """Fit ``measured ≈ a · sum + b`` on subnets' unit sums and their whole-network medians."""
    x, y = np.asarray(table_sums_ms, dtype=float), np.asarray(measured_ms, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise CalibrationError(f"need one table sum per measured subnet, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise CalibrationError(f"a calibration needs at least 3 subnets, got {len(x)}; use --calibrate 10 or more")
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
    return Calibration(a=a, b=b, n=len(x), rms_pct_before=_rms_pct(x, y), rms_pct_after=_rms_pct(a * x + b, y),
                       loo_rms_pct=_rms_pct(loo, y))
