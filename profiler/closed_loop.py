"""Found subnets that measure under their budget: search, measure on the device, refit, search again.

A search trusts its latency predictor; the device has the last word. Each round searches every open budget with
the calibrated table (or a latency model fitted on measured subnets), measures every found subnet on the device
(one agent run, each subnet against the reference, so at the table's anchor), and closes the budgets whose subnet
measured at or under them. For the rest the calibration (or the model) is refitted with every measurement so far
and the search limit is tightened by the overshoot (limit · budget / measured), then the next round runs. After
``max_rounds``, a budget still open gets the best subnet this loop measured under it (one found for a tighter
budget, say); failing that, the fastest subnet of the space if that one measures under it, else it is reported as
unmeetable, with the fastest subnet's measured latency.

The search ranks by predicted accuracy, or, in a space OFA released no accuracy predictor for, by MACs: the largest
subnet that measures under the budget, a stated stand-in until a predictor is trained on the user's data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from predictors.archs import ArchBatch
from predictors.calibration import Calibration, CalibrationError, fit_calibration
from predictors.latency import LatencyPredictor
from predictors.latency_model import LatencyModel
from predictors.search import Constraint, InfeasibleConstraintError, evolution_search
from supernet import Arch, ArchSpace

__all__ = ["Delivery", "closed_loop", "refit_for"]

log = logging.getLogger(__name__)

Measure = Callable[[Sequence[Arch]], list[float]]
Refit = Callable[[Sequence[Arch], Sequence[float]], "LatencyPredictor | LatencyModel"]


@dataclass
class Delivery:
    """What one budget got: the delivered subnet, predicted and measured, and how it was reached.

    ``accuracy`` and ``open_loop_accuracy`` are None when the search ranked by MACs (``ranked_by``); ``macs`` is
    the delivered subnet's then.
    """

    budget_ms: float
    met: bool
    arch: str
    accuracy: float | None
    predicted_ms: float
    low_ms: float
    high_ms: float
    measured_ms: float
    rounds: int
    search_limit_ms: float
    open_loop_accuracy: float | None
    open_loop_measured_ms: float | None
    note: str = ""
    ranked_by: str = "accuracy"
    macs: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class _Fastest:
    """Scores archs by minus their latency, so the search finds the fastest subnet of the space."""

    def __init__(self, latency) -> None:
        self.latency = latency

    def predict(self, archs: ArchBatch) -> np.ndarray:
        return -self.latency.predict(archs)


def _search(accuracy, predictor, space: ArchSpace, limit: float, generations: int, seed: int):
    return evolution_search(accuracy, [Constraint("latency_ms", predictor, limit)], space, generations=generations,
                            seed=seed)


def refit_for(predictor: LatencyPredictor | LatencyModel) -> Refit:
    """How a predictor learns from the loop's measurements: a table refits its calibration (on its stored points
    plus the loop's); a fitted latency model is refitted on its own subnets plus the loop's."""
    if isinstance(predictor, LatencyModel):
        return predictor.refit
    raw = LatencyPredictor(predictor.table, calibrated=False, width_mult=predictor.width_mult,
                           n_classes=predictor.n_classes)
    stored = predictor.calibration

    def refit(archs: Sequence[Arch], measured: Sequence[float]) -> LatencyPredictor:
        calibration = _refit(stored, raw.predict(archs).tolist(), list(measured))
        if calibration is None:
            return predictor
        return LatencyPredictor(raw.table, calibration=calibration, width_mult=raw.width_mult,
                                n_classes=raw.n_classes)

    return refit


def closed_loop(
    predictor: LatencyPredictor | LatencyModel,
    accuracy,
    space: ArchSpace,
    budgets: Sequence[float],
    measure: Measure,
    *,
    max_rounds: int = 3,
    generations: int = 500,
    seed: int = 0,
    ranked_by: str = "accuracy",
) -> tuple[list[Delivery], LatencyPredictor | LatencyModel]:
    """Deliver, per budget, the most accurate subnet found that measured at or under it.

    Args:
        predictor: The table's predictor, calibrated as stored (or raw), or a fitted latency model.
        accuracy: What the search maximises (``predict(ArchBatch)``): an accuracy predictor, or with
            ``ranked_by="macs"`` a :class:`~predictors.complexity.MacsPredictor`.
        space: The archs to search (resolutions the predictor covers).
        budgets: Latency budgets in ms, at the predictor's anchor (the table's, or that of the model's subnets).
        measure: Times archs on the device; returns ms at that anchor, one per arch.
        max_rounds: Searches per budget at most.

    Returns:
        One delivery per budget, in order, and the predictor refitted on every measurement (:func:`refit_for`).
    """
    refit = refit_for(predictor)
    limits = {i: float(b) for i, b in enumerate(budgets)}
    delivered: dict[int, Delivery] = {}
    open_loop: dict[int, tuple[float, float]] = {}
    archs_all: list[Arch] = []
    measured_all: list[float] = []
    for round_no in range(1, max_rounds + 1):
        todo = [i for i in limits if i not in delivered]
        if not todo:
            break
        found = {}
        for i in todo:
            try:
                found[i] = _search(accuracy, predictor, space, limits[i], generations, seed)
            except InfeasibleConstraintError as err:
                log.info("budget %.2f ms: no subnet is predicted under %.2f ms (%s)", budgets[i], limits[i], err)
        if not found:
            break
        archs = [found[i].arch for i in found]
        times = measure(archs)
        archs_all.extend(archs)
        measured_all.extend(times)
        over = {}
        for (i, result), measured in zip(found.items(), times, strict=True):
            if round_no == 1:
                open_loop[i] = (result.accuracy, measured)
            log.info("round %d, budget %.2f ms: predicted %.2f ms, measured %.2f ms", round_no, budgets[i],
                     result.metrics["latency_ms"], measured)
            if measured <= budgets[i]:
                delivered[i] = _delivery(budgets[i], True, result.arch, result.accuracy, predictor, measured,
                                         round_no, limits[i], open_loop.get(i), ranked_by=ranked_by)
            else:
                over[i] = (result.arch, measured)
        predictor = refit(archs_all, measured_all)
        for i, (arch, measured) in over.items():
            # What the refitted predictor still misses on this subnet, taken off the limit (1% to spare).
            now = float(predictor.predict([arch])[0])
            limits[i] = budgets[i] * min(1.0, 0.99 * now / measured)
    left = [i for i in limits if i not in delivered]
    scores = accuracy.predict(ArchBatch.coerce(archs_all)) if left and archs_all else []
    for i in left:
        under = [j for j, ms in enumerate(measured_all) if ms <= budgets[i]]
        if under:
            best = max(under, key=lambda j: scores[j])
            delivered[i] = _delivery(budgets[i], True, archs_all[best], float(scores[best]), predictor,
                                     measured_all[best], max_rounds, limits[i], open_loop.get(i),
                                     "this budget's subnets measured over it; delivered the best subnet the loop "
                                     "measured under it", ranked_by)
    left = [i for i in left if i not in delivered]
    if left:
        fastest = evolution_search(_Fastest(predictor), [], space, generations=generations, seed=seed).arch
        fastest_ms = measure([fastest])[0]
        fastest_acc = float(accuracy.predict(ArchBatch.coerce([fastest]))[0])
        for i in left:
            met = fastest_ms <= budgets[i]
            note = ("the search's subnets measured over the budget; delivered the fastest subnet" if met else
                    f"cannot be met: the fastest subnet measured {fastest_ms:.2f} ms")
            delivered[i] = _delivery(budgets[i], met, fastest, fastest_acc, predictor, fastest_ms, max_rounds,
                                     limits[i], open_loop.get(i), note, ranked_by)
    return [delivered[i] for i in range(len(budgets))], predictor


def _refit(stored: Calibration | None, sums: list[float], measured: list[float]) -> Calibration | None:
    """A calibration on every measurement of this loop, plus the stored one's points where it has them."""
    if stored is not None:
        try:
            return stored.refit(sums, measured)
        except CalibrationError as err:
            log.info("stored calibration not refitted (%s); fitting on this loop's measurements", err)
    try:
        return fit_calibration(sums, measured)
    except CalibrationError as err:
        log.info("no calibration fitted yet: %s", err)
        return stored


def _delivery(budget: float, met: bool, arch: Arch, score: float, predictor, measured: float,
              rounds: int, limit: float, open_loop: tuple[float, float] | None, note: str = "",
              ranked_by: str = "accuracy") -> Delivery:
    result = predictor.predict_result([arch])
    by_accuracy = ranked_by == "accuracy"
    return Delivery(
        budget_ms=budget, met=met, arch=arch.to_json(), accuracy=float(score) if by_accuracy else None,
        rounds=rounds, predicted_ms=float(result.latency_ms[0]), low_ms=float(result.low_ms[0]),
        high_ms=float(result.high_ms[0]), measured_ms=float(measured), search_limit_ms=float(limit),
        open_loop_accuracy=open_loop[0] if open_loop and by_accuracy else None,
        open_loop_measured_ms=open_loop[1] if open_loop else None, note=note, ranked_by=ranked_by,
        macs=None if by_accuracy else float(score),
    )
