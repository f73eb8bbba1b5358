"""The OFA MobileNetV3 supernet, its archs, subnets, MACs and exports."""

from .arch import Arch, ArchError, ArchSpace
from .checkpoint import CheckpointError
from .complexity import count_macs, count_params
from .mobilenetv3 import MobileNetV3, NetConfigError, build_from_net_config
from .ofa_mbv3 import OFAMobileNetV3
from .plan import NetPlan

__all__ = [
    "Arch",
    "ArchError",
    "ArchSpace",
    "CheckpointError",
    "MobileNetV3",
    "NetConfigError",
    "NetPlan",
    "OFAMobileNetV3",
    "build_from_net_config",
    "count_macs",
    "count_params",
]
