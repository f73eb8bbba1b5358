"""Batches of archs as integer arrays, so predictors and the search work on many archs per numpy call.

An :class:`ArchBatch` holds ``ks`` and ``e`` of shape (n, 20), ``d`` of shape (n, 5) and ``r`` of shape (n,), in
the same values as :class:`supernet.Arch` (kernel 3/5/7, expand 3/4/6, depth 2/3/4, resolution in pixels).
Converting a Python ``Arch`` costs microseconds; predicting on a batch costs nanoseconds per arch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from supernet.arch import EXPAND_RATIOS, KERNEL_SIZES, MAX_DEPTH, N_BLOCKS, N_STAGES, Arch, ArchError, ArchSpace

__all__ = ["BLOCK_POSITION", "BLOCK_STAGE", "ArchBatch", "batch_from_dicts", "choice_index", "sample_batch"]

BLOCK_STAGE = np.repeat(np.arange(N_STAGES), MAX_DEPTH)
BLOCK_POSITION = np.tile(np.arange(MAX_DEPTH), N_STAGES)


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
        ks: Kernel sizes, int array of shape (n, 20).
        e: Expand ratios, int array of shape (n, 20).
        d: Depths, int array of shape (n, 5).
        r: Resolutions, int array of shape (n,).
    """

    ks: np.ndarray
    e: np.ndarray
    d: np.ndarray
    r: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.r)
        if (self.ks.shape, self.e.shape, self.d.shape, self.r.shape) != ((n, N_BLOCKS), (n, N_BLOCKS), (n, N_STAGES),
                                                                         (n,)):
            raise ValueError(f"ArchBatch arrays of shapes ks {self.ks.shape}, e {self.e.shape}, d {self.d.shape}, "
                             f"r {self.r.shape}; expected ({n}, {N_BLOCKS}), ({n}, {N_BLOCKS}), ({n}, {N_STAGES}), "
                             f"({n},)")

    @classmethod
    def from_archs(cls, archs: Iterable[Arch]) -> ArchBatch:
        archs = list(archs)
        return cls(
            ks=np.array([a.ks for a in archs], dtype=np.int8).reshape(-1, N_BLOCKS),
            e=np.array([a.e for a in archs], dtype=np.int8).reshape(-1, N_BLOCKS),
            d=np.array([a.d for a in archs], dtype=np.int8).reshape(-1, N_STAGES),
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
        """Bool array (n, 20): which elastic blocks each arch runs."""
        return self.d[:, BLOCK_STAGE] > BLOCK_POSITION

    def with_resolution(self, r: int | np.ndarray) -> ArchBatch:
        return ArchBatch(self.ks, self.e, self.d, np.broadcast_to(np.asarray(r, dtype=self.r.dtype), self.r.shape))

    @staticmethod
    def concat(batches: Sequence[ArchBatch]) -> ArchBatch:
        return ArchBatch(*(np.concatenate([getattr(b, f) for b in batches]) for f in ("ks", "e", "d", "r")))

    def check(self, space: ArchSpace) -> None:
        """Raise ``ValueError`` naming the first value of the batch that is not in ``space``."""
        for name, allowed in (("ks", space.kernel_sizes), ("e", space.expand_ratios), ("d", space.depths),
                              ("r", space.resolutions)):
            values = getattr(self, name)
            bad = ~np.isin(values, allowed)
            if bad.any():
                i = int(np.argwhere(bad)[0][0])
                raise ValueError(f"arch {i} of the batch has {name} value {int(values[bad][0])}, not in "
                                 f"{list(allowed)}")


def batch_from_dicts(items: Sequence[Any], where: str) -> ArchBatch:
    """Archs in OFA's dict shape (``ks``, ``e``, ``d``, ``r``) as a batch, about a microsecond each.

    Elastic choices are checked against OFA's; resolutions are left to whoever predicts. An entry that does not
    fit is parsed alone, so the error names it (``where``, entry number) and what is wrong.
    """
    try:
        ks = np.array([item["ks"] for item in items], dtype=np.int8)
        e = np.array([item["e"] for item in items], dtype=np.int8)
        d = np.array([item["d"] for item in items], dtype=np.int8)
        r = np.array([item["r"][0] if isinstance(item.get("r"), list) else item.get("r", item.get("image_size"))
                      for item in items], dtype=np.int16)
        batch = ArchBatch(ks.reshape(-1, N_BLOCKS), e.reshape(-1, N_BLOCKS), d.reshape(-1, N_STAGES), r)
        space = ArchSpace(resolutions=tuple(np.unique(r).tolist()))
        batch.check(space)
        return batch
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        for i, item in enumerate(items):
            try:
                ArchSpace(resolutions=(Arch.from_dict(item).r,)).validate(Arch.from_dict(item))
            except ArchError as err:
                raise ArchError(f"{where}: arch {i + 1}: {err}") from None
        raise


def sample_batch(n: int, space: ArchSpace, rng: np.random.Generator) -> ArchBatch:
    """``n`` uniformly random archs of ``space``."""
    ks = np.asarray(space.kernel_sizes, dtype=np.int8)[rng.integers(0, len(space.kernel_sizes), (n, N_BLOCKS))]
    e = np.asarray(space.expand_ratios, dtype=np.int8)[rng.integers(0, len(space.expand_ratios), (n, N_BLOCKS))]
    d = np.asarray(space.depths, dtype=np.int8)[rng.integers(0, len(space.depths), (n, N_STAGES))]
    r = np.asarray(space.resolutions, dtype=np.int16)[rng.integers(0, len(space.resolutions), n)]
    return ArchBatch(ks, e, d, r)

