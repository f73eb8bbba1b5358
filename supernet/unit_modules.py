"""The torch modules of table units: each row built alone with seeded weights, or cut out of a subnet.

Kept apart from :mod:`supernet.units` (keys, shapes and the rows of the space), which needs no torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ._layers import ConvLayer, IdentityLayer, LinearLayer, MBConvLayer, ResidualBlock
from .mobilenetv3 import MobileNetV3
from .units import FIRST_CONV_KERNEL, FIRST_CONV_STRIDE, HEAD_ACT, Unit, UnitError

__all__ = ["Classifier", "GlobalAvgPool", "build_unit", "units_from_subnet"]


# --- modules of the head units ---------------------------------------------------------------------------
class GlobalAvgPool(nn.Module):
    """The head's global average pool exactly as the network computes it (a mean that keeps 1x1 dims)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class Classifier(nn.Module):
    """Flatten the 1x1 feature map, then the classifier: the table's ``Logits`` row."""

    def __init__(self, classifier: LinearLayer) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))


# --- building modules ------------------------------------------------------------------------------------
def _build_block(u: Unit) -> nn.Module:
    # NOTE: mid == in marks the expand-free block 0 (expand ratio 1); elastic blocks expand at least 3x.
    expand_ratio = 1 if u.mid_chs == u.in_chs else u.mid_chs / u.in_chs
    conv = MBConvLayer(u.in_chs, u.out_chs, u.kernel_size, u.stride, expand_ratio, mid_chs=u.mid_chs,
                       act_func="h_swish" if u.hs else "relu", use_se=u.se)
    return ResidualBlock(conv, IdentityLayer(u.in_chs) if u.idskip else None)


_BUILDERS: dict[str, Callable[[Unit], nn.Module]] = {
    "Conv": lambda u: ConvLayer(3, u.out_chs, u.kernel_size, u.stride, act_func=HEAD_ACT),
    "expanded_conv": _build_block,
    "Conv_1": lambda u: ConvLayer(u.in_chs, u.out_chs, 1, act_func=HEAD_ACT),
    # NOTE: the network's mean over HxW, built alone, gets a leading TRANSPOSE in TF-Lite (the network has none:
    # a conv follows it there); a full-window AvgPool2d computes the same, converts to AVERAGE_POOL_2D with no
    # transpose, and is the op OFA's "AvgPool2D" rows are named after.
    "AvgPool2D": lambda u: nn.AvgPool2d(u.kernel_size),
    "Conv_2": lambda u: ConvLayer(u.in_chs, u.out_chs, 1, use_bn=False, act_func=HEAD_ACT),
    "Logits": lambda u: Classifier(LinearLayer(u.in_chs, u.out_chs)),
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
        module = _BUILDERS[unit.kind](unit)
        _randomize_bn(module)
    return module.eval()


def units_from_subnet(subnet: MobileNetV3, resolution: int) -> list[tuple[Unit, nn.Module]]:
    """Cut an extracted subnet into its table units, sharing its weights; run in order they give ``subnet(x)``."""
    first = subnet.first_conv
    if (first.kernel_size, first.stride, first.act_func) != (FIRST_CONV_KERNEL, FIRST_CONV_STRIDE, HEAD_ACT):
        raise UnitError(f"subnet's first conv (k{first.kernel_size}, stride {first.stride}, {first.act_func}) "
                        f"is not OFA MobileNetV3's (k3, stride 2, h_swish)")
    pairs: list[tuple[Unit, nn.Module]] = [(Unit.first_conv(resolution, first.out_chs), first)]
    size = pairs[0][0].out_size
    for i, block in enumerate(subnet.blocks):
        conv = block.conv
        if conv.act_func not in ("relu", "h_swish"):
            raise UnitError(f"subnet block {i} uses {conv.act_func!r}; table keys know only relu and h_swish")
        unit = Unit.block(size, conv.in_chs, conv.out_chs, conv.mid_chs, conv.kernel_size, conv.stride,
                          idskip=block.shortcut is not None, se=conv.use_se, hs=conv.act_func == "h_swish")
        pairs.append((unit, block))
        size = unit.out_size
    final, mix, classifier = subnet.final_expand_layer, subnet.feature_mix_layer, subnet.classifier
    pairs += [
        (Unit.final_expand(size, final.in_chs, final.out_chs), final),
        (Unit.pool(size, final.out_chs), GlobalAvgPool()),
        (Unit.feature_mix(mix.in_chs, mix.out_chs), mix),
        (Unit.logits(classifier.in_features, classifier.out_features), Classifier(classifier)),
    ]
    return pairs

