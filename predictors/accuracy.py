"""The accuracy predictor: OFA's 128-dimensional arch encoding and its MLP (docs/ofa_reference.md §3).

The released predictor (``acc_predictor.pth``, Han Cai, MIT) ships inside this package in its own format: the
plain state dict saved with ``torch.save``, the same weights as NumPy arrays (``.npz``), and a JSON file with
provenance, format version and encoding. It is the default for the w1.2 space. Loading OFA's original ``.pth``
gives the same outputs. Predictions run in NumPy, so a search needs no torch (whose import alone takes ~2 s);
torch is imported only to read a ``.pt`` without arrays beside it, or to train.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from supernet.arch import EXPAND_RATIOS, KERNEL_SIZES, N_BLOCKS, Arch, ArchError
from supernet.errors import OFAProfileError, UsageError
from supernet.files import atomic_write, json_loads, read_input, sha256_of, stem_of
from supernet.plan import MOBILENETV3, Family

from .archs import ArchBatch

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "DEFAULT_PREDICTOR",
    "FORMAT_VERSION",
    "AccuracyPredictor",
    "ArchEncoding",
    "PredictorFileError",
    "build_mlp",
    "warn_precision_mismatch",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_PREDICTOR = "ofa_mbv3_w1.2_acc_predictor"


def warn_precision_mismatch(precisions: Iterable[str], accuracy: AccuracyPredictor,
                            predictor: str | os.PathLike | None) -> None:
    """Say so when subnets of one precision are ranked by an accuracy predictor of another (OFA's release and
    predictors of float datasets know float accuracy): quantization costs some accuracy, unevenly across subnets."""
    other = sorted(set(precisions) - {accuracy.precision})
    if other:
        learned = "float" if accuracy.precision == "fp32" else accuracy.precision
        log.warning("ranking %s subnets by the %s top-1 of %s: quantization costs some accuracy, unevenly "
                    "across subnets, which this predictor does not know; ofa-train dataset --precision and "
                    "ofa-fit accuracy build one that does", "/".join(other), learned,
                    predictor or "OFA's released accuracy predictor")


class PredictorFileError(OFAProfileError, ValueError):
    """A predictor file that cannot be read; the message names the file and what to do."""


@dataclass(frozen=True)
class ArchEncoding:
    """OFA's encoding: per block a one-hot of kernel (60 dims), then of expand ratio (60 dims), zeros for blocks
    that depth skips; then a one-hot of the resolution bin ``(r - resolution_start) // resolution_step``.

    The released predictor uses start 112, step 16 and 8 bins (112..239); a predictor for another space may
    choose other bins.
    """

    resolution_start: int = 112
    resolution_step: int = 16
    resolution_bins: int = 8
    n_blocks: int = N_BLOCKS

    @classmethod
    def for_resolutions(cls, resolutions: Iterable[int], n_blocks: int = N_BLOCKS) -> ArchEncoding:
        """OFA's encoding where the resolutions fit its bins (112..239 by 16); else one bin per step of the data.
        ``n_blocks``: 20 for MobileNetV3 archs, 21 for ProxylessNAS ones."""
        values = sorted({int(r) for r in resolutions})
        default = cls(n_blocks=n_blocks)
        top = default.resolution_start + default.resolution_step * default.resolution_bins
        if values and default.resolution_start <= values[0] and values[-1] < top:
            return default
        step = math.gcd(*(b - a for a, b in itertools.pairwise(values))) if len(values) > 1 else 16
        return cls(values[0], step, (values[-1] - values[0]) // step + 1, n_blocks)

    @property
    def n_features(self) -> int:
        return self.n_blocks * (len(KERNEL_SIZES) + len(EXPAND_RATIOS)) + self.resolution_bins

    def resolution_bin(self, r: np.ndarray) -> np.ndarray:
        bins = (np.asarray(r, dtype=np.int64) - self.resolution_start) // self.resolution_step
        bad = (bins < 0) | (bins >= self.resolution_bins)
        if bad.any():
            hi = self.resolution_start + self.resolution_step * self.resolution_bins - 1
            raise ArchError(f"resolution(s) {sorted({int(v) for v in np.asarray(r)[bad]})} are outside this "
                             f"predictor's encoding range {self.resolution_start}..{hi}")
        return bins

    def transform(self, archs: ArchBatch | Iterable[Arch]) -> np.ndarray:
        """Features of each arch, float32 array of shape (n, 128)."""
        batch = ArchBatch.coerce(archs)
        if batch.layout.n_blocks != self.n_blocks:
            raise ArchError(f"this predictor encodes archs of {self.n_blocks} blocks; these are {batch.layout.family} "
                            f"archs of {batch.layout.n_blocks}: use a predictor trained on that space")
        n = len(batch)
        active = batch.active
        ks = (batch.ks[:, :, None] == np.asarray(KERNEL_SIZES, dtype=batch.ks.dtype)) & active[:, :, None]
        ex = (batch.e[:, :, None] == np.asarray(EXPAND_RATIOS, dtype=batch.e.dtype)) & active[:, :, None]
        res = np.zeros((n, self.resolution_bins), dtype=bool)
        res[np.arange(n), self.resolution_bin(batch.r)] = True
        return np.concatenate([ks.reshape(n, -1), ex.reshape(n, -1), res], axis=1).astype(np.float32)


def build_mlp(n_features: int, hidden_sizes: Sequence[int] = (400, 400, 400)) -> nn.Sequential:
    """OFA's predictor MLP: Linear-ReLU per hidden layer, then Linear to one output (keys ``0.weight``...)."""
    from torch import nn

    layers: list[nn.Module] = []
    width = n_features
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _ordered(state_dict: Mapping[str, Any], suffix: str) -> list:
    return [state_dict[k] for k in sorted((k for k in state_dict if k.endswith(suffix)),
                                          key=lambda k: int(k.split(".")[0]))]


