"""The static MobileNetV3 that subnets are extracted into, and the decoder of OFA ``net.config`` files.

The reference release shipped its specialized models as ``net.config`` JSON plus weights; older files use the
legacy names ``MobileInvertedResidualBlock`` / ``mobile_inverted_conv`` / ``MBInvertedConvLayer``. Both decode
here, and :attr:`MobileNetV3.config` writes the current names.
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

__all__ = ["MobileNetV3", "NetConfigError", "build_from_net_config"]

BN_MOMENTUM = 0.1
BN_EPS = 1e-5


class NetConfigError(OFAProfileError, ValueError):
    """A ``net.config`` that cannot be built; the message names the path inside the config."""


class MobileNetV3Base(nn.Module):
    """The forward pass static and elastic MobileNetV3 share; subclasses say which blocks run.

    Subclasses set ``first_conv``, ``final_expand_layer``, ``feature_mix_layer`` and ``classifier``.
    """

    def active_blocks(self) -> Iterable[nn.Module]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.active_blocks():
            x = block(x)
        return self.final_expand_layer(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)
        x = self.feature_mix_layer(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class MobileNetV3(MobileNetV3Base):
    """A fixed MobileNetV3: first conv, blocks, final expand, global pool, feature mix, classifier."""

    def __init__(self, first_conv: ConvLayer, blocks: list[ResidualBlock], final_expand_layer: ConvLayer,
                 feature_mix_layer: ConvLayer, classifier: LinearLayer) -> None:
        super().__init__()
        self.first_conv = first_conv
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = final_expand_layer
        self.feature_mix_layer = feature_mix_layer
        self.classifier = classifier

    def active_blocks(self) -> Iterable[nn.Module]:
        return self.blocks

    def load_checkpoint(self, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> MobileNetV3:
        """Load weights of a released specialized model (file or dict; current or legacy key names)."""
        load_compatible_state_dict(self, read_state_dict(source))
        return self

    @property
    def config(self) -> dict[str, Any]:
        """This network as an OFA ``net.config`` dict (current layer names)."""
        return {
            "name": "MobileNetV3",
            "bn": {"momentum": BN_MOMENTUM, "eps": BN_EPS, "ws_eps": None},
            "first_conv": self.first_conv.config,
            "blocks": [block.config for block in self.blocks],
            "final_expand_layer": self.final_expand_layer.config,
            "feature_mix_layer": self.feature_mix_layer.config,
            "classifier": self.classifier.config,
        }


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
        shortcut = IdentityLayer(_field(shortcut_config, "in_channels", f"{where}.shortcut"))
    return ResidualBlock(conv, shortcut)


def build_from_net_config(config: Mapping[str, Any]) -> MobileNetV3:
    """Build the static network an OFA ``net.config`` describes (current or legacy layer names).

    Weights are freshly initialised; load the release's weights with ``load_state_dict`` (legacy key names are
    handled by :func:`supernet.checkpoint.canonical_key`).
    """
    if not isinstance(config, Mapping):
        raise NetConfigError(f"net.config must be a JSON object, got {type(config).__name__}")
    if config.get("name", "MobileNetV3") != "MobileNetV3":
        raise NetConfigError(f"net.config describes a {config['name']!r}; only MobileNetV3 is supported")
    blocks_config = _field(config, "blocks", "net.config")
    if not isinstance(blocks_config, list) or not blocks_config:
        raise NetConfigError("net.config: 'blocks' must be a non-empty list of blocks")
    net = MobileNetV3(
        first_conv=_conv_layer(_field(config, "first_conv", "net.config"), "first_conv"),
        blocks=[_block(block, f"blocks[{i}]") for i, block in enumerate(blocks_config)],
        final_expand_layer=_conv_layer(_field(config, "final_expand_layer", "net.config"), "final_expand_layer"),
        feature_mix_layer=_conv_layer(_field(config, "feature_mix_layer", "net.config"), "feature_mix_layer"),
        classifier=_linear_layer(_field(config, "classifier", "net.config"), "classifier"),
    )
    bn = config.get("bn") or {}
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = bn.get("momentum", BN_MOMENTUM)
            module.eps = bn.get("eps", BN_EPS)
    return net
