"""Rank correlations of predictions with measurements, undefined (NaN) rather than a library warning where a side
is constant or too short: a fitter that predicts one value for every held-out subnet has no ranking to score."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kendall_tau", "spearman_rho"]


def _defined(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) > 2 and np.ptp(a) > 0 and np.ptp(b) > 0


def spearman_rho(predicted: np.ndarray, measured: np.ndarray) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(predicted, float), np.asarray(measured, float)
    return float(spearmanr(a, b).statistic) if _defined(a, b) else math.nan


def kendall_tau(predicted: np.ndarray, measured: np.ndarray) -> float:
    from scipy.stats import kendalltau

    a, b = np.asarray(predicted, float), np.asarray(measured, float)
    return float(kendalltau(a, b).statistic) if _defined(a, b) else math.nan
