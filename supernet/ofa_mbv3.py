"""The OFA MobileNetV3 supernet: elastic kernel size, expand ratio and depth; fixed width per supernet.

Equal to the reference (PyPI ``ofa``, ``OFAMobileNetV3``) in structure, state-dict names and outputs, so its
released checkpoints load directly.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ._dynamic import DynamicMBConvLayer
from ._layers import ConvLayer, IdentityLayer, LinearLayer, MBConvLayer, ResidualBlock
from .arch import DEPTHS, EXPAND_RATIOS, KERNEL_SIZES, MAX_DEPTH, Arch, ArchSpace
from .checkpoint import CheckpointError, load_compatible_state_dict, read_state_dict
from .mobilenetv3 import MobileNetV3, MobileNetV3Base
from .plan import NetPlan

__all__ = ["OFAMobileNetV3"]


class OFAMobileNetV3(MobileNetV3Base):
    """OFA MobileNetV3 supernet.

    Args:
        width_mult: Width multiplier; the released supernets use 1.0 and 1.2. Smaller values make small, fast
            networks for experiments and tests.
        n_classes: Classifier outputs.
        dropout_rate: Dropout before the classifier (training only).
        resolutions: The input resolutions of its space; default OFA's list for the width. Your own data may
            need others (e.g. 32..48 for small images): the network is fully convolutional.

    Example:
        >>> net = OFAMobileNetV3(width_mult=1.0, n_classes=10).eval()
        >>> arch = net.space.uniform(ks=3, e=3, d=2, r=128)
        >>> net.set_active(arch)
        >>> net(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 10])
    """

    def __init__(self, width_mult: float = 1.0, n_classes: int = 1000, dropout_rate: float = 0.1,
                 resolutions: Sequence[int] | None = None) -> None:
        super().__init__()
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes = {n_classes!r} must be a positive int")
        self.width_mult = width_mult
        self.n_classes = n_classes
        self.dropout_rate = dropout_rate
        self.plan = NetPlan.for_width(width_mult)
        self.space = ArchSpace.for_width(width_mult) if resolutions is None else ArchSpace(_resolutions(resolutions))
        plan = self.plan

        self.first_conv = ConvLayer(3, plan.first_conv_chs, 3, stride=2, act_func="h_swish")
        first_block = MBConvLayer(plan.first_conv_chs, plan.first_block_chs, 3, 1, expand_ratio=1, act_func="relu")
        shortcut = IdentityLayer(plan.first_block_chs) if plan.first_conv_chs == plan.first_block_chs else None
        blocks: list[nn.Module] = [ResidualBlock(first_block, shortcut)]
        for s, stage in enumerate(plan.stages):
            in_chs = plan.stage_in_chs(s)
            for j in range(MAX_DEPTH):
                stride = stage.stride if j == 0 else 1
                conv = DynamicMBConvLayer(in_chs, stage.out_chs, KERNEL_SIZES, EXPAND_RATIOS, stride,
                                          stage.act_func, stage.use_se)
                has_shortcut = stride == 1 and in_chs == stage.out_chs
                blocks.append(ResidualBlock(conv, IdentityLayer(in_chs) if has_shortcut else None))
                in_chs = stage.out_chs
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = ConvLayer(plan.stages[-1].out_chs, plan.final_expand_chs, 1, act_func="h_swish")
        self.feature_mix_layer = ConvLayer(plan.final_expand_chs, plan.feature_mix_chs, 1, use_bn=False,
                                           act_func="h_swish")
        self.classifier = LinearLayer(plan.feature_mix_chs, n_classes, dropout_rate)
        self.active_depths = [max(DEPTHS)] * len(plan.stages)
        self.active_resolution = max(self.space.resolutions)

    # --- elastic state ---------------------------------------------------------------------------------
    def _elastic(self, index: int) -> DynamicMBConvLayer:
        """The elastic conv of elastic block ``index`` (0..19); ``blocks[0]`` is the fixed first block."""
        return self.blocks[index + 1].conv

    def set_active(self, arch: Arch) -> None:
        """Make the elastic forward run ``arch`` (its resolution is that of the input you pass)."""
        self.space.validate(arch)
        for i in range(len(arch.ks)):
            self._elastic(i).active_kernel_size = arch.ks[i]
            self._elastic(i).active_expand_ratio = arch.e[i]
        self.active_depths = list(arch.d)
        self.active_resolution = arch.r

    @property
    def active_arch(self) -> Arch:
        n = len(self.blocks) - 1
        return Arch(ks=tuple(self._elastic(i).active_kernel_size for i in range(n)),
                    e=tuple(self._elastic(i).active_expand_ratio for i in range(n)),
                    d=tuple(self.active_depths), r=self.active_resolution)

    def active_blocks(self) -> list[nn.Module]:
        """Block 0 and the first ``d`` blocks of each stage."""
        active = [self.blocks[0]]
        for s, depth in enumerate(self.active_depths):
            active.extend(self.blocks[1 + s * MAX_DEPTH + j] for j in range(depth))
        return active

    # --- subnets ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch | None = None) -> MobileNetV3:
        """A standalone static network for ``arch`` (default: the active one) with its weights copied."""
        if arch is not None:
            self.set_active(arch)
        blocks = []
        for block in self.active_blocks():
            conv = block.conv.extract() if isinstance(block.conv, DynamicMBConvLayer) else copy.deepcopy(block.conv)
            shortcut = None if block.shortcut is None else IdentityLayer(block.shortcut.chs)
            blocks.append(ResidualBlock(conv, shortcut))
        subnet = MobileNetV3(copy.deepcopy(self.first_conv), blocks, copy.deepcopy(self.final_expand_layer),
                             copy.deepcopy(self.feature_mix_layer), copy.deepcopy(self.classifier))
        return subnet.train(self.training)

    @torch.no_grad()
    def sort_channels(self, expand_stage: int = 0) -> None:
        """Sort every elastic block's middle channels by importance (run before each expand phase)."""
        for block in self.blocks[1:]:
            block.conv.sort_channels(expand_stage)

    # --- checkpoints -----------------------------------------------------------------------------------
    def load_checkpoint(self, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> OFAMobileNetV3:
        """Load a reference checkpoint (file or dict; bare or under ``"state_dict"``; current or legacy names)."""
        state_dict = read_state_dict(source)
        self._check_shape_of(state_dict)
        # Supernets saved before the elastic-kernel phase have no transform matrices: identities are exact there.
        load_compatible_state_dict(self, state_dict, optional=("_matrix",))
        return self

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        if strict and not assign:
            self._check_shape_of(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _check_shape_of(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """One error that says which width and class count a checkpoint was made for."""
        first = next((t for k, t in state_dict.items() if k.startswith("first_conv.") and t.dim() == 4), None)
        classifier = next((t for k, t in state_dict.items() if k.startswith("classifier.") and t.dim() == 2), None)
        if first is None or classifier is None:
            raise CheckpointError("checkpoint has no first_conv or classifier weights: is it an OFA MobileNetV3?")
        problems = []
        widths = (first.shape[0], classifier.shape[1])
        if widths != (self.plan.first_conv_chs, self.plan.feature_mix_chs):
            problems.append(f"its first conv and feature mix have {widths[0]} and {widths[1]} channels, "
                            f"{_width_hint(*widths)}, but this network (width_mult={self.width_mult}) has "
                            f"{self.plan.first_conv_chs} and {self.plan.feature_mix_chs}")
        if classifier.shape[0] != self.n_classes:
            problems.append(f"it has {classifier.shape[0]} classes, but this network has n_classes={self.n_classes}")
        if problems:
            raise CheckpointError("checkpoint was made for another supernet: " + "; ".join(problems)
                                  + ". Build OFAMobileNetV3 with the checkpoint's width_mult and n_classes.")


def _resolutions(values: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(sorted(set(values)))
    if not chosen or any(isinstance(r, bool) or not isinstance(r, int) or r < 32 for r in chosen):
        raise ValueError(f"resolutions = {list(values)!r} must be ints of at least 32 (the network strides by 32)")
    return chosen


def _width_hint(first_conv_chs: int, feature_mix_chs: int) -> str:
    candidates = [w / 20 for w in range(5, 41)]  # width multipliers 0.25 .. 2.0
    matches = [w for w in candidates
               if (NetPlan.for_width(w).first_conv_chs, NetPlan.for_width(w).feature_mix_chs) == (first_conv_chs,
                                                                                                    feature_mix_chs)]
    return f"as for width_mult in {matches}" if matches else "which matches no width multiplier"
