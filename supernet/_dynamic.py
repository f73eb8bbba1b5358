"""Elastic layers of the OFA supernet: slice channels and transform kernels at run time.

Module and parameter names follow the reference checkpoints (``conv.conv.weight``, ``bn.bn.*``,
``7to5_matrix``), so a reference state dict loads as it is.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._layers import MBConvLayer, create_act, make_divisible, se_channels, se_gate

__all__ = ["DynamicMBConvLayer"]


def _centre(size: int, sub_size: int) -> slice:
    start = size // 2 - sub_size // 2
    return slice(start, start + sub_size)


class DynamicConv2d(nn.Module):
    """A 1x1 conv whose active weight is the top-left ``[out, in]`` corner of the full one."""

    def __init__(self, max_in_chs: int, max_out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(max_in_chs, max_out_chs, 1, bias=False)

    def active_weight(self, out_chs: int, in_chs: int) -> torch.Tensor:
        return self.conv.weight[:out_chs, :in_chs]

    def forward(self, x: torch.Tensor, out_chs: int) -> torch.Tensor:
        return F.conv2d(x, self.active_weight(out_chs, x.size(1)))


class DynamicDepthwiseConv2d(nn.Module):
    """Depthwise conv with one 7x7 weight: smaller kernels are centre crops times learned transform matrices.

    k=5 is the centre 5x5 of the 7x7 weight, flattened per channel and multiplied by ``7to5_matrix``; k=3 is the
    centre 3x3 of that result times ``5to3_matrix``. The matrices start as identities and are shared by all
    channels of the layer.
    """

    def __init__(self, max_chs: int, kernel_sizes: tuple[int, ...], stride: int) -> None:
        super().__init__()
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.stride = stride
        max_k = self.kernel_sizes[-1]
        self.conv = nn.Conv2d(max_chs, max_chs, max_k, stride, groups=max_chs, bias=False)
        for larger, smaller in self._transforms():
            self.register_parameter(f"{larger}to{smaller}_matrix", nn.Parameter(torch.eye(smaller**2)))

    def _transforms(self) -> list[tuple[int, int]]:
        """(larger, smaller) kernel pairs, from the largest kernel down."""
        ks = self.kernel_sizes
        return [(ks[i], ks[i - 1]) for i in range(len(ks) - 1, 0, -1)]

    def transform_matrix(self, larger: int, smaller: int) -> torch.Tensor:
        return getattr(self, f"{larger}to{smaller}_matrix")

    def active_weight(self, chs: int, kernel_size: int) -> torch.Tensor:
        weight = self.conv.weight[:chs]
        for larger, smaller in self._transforms():
            if larger <= kernel_size:
                break
            crop = weight[:, :, _centre(larger, smaller), _centre(larger, smaller)]
            flat = crop.reshape(-1, smaller * smaller)
            weight = F.linear(flat, self.transform_matrix(larger, smaller)).reshape(chs, 1, smaller, smaller)
        return weight

    def forward(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        weight = self.active_weight(x.size(1), kernel_size).contiguous()
        return F.conv2d(x, weight, None, self.stride, kernel_size // 2, 1, x.size(1))


class DynamicBatchNorm2d(nn.Module):
    """BatchNorm over the first ``C`` channels of a full-width BN."""

    def __init__(self, max_chs: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(max_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, chs = self.bn, x.size(1)
        if chs == bn.num_features:
            return bn(x)
        momentum = 0.0
        if self.training and bn.track_running_stats:
            bn.num_batches_tracked += 1
            momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        # NOTE: slices of the running buffers are views, so F.batch_norm updates the full buffers in place.
        return F.batch_norm(x, bn.running_mean[:chs], bn.running_var[:chs], bn.weight[:chs], bn.bias[:chs],
                            self.training or not bn.track_running_stats, momentum, bn.eps)


class DynamicSqueezeExcite(nn.Module):
    """Squeeze-and-excite whose bottleneck width follows the active middle channels."""

    def __init__(self, max_chs: int) -> None:
        super().__init__()
        self.fc = se_gate(max_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chs = x.size(1)
        rd_chs = se_channels(chs)
        reduce, expand = self.fc.reduce, self.fc.expand
        y = x.mean((2, 3), keepdim=True)
        y = F.conv2d(y, reduce.weight[:rd_chs, :chs].contiguous(), reduce.bias[:rd_chs])
        y = self.fc.relu(y)
        y = F.conv2d(y, expand.weight[:chs, :rd_chs].contiguous(), expand.bias[:chs])
        return x * self.fc.h_sigmoid(y)


class _ElasticConvBN(nn.Module):
    """conv -> bn -> act for the expand and project stages (names as the reference: ``conv.conv``, ``bn.bn``)."""

    def __init__(self, max_in_chs: int, max_out_chs: int, act_func: str | None) -> None:
        super().__init__()
        self.conv = DynamicConv2d(max_in_chs, max_out_chs)
        self.bn = DynamicBatchNorm2d(max_out_chs)
        self.act = create_act(act_func)

    def forward(self, x: torch.Tensor, out_chs: int) -> torch.Tensor:
        return self.act(self.bn(self.conv(x, out_chs)))


class _ElasticDepthwise(nn.Module):
    def __init__(self, max_chs: int, kernel_sizes: tuple[int, ...], stride: int, act_func: str,
                 use_se: bool) -> None:
        super().__init__()
        self.conv = DynamicDepthwiseConv2d(max_chs, kernel_sizes, stride)
        self.bn = DynamicBatchNorm2d(max_chs)
        self.act = create_act(act_func)
        self.se = DynamicSqueezeExcite(max_chs) if use_se else None

    def forward(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x, kernel_size)))
        return x if self.se is None else self.se(x)


def _permute_bn(bn: nn.BatchNorm2d, order: torch.Tensor) -> None:
    for tensor in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        tensor.data = tensor.data.index_select(0, order)


def _copy_bn(target: nn.BatchNorm2d, source: nn.BatchNorm2d) -> None:
    chs = target.num_features
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).data.copy_(getattr(source, name).data[:chs])
    target.num_batches_tracked.data.copy_(source.num_batches_tracked.data)
    target.momentum, target.eps = source.momentum, source.eps


class DynamicMBConvLayer(nn.Module):
    """An MBConv block with elastic kernel size and expand ratio; output width is fixed."""

    def __init__(self, in_chs: int, out_chs: int, kernel_sizes: tuple[int, ...], expand_ratios: tuple[int, ...],
                 stride: int, act_func: str, use_se: bool) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.stride, self.act_func, self.use_se = in_chs, out_chs, stride, act_func, use_se
        self.kernel_sizes, self.expand_ratios = tuple(kernel_sizes), tuple(expand_ratios)
        max_mid = make_divisible(round(in_chs * max(expand_ratios)))
        self.inverted_bottleneck = _ElasticConvBN(in_chs, max_mid, act_func)
        self.depth_conv = _ElasticDepthwise(max_mid, self.kernel_sizes, stride, act_func, use_se)
        self.point_linear = _ElasticConvBN(max_mid, out_chs, None)
        self.active_kernel_size = max(kernel_sizes)
        self.active_expand_ratio = max(expand_ratios)

    def mid_chs(self, expand_ratio: int) -> int:
        return make_divisible(round(self.in_chs * expand_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inverted_bottleneck(x, self.mid_chs(self.active_expand_ratio))
        x = self.depth_conv(x, self.active_kernel_size)
        return self.point_linear(x, self.out_chs)

    @torch.no_grad()
    def extract(self) -> MBConvLayer:
        """A static block with the active kernel (already transformed) and the first ``mid`` channels."""
        k, mid = self.active_kernel_size, self.mid_chs(self.active_expand_ratio)
        block = MBConvLayer(self.in_chs, self.out_chs, k, self.stride, self.active_expand_ratio, mid,
                            self.act_func, self.use_se)
        block.inverted_bottleneck.conv.weight.copy_(self.inverted_bottleneck.conv.active_weight(mid, self.in_chs))
        _copy_bn(block.inverted_bottleneck.bn, self.inverted_bottleneck.bn.bn)
        block.depth_conv.conv.weight.copy_(self.depth_conv.conv.active_weight(mid, k))
        _copy_bn(block.depth_conv.bn, self.depth_conv.bn.bn)
        if self.use_se:
            rd = se_channels(mid)
            src, dst = self.depth_conv.se.fc, block.depth_conv.se.fc
            dst.reduce.weight.copy_(src.reduce.weight[:rd, :mid])
            dst.reduce.bias.copy_(src.reduce.bias[:rd])
            dst.expand.weight.copy_(src.expand.weight[:mid, :rd])
            dst.expand.bias.copy_(src.expand.bias[:mid])
        block.point_linear.conv.weight.copy_(self.point_linear.conv.active_weight(self.out_chs, mid))
        _copy_bn(block.point_linear.bn, self.point_linear.bn.bn)
        return block

    @torch.no_grad()
    def sort_channels(self, expand_stage: int = 0) -> None:
        """Reorder middle channels by importance so that every expand ratio keeps the most important ones.

        Importance of a middle channel is the L1 norm of the project-conv weights that read it. In the n-th
        expand phase (``expand_stage = n``), channels are ranked first by the narrowest width, among the ratios
        trained so far, that contains them, then by importance: channels of earlier phases stay in front.
        The SE bottleneck is sorted the same way by the L1 norm of its expand weights.
        """
        importance = self.point_linear.conv.conv.weight.abs().sum(dim=(0, 2, 3))
        group = torch.zeros_like(importance)
        if expand_stage > 0:
            widths = [self.mid_chs(e) for e in sorted(self.expand_ratios, reverse=True)][: expand_stage + 1]
            for rank, width in enumerate(reversed(widths)):
                group[width:] = rank + 1
        # lexsort: the last key is primary (group ascending), then importance descending.
        order = torch.from_numpy(np.lexsort((-importance.cpu().numpy(), group.cpu().numpy())))
        order = order.to(importance.device)
        self.point_linear.conv.conv.weight.data = self.point_linear.conv.conv.weight.data.index_select(1, order)
        self.depth_conv.conv.conv.weight.data = self.depth_conv.conv.conv.weight.data.index_select(0, order)
        _permute_bn(self.depth_conv.bn.bn, order)
        if self.use_se:
            reduce, expand = self.depth_conv.se.fc.reduce, self.depth_conv.se.fc.expand
            expand.weight.data = expand.weight.data.index_select(0, order)
            expand.bias.data = expand.bias.data.index_select(0, order)
            reduce.weight.data = reduce.weight.data.index_select(1, order)
            se_order = torch.argsort(expand.weight.abs().sum(dim=(0, 2, 3)), descending=True, stable=True)
            expand.weight.data = expand.weight.data.index_select(1, se_order)
            reduce.weight.data = reduce.weight.data.index_select(0, se_order)
            reduce.bias.data = reduce.bias.data.index_select(0, se_order)
        self.inverted_bottleneck.conv.conv.weight.data = (
            self.inverted_bottleneck.conv.conv.weight.data.index_select(0, order))
        _permute_bn(self.inverted_bottleneck.bn.bn, order)
