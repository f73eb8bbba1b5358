"""The OFA ProxylessNAS supernet (``ofa_proxyless_d234_e346_k357_w1.3``), which OFA searched for GPUs and CPUs.

Equal to the reference (PyPI ``ofa``, ``OFAProxylessNASNets``) in structure, state-dict names and outputs. It
differs from MobileNetV3 only in what :data:`supernet.plan.PROXYLESS` fixes: ReLU6 everywhere, no SE, a sixth
stage of one block, and the feature mix on the feature map before the pool.
"""

from __future__ import annotations

from collections.abc import Sequence

from .ofa_supernet import OFASupernet
from .plan import PROXYLESS

__all__ = ["OFAProxylessNASNets"]


class OFAProxylessNASNets(OFASupernet):
    """OFA ProxylessNAS supernet: 21 elastic blocks in 6 stages (the last one fixed at depth 1).

    Args:
        width_mult: Width multiplier; the released supernet uses 1.3.
        n_classes, dropout_rate, resolutions: As for :class:`supernet.ofa_supernet.OFASupernet`.

    Example:
        >>> net = OFAProxylessNASNets(width_mult=1.3, n_classes=10).eval()
        >>> arch = net.space.uniform(ks=3, e=3, d=2, r=128)
        >>> arch.d
        (2, 2, 2, 2, 2, 1)
        >>> net.set_active(arch)
        >>> net(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 10])
    """

    FAMILY = PROXYLESS

    def __init__(self, width_mult: float = 1.3, n_classes: int = 1000, dropout_rate: float = 0.1,
                 resolutions: Sequence[int] | None = None) -> None:
        super().__init__(width_mult, n_classes, dropout_rate, resolutions)
