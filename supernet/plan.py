"""The OFA MobileNetV3 layout as data: widths, strides, activations and SE per stage, for one width multiplier.

Decoded once here; the supernet, MACs/params counting and the lookup-table units all read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from .arch import MAX_DEPTH, N_STAGES, Arch
from .channels import make_divisible, se_channels

__all__ = ["BASE_WIDTHS", "BlockPlan", "NetPlan", "StagePlan", "feature_size"]

BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
_STAGE_STRIDES = (2, 2, 2, 1, 2)
_STAGE_ACTS = ("relu", "relu", "h_swish", "h_swish", "h_swish")
_STAGE_SE = (False, True, False, True, True)


def feature_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv with odd kernel and this stride."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class StagePlan:
    out_chs: int
    stride: int
    act_func: str
    use_se: bool


@dataclass(frozen=True)
class BlockPlan:
    """One active elastic block of one arch: everything a table row or a MACs count needs."""

    index: int
    in_size: int
    out_size: int
    in_chs: int
    out_chs: int
    mid_chs: int
    kernel_size: int
    stride: int
    act_func: str
    use_se: bool

    @property
    def has_shortcut(self) -> bool:
        return self.stride == 1 and self.in_chs == self.out_chs

    @property
    def se_chs(self) -> int:
        return se_channels(self.mid_chs)


@dataclass(frozen=True)
class NetPlan:
    """Channel widths of the supernet for one width multiplier (not elastic: fixed per supernet)."""

    width_mult: float
    first_conv_chs: int
    first_block_chs: int
    stages: tuple[StagePlan, ...]
    final_expand_chs: int
    feature_mix_chs: int

    @classmethod
    @cache
    def for_width(cls, width_mult: float) -> NetPlan:
        if not width_mult > 0:
            raise ValueError(f"width_mult = {width_mult!r} must be positive (the released supernets use 1.0 and 1.2)")
        widths = [make_divisible(base * width_mult) for base in BASE_WIDTHS]
        stages = tuple(StagePlan(widths[2 + s], _STAGE_STRIDES[s], _STAGE_ACTS[s], _STAGE_SE[s])
                       for s in range(N_STAGES))
        return cls(width_mult, widths[0], widths[1], stages, widths[7], widths[8])

    def stage_in_chs(self, stage: int) -> int:
        return self.first_block_chs if stage == 0 else self.stages[stage - 1].out_chs

    def blocks(self, arch: Arch) -> Iterator[BlockPlan]:
        """The active elastic blocks of ``arch`` at its resolution, in network order."""
        size = feature_size(arch.r, 2)
        for s, stage in enumerate(self.stages):
            in_chs = self.stage_in_chs(s)
            for j in range(arch.d[s]):
                index = s * MAX_DEPTH + j
                stride = stage.stride if j == 0 else 1
                out_size = feature_size(size, stride)
                mid = make_divisible(round(in_chs * arch.e[index]))
                yield BlockPlan(index, size, out_size, in_chs, stage.out_chs, mid, arch.ks[index], stride,
                                stage.act_func, stage.use_se)
                size, in_chs = out_size, stage.out_chs

    def final_size(self, resolution: int) -> int:
        size = feature_size(resolution, 2)
        for stage in self.stages:
            size = feature_size(size, stage.stride)
        return size
