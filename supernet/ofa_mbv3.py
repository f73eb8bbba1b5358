"""The OFA MobileNetV3 supernet: elastic kernel size, expand ratio and depth; fixed width per supernet.

Equal to the reference (PyPI ``ofa``, ``OFAMobileNetV3``) in structure, state-dict names and outputs, so its
released checkpoints load directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from .ofa_supernet import OFASupernet
from .plan import MOBILENETV3

__all__ = ["OFAMobileNetV3"]


class OFAMobileNetV3(OFASupernet):
    """OFA MobileNetV3 supernet: 20 elastic blocks in 5 stages, SE and h-swish in the later stages.

    Args:
        width_mult: Width multiplier; the released supernets use 1.0 and 1.2.
        n_classes, dropout_rate, resolutions: As for :class:`supernet.ofa_supernet.OFASupernet`.

    Example:
        >>> net = OFAMobileNetV3(width_mult=1.0, n_classes=10).eval()
        >>> arch = net.space.uniform(ks=3, e=3, d=2, r=128)
        >>> net.set_active(arch)
        >>> net(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 10])
    """

    FAMILY = MOBILENETV3

    def __init__(self, width_mult: float = 1.0, n_classes: int = 1000, dropout_rate: float = 0.1,
                 resolutions: Sequence[int] | None = None) -> None:
        super().__init__(width_mult, n_classes, dropout_rate, resolutions)
