"""Split a whole network's time among its table rows by the shares a runtime's own profiler gives its nodes.

ONNX Runtime's profiler names each node by the module path of the export (``/first_conv/...``,
``/blocks.7/conv/depth_conv/...``, ``/final_expand_layer/...``, ``/ReduceMean`` for the head's pool,
``/feature_mix_layer/...``, ``/Flatten`` and ``/classifier/...``), so every node belongs to one unit of
:func:`supernet.units.units_of`: in MobileNetV3 the head's four rows, in ProxylessNAS its feature mix (``Conv_1``)
and its pool-and-classifier (``Logits``). Nodes ONNX Runtime adds itself (layout reorders, named ``ReorderInput`` or
``..._token_N``) carry no path: they count toward the unit that follows them, which needs that layout. The one
exception is an h-swish that ONNX Runtime inlined from the export's ``HardSwish`` function into pieces without a
path (``HardSigmoid_N``, ``_inlfunc_HardSwish_..._QuantizeLinear``, ``QLinearMul_N``, as int8 graphs have it): they
activate the output of the node before them and count toward its unit, so the first conv, the final expand and the
feature mix keep their activations (the pieces took a fifth of the first conv's time in an int8 profile). Profiling
slows every node, so only shares are used; the total comes from an unprofiled, reference-interleaved timing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from supernet.errors import OFAProfileError

__all__ = ["AttributionError", "unit_of_node", "unit_shares"]

# Pieces of an inlined h-swish (see the module's docstring): they belong to the node they follow.
_ACTIVATION_PIECE = re.compile(r"HardSigmoid_\d+|QLinearMul_\d+|_inlfunc_HardSwish")

# Units after the blocks, counted from the end, per family.
_HEADS = {
    "mobilenetv3": {"final_expand_layer": 4, "ReduceMean": 3, "feature_mix_layer": 2, "Flatten": 1, "classifier": 1},
    "proxyless": {"feature_mix_layer": 2, "ReduceMean": 1, "Flatten": 1, "classifier": 1},
}


class AttributionError(OFAProfileError, ValueError):
    """Node times that cannot be split among a network's units; the message names the node or unit."""


def unit_of_node(name: str, n_units: int, family: str = "mobilenetv3") -> int | None:
    """The index in the network's units of the node ``name``; None for nodes the runtime added itself."""
    if not name.startswith("/"):
        return None
    head = _HEADS[family]
    n_head = max(head.values())
    parts = name.split("/")
    top = parts[1]
    if top == "first_conv":
        return 0
    if top.startswith("blocks."):
        index = 1 + int(top.removeprefix("blocks."))
        if index >= n_units - n_head:
            raise AttributionError(f"node {name} names block {index - 1}, but the network has "
                                   f"{n_units - 1 - n_head} blocks")
        return index
    for module, from_end in head.items():
        if top == module or (len(parts) == 2 and top.split("_")[0] == module):
            return n_units - from_end
    raise AttributionError(f"node {name} belongs to no unit of the network; was it exported by supernet.export?")


def unit_shares(node_times: Sequence[Sequence[Any]], n_units: int, family: str = "mobilenetv3") -> np.ndarray:
    """Each unit's share of the profiled time, from ``[name, op_type, us]`` per node in execution order."""
    times = np.zeros(n_units)
    waiting = 0.0
    last: int | None = None
    for name, _, us in node_times:
        index = unit_of_node(name, n_units, family)
        if index is None and last is not None and _ACTIVATION_PIECE.match(name):
            times[last] += us
            continue
        if index is None:
            waiting += us
            continue
        last = index
        times[index] += us + waiting
        waiting = 0.0
    times[-1] += waiting
    if times.sum() <= 0:
        raise AttributionError("the profile holds no node times")
    empty = np.flatnonzero(times <= 0)
    if len(empty):
        raise AttributionError(f"units {empty.tolist()} of {n_units} got no node of the profile")
    return times / times.sum()