def _hidden_sizes(state_dict: Mapping[str, Any], where: str) -> tuple[int, tuple[int, ...]]:
    weights = _ordered(state_dict, ".weight")
    if not weights or weights[-1].shape[0] != 1:
        raise PredictorFileError(f"{where}: not an accuracy-predictor MLP state dict (keys 0.weight ... N.bias "
                                 f"ending in one output); got keys {sorted(state_dict)[:6]}")
    return int(weights[0].shape[1]), tuple(int(w.shape[0]) for w in weights[:-1])


def _stem(path: str | os.PathLike) -> str:
    """The common stem of a predictor's files (names may contain dots, as in ``w1.2``)."""
    return os.fspath(stem_of(path, (".pt", ".json", ".npz")))


class AccuracyPredictor:
    """Predicted top-1 accuracy (0..1) of archs, from an MLP over :class:`ArchEncoding` features.

    Args:
        model: The MLP as a torch module (see :func:`build_mlp`), e.g. one just trained; or None with ``arrays``.
        encoding: The arch encoding it was trained with.
        meta: Provenance and training notes, written to the JSON file on :meth:`save`.
        arrays: The MLP as a state dict of NumPy arrays (``0.weight``, ``0.bias``, ...), read without torch.

    Predictions run in NumPy either way; with a module, from its current weights (shared, not copied).

    Example:
        >>> predictor = AccuracyPredictor.default()
        >>> arch = ArchSpace.for_width(1.2).uniform(ks=7, e=6, d=4, r=224)
        >>> 0.8 < float(predictor.predict([arch])[0]) < 0.85
        True
    """

    def __init__(self, model: nn.Module | None = None, encoding: ArchEncoding | None = None,
                 meta: Mapping[str, Any] | None = None, *, arrays: Mapping[str, np.ndarray] | None = None) -> None:
        if (model is None) == (arrays is None):
            raise ValueError("give the MLP as a torch module (model=) or as arrays (arrays=), one of them")
        self._model = None if model is None else model.eval()
        self._arrays = None if arrays is None else {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
        self.encoding = encoding or ArchEncoding()
        self.meta = dict(meta or {})

    @property
    def precision(self) -> str:
        """The precision of the accuracies it learned (fp32 for OFA's release and datasets without the column)."""
        return str(self.meta.get("precision", "fp32"))

    @property
    def model(self) -> nn.Module:
        """The MLP as a torch module (built from the arrays on first use; predictions then follow it)."""
        if self._model is None:
            import torch

            n_features, hidden = _hidden_sizes(self._arrays, "predictor arrays")
            model = build_mlp(n_features, hidden)
            model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self._arrays.items()})
            self._model, self._arrays = model.eval(), None
        return self._model

    def _layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._model is not None:
            state = {k: v.detach().cpu().numpy() for k, v in self._model.state_dict().items()}
        else:
            state = self._arrays
        return list(zip(_ordered(state, ".weight"), _ordered(state, ".bias"), strict=True))

    def predict(self, archs: ArchBatch | Iterable[Arch]) -> np.ndarray:
        """Predicted accuracy of each arch, float32 array of shape (n,)."""
        h = self.encoding.transform(archs)
        layers = self._layers()
        for i, (weight, bias) in enumerate(layers):
            h = h @ weight.T + bias
            if i + 1 < len(layers):
                np.maximum(h, 0, out=h)
        return h[:, 0]

    def resolutions(self, candidates: Iterable[int]) -> tuple[int, ...]:
        """The candidate resolutions inside this predictor's encoding range."""
        lo = self.encoding.resolution_start
        hi = lo + self.encoding.resolution_step * self.encoding.resolution_bins
        return tuple(r for r in candidates if lo <= r < hi)

    # --- files ---------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``<path>.pt`` (the state dict), ``<path>.npz`` (the same as arrays, read without torch) and
        ``<path>.json`` (format version, encoding, provenance)."""
        import torch

        base = _stem(path)
        weights, arrays, sidecar = Path(f"{base}.pt"), Path(f"{base}.npz"), Path(f"{base}.json")
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(weights, buffer.getvalue())
        buffer = io.BytesIO()
        np.savez(buffer, **{k: v.numpy() for k, v in state.items()})
        atomic_write(arrays, buffer.getvalue())
        n_features, hidden = _hidden_sizes(state, str(weights))
        info = {
            "format_version": FORMAT_VERSION,
            "kind": "ofa-profile accuracy predictor (MLP)",
            "weights": weights.name,
            "weights_sha256": sha256_of(weights),
            "arrays": arrays.name,
            "arrays_sha256": sha256_of(arrays),
            "n_features": n_features,
            "hidden_sizes": list(hidden),
            "encoding": asdict(self.encoding),
            "torch_version": torch.__version__,
            **{k: v for k, v in self.meta.items()
               if k not in ("format_version", "weights", "weights_sha256", "arrays", "arrays_sha256")},
        }
        atomic_write(sidecar, json.dumps(info, indent=2) + "\n")
        return weights, sidecar

    @classmethod
    def load(cls, path: str | os.PathLike) -> AccuracyPredictor:
        """Read a predictor saved by :meth:`save` (give the ``.pt``, the ``.json`` or their common stem): from its
        arrays where it has them (no torch), else from the ``.pt``."""
        sidecar = Path(f"{_stem(path)}.json")
        try:
            info = json_loads(read_input(sidecar))
        except FileNotFoundError:
            raise PredictorFileError(f"{sidecar}: missing; a predictor is a .pt state dict plus this JSON file (for "
                                     f"OFA's acc_predictor.pth use AccuracyPredictor.from_ofa_release)") from None
        if info.get("format_version") != FORMAT_VERSION:
            raise PredictorFileError(f"{sidecar}: format_version {info.get('format_version')!r} is not "
                                     f"{FORMAT_VERSION}; re-save it with this version of ofa-profile")
        meta = {k: v for k, v in info.items() if k not in ("n_features", "hidden_sizes", "encoding", "torch_version")}
        encoding = ArchEncoding(**info.get("encoding", {}))
        arrays = sidecar.with_name(info["arrays"]) if info.get("arrays") else None
        if arrays is not None and arrays.is_file():
            with np.load(io.BytesIO(read_input(arrays)), allow_pickle=False) as stored:
                state = dict(stored)
            _hidden_sizes(state, str(arrays))
            return cls(encoding=encoding, meta=meta, arrays=state)
        return cls(_load_torch_mlp(sidecar.with_name(info["weights"]), info.get("torch_version")), encoding, meta)

    @classmethod
    def from_ofa_release(cls, path: str | os.PathLike) -> AccuracyPredictor:
        """Read OFA's released ``acc_predictor.pth`` (a plain state dict of the 128-400-400-400-1 MLP)."""
        path = Path(path)
        return cls(_load_torch_mlp(path), ArchEncoding(), {"source_sha256": sha256_of(path)})

    @classmethod
    def default(cls) -> AccuracyPredictor:
        """The released OFA predictor for the w1.2 supernet, shipped with this package."""
        data = resources.files("predictors") / "data" / f"{DEFAULT_PREDICTOR}.json"
        with resources.as_file(data) as path:
            return cls.load(path)

    @classmethod
    def shipped_for(cls, family: Family, width: float) -> AccuracyPredictor:
        """The shipped predictor where it applies (MobileNetV3 w1.2); for any other supernet, a
        :class:`~supernet.errors.UsageError` that says how to get one."""
        if family != MOBILENETV3:
            raise UsageError(
                f"OFA released no accuracy predictor for the {family.name} space, so a search by accuracy needs "
                f"--predictor PATH",
                "build a dataset of subnets evaluated on your data and fit a predictor on it (ofa-train dataset, then "
                "ofa-fit accuracy), or rank by MACs (--rank macs): the largest network that meets the limits",
            )
        if width != 1.2:
            raise UsageError(f"the shipped accuracy predictor is for the w1.2 supernet; for width {width} pass "
                             f"--predictor PATH (train one with predictors.train)")
        return cls.default()


def _load_torch_mlp(weights: Path, saved_with: str | None = None) -> nn.Module:
    import torch

    if saved_with and saved_with.split("+")[0] != torch.__version__.split("+")[0]:
        warnings.warn(f"{weights} was saved with torch {saved_with}, loaded with {torch.__version__}", stacklevel=3)
    state = torch.load(io.BytesIO(read_input(weights)), map_location="cpu", weights_only=True)
    n_features, hidden = _hidden_sizes(state, str(weights))
    model = build_mlp(n_features, hidden)
    model.load_state_dict(state)
    return model
