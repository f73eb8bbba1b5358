"""The shared engine of latency, MACs and parameter predictors: a cost that is a sum over an arch's layers.

Every block position's input size depends only on the resolution and the position (depth only drops later,
stride-1 blocks), so a cost is ``fixed[r] + sum over active blocks of block[r, position, kernel/expand choice]``.
Both arrays are precomputed once; a batch of archs is then one gather and one sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from supernet.arch import DEPTHS, LAYOUTS, MOBILENETV3_LAYOUT, Layout
from supernet.errors import OFAProfileError

from .archs import ArchBatch, choice_index

__all__ = ["AdditiveCost", "UnknownResolutionError"]

_N_CHOICES = 9


class UnknownResolutionError(OFAProfileError, ValueError):
    """An arch's resolution that the predictor has no entries for; the message lists the ones it has."""


class AdditiveCost:
    """``fixed`` (R,) and ``block`` (R, blocks, 9) per resolution, summed for a batch.

    Args:
        resolutions: The R resolutions, ascending.
        fixed: Cost of the parts every arch has (first conv, block 0, head), per resolution.
        block: Cost of elastic block ``position`` with choice ``3 * kernel_index + expand_index``: 20 positions
            for MobileNetV3, 21 for ProxylessNAS (the space follows from the count).
    """

    def __init__(self, resolutions: Sequence[int], fixed: np.ndarray, block: np.ndarray) -> None:
        self.resolutions = tuple(int(r) for r in resolutions)
        n_res = len(self.resolutions)
        layout = next((lay for lay in LAYOUTS if block.ndim == 3 and block.shape[1] == lay.n_blocks), None)
        if fixed.shape != (n_res,) or layout is None or block.shape != (n_res, layout.n_blocks, _N_CHOICES):
            raise ValueError(f"cost arrays of shape {fixed.shape} and {block.shape}; expected ({n_res},) and "
                             f"({n_res}, {MOBILENETV3_LAYOUT.n_blocks} or 21, {_N_CHOICES})")
        self.layout: Layout = layout
        n_blocks = layout.n_blocks
        self.fixed = fixed
        # A tenth, zero-cost choice per position stands for "block skipped by depth": no mask multiply.
        padded = np.zeros((n_res, n_blocks, _N_CHOICES + 1), dtype=block.dtype)
        padded[:, :, :_N_CHOICES] = block
        self._flat = padded.reshape(-1)
        self._res_index = np.full(max(self.resolutions) + 1, -1, dtype=np.intp)
        self._res_index[list(self.resolutions)] = np.arange(n_res)
        self._position_offset = np.arange(n_blocks, dtype=np.intp) * (_N_CHOICES + 1)
        self._stage_starts = np.array([layout.stage_start(s) for s in range(layout.n_stages)])

    def covers(self, r: np.ndarray) -> np.ndarray:
        """Bool per resolution: does this cost have entries for it."""
        inside = r < len(self._res_index)
        return inside & (self._res_index[np.where(inside, r, 0)] >= 0)

    def resolution_index(self, r: np.ndarray) -> np.ndarray:
        """Row of each resolution in the cost arrays; raises for resolutions without entries."""
        inside = r < len(self._res_index)
        index = np.where(inside, self._res_index[np.where(inside, r, 0)], -1)
        if (index < 0).any():
            missing = sorted({int(v) for v in r[index < 0]})
            raise UnknownResolutionError(f"resolution(s) {missing} not covered; covered: {list(self.resolutions)}")
        return index

    def _gather(self, batch: ArchBatch) -> tuple[np.ndarray, np.ndarray]:
        ri = self.resolution_index(batch.r)
        choice = np.where(batch.active, choice_index(batch.ks, batch.e), _N_CHOICES)
        if batch.layout != self.layout:
            raise ValueError(f"{batch.layout.family} archs cannot be costed with a {self.layout.family} cost")
        index = (ri * (self.layout.n_blocks * (_N_CHOICES + 1)))[:, None] + self._position_offset + choice
        return self.fixed[ri], self._flat[index]

    def total(self, batch: ArchBatch) -> np.ndarray:
        """Cost of each arch of the batch, shape (n,)."""
        fixed, blocks = self._gather(batch)
        return fixed + blocks.sum(axis=1)

    def parts(self, batch: ArchBatch) -> tuple[np.ndarray, np.ndarray]:
        """The fixed cost of each arch (n,) and the cost of its blocks per stage (n, stages)."""
        fixed, blocks = self._gather(batch)
        return fixed, np.add.reduceat(blocks, self._stage_starts, axis=1)

    def minimum(self, resolutions: Sequence[int] | None = None) -> tuple[float, int]:
        """The smallest cost any arch can have (at one of ``resolutions``, default all), and its resolution.

        A missing entry (NaN: a row a partial table lacks) is a choice no arch can take: where every arch at a
        resolution needs one, that resolution's smallest cost is ``inf``, and where that holds at every resolution
        asked, so is the answer.
        """
        best = np.where(np.isnan(self.block), np.inf, self.block).min(axis=2)
        stage_minima = []
        for s, start in enumerate(self._stage_starts):
            stage = best[:, start:start + self.layout.stage_blocks[s]].cumsum(axis=1)
            stage_minima.append(stage[:, [d - 1 for d in self.layout.depth_choices(s, DEPTHS)]].min(axis=1))
        totals = np.where(np.isnan(self.fixed), np.inf, self.fixed) + np.sum(stage_minima, axis=0)
        allowed = np.isin(self.resolutions, self.resolutions if resolutions is None else resolutions)
        totals = np.where(allowed, totals, np.inf)
        i = int(np.argmin(totals))
        return totals[i].item(), self.resolutions[i]

    def missing(self, resolutions: Sequence[int] | None = None) -> list[tuple[int, int | None]]:
        """Where every arch at a resolution needs a missing entry: (resolution, block position), or
        (resolution, None) for the fixed part."""
        allowed = self.resolutions if resolutions is None else resolutions
        gaps: list[tuple[int, int | None]] = []
        for i, r in enumerate(self.resolutions):
            if r in allowed:
                gaps += [(r, None)] if np.isnan(self.fixed[i]) else []
                gaps += [(r, int(p)) for p in np.flatnonzero(np.isnan(self.block[i]).all(axis=1))]
        return gaps

    @property
    def block(self) -> np.ndarray:
        return self._flat.reshape(len(self.resolutions), self.layout.n_blocks, _N_CHOICES + 1)[:, :, :_N_CHOICES]
