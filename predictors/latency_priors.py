"""Priors for few-shot latency models: other devices' tables and latency models, from files or from the library
this package ships.

A new device's latency mostly follows what the devices profiled before it already know: how a 7x7 depthwise
compares with a 3x3, how stages grow with resolution. ``ofa-fit latency DATA --prior P`` starts from such priors
(:class:`~predictors.latency_model.Prior`), so a handful of measured subnets fit a model. A prior is given as

- a latency table (``ofa-profile`` CSV, with its sidecar): its raw sums;
- a latency model (the ``--out`` stem of ``ofa-fit latency``);
- the name of a prior shipped with this package (``ofa-fit priors`` lists them, with where each came from).

Each is recorded with its content hash in every model fitted with it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from supernet.errors import OFAProfileError
from supernet.files import json_loads, stem_of
from supernet.plan import family_named

from .archs import ArchBatch
from .latency import LatencyPredictor
from .latency_model import LatencyModel, LatencyModelError, Prior
from .table_io import TableError, sidecar_path

__all__ = ["describe_shipped", "informative_subnets", "load_prior", "load_priors", "shipped_priors"]

_LIBRARY = "data/priors"  # inside this package
_INDEX = "index.json"
_MODEL_SUFFIXES = (".json", ".npz")


def _library() -> Path:
    return Path(str(resources.files("predictors").joinpath(_LIBRARY)))


def shipped_priors() -> list[dict[str, Any]]:
    """The priors this package ships: name, kind, file, what was measured, how, when, and its licence."""
    return list(json_loads((_library() / _INDEX).read_text(encoding="utf-8"))["priors"])


def _sha256(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_prior(spec: str | os.PathLike) -> Prior:
    """A prior from a shipped name, a table CSV or a latency model's stem; one clear error when it is none."""
    text = str(spec)
    shipped = {entry["name"]: entry for entry in shipped_priors()}
    if text in shipped:
        entry = shipped[text]
        return _from_path(_library() / entry["file"], entry["name"], f"shipped with ofa-profile: {entry['source']}")
    path = Path(text)
    name = path.stem if path.suffix.lower() == ".csv" else stem_of(path, _MODEL_SUFFIXES).name
    return _from_path(path, name, str(path))


def _from_path(path: Path, name: str, source: str) -> Prior:
    if path.suffix.lower() == ".csv":
        try:
            table = LatencyPredictor(path, calibrated=False)
        except FileNotFoundError:
            raise OFAProfileError(f"prior {path}: no such table",
                                  "give a table CSV, a latency model (ofa-fit latency --out), or a name "
                                  "ofa-fit priors lists") from None
        except TableError as err:
            raise OFAProfileError(f"prior {path}: {err}", "give a table ofa-profile wrote") from None
        files = [path, *([sidecar_path(path)] if sidecar_path(path).is_file() else [])]
        return Prior(name, _sha256(files), source, table.cost, table.family, table.width_mult)
    try:
        model = LatencyModel.load(path, quantity="latency_ms")
    except LatencyModelError as err:
        if "no such file" in str(err):
            shipped = ", ".join(entry["name"] for entry in shipped_priors())
            raise OFAProfileError(f"prior {path}: no such table, latency model or shipped prior",
                                  f"give a table CSV, an ofa-fit latency --out, or one of: {shipped}") from None
        raise
    stem = stem_of(path, _MODEL_SUFFIXES)
    files = [stem.with_name(stem.name + suffix) for suffix in _MODEL_SUFFIXES]
    return Prior(name, _sha256(files), source, model, model.family, model.width)


def load_priors(specs: Sequence[str | os.PathLike]) -> tuple[Prior, ...]:
    """Several priors; two of one name (the same file twice) are refused, as they would be one prior counted
    twice."""
    priors = tuple(load_prior(spec) for spec in specs)
    names = [p.name for p in priors]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise OFAProfileError(f"prior {repeated[0]} is given more than once", "give each prior once")
    hashes = [p.sha256 for p in priors]
    same = [p.name for p in priors if hashes.count(p.sha256) > 1]
    if same:
        raise OFAProfileError(f"priors {', '.join(same)} are the same file", "give each prior once")
    return priors


def describe_shipped() -> str:
    """``ofa-fit priors``: one paragraph per shipped prior."""
    lines = []
    for entry in shipped_priors():
        family = family_named(entry["space"]).name
        lines.append(f"{entry['name']}  ({entry['kind']}, {family} w{entry['width_mult']:g}, "
                     f"r {','.join(map(str, entry['resolutions']))})")
        lines += [f"    {entry['device']}", f"    source: {entry['source']}"]
    return "\n".join([*lines, f"files: {_library()}"])


def informative_subnets(priors: Sequence[Prior], candidates: ArchBatch, n: int) -> np.ndarray:
    """Indices of ``n`` of ``candidates`` worth measuring on a new device, given what the priors predict.

    A few-shot model fits a line over the priors' (log) predictions and weighs what they disagree on, so the
    subnets that teach it most are spread over the latency range, spread over the resolutions, and far apart in
    how the priors disagree. The candidates are cut into ``n`` strata by the priors' mean (standardised) log
    latency; each stratum gives one subnet, of the resolution picked least so far among those it holds, and of
    those, the one farthest (in the priors' standardised departures from their mean) from every subnet already
    picked. With one prior there is nothing to disagree on, and each stratum gives its median.
    """
    if not 0 < n <= len(candidates):
        raise ValueError(f"cannot pick {n} of {len(candidates)} candidates")
    logs = np.log(np.stack([p.predict(candidates) for p in priors], axis=1))
    scale = logs.std(axis=0)
    z = (logs - logs.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    level = z.mean(axis=1)
    departures = z - level[:, None]
    picked: list[int] = []
    counts = {int(r): 0 for r in np.unique(candidates.r)}
    for stratum in np.array_split(np.argsort(level, kind="stable"), n):
        fewest = min(counts[int(r)] for r in np.unique(candidates.r[stratum]))
        stratum = stratum[[counts[int(r)] == fewest for r in candidates.r[stratum]]]
        if picked and np.ptp(departures, axis=0).max() > 0:
            distance = np.linalg.norm(departures[stratum, None, :] - departures[None, picked, :], axis=2).min(axis=1)
            choice = int(stratum[np.argmax(distance)])
        elif len(priors) > 1:
            choice = int(stratum[np.argmax(np.linalg.norm(departures[stratum], axis=1))])
        else:
            choice = int(stratum[np.argsort(level[stratum], kind="stable")[len(stratum) // 2]])
        picked.append(choice)
        counts[int(candidates.r[choice])] += 1
    return np.array(picked)
