"""The OFA MobileNetV3 supernet, its archs, subnets, MACs and exports."""

from .arch import Arch, ArchError, ArchSpace
from .checkpoint import CheckpointError
from .complexity import count_macs, count_params
from .export import ExportError, TFLiteUnavailableError, content_hash, export_module, export_unit, export_units
from .mobilenetv3 import MobileNetV3, NetConfigError, build_from_net_config
from .ofa_mbv3 import OFAMobileNetV3
from .plan import NetPlan
from .units import Unit, UnitError, all_units, units_from_subnet, units_of

__all__ = [
    "Arch",
    "ArchError",
    "ArchSpace",
    "CheckpointError",
    "ExportError",
    "MobileNetV3",
    "NetConfigError",
    "NetPlan",
    "OFAMobileNetV3",
    "TFLiteUnavailableError",
    "Unit",
    "UnitError",
    "all_units",
    "build_from_net_config",
    "content_hash",
    "count_macs",
    "count_params",
    "export_module",
    "export_unit",
    "export_units",
    "units_from_subnet",
    "units_of",
]
