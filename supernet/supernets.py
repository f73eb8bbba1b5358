"""The OFA supernet class of each family, for code that builds one from a family it was given (a table's space,
an arch's layout, training settings)."""

from __future__ import annotations

from .ofa_mbv3 import OFAMobileNetV3
from .ofa_proxyless import OFAProxylessNASNets
from .ofa_supernet import OFASupernet
from .plan import Family

__all__ = ["SUPERNETS"]

SUPERNETS: dict[Family, type[OFASupernet]] = {cls.FAMILY: cls for cls in (OFAMobileNetV3, OFAProxylessNASNets)}
