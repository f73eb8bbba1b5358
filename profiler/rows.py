"""Ways to take a table's rows: each unit exported and timed alone, or units timed inside whole networks.

A table run (:class:`profiler.builder.TableRun`) measures *items* in batches and journals one record per item;
a strategy says what the items are, how to export them, and how records become rows:

- :class:`IsolatedRows`: one item per row, the unit exported alone and timed in a loop. Works with every runtime,
  but a unit timed hot in a loop runs with warm caches it does not have inside a network: here sums of such rows
  came out 16-24% below whole networks (issue 9).
- :class:`InNetworkRows`: a covering set of whole subnets (depth 4 everywhere, every (position, kernel, expand)
  choice in ``repeats`` of them per resolution), each timed end to end and split among its units by ONNX
  Runtime's profiler (:mod:`profiler.attribution`). A row is the mean of its share over the subnets that hold it.
  Nine subnets per resolution replace about 96 exported units.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from predictors.table_io import Row
from profiler.attribution import unit_shares
from profiler.devices import DeviceProfile
from profiler.reference import STATS, stats_ms
from supernet.arch import EXPAND_RATIOS, KERNEL_SIZES, Arch
from supernet.errors import OFAProfileError
from supernet.model_cache import agent_model, export_units, subnet_model
from supernet.plan import MOBILENETV3, Family
from supernet.units import Unit, all_units, units_of

__all__ = [
    "STRATEGIES",
    "InNetworkRows",
    "IsolatedRows",
    "Item",
    "RowStrategy",
    "StrategyError",
    "default_rows",
    "merge_shards",
    "strategy_for",
]

_CHOICES = [(k, e) for k in KERNEL_SIZES for e in EXPAND_RATIOS]


class StrategyError(OFAProfileError, ValueError):
    """A way of taking rows that cannot serve this device or table; the message says what to use instead."""


@dataclass(frozen=True)
class Item:
    """One thing a table run measures: a unit alone (``unit``) or a whole covering subnet (``arch``)."""

    name: str
    unit: Unit | None = None
    arch: Arch | None = None


class RowStrategy(Protocol):
    """What a table run needs to know about how rows are taken."""

    kind: str

    def items(self) -> list[Item]: ...

    def planned_keys(self) -> set[str]: ...

    def models(self, items: Sequence[Item], model_format: str, cache_dir: Path, batch: int,
               precision: str = "fp32") -> list[dict]: ...

    def journal_fields(self, item_name: str, result: Mapping[str, Any]) -> dict[str, Any]: ...

    def rows(self, kept: Mapping[str, Mapping[str, Any]], anchor_ms: float | None) -> list[Row]: ...

    def shard(self, index: int, count: int) -> RowStrategy: ...

    def describe(self) -> dict[str, Any]: ...


def _row(key: str, stats: Mapping[str, float | None], count: int, extra: Mapping[str, str]) -> Row:
    return Row(key=key, median_ms=stats["median"], mean_ms=stats["mean"], std_ms=stats["std"], p10_ms=stats["p10"],
               p90_ms=stats["p90"], count=count, extra=dict(extra))


@dataclass(frozen=True)
class IsolatedRows:
    """Every row exported alone and timed alone (against the reference)."""

    units: tuple[Unit, ...]
    kind: str = "isolated"

    def items(self) -> list[Item]:
        return [Item(u.key, unit=u) for u in {u.key: u for u in self.units}.values()]

    def planned_keys(self) -> set[str]:
        return {u.key for u in self.units}

    def models(self, items: Sequence[Item], model_format: str, cache_dir: Path, batch: int,
               precision: str = "fp32") -> list[dict]:
        paths = export_units([item.unit for item in items], model_format, cache_dir, batch=batch, precision=precision)
        return [agent_model(item.name, path, (batch, *item.unit.input_shape[1:]), model_format)
                for item, path in zip(items, paths, strict=True)]

    def journal_fields(self, item_name: str, result: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def rows(self, kept: Mapping[str, Mapping[str, Any]], anchor_ms: float | None) -> list[Row]:
        rows = []
        for key, record in kept.items():
            stats = stats_ms(record, anchor_ms)
            ratio = record.get("ratio")
            extra = {"ratio": f"{ratio['median']:.6g}"} if ratio else {}
            rows.append(_row(key, stats, stats["count"], extra))
        return sorted(rows, key=lambda row: row.key)

    def shard(self, index: int, count: int) -> IsolatedRows:
        return IsolatedRows(self.units[index::count])

    def describe(self) -> dict[str, Any]:
        return {"rows": self.kind, "statistic": "median_ms is the median of the unit's own samples"}


@dataclass(frozen=True)
class InNetworkRows:
    """Rows taken from whole covering subnets, split by the runtime profiler's node shares.

    Args:
        width_mult: Supernet width.
        resolutions: Resolutions of the table.
        n_classes: Classifier outputs.
        repeats: How many covering subnets hold each (position, kernel, expand) choice per resolution; the
            table has 9·repeats subnets per resolution.
        seed: Seed of the choice permutations.
        family: The supernet's family.
    """

    width_mult: float
    resolutions: tuple[int, ...]
    n_classes: int = 1000
    repeats: int = 1
    seed: int = 0
    only: tuple[str, ...] | None = None
    family: Family = MOBILENETV3
    kind: str = "in_network"

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise StrategyError(f"--cover-repeats {self.repeats} must be at least 1")

    @cached_property
    def covering_archs(self) -> dict[str, Arch]:
        """``9·repeats`` depth-4 subnets per resolution; block p of subnet j takes choice ``perm_p[j]``.

        Every resolution has the same subnets, so each is exported once (see ``export_subnet``).
        """
        layout = self.family.layout
        shapes = []
        for repeat in range(self.repeats):
            rng = random.Random(f"{self.seed}-{repeat}")
            perms = [rng.sample(range(len(_CHOICES)), len(_CHOICES)) for _ in range(layout.n_blocks)]
            for j in range(len(_CHOICES)):
                choices = [_CHOICES[perm[j]] for perm in perms]
                shapes.append((tuple(k for k, _ in choices), tuple(e for _, e in choices)))
        depths = tuple(max(layout.depth_choices(s)) for s in range(layout.n_stages))
        return {f"net-r{r}-{i:02d}": Arch(ks, e, depths, r) for r in self.resolutions
                for i, (ks, e) in enumerate(shapes)}

    def items(self) -> list[Item]:
        archs = self.covering_archs
        names = self.only if self.only is not None else tuple(archs)
        return [Item(name, arch=archs[name]) for name in names]

    def planned_keys(self) -> set[str]:
        return {u.key for u in all_units(self.width_mult, self.resolutions, self.n_classes, self.family)}

    def models(self, items: Sequence[Item], model_format: str, cache_dir: Path, batch: int,
               precision: str = "fp32") -> list[dict]:
        """Each attempt is profiled anew: the kept attempt (the steadiest) then has the profile taken with it
        (keeping a retried subnet's first profile saved 7-25% of a table's time, but two runs' rows then agreed
        within 5% less often, 95-97% against 97.5-99.6%)."""
        if model_format != "onnx":
            raise StrategyError(
                f"in-network rows need ONNX Runtime's node profiler; this device's models are {model_format}: "
                f"use --rows isolated (and --calibrate)"
            )
        return [{**subnet_model(item.name, item.arch, self.width_mult, self.n_classes, model_format, cache_dir, batch,
                                precision), "profile_nodes": True} for item in items]

    def journal_fields(self, item_name: str, result: Mapping[str, Any]) -> dict[str, Any]:
        return {"arch": self.covering_archs[item_name].to_json(), "node_times_us": result.get("node_times_us")}

    def rows(self, kept: Mapping[str, Mapping[str, Any]], anchor_ms: float | None) -> list[Row]:
        contributions: dict[str, list[dict[str, float]]] = defaultdict(list)
        for record in kept.values():
            units = units_of(Arch.from_json(record["arch"]), self.width_mult, self.n_classes)
            shares = unit_shares(record["node_times_us"], len(units), self.family.name)
            stats = stats_ms(record, anchor_ms)
            ratio = (record.get("ratio") or {}).get("median")
            for unit, share in zip(units, shares, strict=True):
                contributions[unit.key].append(
                    {name: stats[name] * share for name in ("median", "mean", "p10", "p90")}
                    | {"ratio": ratio * share if ratio else np.nan}
                )
        rows = []
        for key, parts in contributions.items():
            mean = {name: float(np.mean([p[name] for p in parts])) for name in ("median", "mean", "p10", "p90")}
            medians = [p["median"] for p in parts]
            stats = {**mean, "std": float(np.std(medians))}
            extra = {"networks": str(len(parts))}
            if not np.isnan(parts[0]["ratio"]):
                extra["ratio"] = f"{np.mean([p['ratio'] for p in parts]):.6g}"
            rows.append(_row(key, stats, len(parts), extra))
        return sorted(rows, key=lambda row: row.key)

    def shard(self, index: int, count: int) -> InNetworkRows:
        names = tuple(item.name for item in self.items())[index::count]
        return InNetworkRows(self.width_mult, self.resolutions, self.n_classes, self.repeats, self.seed, only=names,
                             family=self.family)

    def describe(self) -> dict[str, Any]:
        return {
            "rows": self.kind,
            "space": self.family.name,
            "width_mult": self.width_mult,
            "resolutions": list(self.resolutions),
            "n_classes": self.n_classes,
            "cover_repeats": self.repeats,
            "cover_seed": self.seed,
            "statistic": "each row is the mean, over the covering subnets that hold it, of the subnet's time "
                         "(its ratio to the reference times the anchor) times the unit's share of ONNX Runtime's "
                         "profiled node times; count is the number of subnets; std_ms their spread",
        }


STRATEGIES = ("isolated", "in_network")


def default_rows(profile: DeviceProfile) -> str:
    """In-network rows where ONNX Runtime's CPU profiler can split networks; isolated rows elsewhere."""
    return "in_network" if profile.runtime == "onnxruntime" and profile.provider.upper() == "CPU" else "isolated"


