"""Static MobileNetV3 layers, named as OFA names them so that state dicts and ``net.config`` files interchange.

Each layer has a ``config`` property in OFA's ``net.config`` format; :mod:`supernet.mobilenetv3` decodes
such configs (current and legacy names) in one place.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .channels import make_divisible, se_channels

__all__ = [
    "ConvLayer",
    "IdentityLayer",
    "LinearLayer",
    "MBConvLayer",
    "ResidualBlock",
    "SqueezeExcite",
    "create_act",
    "make_divisible",
    "se_channels",
    "se_gate",
]

_ACTIVATIONS: dict[str | None, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "h_swish": lambda: nn.Hardswish(inplace=True),
    "h_sigmoid": lambda: nn.Hardsigmoid(inplace=True),
    None: nn.Identity,
}


def create_act(name: str | None) -> nn.Module:
    """The activation module for one of OFA's ``act_func`` names."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown act_func {name!r}; expected one of {sorted(k for k in _ACTIVATIONS if k)}")
    return _ACTIVATIONS[name]()


def se_gate(chs: int) -> nn.Sequential:
    """Squeeze-and-excite's gate on ``chs`` channels, under the reference's key names: ReLU bottleneck, h-sigmoid."""
    rd_chs = se_channels(chs)
    return nn.Sequential(OrderedDict([
        ("reduce", nn.Conv2d(chs, rd_chs, 1, bias=True)),
        ("relu", nn.ReLU(inplace=True)),
        ("expand", nn.Conv2d(rd_chs, chs, 1, bias=True)),
        ("h_sigmoid", nn.Hardsigmoid(inplace=True)),
    ]))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite after the depthwise conv: ReLU bottleneck, h-sigmoid gate."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.chs = chs
        self.fc = se_gate(chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3), keepdim=True))


class ConvLayer(nn.Module):
    """Conv, optional BN, activation (OFA's ``ConvLayer`` with ``ops_order='weight_bn_act'``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, use_bn: bool = True,
                 act_func: str | None = "relu", bias: bool = False) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size, self.stride = in_chs, out_chs, kernel_size, stride
        self.use_bn, self.act_func, self.bias = use_bn, act_func, bias
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=bias)
        if use_bn:
            self.bn = nn.BatchNorm2d(out_chs)
        self.act = create_act(act_func)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.use_bn:
            x = self.bn(x)
        return self.act(x)

    @property
    def config(self) -> dict[str, Any]:
        return {"name": "ConvLayer", "kernel_size": self.kernel_size, "stride": self.stride, "dilation": 1,
                "groups": 1, "bias": self.bias, "has_shuffle": False, "use_se": False,
                "in_channels": self.in_chs, "out_channels": self.out_chs, "use_bn": self.use_bn,
                "act_func": self.act_func, "dropout_rate": 0, "ops_order": "weight_bn_act"}


class LinearLayer(nn.Module):
    """Dropout then a linear classifier."""

    def __init__(self, in_features: int, out_features: int, dropout_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features, self.out_features, self.dropout_rate = in_features, out_features, dropout_rate
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))

    @property
    def config(self) -> dict[str, Any]:
        return {"name": "LinearLayer", "in_features": self.in_features, "out_features": self.out_features,
                "bias": True, "use_bn": False, "act_func": None, "dropout_rate": self.dropout_rate,
                "ops_order": "weight_bn_act"}


class IdentityLayer(nn.Module):
    def __init__(self, chs: int) -> None:
        super().__init__()
        self.chs = chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def config(self) -> dict[str, Any]:
        return {"name": "IdentityLayer", "in_channels": self.chs, "out_channels": self.chs, "use_bn": False,
                "act_func": None, "dropout_rate": 0, "ops_order": "weight_bn_act"}


def _conv_bn(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
             act: str | None = None) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict([
        ("conv", nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)),
        ("bn", nn.BatchNorm2d(out_chs)),
    ])
    if act is not None:
        layers["act"] = create_act(act)
    return nn.Sequential(layers)


class MBConvLayer(nn.Module):
    """Inverted bottleneck: 1x1 expand (absent when the ratio is 1), depthwise kxk (+ SE), 1x1 project."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, expand_ratio: float = 6,
                 mid_chs: int | None = None, act_func: str = "relu", use_se: bool = False) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size, self.stride = in_chs, out_chs, kernel_size, stride
        self.expand_ratio, self.act_func, self.use_se = expand_ratio, act_func, use_se
        self.mid_chs = mid_chs if mid_chs is not None else make_divisible(round(in_chs * expand_ratio))
        if expand_ratio == 1:
            self.inverted_bottleneck = None
            self.mid_chs = in_chs
        else:
            self.inverted_bottleneck = _conv_bn(in_chs, self.mid_chs, 1, act=act_func)
        self.depth_conv = _conv_bn(self.mid_chs, self.mid_chs, kernel_size, stride, groups=self.mid_chs,
                                   act=act_func)
        if use_se:
            self.depth_conv.add_module("se", SqueezeExcite(self.mid_chs))
        self.point_linear = _conv_bn(self.mid_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        x = self.depth_conv(x)
        return self.point_linear(x)

    @property
    def config(self) -> dict[str, Any]:
        return {"name": "MBConvLayer", "in_channels": self.in_chs, "out_channels": self.out_chs,
                "kernel_size": self.kernel_size, "stride": self.stride, "expand_ratio": self.expand_ratio,
                "mid_channels": None if self.inverted_bottleneck is None else self.mid_chs,
                "act_func": self.act_func, "use_se": self.use_se, "groups": None}


class ResidualBlock(nn.Module):
    """A block with an optional identity shortcut."""

    def __init__(self, conv: MBConvLayer, shortcut: IdentityLayer | None) -> None:
        super().__init__()
        self.conv = conv
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return self.conv(x)
        return self.conv(x) + self.shortcut(x)

    @property
    def config(self) -> dict[str, Any]:
        return {"name": "ResidualBlock", "conv": self.conv.config,
                "shortcut": None if self.shortcut is None else self.shortcut.config}
