"""Batches of archs as integer arrays, so predictors and the search work on many archs per numpy call.

An :class:`ArchBatch` holds ``ks`` and ``e`` of shape (n, 20), ``d`` of shape (n, 5) and ``r`` of shape (n,), in
the same values as :class:`supernet.Arch` (kernel 3/5/7, expand 3/4/6, depth 2/3/4, resolution in pixels); for the
ProxylessNAS space, (n, 21) and (n, 6).
Converting a Python ``Arch`` costs microseconds; predicting on a batch costs nanoseconds per arch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from supernet.arch import (
    EXPAND_RATIOS,
    KERNEL_SIZES,
    LAYOUTS,
    MOBILENETV3_LAYOUT,
    Arch,
    ArchError,
    ArchSpace,
    Layout,
)

__all__ = ["ArchBatch", "batch_from_dicts", "block_positions", "choice_index", "sample_batch"]


@cache
def block_positions(layout: Layout = MOBILENETV3_LAYOUT) -> tuple[np.ndarray, np.ndarray]:
    """The stage of each elastic block, and its place in the stage (what a depth is compared with)."""
    stage = np.array(layout.stage_of_blocks())
    position = np.concatenate([np.arange(blocks) for blocks in layout.stage_blocks])
    return stage, position


def _layout_of(n_blocks: int, n_stages: int) -> Layout | None:
    return next((lay for lay in LAYOUTS if (lay.n_blocks, lay.n_stages) == (n_blocks, n_stages)), None)


def _index_table(values: Sequence[int]) -> np.ndarray:
    table = np.full(max(values) + 1, -1, dtype=np.intp)
    table[list(values)] = np.arange(len(values))
    return table


_KS_INDEX = _index_table(KERNEL_SIZES)
_E_INDEX = _index_table(EXPAND_RATIOS)


def choice_index(ks: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Index 0..8 of each block's (kernel, expand) pair: ``3 * kernel_index + expand_index``."""
    return _KS_INDEX[ks] * len(EXPAND_RATIOS) + _E_INDEX[e]


@dataclass(frozen=True, eq=False)
class ArchBatch:
    """``n`` archs as arrays; build with :meth:`from_archs` or :func:`sample_batch`.

    Args:
        ks: Kernel sizes, int array of shape (n, 20), or (n, 21) for ProxylessNAS.
        e: Expand ratios, int array of the same shape.
        d: Depths, int array of shape (n, 5), or (n, 6).
        r: Resolutions, int array of shape (n,).
    """

    ks: np.ndarray
    e: np.ndarray
    d: np.ndarray
    r: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.r)
        blocks, stages = (self.ks.shape[1], self.d.shape[1]) if self.ks.ndim == self.d.ndim == 2 else (0, 0)
        layout = _layout_of(blocks, stages)
        if layout is None or (self.ks.shape, self.e.shape, self.d.shape, self.r.shape) != (
                (n, blocks), (n, blocks), (n, stages), (n,)):
            expected = " or ".join(f"({n}, {lay.n_blocks}), ({n}, {lay.n_blocks}), ({n}, {lay.n_stages}), ({n},)"
                                   for lay in LAYOUTS)
            raise ValueError(f"ArchBatch arrays of shapes ks {self.ks.shape}, e {self.e.shape}, d {self.d.shape}, "
                             f"r {self.r.shape}; expected {expected}")

    @property
    def layout(self) -> Layout:
        return _layout_of(self.ks.shape[1], self.d.shape[1])

    @classmethod
    def from_archs(cls, archs: Iterable[Arch], layout: Layout | None = None) -> ArchBatch:
        """A batch of archs of one layout (``layout`` gives the shape of an empty batch; default MobileNetV3)."""
        archs = list(archs)
        layouts = {a.layout for a in archs}
        if len(layouts) > 1:
            raise ArchError("a batch holds archs of one space; these mix mobilenetv3 and proxyless archs")
        layout = layouts.pop() if layouts else layout or MOBILENETV3_LAYOUT
        return cls(
            ks=np.array([a.ks for a in archs], dtype=np.int8).reshape(-1, layout.n_blocks),
            e=np.array([a.e for a in archs], dtype=np.int8).reshape(-1, layout.n_blocks),
            d=np.array([a.d for a in archs], dtype=np.int8).reshape(-1, layout.n_stages),
            r=np.array([a.r for a in archs], dtype=np.int16),
        )

    @classmethod
    def coerce(cls, archs: ArchBatch | Arch | Iterable[Arch]) -> ArchBatch:
        """A batch from a batch, one arch, or an iterable of archs."""
        if isinstance(archs, ArchBatch):
            return archs
        if isinstance(archs, Arch):
            return cls.from_archs([archs])
        return cls.from_archs(archs)

    def to_archs(self) -> list[Arch]:
        return [Arch(ks=tuple(int(v) for v in ks), e=tuple(int(v) for v in e), d=tuple(int(v) for v in d),
                     r=int(r)) for ks, e, d, r in zip(self.ks, self.e, self.d, self.r, strict=True)]

    def __len__(self) -> int:
        return len(self.r)

    def __getitem__(self, index: np.ndarray | slice | int) -> ArchBatch:
        if isinstance(index, (int, np.integer)):
            index = [index]
        return ArchBatch(self.ks[index], self.e[index], self.d[index], self.r[index])

    @property
    def active(self) -> np.ndarray:
        """Bool array (n, blocks): which elastic blocks each arch runs."""
        stage, position = block_positions(self.layout)
        return self.d[:, stage] > position

    def with_resolution(self, r: int | np.ndarray) -> ArchBatch:
        return ArchBatch(self.ks, self.e, self.d, np.broadcast_to(np.asarray(r, dtype=self.r.dtype), self.r.shape))

    @staticmethod
    def concat(batches: Sequence[ArchBatch]) -> ArchBatch:
        return ArchBatch(*(np.concatenate([getattr(b, f) for b in batches]) for f in ("ks", "e", "d", "r")))

    def check(self, space: ArchSpace) -> None:
        """Raise ``ValueError`` naming the first value of the batch that is not in ``space``."""
        if self.layout != space.layout:
            raise ValueError(f"the batch holds {self.layout.family} archs, but the space is {space.layout.family}")
        for name, allowed in (("ks", space.kernel_sizes), ("e", space.expand_ratios), ("r", space.resolutions)):
            values = getattr(self, name)
            bad = ~np.isin(values, allowed)
            if bad.any():
                i = int(np.argwhere(bad)[0][0])
                raise ValueError(f"arch {i} of the batch has {name} value {int(values[bad][0])}, not in "
                                 f"{list(allowed)}")
        for s in range(space.n_stages):
            bad = ~np.isin(self.d[:, s], space.stage_depths(s))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"arch {i} of the batch has d[{s}] = {int(self.d[i, s])}, not in "
                                 f"{list(space.stage_depths(s))}")


