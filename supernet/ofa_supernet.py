"""What every OFA supernet does, whatever its family: elastic blocks, the active arch, extraction, checkpoints.

A family (:class:`supernet.plan.Family`) says what is fixed around the elastic blocks; :class:`OFASupernet` builds
it, and the two families' classes, :class:`OFAMobileNetV3` and :class:`OFAProxylessNASNets`, only name their family
and defaults. Both are equal to the reference (PyPI ``ofa``) in structure, state-dict names and outputs, so OFA's
released checkpoints load directly. ProxylessNAS (``ofa_proxyless_d234_e346_k357_w1.3``, searched by OFA for GPUs and
CPUs) differs from MobileNetV3 only in what :data:`supernet.plan.PROXYLESS` fixes: ReLU6 everywhere, no SE, a sixth
stage of one block, and the feature mix on the feature map before the pool.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._dynamic import DynamicMBConvLayer
from ._layers import ConvLayer, IdentityLayer, LinearLayer, MBConvLayer, ResidualBlock
from .arch import EXPAND_RATIOS, KERNEL_SIZES, Arch, ArchError, ArchSpace
from .checkpoint import CheckpointError, load_compatible_state_dict, read_state_dict
from .mobilenetv3 import STATIC_NETWORKS, MobileNetV3Base, NetConfigError, read_blocks
from .plan import MOBILENETV3, PROXYLESS, Family, NetPlan

__all__ = ["SUPERNETS", "OFAMobileNetV3", "OFAProxylessNASNets", "OFASupernet"]


class OFASupernet(MobileNetV3Base):
    """An OFA supernet of the class's ``FAMILY``: elastic kernel size, expand ratio and depth; fixed width.

    Args:
        width_mult: Width multiplier; default the released supernet's (``DEFAULT_WIDTH``). Smaller values make
            small, fast networks for experiments and tests.
        n_classes: Classifier outputs.
        dropout_rate: Dropout before the classifier (training only).
        resolutions: The input resolutions of its space; default OFA's list for the family and width. Your own
            data may need others (e.g. 32..48 for small images): the network is fully convolutional.
    """

    DEFAULT_WIDTH: float

    def __init__(self, width_mult: float | None = None, n_classes: int = 1000, dropout_rate: float = 0.1,
                 resolutions: Sequence[int] | None = None) -> None:
        super().__init__()
        width_mult = self.DEFAULT_WIDTH if width_mult is None else width_mult
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes = {n_classes!r} must be a positive int")
        family = self.FAMILY
        self.width_mult = width_mult
        self.n_classes = n_classes
        self.dropout_rate = dropout_rate
        self.plan = plan = NetPlan.for_width(width_mult, family)
        self.space = (ArchSpace.for_width(width_mult, family.layout) if resolutions is None
                      else ArchSpace(_resolutions(resolutions), layout=family.layout))

        self.first_conv = ConvLayer(3, plan.first_conv_chs, 3, stride=2, act_func=family.stem_act)
        first_block = MBConvLayer(plan.first_conv_chs, plan.first_block_chs, 3, 1, expand_ratio=1,
                                  act_func=family.first_block_act)
        shortcut = IdentityLayer(plan.first_block_chs) if plan.first_block_has_shortcut else None
        blocks: list[nn.Module] = [ResidualBlock(first_block, shortcut)]
        for s, stage in enumerate(plan.stages):
            in_chs = plan.stage_in_chs(s)
            for j in range(family.layout.stage_blocks[s]):
                stride = stage.stride if j == 0 else 1
                conv = DynamicMBConvLayer(in_chs, stage.out_chs, KERNEL_SIZES, EXPAND_RATIOS, stride,
                                          stage.act_func, stage.use_se)
                has_shortcut = stride == 1 and in_chs == stage.out_chs
                blocks.append(ResidualBlock(conv, IdentityLayer(in_chs) if has_shortcut else None))
                in_chs = stage.out_chs
        self.blocks = nn.ModuleList(blocks)
        if plan.final_expand_chs is not None:
            self.final_expand_layer = ConvLayer(plan.last_block_chs, plan.final_expand_chs, 1,
                                                act_func=family.head_act)
        # NOTE: MobileNetV3's feature mix runs on the pooled vector without BN; ProxylessNAS's on the map, with BN.
        self.feature_mix_layer = ConvLayer(plan.head_in_chs, plan.feature_mix_chs, 1,
                                           use_bn=family.mixes_before_pool, act_func=family.head_act)
        self.classifier = LinearLayer(plan.feature_mix_chs, n_classes, dropout_rate)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = family.bn_eps
        self.active_depths = [max(self.space.stage_depths(s)) for s in range(family.layout.n_stages)]
        self.active_resolution = max(self.space.resolutions)

    # --- elastic state ---------------------------------------------------------------------------------
    def _elastic(self, index: int) -> DynamicMBConvLayer:
        """The elastic conv of elastic block ``index``; ``blocks[0]`` is the fixed first block."""
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
        layout = self.FAMILY.layout
        active = [self.blocks[0]]
        for s, depth in enumerate(self.active_depths):
            active.extend(self.blocks[1 + layout.stage_start(s) + j] for j in range(depth))
        return active

    # --- subnets ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch | None = None) -> MobileNetV3Base:
        """A standalone static network for ``arch`` (default: the active one) with its weights copied."""
        if arch is not None:
            self.set_active(arch)
        blocks = []
        for block in self.active_blocks():
            conv = block.conv.extract() if isinstance(block.conv, DynamicMBConvLayer) else copy.deepcopy(block.conv)
            shortcut = None if block.shortcut is None else IdentityLayer(block.shortcut.chs)
            blocks.append(ResidualBlock(conv, shortcut))
        static = STATIC_NETWORKS[self.FAMILY]
        head = {name: copy.deepcopy(getattr(self, name)) for name in static.HEAD}
        subnet = static(first_conv=copy.deepcopy(self.first_conv), blocks=blocks,
                        classifier=copy.deepcopy(self.classifier), **head)
        return subnet.train(self.training)

    def arch_of(self, net_config: Mapping[str, Any], resolution: int) -> Arch:
        """The arch of this supernet that a subnet's ``net.config`` describes (OFA's release gives the resolution
        in ``run.config``); :class:`NetConfigError` if it is not one of this supernet's subnets."""
        blocks = net_config.get("blocks") if isinstance(net_config, Mapping) else None
        if not isinstance(blocks, list) or len(blocks) < 2:
            raise NetConfigError("net.config: 'blocks' must list the first block and the elastic blocks")
        convs = [block.get("conv") or block.get("mobile_inverted_conv") or {} for block in blocks[1:]]
        layout, choices = self.FAMILY.layout, self.space
        ks, e, d = [min(choices.kernel_sizes)] * layout.n_blocks, [min(choices.expand_ratios)] * layout.n_blocks, []
        position = 0
        for s, stage in enumerate(self.plan.stages):
            depth = 0
            while position < len(convs) and convs[position].get("out_channels") == stage.out_chs:
                ks[layout.stage_start(s) + depth] = convs[position].get("kernel_size")
                e[layout.stage_start(s) + depth] = convs[position].get("expand_ratio")
                position, depth = position + 1, depth + 1
            d.append(depth)
        if position != len(convs):
            raise NetConfigError(f"net.config: blocks[{position + 1}] has {convs[position].get('out_channels')} "
                                 f"output channels, which no stage of this {type(self).__name__} "
                                 f"(width_mult={self.width_mult}) has at that point")
        try:
            arch = self.space.validate(Arch(ks=ks, e=e, d=d, r=resolution))
        except ArchError as err:
            raise NetConfigError(f"net.config is not a subnet of this {type(self).__name__}: {err}") from None
        if self.extract(arch).config["blocks"] != [block.config for block in read_blocks(blocks)]:
            raise NetConfigError(f"net.config's blocks differ from those of this {type(self).__name__}'s subnet "
                                 f"{arch}: another width or family?")
        return arch

    @torch.no_grad()
    def sort_channels(self, expand_stage: int = 0) -> None:
        """Sort every elastic block's middle channels by importance (run before each expand phase)."""
        for block in self.blocks[1:]:
            block.conv.sort_channels(expand_stage)

    # --- checkpoints -----------------------------------------------------------------------------------
    def load_checkpoint(self, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> OFASupernet:
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
        """One error that says which family, width and class count a checkpoint was made for."""
        name = type(self).__name__
        first = next((t for k, t in state_dict.items() if k.startswith("first_conv.") and t.dim() == 4), None)
        classifier = next((t for k, t in state_dict.items() if k.startswith("classifier.") and t.dim() == 2), None)
        if first is None or classifier is None:
            raise CheckpointError(f"checkpoint has no first_conv or classifier weights: is it an {name}?")
        n_blocks = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
        if n_blocks and n_blocks != len(self.blocks):
            raise CheckpointError(f"checkpoint has {n_blocks} blocks, but an {name} has {len(self.blocks)}: "
                                  f"{_family_hint(n_blocks)}")
        problems = []
        widths = (first.shape[0], classifier.shape[1])
        if widths != (self.plan.first_conv_chs, self.plan.feature_mix_chs):
            problems.append(f"its first conv and feature mix have {widths[0]} and {widths[1]} channels, "
                            f"{self._width_hint(*widths)}, but this network (width_mult={self.width_mult}) has "
                            f"{self.plan.first_conv_chs} and {self.plan.feature_mix_chs}")
        if classifier.shape[0] != self.n_classes:
            problems.append(f"it has {classifier.shape[0]} classes, but this network has n_classes={self.n_classes}")
        if problems:
            raise CheckpointError("checkpoint was made for another supernet: " + "; ".join(problems)
                                  + f". Build {name} with the checkpoint's width_mult and n_classes.")

    def _width_hint(self, first_conv_chs: int, feature_mix_chs: int) -> str:
        def widths(w: float) -> tuple[int, int]:
            plan = NetPlan.for_width(w, self.FAMILY)
            return plan.first_conv_chs, plan.feature_mix_chs

        matches = [w / 20 for w in range(5, 41) if widths(w / 20) == (first_conv_chs, feature_mix_chs)]
        return f"as for width_mult in {matches}" if matches else "which matches no width multiplier"


def _family_hint(n_blocks: int) -> str:
    for cls in SUPERNETS.values():
        if cls.FAMILY.layout.n_blocks + 1 == n_blocks:
            return f"it is an {cls.__name__} checkpoint; load it into {cls.__name__}"
    return "it matches neither OFA family"


def _resolutions(values: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(sorted(set(values)))
    if not chosen or any(isinstance(r, bool) or not isinstance(r, int) or r < 32 for r in chosen):
        raise ValueError(f"resolutions = {list(values)!r} must be ints of at least 32 (the network strides by 32)")
    return chosen


class OFAMobileNetV3(OFASupernet):
    """OFA MobileNetV3 supernet: 20 elastic blocks in 5 stages, SE and h-swish in the later stages. The released
    supernets have width 1.0 and 1.2 (default 1.0); arguments as :class:`OFASupernet`.

    Example:
        >>> net = OFAMobileNetV3(width_mult=1.0, n_classes=10).eval()
        >>> net.set_active(net.space.uniform(ks=3, e=3, d=2, r=128))
        >>> net(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 10])
    """

    FAMILY = MOBILENETV3
    DEFAULT_WIDTH = 1.0


class OFAProxylessNASNets(OFASupernet):
    """OFA ProxylessNAS supernet, width 1.3 by default: 21 elastic blocks in 6 stages, the last fixed at depth 1
    (its archs have 6 depths, the last always 1).

    Example:
        >>> OFAProxylessNASNets().space.uniform(ks=7, e=6, d=4, r=224).d
        (4, 4, 4, 4, 4, 1)
    """

    FAMILY = PROXYLESS
    DEFAULT_WIDTH = 1.3


# The supernet class of each family, for code that builds one from a family it was given (a table's space, an arch's
# layout, training settings).
SUPERNETS: dict[Family, type[OFASupernet]] = {cls.FAMILY: cls for cls in (OFAMobileNetV3, OFAProxylessNASNets)}