def strategy_for(kind: str, width_mult: float, resolutions: Sequence[int], n_classes: int, repeats: int = 1,
                 seed: int = 0, family: Family = MOBILENETV3) -> RowStrategy:
    """The named strategy for a table of the family's supernet at ``resolutions``."""
    if kind == "isolated":
        return IsolatedRows(tuple(all_units(width_mult, resolutions, n_classes, family)))
    if kind == "in_network":
        return InNetworkRows(width_mult, tuple(resolutions), n_classes, repeats, seed, family=family)
    raise StrategyError(f"unknown way to take rows {kind!r}; use one of {', '.join(STRATEGIES)}")


def merge_shards(shards: Sequence[Sequence[Row]]) -> tuple[Row, ...]:
    """One table's rows from shards measured on identical devices.

    Units alone are split among shards, so each key comes from one; covering subnets are split, so a key that
    several shards' subnets hold (the head's rows, for one) becomes the mean of theirs, weighted by the subnets
    behind each.
    """
    by_key: dict[str, list[Row]] = defaultdict(list)
    for rows in shards:
        for row in rows:
            by_key[row.key].append(row)
    merged = []
    for key, parts in sorted(by_key.items()):
        if len(parts) == 1:
            merged.append(parts[0])
            continue
        weights = np.array([row.count for row in parts], dtype=float)

        def mean(values: list[float | None], weights: np.ndarray = weights) -> float | None:
            return None if any(v is None for v in values) else float(np.average(values, weights=weights))

        extra = {"networks": str(int(weights.sum()))}
        if all("ratio" in row.extra for row in parts):
            extra["ratio"] = f"{mean([float(row.extra['ratio']) for row in parts]):.6g}"
        stats = {name: mean([getattr(row, f"{name}_ms") for row in parts]) for name in STATS}
        merged.append(_row(key, stats, int(weights.sum()), extra))
    return tuple(merged)