def _whole_numbers(values: list, dtype: type) -> np.ndarray:
    """``values`` as an integer array; anything else (160.5, true, "3") raises, so the entry is parsed alone and
    named, where a cast would have taken 160.5 for 160."""
    array = np.asarray(values)
    if array.dtype.kind not in "iu" and not (array.dtype.kind == "f" and np.array_equal(array, np.round(array))):
        raise TypeError(f"not whole numbers: {array.dtype}")
    return array.astype(dtype)


def batch_from_dicts(items: Sequence[Any], where: str) -> ArchBatch:
    """Archs in OFA's dict shape (``ks``, ``e``, ``d``, ``r``) as a batch, about a microsecond each.

    Elastic choices are checked against OFA's; resolutions are left to whoever predicts. An entry that does not
    fit is parsed alone, so the error names it (``where``, entry number) and what is wrong.
    """
    try:
        ks = _whole_numbers([item["ks"] for item in items], np.int8)
        e = _whole_numbers([item["e"] for item in items], np.int8)
        d = _whole_numbers([item["d"] for item in items], np.int8)
        r = _whole_numbers([item["r"][0] if isinstance(item.get("r"), list) else item.get("r", item.get("image_size"))
                            for item in items], np.int16)
        batch = ArchBatch(ks, e, d, r)
        space = ArchSpace(resolutions=tuple(np.unique(r).tolist()), layout=batch.layout)
        batch.check(space)
        return batch
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        for i, item in enumerate(items):
            try:
                arch = Arch.from_dict(item)
                ArchSpace(resolutions=(arch.r,), layout=arch.layout).validate(arch)
            except ArchError as err:
                raise ArchError(f"{where}: arch {i + 1}: {err}") from None
        raise


def sample_batch(n: int, space: ArchSpace, rng: np.random.Generator) -> ArchBatch:
    """``n`` uniformly random archs of ``space``."""
    blocks = space.n_blocks
    ks = np.asarray(space.kernel_sizes, dtype=np.int8)[rng.integers(0, len(space.kernel_sizes), (n, blocks))]
    e = np.asarray(space.expand_ratios, dtype=np.int8)[rng.integers(0, len(space.expand_ratios), (n, blocks))]
    d = np.asarray(space.depths, dtype=np.int8)[rng.integers(0, len(space.depths), (n, space.n_stages))]
    for s, depth in space.fixed_depths.items():
        d[:, s] = depth
    r = np.asarray(space.resolutions, dtype=np.int16)[rng.integers(0, len(space.resolutions), n)]
    return ArchBatch(ks, e, d, r)

