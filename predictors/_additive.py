"""The shared engine of latency, MACs and parameter predictors: a cost that is a sum over an arch's layers.

Every block position's input size depends only on the resolution and the position (depth only drops later,
stride-1 blocks), so a cost is ``fixed[r] + sum over active blocks of block[r, position, kernel/expand choice]``.
Both arrays are precomputed once; a batch of archs is then one gather and one sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from supernet.arch import DEPTHS, MAX_DEPTH, N_BLOCKS, N_STAGES
from supernet.errors import OFAProfileError

from .archs import ArchBatch, choice_index

__all__ = ["AdditiveCost", "UnknownResolutionError"]

_N_CHOICES = 9


class UnknownResolutionError(OFAProfileError, ValueError):
    """An arch's resolution that the predictor has no entries for; the message lists the ones it has."""


class AdditiveCost:
    """``fixed`` (R,) and ``block`` (R, 20, 9) per resolution, summed for a batch.

    Args:
        resolutions: The R resolutions, ascending.
        fixed: Cost of the parts every arch has (first conv, block 0, head), per resolution.
        block: Cost of elastic block ``position`` with choice ``3 * kernel_index + expand_index``.
    """

    def __init__(self, resolutions: Sequence[int], fixed: np.ndarray, block: np.ndarray) -> None:
        self.resolutions = tuple(int(r) for r in resolutions)
        n_res = len(self.resolutions)
        if fixed.shape != (n_res,) or block.shape != (n_res, N_BLOCKS, _N_CHOICES):
            raise ValueError(f"cost arrays of shape {fixed.shape} and {block.shape}; expected ({n_res},) and "
                             f"({n_res}, {N_BLOCKS}, {_N_CHOICES})")
        self.fixed = fixed
        # A tenth, zero-cost choice per position stands for "block skipped by depth": no mask multiply.
        padded = np.zeros((n_res, N_BLOCKS, _N_CHOICES + 1), dtype=block.dtype)
        padded[:, :, :_N_CHOICES] = block
        self._flat = padded.reshape(-1)
        self._res_index = np.full(max(self.resolutions) + 1, -1, dtype=np.intp)
        self._res_index[list(self.resolutions)] = np.arange(n_res)
        self._position_offset = np.arange(N_BLOCKS, dtype=np.intp) * (_N_CHOICES + 1)

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
        index = (ri * (N_BLOCKS * (_N_CHOICES + 1)))[:, None] + self._position_offset + choice
        return self.fixed[ri], self._flat[index]

    def total(self, batch: ArchBatch) -> np.ndarray:
        """Cost of each arch of the batch, shape (n,)."""
        fixed, blocks = self._gather(batch)
        return fixed + blocks.sum(axis=1)

    def parts(self, batch: ArchBatch) -> tuple[np.ndarray, np.ndarray]:
        """The fixed cost of each arch (n,) and the cost of its blocks per stage (n, 5)."""
        fixed, blocks = self._gather(batch)
        return fixed, blocks.reshape(len(batch), N_STAGES, MAX_DEPTH).sum(axis=2)

    def minimum(self, resolutions: Sequence[int] | None = None) -> tuple[float, int]:
        """The smallest cost any arch can have (at one of ``resolutions``, default all), and its resolution."""
        best = np.nanmin(self.block, axis=2).reshape(len(self.resolutions), N_STAGES, MAX_DEPTH)
        per_depth = best.cumsum(axis=2)[:, :, [d - 1 for d in DEPTHS]]
        totals = self.fixed + per_depth.min(axis=2).sum(axis=1)
        allowed = np.isin(self.resolutions, self.resolutions if resolutions is None else resolutions)
        totals = np.where(allowed, totals, np.inf)
        i = int(np.nanargmin(totals))
        return totals[i].item(), self.resolutions[i]

    @property
    def block(self) -> np.ndarray:
        return self._flat.reshape(len(self.resolutions), N_BLOCKS, _N_CHOICES + 1)[:, :, :_N_CHOICES]
