"""The static networks subnets are extracted into, and the decoder of OFA ``net.config`` files.

The reference release shipped its specialized models as ``net.config`` JSON plus weights: MobileNetV3 ones (phones,
FLOPs targets) and ProxylessNAS ones (GPUs and CPUs, :class:`ProxylessNASNets`: no SE, no h-swish, and the
feature-mix conv before the pool). Older files use the legacy names ``MobileInvertedResidualBlock`` /
``mobile_inverted_conv`` / ``MBInvertedConvLayer``. Both decode here, and ``config`` writes the current names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ._layers import ConvLayer, IdentityLayer, LinearLayer, MBConvLayer, ResidualBlock
from .checkpoint import load_compatible_state_dict, read_state_dict
from .errors import OFAProfileError
from .plan import MOBILENETV3, PROXYLESS, Family

__all__ = ["MobileNetV3", "NetConfigError", "ProxylessNASNets", "build_from_net_config"]

BN_MOMENTUM = 0.1
BN_EPS = 1e-5


class NetConfigError(OFAProfileError, ValueError):
    """A ``net.config`` that cannot be built; the message names the path inside the config."""


class MobileNetV3Base(nn.Module):
    """The forward pass static and elastic networks of both families share; subclasses say which blocks run.

    Subclasses set ``FAMILY``, ``first_conv``, ``feature_mix_layer`` and ``classifier``, and ``final_expand_layer``
    where the family has one; ProxylessNAS has none and mixes features before the pool.
    """

    FAMILY: Family = MOBILENETV3

    def active_blocks(self) -> Iterable[nn.Module]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.active_blocks():
            x = block(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.FAMILY.mixes_before_pool:
            return self.classifier(torch.flatten(self.feature_mix_layer(x).mean((2, 3)), 1))
        x = self.final_expand_layer(x)
        x = x.mean((2, 3), keepdim=True)
        x = self.feature_mix_layer(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def load_checkpoint(self, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> MobileNetV3Base:
        """Load weights of a released specialized model (file or dict; current or legacy key names)."""
        load_compatible_state_dict(self, read_state_dict(source))
        return self


class _StaticNetwork(MobileNetV3Base):
    """A fixed network of either family, as OFA's ``net.config`` names it (``NAME``) with its head's conv layers
    in order (``HEAD``)."""

    NAME: str
    HEAD: tuple[str, ...]

    def active_blocks(self) -> Iterable[nn.Module]:
        return self.blocks

    @property
    def config(self) -> dict[str, Any]:
        """This network as an OFA ``net.config`` dict (current layer names)."""
        return {
            "name": self.NAME,
            "bn": _bn_config(self),
            "first_conv": self.first_conv.config,
            "blocks": [block.config for block in self.blocks],
            **{name: getattr(self, name).config for name in self.HEAD},
            "classifier": self.classifier.config,
        }


class MobileNetV3(_StaticNetwork):
    """A fixed MobileNetV3: first conv, blocks, final expand, global pool, feature mix, classifier."""

    NAME = "MobileNetV3"
    HEAD = ("final_expand_layer", "feature_mix_layer")

    def __init__(self, first_conv: ConvLayer, blocks: list[ResidualBlock], final_expand_layer: ConvLayer,
                 feature_mix_layer: ConvLayer, classifier: LinearLayer) -> None:
        super().__init__()
        self.first_conv = first_conv
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = final_expand_layer
        self.feature_mix_layer = feature_mix_layer
        self.classifier = classifier


class ProxylessNASNets(_StaticNetwork):
    """A fixed ProxylessNAS network: first conv, blocks, feature mix (1x1, before the pool), classifier."""

    NAME = "ProxylessNASNets"
    HEAD = ("feature_mix_layer",)
    FAMILY = PROXYLESS

    def __init__(self, first_conv: ConvLayer, blocks: list[ResidualBlock], feature_mix_layer: ConvLayer,
                 classifier: LinearLayer) -> None:
        super().__init__()
        self.first_conv = first_conv
        self.blocks = nn.ModuleList(blocks)
        self.feature_mix_layer = feature_mix_layer
        self.classifier = classifier


def _bn_config(net: nn.Module) -> dict[str, Any]:
    bn = next((m for m in net.modules() if isinstance(m, nn.BatchNorm2d)), None)
    momentum, eps = (bn.momentum, bn.eps) if bn is not None else (BN_MOMENTUM, BN_EPS)
    return {"momentum": momentum, "eps": eps, "ws_eps": None}


# --- net.config decoding ---------------------------------------------------------------------------------
_BLOCK_NAMES = ("ResidualBlock", "MobileInvertedResidualBlock")
_MBCONV_NAMES = ("MBConvLayer", "MBInvertedConvLayer")


def _field(config: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in config:
        raise NetConfigError(f"{where}: missing field {key!r}")
    return config[key]


def _expect_name(config: Any, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(config, Mapping):
        raise NetConfigError(f"{where}: expected a layer object, got {type(config).__name__}")
    name = config.get("name")
    if name not in allowed:
        raise NetConfigError(f"{where}: unknown layer {name!r}; expected one of {', '.join(allowed)}")


def _conv_layer(config: Any, where: str) -> ConvLayer:
    _expect_name(config, ("ConvLayer",), where)
    for key in ("groups", "dilation"):
        if config.get(key, 1) not in (1, None):
            raise NetConfigError(f"{where}: {key} = {config[key]!r} is not supported; MobileNetV3 uses 1")
    return ConvLayer(
        in_chs=_field(config, "in_channels", where), out_chs=_field(config, "out_channels", where),
        kernel_size=config.get("kernel_size", 3), stride=config.get("stride", 1),
        use_bn=config.get("use_bn", True), act_func=config.get("act_func", "relu"), bias=config.get("bias", False),
    )


def _linear_layer(config: Any, where: str) -> LinearLayer:
    _expect_name(config, ("LinearLayer",), where)
    return LinearLayer(_field(config, "in_features", where), _field(config, "out_features", where),
                       dropout_rate=config.get("dropout_rate", 0.0))


def _block(config: Any, where: str) -> ResidualBlock:
    _expect_name(config, _BLOCK_NAMES, where)
    conv_key = "conv" if "conv" in config else "mobile_inverted_conv"
    conv_config = _field(config, conv_key, where)
    where_conv = f"{where}.{conv_key}"
    _expect_name(conv_config, _MBCONV_NAMES, where_conv)
    if conv_config.get("groups") not in (None, 1):
        raise NetConfigError(f"{where_conv}: grouped 1x1 convs (groups = {conv_config['groups']}) are not supported")
    conv = MBConvLayer(
        in_chs=_field(conv_config, "in_channels", where_conv), out_chs=_field(conv_config, "out_channels", where_conv),
        kernel_size=_field(conv_config, "kernel_size", where_conv), stride=conv_config.get("stride", 1),
        expand_ratio=_field(conv_config, "expand_ratio", where_conv), mid_chs=conv_config.get("mid_channels"),
        act_func=conv_config.get("act_func", "relu6"), use_se=conv_config.get("use_se", False),
    )
    shortcut_config = config.get("shortcut")
    shortcut = None
    if shortcut_config is not None:
        _expect_name(shortcut_config, ("IdentityLayer",), f"{where}.shortcut")
        chs = _field(shortcut_config, "in_channels", f"{where}.shortcut")
        # NOTE: configs written from the elastic supernet give the shortcut's channels as a one-element list.
        shortcut = IdentityLayer(chs[0] if isinstance(chs, list) and len(chs) == 1 else chs)
    return ResidualBlock(conv, shortcut)


def read_blocks(configs: list) -> list[ResidualBlock]:
    """The blocks of a ``net.config``'s ``blocks`` list (current or legacy layer names)."""
    return [_block(block, f"blocks[{i}]") for i, block in enumerate(configs)]


