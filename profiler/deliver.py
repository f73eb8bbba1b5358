"""``ofa-profile --device X --search --latency-ms 8,10,12``: the table (or ``--latency-model``), the closed loop,
its report.

The report has one line per budget: the delivered subnet, its predicted accuracy (or its MACs, where the search
ranked by MACs), predicted latency (with the calibration's interval), measured latency (at the table's anchor and
as measured now) and its slack, the rounds it took and
whether it met its budget, as CSV, as a subnet document (JSON, which ``ofa-profile --subnets`` reads back) and as a
plot.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from predictors.accuracy import AccuracyPredictor
from predictors.complexity import MacsPredictor
from predictors.latency import LatencyPredictor, LatencySource
from predictors.latency_model import LatencyModel
from predictors.search import Constraint
from predictors.table_io import Table, read_table
from profiler.closed_loop import MAX_SLACK, PERCENTILES, Delivery, closed_loop
from profiler.devices import DeviceProfile, check_precision_of
from profiler.plots import plot_delivered
from profiler.protocol import Protocol
from profiler.reference import reference_of
from profiler.remeasure import store_calibration, table_anchor
from profiler.steady import with_table_blocks
from profiler.transports.base import Transport
from profiler.whole_subnets import measure_subnets
from supernet import Arch, ArchSpace
from supernet.errors import UsageError
from supernet.files import atomic_write, stem_of
from supernet.subnets import SUBNETS_SCHEMA_VERSION, write_subnets

__all__ = ["Loop", "deliver", "delivered_stem", "percentile_tail", "table_predictor", "write_report"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loop:
    """What a closed loop ends with: a subnet per budget, every subnet it measured (with its round), and the
    latency source refitted with those measurements."""

    deliveries: list[Delivery]
    measured: list[dict[str, Any]]
    predictor: LatencySource


def deliver(
    profile: DeviceProfile,
    transport: Transport,
    source: Path,
    budgets: Sequence[float],
    accuracy: AccuracyPredictor | None,
    protocol: Protocol,
    cache_dir: Path,
    *,
    max_rounds: int = 3,
    generations: int = 500,
    seed: int = 0,
    raw_latency: bool = False,
    max_slack: float = MAX_SLACK,
    guard: float = 0.0,
    memory_model: Path | None = None,
    memory_mb: float | None = None,
    percentile: int = 50,
) -> Loop:
    """Run the closed loop on the device for ``budgets``, with a table (``source`` a .csv: the refitted calibration
    is stored in its sidecar) or a latency model (``ofa-fit latency``'s output: the refitted model is saved beside
    it as SOURCE.refit). With ``accuracy`` None the search ranks by MACs. With ``memory_model`` (``ofa-fit
    memory``'s) and ``memory_mb``, subnets must also stay under that much peak memory, predicted and measured.

    With ``percentile`` 90 the budgets hold for the slow runs: the search sums the table's ``p90_ms`` (raw: the
    table's calibration is of medians), and each subnet is held to the 90th percentile of its measured runs. The
    loop's refit of p90 sums is not stored in the sidecar, whose calibration stays that of medians."""
    is_model = source.suffix.lower() != ".csv"
    if percentile not in PERCENTILES:
        raise UsageError(f"--percentile {percentile}", f"use one of {', '.join(map(str, PERCENTILES))}")
    if is_model and percentile != 50:
        raise UsageError(f"--percentile {percentile} with --latency-model {source}: a fitted model learns medians",
                         "give a table (its rows keep p90_ms), or --percentile 50")
    if is_model:
        predictor = LatencyModel.load(source, quantity="latency_ms")
        check_precision_of(profile, predictor.precision, str(source))
        anchor, width, n_classes = predictor.meta_.get("anchor_ms"), predictor.width_mult_, predictor.n_classes_
        reference = reference_of(predictor.meta_)
        layout = predictor.family_.layout
    else:
        table = read_table(source)
        predictor = table_predictor(table, percentile, raw_latency)
        check_precision_of(profile, predictor.precision, str(source))
        anchor, width, n_classes = table_anchor(table), predictor.width_mult, predictor.n_classes
        reference = reference_of(table.meta)
        layout = predictor.family.layout
        protocol = with_table_blocks(protocol, table.meta)
    log.info("latency model: %s", predictor.describe())
    space = ArchSpace(resolutions=tuple(predictor.supported_resolutions()), layout=layout)
    rounds = itertools.count(1)
    stem = stem_of(source, (".csv", ".json", ".npz"))

    every: list[dict[str, Any]] = []  # each subnet measured, with its round: the report keeps them

    def measure(archs: Sequence[Arch]) -> list[dict[str, Any]]:
        number = next(rounds)
        measured = measure_subnets(profile, transport, archs, width_mult=width, n_classes=n_classes,
                                   anchor_ms=anchor, reference=reference, protocol=protocol, cache_dir=cache_dir,
                                   scratch=source.parent, work_name=f"{stem.name}.loop{number}")
        if percentile != 50:
            # The budget holds the subnet's slow runs: its percentile becomes what the loop compares and refits.
            measured = [{**m, "measured_median_ms": m["measured_ms"], "measured_ms": m[f"measured_p{percentile}_ms"]}
                        for m in measured]
        every.extend({"round": number, "arch": arch.to_dict(), **m} for arch, m in zip(archs, measured, strict=True))
        return measured

    memory = None
    if memory_model is not None:
        memory = Constraint("memory_mb", LatencyModel.load(memory_model, quantity="memory_mb"), memory_mb)
        log.info("memory limit %g MB by %s", memory_mb, memory.predictor.describe())
    ranked_by = "accuracy" if accuracy is not None else "macs"
    ranking = accuracy or MacsPredictor(width, n_classes, space.resolutions, layout)
    deliveries, refitted = closed_loop(predictor, ranking, space, budgets, measure, max_rounds=max_rounds,
                                       generations=generations, seed=seed, ranked_by=ranked_by,
                                       max_slack=max_slack, guard=guard, memory=memory)
    if is_model:
        paths = refitted.save(stem.with_name(f"{stem.name}.refit"), {"refitted_from": str(source)})
        log.info("the model refitted with the loop's measurements: %s", paths[0])
    elif refitted.calibration is not None and not raw_latency and percentile == 50:
        store_calibration(source, refitted.calibration)
    return Loop(deliveries, every, predictor)


def table_predictor(table: Table | Path, percentile: int = 50, raw_latency: bool = False) -> LatencyPredictor:
    """What a loop on a table searches with: its medians, calibrated as stored unless ``raw_latency``; or on another
    percentile its raw ``p{percentile}_ms`` sums (the stored calibration is of medians)."""
    if percentile == 50:
        return LatencyPredictor(table, calibrated=not raw_latency)
    return LatencyPredictor(table, statistic=f"p{percentile}_ms", calibrated=False)


def percentile_tail(percentile: int) -> str:
    """What a file name adds for budgets on a percentile other than the median (``_p90``)."""
    return "" if percentile == 50 else f"_p{percentile}"


def delivered_stem(profile: DeviceProfile, budgets_ms: Sequence[float], percentile: int = 50) -> str:
    """The report's name, by device, budgets, percentile and precision (``local_delivered_3.5-4ms``,
    ``local_delivered_8ms_p90_int8``): a loop with other budgets on the same table, on another percentile or in
    another precision, writes its own report instead of replacing this one."""
    budgets = "-".join(f"{budget:g}" for budget in budgets_ms)
    return f"{profile.name}_delivered_{budgets}ms{percentile_tail(percentile)}{profile.precision_suffix}"


def write_report(loop: Loop, stem: Path, title: str, percentile: int = 50,
                 settings: Mapping[str, Any] | None = None) -> list[Path]:
    """``stem``.csv, .json and .png (``stem`` may hold dots); the JSON also lists every subnet the loop measured,
    and the loop's ``settings`` (guard, rounds, ...): reports are named by budgets, not by every setting."""
    deliveries = loop.deliveries
    frame = pd.DataFrame([d.to_dict() for d in deliveries])
    csv, document, png = (stem.with_name(stem.name + suffix) for suffix in (".csv", ".json", ".png"))
    atomic_write(csv, frame.to_csv(index=False))
    write_subnets(document, {
        "schema_version": SUBNETS_SCHEMA_VERSION,
        "kind": "ofa-profile closed loop",
        "latency_model": loop.predictor.describe(),
        "ranked_by": deliveries[0].ranked_by if deliveries else "accuracy",
        "latency_statistic": "median" if percentile == 50 else f"p{percentile}",
        "settings": dict(settings or {}),
        "subnets": [{**d.to_dict(), "arch": json.loads(d.arch)} for d in deliveries],
        "measured": loop.measured,
    })
    plot_delivered(frame, png, title)
    return [csv, document, png]
