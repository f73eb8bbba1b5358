"""The OFA supernets (MobileNetV3 and ProxylessNAS), their archs, subnets, MACs and exports.

Names are imported on first use (PEP 562), so that ``from supernet import Arch`` (what the search, the table
reader and every command's argument parsing need) does not import torch, which takes about 2 s.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Arch": "arch", "ArchError": "arch", "ArchSpace": "arch",
    "CheckpointError": "checkpoint",
    "count_macs": "complexity", "count_params": "complexity",
    "ExportError": "formats", "TFLiteUnavailableError": "formats", "content_hash": "model_cache",
    "export_module": "export", "export_subnet": "model_cache", "export_unit": "model_cache",
    "export_units": "model_cache",
    "MobileNetV3": "mobilenetv3", "NetConfigError": "mobilenetv3", "build_from_net_config": "mobilenetv3",
    "ProxylessNASNets": "mobilenetv3",
    "OFAMobileNetV3": "ofa_supernet", "OFAProxylessNASNets": "ofa_supernet",
    "NetPlan": "plan",
    "Unit": "units", "UnitError": "units", "all_units": "units", "units_of": "units",
    "units_from_subnet": "unit_modules",
}

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
    "OFAProxylessNASNets",
    "ProxylessNASNets",
    "TFLiteUnavailableError",
    "Unit",
    "UnitError",
    "all_units",
    "build_from_net_config",
    "content_hash",
    "count_macs",
    "count_params",
    "export_module",
    "export_subnet",
    "export_unit",
    "export_units",
    "units_from_subnet",
    "units_of",
]

if TYPE_CHECKING:
    from .arch import Arch, ArchError, ArchSpace
    from .checkpoint import CheckpointError
    from .complexity import count_macs, count_params
    from .export import export_module
    from .formats import ExportError, TFLiteUnavailableError
    from .mobilenetv3 import MobileNetV3, NetConfigError, ProxylessNASNets, build_from_net_config
    from .model_cache import content_hash, export_subnet, export_unit, export_units
    from .ofa_supernet import OFAMobileNetV3, OFAProxylessNASNets
    from .plan import NetPlan
    from .unit_modules import units_from_subnet
    from .units import Unit, UnitError, all_units, units_of


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'supernet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
