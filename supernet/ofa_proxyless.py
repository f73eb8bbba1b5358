"""The OFA ProxylessNAS supernet (``ofa_proxyless_d234_e346_k357_w1.3``), which OFA searched for GPUs and CPUs.

Equal to the reference (PyPI ``ofa``, ``OFAProxylessNASNets``) in structure, state-dict names and outputs. It
differs from MobileNetV3 only in what :data:`supernet.plan.PROXYLESS` fixes: ReLU6 everywhere, no SE, a sixth
stage of one block, and the feature mix on the feature map before the pool.
"""

from __future__ import annotations

from .ofa_supernet import OFASupernet
from .plan import PROXYLESS

__all__ = ["OFAProxylessNASNets"]


class OFAProxylessNASNets(OFASupernet):
    """OFA ProxylessNAS supernet, width 1.3 by default: 21 elastic blocks in 6 stages, the last fixed at depth 1
    (its archs have 6 depths, the last always 1).

    Example:
        >>> OFAProxylessNASNets().space.uniform(ks=7, e=6, d=4, r=224).d
        (4, 4, 4, 4, 4, 1)
    """

    FAMILY = PROXYLESS
    DEFAULT_WIDTH = 1.3
