"""BatchNorm recalibration of an extracted subnet (docs/ofa_reference.md §5).

A subnet inherits BN statistics collected for the whole supernet, which do not fit its own activations. OFA
resets them before evaluating any subnet: exact batch mean and (biased) variance per batch, averaged over
about 2,000 training images, weighted by batch size.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["recalibrate_bn"]


def _images(batch: object) -> torch.Tensor:
    """The image tensor of a loader batch: ``images`` or ``(images, labels, ...)``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(f"a data loader batch must be images or (images, labels); got {type(batch).__name__}")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, n_images: int = 2000) -> nn.Module:
    """Reset every ``BatchNorm2d`` of ``model`` to statistics measured on ``n_images`` from ``loader``.

    Each BN normalises with its current batch's statistics during the pass (as in training), so later layers
    see the activations they will see at test time. Returns the model, in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return model.eval()
    sums = {bn: [torch.zeros_like(bn.running_mean), torch.zeros_like(bn.running_var)] for bn in bns}

    def use_batch_statistics(bn: nn.BatchNorm2d, inputs: tuple[torch.Tensor], _output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))
        sums[bn][0] += mean * x.size(0)
        sums[bn][1] += var * x.size(0)
        return F.batch_norm(x, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)

    handles = [bn.register_forward_hook(use_batch_statistics) for bn in bns]
    seen = 0
    try:
        model.eval()
        for batch in loader:
            images = _images(batch)[: n_images - seen]
            model(images)
            seen += images.size(0)
            if seen >= n_images:
                break
    finally:
        for handle in handles:
            handle.remove()
    if seen == 0:
        raise ValueError("the data loader gave no images: BN recalibration needs at least one batch")
    for bn, (mean_sum, var_sum) in sums.items():
        bn.running_mean.copy_(mean_sum / seen)
        bn.running_var.copy_(var_sum / seen)
    return model.eval()