_FAMILIES = {family.NAME: family for family in (MobileNetV3, ProxylessNASNets)}
STATIC_NETWORKS: dict[Family, type[_StaticNetwork]] = {cls.FAMILY: cls for cls in _FAMILIES.values()}


def build_from_net_config(config: Mapping[str, Any]) -> MobileNetV3 | ProxylessNASNets:
    """Build the static network an OFA ``net.config`` describes (either family; current or legacy layer names).

    Weights are freshly initialised; load the release's weights with ``load_state_dict`` (legacy key names are
    handled by :func:`supernet.checkpoint.canonical_key`).
    """
    if not isinstance(config, Mapping):
        raise NetConfigError(f"net.config must be a JSON object, got {type(config).__name__}")
    family = config.get("name", "MobileNetV3")
    if family not in _FAMILIES:
        raise NetConfigError(f"net.config describes a {family!r}; expected one of {', '.join(_FAMILIES)}")
    blocks_config = _field(config, "blocks", "net.config")
    if not isinstance(blocks_config, list) or not blocks_config:
        raise NetConfigError("net.config: 'blocks' must be a non-empty list of blocks")
    cls = _FAMILIES[family]
    layers = {name: _conv_layer(_field(config, name, "net.config"), name) for name in ("first_conv", *cls.HEAD)}
    blocks = read_blocks(blocks_config)
    net = cls(blocks=blocks, classifier=_linear_layer(_field(config, "classifier", "net.config"), "classifier"),
              **layers)
    bn = config.get("bn") or {}
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = bn.get("momentum", BN_MOMENTUM)
            module.eps = bn.get("eps", BN_EPS)
    return net
