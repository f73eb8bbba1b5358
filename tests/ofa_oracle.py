"""Import the reference OFA package (PyPI ``ofa``) as a test oracle.

Its network code needs neither torchvision nor gdown, but its package ``__init__`` imports its data loaders and
downloaders, which do. We install stand-in modules for those two, each with a real ``__spec__`` (torch's ONNX
exporter probes ``torchvision.__spec__``), before importing it. Tests only; nothing users run imports this.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

_STUBS = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.datasets",
          "gdown")


def _stand_in_getattr(attr: str) -> type:
    if attr.startswith("__"):
        raise AttributeError(attr)
    return type(attr, (), {})


def _install_stand_ins() -> None:
    for name in _STUBS:
        if name in sys.modules:
            continue
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        module.__path__ = []
        module.__getattr__ = _stand_in_getattr
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def reference_ofa_mbv3():
    """The reference ``OFAMobileNetV3`` class."""
    _install_stand_ins()
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3

    return OFAMobileNetV3


def reference_ofa_proxyless():
    """The reference ``OFAProxylessNASNets`` class (the supernet of ``ofa_proxyless_d234_e346_k357_w1.3``)."""
    _install_stand_ins()
    from ofa.imagenet_classification.elastic_nn.networks import OFAProxylessNASNets

    return OFAProxylessNASNets


def reference_proxyless_nets():
    """The reference static ``ProxylessNASNets`` class (its ``build_from_config`` reads a net.config)."""
    _install_stand_ins()
    from ofa.imagenet_classification.networks.proxyless_nets import ProxylessNASNets

    return ProxylessNASNets


def reference_latency_tables():
    """The reference's ``ofa.nas.efficiency_predictor.latency_lookup_table`` (its LUT key formats)."""
    _install_stand_ins()
    from ofa.nas.efficiency_predictor import latency_lookup_table

    return latency_lookup_table


def reference_utils():
    """The reference's ``ofa.utils`` (``count_net_flops``, ``count_parameters``)."""
    _install_stand_ins()
    import ofa.utils

    return ofa.utils
