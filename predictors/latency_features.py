"""What a latency model sees of an arch: per-stage work and memory traffic, and a table's sums where one is given.

Latency on a CPU or GPU follows the work a network does and the bytes it moves, stage by stage, more than its
total MACs: a depthwise 7x7 and a pointwise conv of the same MACs run at very different speeds, and early stages
move large activations. So each stage (five in MobileNetV3, six in ProxylessNAS) contributes its pointwise,
depthwise and SE MACs (ProxylessNAS has no SE), the elements of its activations, its parameters and its number of
blocks; the resolution (r and r²) stands for the fixed first and last layers. All of these are sums over blocks
whose shapes depend only on (resolution, position, kernel, expand), as in :mod:`predictors._additive`, so a batch
of archs is one gather and one sum: a million archs in about a second. A table adds its raw sum, its fixed part
and its sum per stage.

The whole network's depthwise MACs in 5x5 and 7x7 kernels (``KERNEL_FEATURES``) are two more columns. A runtime's
depthwise kernels need not cost the same per MAC at every size: under LiteRT/XNNPACK on this project's build VM, a
160 px subnet of mostly 7x7 blocks measured 18.7 ms and a 224 px one of mostly 3x3 and 5x5 blocks 8.5 ms. Without
these columns a ridge fitted on 100 LiteRT subnets put 60% of them within ±10% under cross-validation, with them
98% (and 47% against 100% on another 100 timed by the plain-loop harness); ONNX Runtime's figures moved by a point
or two either way. Two whole-network columns rather than one per stage and kernel: ten more columns cost ONNX
Runtime 1-4 points within ±5%. Models saved before these columns load without them (``by_kernel``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

import numpy as np

from supernet.arch import EXPAND_RATIOS, KERNEL_SIZES, MOBILENETV3_LAYOUT, Arch, ArchSpace, Layout
from supernet.plan import NetPlan, family_of

from ._additive import AdditiveCost
from .archs import ArchBatch, choice_index

__all__ = ["BLOCK_FEATURES", "KERNEL_FEATURES", "ArchFeatures"]

BLOCK_FEATURES = ("pw_macs_m", "dw_macs_m", "se_macs_m", "activations_m", "params_m", "blocks")
_KERNELS = (5, 7)
KERNEL_FEATURES = tuple(f"dw{k}_macs_m" for k in _KERNELS)  # the whole network's, by depthwise kernel size
_N_CHOICES = len(KERNEL_SIZES) * len(EXPAND_RATIOS)
_CHUNK = 1 << 16  # archs per gather: bounds the (chunk, 21, features) temporary to about 60 MB


def _block_vector(b) -> list[float]:
    pw = b.in_chs * b.mid_chs * b.in_size**2 + b.mid_chs * b.out_chs * b.out_size**2
    dw = b.mid_chs * b.kernel_size**2 * b.out_size**2
    se = 2 * b.mid_chs * b.se_chs if b.use_se else 0
    activations = b.in_chs * b.in_size**2 + b.mid_chs * (b.in_size**2 + b.out_size**2) + b.out_chs * b.out_size**2
    params = b.in_chs * b.mid_chs + b.mid_chs * b.kernel_size**2 + b.mid_chs * b.out_chs
    if b.use_se:
        params += 2 * b.mid_chs * b.se_chs
    by_kernel = [dw / 1e6 if b.kernel_size == k else 0.0 for k in _KERNELS]
    return [pw / 1e6, dw / 1e6, se / 1e6, activations / 1e6, params / 1e6, 1.0, *by_kernel]


@cache
def _block_table(width_mult: float, r: int, layout: Layout) -> np.ndarray:
    """Features of block ``position`` with choice ``c`` at resolution r: (blocks, 10, F + 2), the block features
    then the kernel ones; choice 9 = skipped (zeros). ProxylessNAS blocks have no SE, so their SE column is zero."""
    plan = NetPlan.for_width(width_mult, family_of(layout))
    space = ArchSpace(resolutions=(r,), layout=layout)
    table = np.zeros((layout.n_blocks, _N_CHOICES + 1, len(BLOCK_FEATURES) + len(KERNEL_FEATURES)))
    for k in KERNEL_SIZES:
        for e in EXPAND_RATIOS:
            c = int(choice_index(np.array(k), np.array(e)))
            for b in plan.blocks(space.uniform(k, e, max(space.depths), r)):
                table[b.index, c] = _block_vector(b)
    return table


class ArchFeatures:
    """Features of archs of one supernet width, optionally with a table's sums.

    Args:
        width_mult: Supernet width (channel counts).
        table_cost: A table's raw sums (:attr:`predictors.latency.LatencyPredictor.cost`); its resolutions are
            then the only ones these features answer for.
        layout: The space's blocks per stage; default the table's, else MobileNetV3's.
        by_kernel: With the whole network's depthwise MACs per kernel size (``KERNEL_FEATURES``); models saved
            before those existed are read without them.
    """

    def __init__(self, width_mult: float, table_cost: AdditiveCost | None = None, layout: Layout | None = None,
                 by_kernel: bool = True) -> None:
        if table_cost is not None and layout is not None and layout != table_cost.layout:
            raise ValueError(f"a {table_cost.layout.family} table's sums cannot be features of {layout.family} archs")
        self.width_mult = float(width_mult)
        self.table_cost = table_cost
        self.by_kernel = by_kernel
        self.layout = layout or (table_cost.layout if table_cost is not None else MOBILENETV3_LAYOUT)
        self._stage_starts = np.array([self.layout.stage_start(s) for s in range(self.layout.n_stages)])

    @property
    def names(self) -> list[str]:
        stages = range(self.layout.n_stages)
        names = [f"stage{s}_{f}" for s in stages for f in BLOCK_FEATURES]
        names += ["r", "r2", "macs_m", "params_m", *(KERNEL_FEATURES if self.by_kernel else ())]
        if self.table_cost is not None:
            names += ["table_sum_ms", "table_fixed_ms", *(f"table_stage{s}_ms" for s in stages)]
        return names

    def transform(self, archs: ArchBatch | Iterable[Arch]) -> np.ndarray:
        """Features of each arch, float64 array of shape (n, len(names))."""
        batch = ArchBatch.coerce(archs)
        if len(batch) and batch.layout != self.layout:
            raise ValueError(f"{batch.layout.family} archs cannot have the features of the {self.layout.family} "
                             f"space")
        parts = [self._chunk(batch[slice(i, i + _CHUNK)]) for i in range(0, len(batch), _CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.names)))

    def table_sum(self, archs: ArchBatch | Iterable[Arch]) -> np.ndarray:
        """The table's raw sum of each arch (ms); only with a table."""
        if self.table_cost is None:
            raise ValueError("these features have no table")
        return self.table_cost.total(ArchBatch.coerce(archs))

    def _chunk(self, batch: ArchBatch) -> np.ndarray:
        resolutions = np.unique(batch.r)
        tables = np.stack([_block_table(self.width_mult, int(r), self.layout) for r in resolutions])
        ri = np.searchsorted(resolutions, batch.r)
        choice = np.where(batch.active, choice_index(batch.ks, batch.e), _N_CHOICES)
        blocks = tables[ri[:, None], np.arange(self.layout.n_blocks), choice]  # (n, blocks, F + 2)
        stages = np.add.reduceat(blocks[:, :, :len(BLOCK_FEATURES)], self._stage_starts, axis=1)
        per_stage = stages.reshape(len(batch), -1)
        f = BLOCK_FEATURES.index
        macs = stages[:, :, f("pw_macs_m")] + stages[:, :, f("dw_macs_m")] + stages[:, :, f("se_macs_m")]
        r = batch.r.astype(float) / 224
        columns = [per_stage, r[:, None], r[:, None] ** 2, macs.sum(axis=1, keepdims=True),
                   stages[:, :, f("params_m")].sum(axis=1, keepdims=True)]
        if self.by_kernel:
            columns.append(blocks[:, :, len(BLOCK_FEATURES):].sum(axis=1))
        if self.table_cost is not None:
            fixed, stage_sums = self.table_cost.parts(batch)
            columns += [(fixed + stage_sums.sum(axis=1))[:, None], fixed[:, None], stage_sums]
        return np.concatenate(columns, axis=1)
