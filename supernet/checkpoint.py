"""Reading reference checkpoints: current and legacy key names, with one clear error when they don't fit.

Released files are dicts with the weights under ``"state_dict"`` (or bare state dicts). Older ones write
``.mobile_inverted_conv.`` for ``.conv.`` and lack or add the nested ``.bn.bn.``, ``.conv.conv.``,
``.linear.linear.`` levels; keys are matched through one canonical form that ignores both differences.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import OFAProfileError

__all__ = ["CheckpointError", "canonical_key", "load_compatible_state_dict", "read_state_dict"]

_NESTED = re.compile(r"\.(bn|conv|linear)\.\1\.")


class CheckpointError(OFAProfileError, ValueError):
    """A checkpoint that does not fit the network; the message says what differs and what to build instead."""


def canonical_key(key: str) -> str:
    """A key with legacy names and doubled nesting levels folded away."""
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    return _NESTED.sub(r".\1.", key)


def read_state_dict(source: str | os.PathLike | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint file or dict, unwrapped from ``"state_dict"`` when they sit under it."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None
    if isinstance(source, Mapping) and isinstance(source.get("state_dict"), Mapping):
        source = source["state_dict"]
    if not isinstance(source, Mapping) or not all(isinstance(v, torch.Tensor) for v in source.values()):
        raise CheckpointError("checkpoint holds no state dict: expected tensors, bare or under 'state_dict'")
    return dict(source)


def load_compatible_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                               optional: tuple[str, ...] = ()) -> None:
    """Load ``state_dict`` into ``module`` matching keys by :func:`canonical_key`.

    Keys of ``module`` containing any of ``optional`` may be absent (they keep their initial values).
    Raises CheckpointError listing missing, unexpected and mis-shaped keys.
    """
    own = module.state_dict()
    by_canonical = {canonical_key(k): k for k in own}
    renamed: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in state_dict.items():
        target = by_canonical.get(canonical_key(key))
        if target is None:
            unexpected.append(key)
        else:
            renamed[target] = tensor
    missing = [k for k in own if k not in renamed and not any(o in k for o in optional)]
    mis_shaped = [f"{k}: checkpoint {tuple(t.shape)}, network {tuple(own[k].shape)}"
                  for k, t in renamed.items() if t.shape != own[k].shape]
    if missing or unexpected or mis_shaped:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
            if items:
                shown = "; ".join(items[:5]) + (f"; ... ({len(items)} in all)" if len(items) > 5 else "")
                parts.append(f"{title} keys: {shown}")
        raise CheckpointError("checkpoint does not fit this network: " + " | ".join(parts))
    for key, tensor in renamed.items():
        own[key].copy_(tensor)
