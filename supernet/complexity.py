"""MACs and parameter counts in OFA's convention, from an arch alone or from a built network.

OFA (and its model zoo, which calls them "FLOPs") counts multiply-accumulates of convolutions,
``in * out * k * k * h_out * w_out / groups``, and of linear layers; SE convs run at 1x1; BN, activations
and pooling are not counted. Parameters count every learnable tensor of the extracted subnet, BN affine
parameters and biases included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .arch import Arch
from .plan import NetPlan, feature_size

if TYPE_CHECKING:
    from torch import nn

__all__ = ["count_macs", "count_params"]


def _arch_macs(arch: Arch, plan: NetPlan, n_classes: int) -> int:
    size = feature_size(arch.r, 2)
    c0, c1 = plan.first_conv_chs, plan.first_block_chs
    macs = 3 * c0 * 9 * size * size  # first conv
    macs += c0 * 9 * size * size + c0 * c1 * size * size  # fixed first block: depthwise 3x3, project
    for b in plan.blocks(arch):
        macs += b.in_chs * b.mid_chs * b.in_size**2
        macs += b.mid_chs * b.kernel_size**2 * b.out_size**2
        if b.use_se:
            macs += 2 * b.mid_chs * b.se_chs
        macs += b.mid_chs * b.out_chs * b.out_size**2
    final = plan.final_size(arch.r)
    if plan.final_expand_chs is not None:
        macs += plan.last_block_chs * plan.final_expand_chs * final * final
    mix_size = final if plan.family.mixes_before_pool else 1
    macs += plan.head_in_chs * plan.feature_mix_chs * mix_size**2 + plan.feature_mix_chs * n_classes
    return macs


def _arch_params(arch: Arch, plan: NetPlan, n_classes: int) -> int:
    c0, c1 = plan.first_conv_chs, plan.first_block_chs
    params = 3 * c0 * 9 + 2 * c0
    params += c0 * 9 + 2 * c0 + c0 * c1 + 2 * c1
    for b in plan.blocks(arch):
        params += b.in_chs * b.mid_chs + 2 * b.mid_chs
        params += b.mid_chs * b.kernel_size**2 + 2 * b.mid_chs
        if b.use_se:
            params += 2 * b.mid_chs * b.se_chs + b.se_chs + b.mid_chs
        params += b.mid_chs * b.out_chs + 2 * b.out_chs
    if plan.final_expand_chs is not None:
        params += plan.last_block_chs * plan.final_expand_chs + 2 * plan.final_expand_chs
    params += plan.head_in_chs * plan.feature_mix_chs
    if plan.family.mixes_before_pool:  # ProxylessNAS's feature mix has BN
        params += 2 * plan.feature_mix_chs
    params += plan.feature_mix_chs * n_classes + n_classes
    return params


def _module_macs(model: nn.Module, resolution: int) -> int:
    import torch
    from torch import nn

    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += module.in_channels * output.numel() * kh * kw // module.groups

    def linear_hook(module: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += module.in_features * output.numel()

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, resolution, resolution))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def count_macs(arch_or_model: Arch | nn.Module, width_mult: float = 1.0, n_classes: int = 1000,
               resolution: int | None = None) -> int:
    """MACs of one image, OFA convention.

    Args:
        arch_or_model: An :class:`Arch` (counted analytically, no network built) or a static network such as one
            from :func:`build_from_net_config` (counted by running it once on zeros).
        width_mult: Supernet width, for an arch (its family follows from its length: 20 blocks for MobileNetV3,
            21 for ProxylessNAS).
        n_classes: Classifier outputs, for an arch.
        resolution: Input size, for a network (an arch carries its own).
    """
    if isinstance(arch_or_model, Arch):
        return _arch_macs(arch_or_model, NetPlan.for_arch(arch_or_model, width_mult), n_classes)
    if resolution is None:
        raise ValueError("count_macs(model) needs resolution=..., the input size to count at (e.g. 224)")
    return _module_macs(arch_or_model, resolution)


def count_params(arch_or_model: Arch | nn.Module, width_mult: float = 1.0, n_classes: int = 1000) -> int:
    """Learnable parameters of the subnet (BN affine and biases included), from an arch or a network."""
    if isinstance(arch_or_model, Arch):
        return _arch_params(arch_or_model, NetPlan.for_arch(arch_or_model, width_mult), n_classes)
    return sum(p.numel() for p in arch_or_model.parameters() if p.requires_grad)
