"""Latency of archs from a lookup table: the sum of the table rows of their layers (docs/ofa_reference.md §2),
for whole batches.

Table values are gathered once into per-(resolution, block position, kernel, expand) arrays, so predicting a batch
is a numpy gather and sum (millions of archs per second). Rows an arch needs but the table lacks raise one error
listing every missing key. Resolutions between measured ones are interpolated only when asked, and
:meth:`LatencyPredictor.predict_result` says which values were. Sums are calibrated against whole networks by
default, with the fit in the table's sidecar (``ofa-profile --calibrate N``, :mod:`predictors.calibration`): plain
sums of units timed alone come out low on CPUs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from supernet.arch import DEPTHS, EXPAND_RATIOS, KERNEL_SIZES, Arch, ArchSpace
from supernet.errors import OFAProfileError
from supernet.plan import Family
from supernet.units import all_units, units_of

from ._additive import AdditiveCost, UnknownResolutionError
from .archs import ArchBatch, choice_index
from .calibration import Calibration, CalibrationError, refit_calibration
from .table_io import Table, TableError, read_table

__all__ = ["LatencyPredictor", "LatencyResult", "LatencySource", "MissingRowsError", "UnknownResolutionError"]


class MissingRowsError(OFAProfileError, ValueError):
    """Archs need rows the table does not have; ``keys`` lists them all (measure them, or use another table)."""

    def __init__(self, keys: Iterable[tuple[int, str]], table_name: str) -> None:
        self.keys = sorted(set(keys))
        listed = "\n  ".join(f"r={r}: {k}" for r, k in self.keys)
        super().__init__(f"table {table_name} lacks {len(self.keys)} row(s) these archs need (measure them with "
                         f"ofa-profile, or search only resolutions the table covers):\n  {listed}")


@dataclass(frozen=True)
class LatencyResult:
    """Predicted latency (ms) per arch, its raw table sum and interval, and whether it was interpolated.

    Attributes:
        latency_ms: The prediction, shape (n,): calibrated where ``calibrated``, else the raw sum.
        interpolated: Bool per arch: interpolated between measured resolutions.
        raw_ms: The plain table sum.
        low_ms, high_ms: Where the calibration's own subnets measured relative to their predictions (see
            :meth:`~predictors.calibration.Calibration.interval`); equal to ``latency_ms`` when uncalibrated.
        calibrated: Whether a calibration was applied.
    """

    latency_ms: np.ndarray
    interpolated: np.ndarray
    raw_ms: np.ndarray
    low_ms: np.ndarray
    high_ms: np.ndarray
    calibrated: bool

    @property
    def any_interpolated(self) -> bool:
        return bool(self.interpolated.any())


class LatencyPredictor:
    """Table-sum latency for the archs of one supernet width, calibrated against whole networks where possible.

    Args:
        table: A :class:`~predictors.table_io.Table` or the path of a table CSV.
        statistic: The column to sum: ``median_ms`` (the table value) or ``mean_ms`` (what OFA's tools sum).
        interpolate: Allow resolutions between the table's measured ones; latency is interpolated linearly in
            pixel count (r²) between the two neighbours, and flagged in :meth:`predict_result`.
        width_mult: Supernet width; default: the table sidecar's ``width_mult``.
        n_classes: Classifier outputs; default: the sidecar's ``n_classes``, else 1000.
        calibrated: Apply a calibration (``measured ≈ a · sum + b``): ``calibration`` if given, else the table
            sidecar's ``calibration`` where it has one. ``False`` predicts raw table sums.
        calibration: A calibration to apply instead of the sidecar's (e.g. one refitted on new measurements).

    Attributes:
        calibration: The :class:`~predictors.calibration.Calibration` applied, or None for raw sums.

    Example:
        >>> lat = LatencyPredictor("tables/note10_w1.2_tflite.csv")
        >>> arch = ArchSpace.for_width(1.2).uniform(ks=3, e=3, d=2, r=160)
        >>> round(float(lat.predict([arch])[0]), 2)
        9.89
    """

    def __init__(self, table: Table | str | os.PathLike, statistic: str = "median_ms", interpolate: bool = False,
                 width_mult: float | None = None, n_classes: int | None = None, calibrated: bool = True,
                 calibration: Calibration | None = None) -> None:
        self.table = table if isinstance(table, Table) else read_table(table)
        self.name = str(table) if not isinstance(table, Table) else str(self.table.meta.get("table", "<table>"))
        self.family: Family = self.table.family
        self.statistic = statistic
        self.interpolate = interpolate
        width_mult = self._width(width_mult)
        self.width_mult = float(width_mult)
        self.n_classes = self._n_classes(n_classes)
        self.measured = self.table.resolutions
        if not self.measured:
            raise TableError(f"table {self.name} covers no resolution; give rows a resolution or list them in the "
                             f"sidecar's 'resolutions'")
        self.calibration = self._calibration(calibrated, calibration)
        self._cost, self._keys = self._gather()

    def _width(self, given: float | None) -> float:
        """The sidecar's width; else the one whose rows the table holds (a bare CSV). Two that differ: refused."""
        stated = self.table.meta.get("width_mult")
        if given is not None and stated is not None and float(given) != float(stated):
            raise TableError(f"table {self.name} is for width {stated} (its sidecar) but width {given} was given",
                             "leave the width out, or use a table of that width")
        if given is not None or stated is not None:
            return float(given if given is not None else stated)
        keys = {row.key for row in self.table.rows if not row.key.startswith("Logits")}
        widths = self.family.released_widths
        for width in widths:
            planned = {u.key for u in all_units(width, self.table.resolutions, family=self.family)}
            if keys <= planned:
                return width
        raise TableError(f"table {self.name} has no sidecar, and its rows are not those of any {self.family.name} "
                         f"supernet width {list(widths)}", f"give the width (--width {widths[0]})")

    def _n_classes(self, given: int | None) -> int:
        stated = self.table.meta.get("n_classes")
        if given is not None and stated is not None and int(given) != int(stated):
            raise TableError(f"table {self.name} is for {stated} classes (its sidecar) but {given} were given",
                             "leave the number of classes out, or use a table for that many")
        return int(given if given is not None else stated if stated is not None else 1000)

    def _calibration(self, calibrated: bool, calibration: Calibration | None) -> Calibration | None:
        if calibration is not None and not calibrated:
            raise ValueError("calibration= given with calibrated=False: pass one of them")
        if not calibrated:
            return None
        if calibration is None and "calibration" in self.table.meta:
            calibration = Calibration.from_dict(self.table.meta["calibration"])
        if calibration is not None and calibration.a <= 0:
            # minimum() and every limit check rely on the calibrated order of archs being the table's.
            raise CalibrationError(f"calibration slope a = {calibration.a:g} of table {self.name} is not positive; "
                                   f"run ofa-profile --calibrate again")
        return calibration

    @property
    def width(self) -> float:
        return self.width_mult

    @property
    def classes(self) -> int:
        return self.n_classes

    @property
    def precision(self) -> str:
        """The precision the table's models ran in (a sidecar without one is older: fp32)."""
        return self.table.meta.get("precision") or "fp32"

    def report(self) -> dict[str, Any]:
        """What its latency is, for reports: calibrated or raw sums, and the calibration."""
        return {"calibrated": self.calibration is not None,
                "calibration": None if self.calibration is None else self.calibration.to_dict(),
                "description": self.describe()}

    def refit(self, archs: ArchBatch | Iterable[Arch], measured_ms: Sequence[float]) -> LatencyPredictor:
        """This table's predictor with its calibration fitted on these measurements plus the stored calibration's
        points (the closed loop's refit); itself while they are too few to fit."""
        raw = LatencyPredictor(self.table, self.statistic, self.interpolate, calibrated=False,
                               width_mult=self.width_mult, n_classes=self.n_classes)
        calibration = refit_calibration(self.calibration, raw.predict(archs).tolist(), list(measured_ms))
        if calibration is None:
            return self
        return LatencyPredictor(self.table, self.statistic, self.interpolate, calibration=calibration,
                                width_mult=self.width_mult, n_classes=self.n_classes)

    def fitted_on(self) -> tuple[ArchBatch, np.ndarray]:
        """The whole subnets this predictor was fitted on, with their latencies: none, as a table's rows are not
        whole subnets and its calibration keeps no archs (:meth:`LatencyModel.fitted_on` has them)."""
        return ArchBatch.coerce([]), np.empty(0)

    def describe(self) -> str:
        """Which latency this predictor gives: the calibration's line, or raw table sums and how to calibrate."""
        column = "" if self.statistic == "median_ms" else f" of {self.statistic}"
        if self.calibration is not None:
            return self.calibration.describe() + column
        if "calibration" in self.table.meta:
            return f"raw table sums{column} (the table's calibration is not applied)"
        return f"raw table sums{column} (the table has no calibration: run ofa-profile --calibrate N)"

    def _gather(self) -> tuple[AdditiveCost, dict]:
        n_res, layout = len(self.measured), self.family.layout
        n_blocks = layout.n_blocks
        fixed = np.zeros(n_res)
        block = np.zeros((n_res, n_blocks, len(KERNEL_SIZES) * len(EXPAND_RATIOS)))
        keys: dict = {"fixed": [], "block": np.empty(block.shape, dtype=object)}
        for i, r in enumerate(self.measured):
            values = self.table.values(r, self.statistic)
            for k in KERNEL_SIZES:
                for e in EXPAND_RATIOS:
                    arch = ArchSpace((r,), layout=layout).uniform(k, e, max(DEPTHS), r)
                    units = units_of(arch, self.width_mult, self.n_classes)
                    c = int(choice_index(np.array(k), np.array(e)))
                    for position, unit in enumerate(units[2:2 + n_blocks]):
                        block[i, position, c] = values.get(unit.key, np.nan)
                        keys["block"][i, position, c] = unit.key
            head = [units[0], units[1], *units[2 + n_blocks:]]
            fixed[i] = sum(values.get(u.key, np.nan) for u in head)
            keys["fixed"].append([u.key for u in head])
        return AdditiveCost(self.measured, fixed, block), keys

    @property
    def cost(self) -> AdditiveCost:
        """The raw table sums as an additive cost (uncalibrated, measured resolutions only)."""
        return self._cost

    # --- predicting ------------------------------------------------------------------------------------
    def supported_resolutions(self, space: ArchSpace | None = None) -> tuple[int, ...]:
        """Resolutions of ``space`` this predictor answers for: the measured ones, or with ``interpolate`` every
        one between the smallest and largest measured."""
        space = space or ArchSpace.for_width(self.width_mult, self.family.layout)
        if not self.interpolate:
            return tuple(r for r in space.resolutions if r in self.measured)
        return tuple(r for r in space.resolutions if self.measured[0] <= r <= self.measured[-1])

    def _measured_total(self, batch: ArchBatch) -> np.ndarray:
        total = self._cost.total(batch)
        bad = np.isnan(total)
        if bad.any():
            raise MissingRowsError(self._missing_keys(batch[np.flatnonzero(bad)]), self.name)
        return total

    def _missing_keys(self, batch: ArchBatch) -> set[tuple[int, str]]:
        missing = set()
        ri = self._cost.resolution_index(batch.r)
        choice = choice_index(batch.ks, batch.e)
        for n in range(len(batch)):
            r = self.measured[ri[n]]
            values = self.table.values(r, self.statistic)
            needed = list(self._keys["fixed"][ri[n]])
            needed += [self._keys["block"][ri[n], p, choice[n, p]] for p in np.flatnonzero(batch.active[n])]
            missing.update((r, k) for k in needed if k not in values)
        return missing

    def _raw(self, batch: ArchBatch) -> tuple[np.ndarray, np.ndarray]:
        """Plain table sums of the batch, and a flag per arch saying whether it was interpolated."""
        measured = self._cost.covers(batch.r)
        if measured.all():
            return self._measured_total(batch), np.zeros(len(batch), dtype=bool)
        outside = sorted({int(r) for r in batch.r[~measured]})
        if not self.interpolate:
            raise UnknownResolutionError(
                f"table {self.name} has no rows for resolution(s) {outside}; measured: {list(self.measured)}. "
                f"Pass interpolate=True (ofa-search --interpolate) to interpolate between measured resolutions")
        lo_edge, hi_edge = self.measured[0], self.measured[-1]
        beyond = [r for r in outside if not lo_edge <= r <= hi_edge]
        if beyond:
            raise UnknownResolutionError(f"resolution(s) {beyond} lie outside the table's measured range "
                                         f"{lo_edge}..{hi_edge}; interpolation does not extrapolate")
        latency = np.empty(len(batch))
        latency[measured] = self._measured_total(batch[np.flatnonzero(measured)])
        rest = batch[np.flatnonzero(~measured)]
        grid = np.asarray(self.measured)
        upper = np.searchsorted(grid, rest.r)
        lo, hi = grid[upper - 1], grid[upper]
        weight = (rest.r.astype(float) ** 2 - lo**2) / (hi.astype(float) ** 2 - lo**2)
        at_lo = self._measured_total(rest.with_resolution(lo))
        at_hi = self._measured_total(rest.with_resolution(hi))
        latency[~measured] = at_lo + weight * (at_hi - at_lo)
        return latency, ~measured

    def predict_result(self, archs: ArchBatch | Iterable[Arch]) -> LatencyResult:
        """Latency in ms of each arch with its raw sum, its interval and whether it was interpolated."""
        raw, interpolated = self._raw(ArchBatch.coerce(archs))
        if self.calibration is None:
            return LatencyResult(raw, interpolated, raw, raw, raw, calibrated=False)
        latency = self.calibration.apply(raw)
        low, high = self.calibration.interval(latency)
        return LatencyResult(latency, interpolated, raw, low, high, calibrated=True)

    def predict(self, archs: ArchBatch | Iterable[Arch]) -> np.ndarray:
        """Latency in ms of each arch, shape (n,): calibrated unless raw sums were asked for. Use
        :meth:`predict_result` for raw sums, intervals and which values were interpolated."""
        raw, _ = self._raw(ArchBatch.coerce(archs))
        return raw if self.calibration is None else self.calibration.apply(raw)

    def minimum(self, resolutions: Iterable[int] | None = None) -> tuple[float, int]:
        """The smallest latency any arch can reach with this table (at ``resolutions``), and its resolution;
        calibrated like :meth:`predict` (the slope is positive, so the fastest arch is the same)."""
        measured = None if resolutions is None else [r for r in resolutions if r in self.measured]
        value, r = self._cost.minimum(measured or None)
        if not np.isfinite(value):  # a partial table: every arch needs a row it lacks
            raise MissingRowsError(self._gap_keys(measured or None), self.name)
        return (value if self.calibration is None else float(self.calibration.apply(value))), r

    def _gap_keys(self, resolutions: Sequence[int] | None) -> set[tuple[int, str]]:
        """The missing rows that leave no arch predictable: the fixed part's, and those of positions that lack
        every choice."""
        keys = set()
        for r, position in self._cost.missing(resolutions):
            i = self.measured.index(r)
            needed = self._keys["fixed"][i] if position is None else self._keys["block"][i, position]
            keys.update((r, k) for k in needed if k not in self.table.values(r, self.statistic))
        return keys


class LatencySource(Protocol):
    """What the search, the closed loop and the reports need of a latency predictor, whichever it is: a table's
    sums (:class:`LatencyPredictor`) or a model fitted on measured subnets
    (:class:`~predictors.latency_model.LatencyModel`)."""

    @property
    def family(self) -> Family: ...

    @property
    def width(self) -> float: ...

    @property
    def classes(self) -> int: ...

    @property
    def precision(self) -> str: ...

    def predict(self, archs: ArchBatch | Iterable[Arch]) -> np.ndarray: ...

    def predict_result(self, archs: ArchBatch | Iterable[Arch]) -> LatencyResult: ...

    def supported_resolutions(self, space: ArchSpace | None = None) -> tuple[int, ...]: ...

    def describe(self) -> str: ...

    def report(self) -> dict[str, Any]: ...

    def refit(self, archs: ArchBatch | Iterable[Arch], measured_ms: Sequence[float]) -> LatencySource: ...

    def fitted_on(self) -> tuple[ArchBatch, np.ndarray]: ...
