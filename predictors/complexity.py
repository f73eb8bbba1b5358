"""MACs and parameter counts for batches of archs, equal to ``supernet.count_macs`` / ``count_params``.

Rather than restate the counting rules, the per-position costs are read off ``supernet.complexity`` itself:
both counts are sums over layers, so changing one block of a base arch changes the count by exactly that block's
share. The differences are exact integers, and the batch prediction is the same gather-and-sum as latency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache

import numpy as np

from supernet.arch import DEPTHS, EXPAND_RATIOS, KERNEL_SIZES, MOBILENETV3_LAYOUT, Arch, ArchSpace, Layout
from supernet.complexity import count_macs, count_params

from ._additive import AdditiveCost
from .archs import ArchBatch

__all__ = ["MacsPredictor", "ParamsPredictor"]


def _with_block(arch: Arch, index: int, k: int, e: int) -> Arch:
    ks, es = list(arch.ks), list(arch.e)
    ks[index], es[index] = k, e
    return Arch(tuple(ks), tuple(es), arch.d, arch.r)


def _with_depth(arch: Arch, stage: int, depth: int) -> Arch:
    d = list(arch.d)
    d[stage] = depth
    return Arch(arch.ks, arch.e, tuple(d), arch.r)


def _tables(count: Callable[[Arch], int], resolutions: Iterable[int],
            layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    k0, e0 = KERNEL_SIZES[0], EXPAND_RATIOS[0]
    resolutions = list(resolutions)
    fixed = np.zeros(len(resolutions), dtype=np.int64)
    block = np.zeros((len(resolutions), layout.n_blocks, len(KERNEL_SIZES) * len(EXPAND_RATIOS)), dtype=np.int64)
    for i, r in enumerate(resolutions):
        base = ArchSpace((r,), layout=layout).uniform(k0, e0, min(DEPTHS), r)
        fixed[i] = count(base)
        for s in range(layout.n_stages):
            shallowest = min(layout.depth_choices(s))
            for j in range(layout.stage_blocks[s]):
                index = layout.stage_start(s) + j
                if j < shallowest:  # every arch runs this block: the base choice is already in ``fixed``
                    run, reference = base, fixed[i]
                else:  # block j runs when the stage is j + 1 deep: its share is the step from depth j
                    run, reference = _with_depth(base, s, j + 1), count(_with_depth(base, s, j))
                for c, (k, e) in enumerate((k, e) for k in KERNEL_SIZES for e in EXPAND_RATIOS):
                    block[i, index, c] = count(_with_block(run, index, k, e)) - reference
    return fixed, block


class _CountPredictor:
    """A count that is a sum over layers, for batches of archs of one supernet width."""

    _count: Callable[..., int]

    def __init__(self, width_mult: float = 1.0, n_classes: int = 1000, resolutions: Iterable[int] | None = None,
                 layout: Layout = MOBILENETV3_LAYOUT):
        self.width_mult = width_mult
        self.n_classes = n_classes
        self.layout = layout
        self.resolutions = tuple(ArchSpace.for_width(width_mult, layout).resolutions if resolutions is None
                                 else resolutions)
        self._cost = _cached_cost(type(self)._count, width_mult, n_classes, self.resolutions, layout)

    def predict(self, archs: ArchBatch | Iterable[Arch]) -> np.ndarray:
        """The count for each arch, int64 array of shape (n,)."""
        return self._cost.total(ArchBatch.coerce(archs))

    def minimum(self, resolutions: Iterable[int] | None = None) -> tuple[int, int]:
        """The smallest count any arch reaches (at ``resolutions``, default all), and its resolution."""
        value, r = self._cost.minimum(None if resolutions is None else list(resolutions))
        return int(value), r


@cache
def _cached_cost(count: Callable[..., int], width_mult: float, n_classes: int,
                 resolutions: tuple[int, ...], layout: Layout) -> AdditiveCost:
    fixed, block = _tables(lambda arch: count(arch, width_mult, n_classes), resolutions, layout)
    return AdditiveCost(resolutions, fixed, block)


class MacsPredictor(_CountPredictor):
    """MACs per image in OFA's convention (what OFA calls FLOPs), equal to ``supernet.count_macs``.

    Args:
        width_mult: Supernet width.
        n_classes: Classifier outputs.
        resolutions: Resolutions to cover; default: the width's resolution list.
        layout: The space's layout (:data:`supernet.arch.PROXYLESS_LAYOUT` for ProxylessNAS archs).
    """

    _count = staticmethod(count_macs)


class ParamsPredictor(_CountPredictor):
    """Learnable parameters of each subnet, equal to ``supernet.count_params``. Arguments as :class:`MacsPredictor`."""

    _count = staticmethod(count_params)
