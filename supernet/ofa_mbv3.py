"""The OFA MobileNetV3 supernet: elastic kernel size, expand ratio and depth; fixed width per supernet.

Equal to the reference (PyPI ``ofa``, ``OFAMobileNetV3``) in structure, state-dict names and outputs, so its
released checkpoints load directly.
"""

from __future__ import annotations

from .ofa_supernet import OFASupernet
from .plan import MOBILENETV3

__all__ = ["OFAMobileNetV3"]


class OFAMobileNetV3(OFASupernet):
    """OFA MobileNetV3 supernet: 20 elastic blocks in 5 stages, SE and h-swish in the later stages. The released
    supernets have width 1.0 and 1.2 (default 1.0); arguments as :class:`~supernet.ofa_supernet.OFASupernet`.

    Example:
        >>> net = OFAMobileNetV3(width_mult=1.0, n_classes=10).eval()
        >>> net.set_active(net.space.uniform(ks=3, e=3, d=2, r=128))
        >>> net(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 10])
    """

    FAMILY = MOBILENETV3
    DEFAULT_WIDTH = 1.0
