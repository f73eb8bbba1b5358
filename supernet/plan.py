"""What each OFA family fixes around its elastic blocks, and the widths of one supernet of it, as data.

MobileNetV3 (phones) and ProxylessNAS (GPUs and CPUs) share the elastic MBConv blocks and differ only in what is
written here: widths, strides, activations and SE per stage, the stem's activation, whether a final expand conv
comes before the pool, and BN's epsilon. The supernets, MACs/params counting and the lookup-table units all read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from .arch import MOBILENETV3_LAYOUT, PROXYLESS_LAYOUT, Arch, ArchError, Layout
from .channels import make_divisible, se_channels

__all__ = ["FAMILIES", "MOBILENETV3", "PROXYLESS", "BlockPlan", "Family", "NetPlan", "StagePlan", "family_named",
           "family_of", "feature_size"]


@dataclass(frozen=True)
class Family:
    """One OFA family's fixed design, at width 1.0.

    Args:
        name: The space's name (as in ``ofa-profile --space``), and its layout's family.
        layout: How its elastic blocks group into stages.
        first_conv_width, first_block_width: The stem: a 3x3 stride-2 conv, then an expand-free 3x3 block.
        stage_widths, stage_strides, stage_acts, stage_se: One entry per stage of elastic blocks.
        final_expand_width: The 1x1 conv before the pool (MobileNetV3), or None (ProxylessNAS has none).
        feature_mix_width: The 1x1 conv after the pool (MobileNetV3, without BN) or before it (ProxylessNAS).
        stem_act, first_block_act, head_act: Activations of the first conv, the first block, and the head convs.
        first_block_residual: The first block adds an identity shortcut when its input and output widths agree
            (MobileNetV3); ProxylessNAS never gives it one.
        bn_eps: BatchNorm epsilon of the released supernet.
        released_widths: Widths OFA released supernets (and tables, predictors) for; the first is the commands'
            default.
    """

    name: str
    layout: Layout
    first_conv_width: int
    first_block_width: int
    stage_widths: tuple[int, ...]
    stage_strides: tuple[int, ...]
    stage_acts: tuple[str, ...]
    stage_se: tuple[bool, ...]
    final_expand_width: int | None
    feature_mix_width: int
    stem_act: str
    first_block_act: str
    head_act: str
    first_block_residual: bool
    bn_eps: float
    released_widths: tuple[float, ...]

    @property
    def mixes_before_pool(self) -> bool:
        """ProxylessNAS's feature mix runs on the feature map; MobileNetV3's on the pooled vector."""
        return self.final_expand_width is None


MOBILENETV3 = Family(
    "mobilenetv3", MOBILENETV3_LAYOUT, 16, 16, (24, 40, 80, 112, 160), (2, 2, 2, 1, 2),
    ("relu", "relu", "h_swish", "h_swish", "h_swish"), (False, True, False, True, True), 960, 1280,
    stem_act="h_swish", first_block_act="relu", head_act="h_swish", first_block_residual=True,
    bn_eps=1e-5, released_widths=(1.2, 1.0),
)
PROXYLESS = Family(
    "proxyless", PROXYLESS_LAYOUT, 32, 16, (24, 40, 80, 96, 192, 320), (2, 2, 2, 1, 2, 1), ("relu6",) * 6,
    (False,) * 6, None, 1280, stem_act="relu6", first_block_act="relu6", head_act="relu6",
    first_block_residual=False, bn_eps=1e-3, released_widths=(1.3,),
)
FAMILIES = {family.name: family for family in (MOBILENETV3, PROXYLESS)}


def family_of(layout: Layout) -> Family:
    """The family whose archs have this layout (an arch knows its layout from its length)."""
    return next(family for family in FAMILIES.values() if family.layout == layout)


def family_named(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown space {name!r}; expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


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
    """Channel widths of one supernet: a family at one width multiplier (not elastic: fixed per supernet)."""

    width_mult: float
    first_conv_chs: int
    first_block_chs: int
    stages: tuple[StagePlan, ...]
    final_expand_chs: int | None
    feature_mix_chs: int
    family: Family = MOBILENETV3

    @classmethod
    def for_arch(cls, arch: Arch, width_mult: float) -> NetPlan:
        """The plan of the supernet an arch's layout belongs to, at this width."""
        return cls.for_width(width_mult, family_of(arch.layout))

    @classmethod
    @cache
    def for_width(cls, width_mult: float, family: Family = MOBILENETV3) -> NetPlan:
        if not width_mult > 0:
            raise ValueError(f"width_mult = {width_mult!r} must be positive (the released supernets use 1.0 and 1.2 "
                             f"for MobileNetV3, 1.3 for ProxylessNAS)")

        def width(base: int) -> int:
            return make_divisible(base * width_mult)

        stages = tuple(StagePlan(width(w), stride, act, se) for w, stride, act, se in
                       zip(family.stage_widths, family.stage_strides, family.stage_acts, family.stage_se, strict=True))
        final_expand = None if family.final_expand_width is None else width(family.final_expand_width)
        return cls(width_mult, width(family.first_conv_width), width(family.first_block_width), stages, final_expand,
                   width(family.feature_mix_width), family)

    @property
    def last_block_chs(self) -> int:
        return self.stages[-1].out_chs

    @property
    def first_block_has_shortcut(self) -> bool:
        return self.family.first_block_residual and self.first_conv_chs == self.first_block_chs

    @property
    def head_in_chs(self) -> int:
        """Channels the feature mix reads: the final expand's, or the last block's where there is none."""
        return self.last_block_chs if self.final_expand_chs is None else self.final_expand_chs

    def stage_in_chs(self, stage: int) -> int:
        return self.first_block_chs if stage == 0 else self.stages[stage - 1].out_chs

    def blocks(self, arch: Arch) -> Iterator[BlockPlan]:
        """The active elastic blocks of ``arch`` at its resolution, in network order."""
        size = feature_size(arch.r, 2)
        if arch.layout != self.family.layout:
            raise ArchError(f"a {arch.layout.family} arch ({len(arch.d)} stages) cannot run in a {self.family.name} "
                            f"supernet ({self.family.layout.n_stages} stages)")
        for s, stage in enumerate(self.stages):
            in_chs = self.stage_in_chs(s)
            for j in range(arch.d[s]):
                index = self.family.layout.stage_start(s) + j
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
