"""The torch modules of table units: each row built alone with seeded weights, or cut out of a subnet.

Kept apart from :mod:`supernet.units` (keys, shapes and the rows of the space), which needs no torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import ConvLayer, IdentityLayer, LinearLayer, MBConvLayer, ResidualBlock
from .mobilenetv3 import MobileNetV3Base
from .plan import Family
from .units import FIRST_CONV_KERNEL, FIRST_CONV_STRIDE, Unit, UnitError

__all__ = ["Classifier", "GlobalAvgPool", "PooledClassifier", "build_unit", "units_from_subnet"]


# --- modules of the head units ---------------------------------------------------------------------------
class GlobalAvgPool(nn.Module):
    """The head's global average pool exactly as the network computes it (a mean that keeps 1x1 dims)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class Classifier(nn.Module):
    """Flatten the 1x1 feature map, then the classifier: the table's ``Logits`` row (MobileNetV3)."""

    def __init__(self, classifier: LinearLayer) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))


class PooledClassifier(Classifier):
    """Global pool, then the classifier: ProxylessNAS's ``Logits`` row.

    Cut from a network it pools as the network does (a mean over HxW); built alone it pools with a full-window
    average pool (``window``), which computes the same and converts to TF-Lite without a leading TRANSPOSE.
    """

    def __init__(self, classifier: LinearLayer, window: int | None = None) -> None:
        super().__init__(classifier)
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3)) if self.window is None else F.avg_pool2d(x, self.window)
        return self.classifier(torch.flatten(pooled, 1))


# --- building modules ------------------------------------------------------------------------------------
def _build_block(u: Unit, family: Family) -> nn.Module:
    # NOTE: mid == in marks the expand-free block 0 (expand ratio 1); elastic blocks expand at least 3x.
    expand_ratio = 1 if u.mid_chs == u.in_chs else u.mid_chs / u.in_chs
    act = "h_swish" if u.hs else family.first_block_act
    conv = MBConvLayer(u.in_chs, u.out_chs, u.kernel_size, u.stride, expand_ratio, mid_chs=u.mid_chs,
                       act_func=act, use_se=u.se)
    return ResidualBlock(conv, IdentityLayer(u.in_chs) if u.idskip else None)


def _build_logits(u: Unit, family: Family) -> nn.Module:
    if family.mixes_before_pool:
        return PooledClassifier(LinearLayer(u.in_chs, u.out_chs), window=u.in_size)
    return Classifier(LinearLayer(u.in_chs, u.out_chs))


_BUILDERS: dict[str, Callable[[Unit, Family], nn.Module]] = {
    "Conv": lambda u, f: ConvLayer(3, u.out_chs, u.kernel_size, u.stride, act_func=f.stem_act),
    "expanded_conv": _build_block,
    # NOTE: MobileNetV3's final expand and ProxylessNAS's feature mix: both a 1x1 conv with BN on the map.
    "Conv_1": lambda u, f: ConvLayer(u.in_chs, u.out_chs, 1, act_func=f.head_act),
    # NOTE: the network's mean over HxW, built alone, gets a leading TRANSPOSE in TF-Lite (the network has none:
    # a conv follows it there); a full-window AvgPool2d computes the same, converts to AVERAGE_POOL_2D with no
    # transpose, and is the op OFA's "AvgPool2D" rows are named after.
    "AvgPool2D": lambda u, f: nn.AvgPool2d(u.kernel_size),
    "Conv_2": lambda u, f: ConvLayer(u.in_chs, u.out_chs, 1, use_bn=False, act_func=f.head_act),
    "Logits": _build_logits,
}


@torch.no_grad()
def _randomize_bn(module: nn.Module) -> None:
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
            bn.running_mean.normal_(0.0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)


def build_unit(unit: Unit, seed: int = 0) -> nn.Module:
    """A static module for this row with seeded weights and random BN statistics, in eval mode.

    Random (not identity) BN statistics keep BN from being a no-op, so an export that drops or misfolds it
    shows in an output comparison. The global RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = _BUILDERS[unit.kind](unit, unit.plan_family)
        _randomize_bn(module)
    return module.eval()


def units_from_subnet(subnet: MobileNetV3Base, resolution: int) -> list[tuple[Unit, nn.Module]]:
    """Cut an extracted subnet (either family) into its table units, sharing its weights; run in order they give
    ``subnet(x)``."""
    family = subnet.FAMILY
    first = subnet.first_conv
    if (first.kernel_size, first.stride, first.act_func) != (FIRST_CONV_KERNEL, FIRST_CONV_STRIDE, family.stem_act):
        raise UnitError(f"subnet's first conv (k{first.kernel_size}, stride {first.stride}, {first.act_func}) "
                        f"is not OFA {family.name}'s (k3, stride 2, {family.stem_act})")
    pairs: list[tuple[Unit, nn.Module]] = [(Unit.first_conv(resolution, first.out_chs, family.name), first)]
    size = pairs[0][0].out_size
    acts = {family.first_block_act, *family.stage_acts}
    for i, block in enumerate(subnet.blocks):
        conv = block.conv
        if conv.act_func not in acts:
            raise UnitError(f"subnet block {i} uses {conv.act_func!r}; {family.name} table keys know only "
                            f"{', '.join(sorted(acts))}")
        unit = Unit.block(size, conv.in_chs, conv.out_chs, conv.mid_chs, conv.kernel_size, conv.stride,
                          idskip=block.shortcut is not None, se=conv.use_se, hs=conv.act_func == "h_swish",
                          family=family.name)
        pairs.append((unit, block))
        size = unit.out_size
    mix, classifier = subnet.feature_mix_layer, subnet.classifier
    if family.mixes_before_pool:
        return [*pairs, (Unit.proxyless_feature_mix(size, mix.in_chs, mix.out_chs), mix),
                (Unit.proxyless_logits(size, classifier.in_features, classifier.out_features),
                 PooledClassifier(classifier))]
    final = subnet.final_expand_layer
    return [
        *pairs,
        (Unit.final_expand(size, final.in_chs, final.out_chs), final),
        (Unit.pool(size, final.out_chs), GlobalAvgPool()),
        (Unit.feature_mix(mix.in_chs, mix.out_chs), mix),
        (Unit.logits(classifier.in_features, classifier.out_features), Classifier(classifier)),
    ]
