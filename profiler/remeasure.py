"""Whole subnets on the device against a table: ``ofa-profile --subnets`` and ``--calibrate``.

``--subnets found.json`` times each arch end to end with the table's protocol (:mod:`profiler.whole_subnets`) and
writes measured against predicted latency, raw and calibrated (CSV; the CLI adds the plot). ``--calibrate N``
times N subnets spread over the table's range the same way and fits measured ≈ a·sum + b into the table's
sidecar, where :class:`~predictors.latency.LatencyPredictor` and ``ofa-search`` pick it up.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from predictors.archs import ArchBatch
from predictors.calibration import Calibration, fit_calibration
from predictors.latency import LatencyPredictor
from predictors.latency_model import LatencyModelError
from predictors.latency_priors import informative_subnets, load_priors
from predictors.table_io import Table, read_table, write_table
from profiler.cost import check_cost, subnets_cost
from profiler.devices import DeviceProfile, check_precision_of
from profiler.protocol import Protocol
from profiler.reference import BLOCK_REFERENCE, Reference, reference_of
from profiler.steady import with_table_blocks
from profiler.transports.base import Transport
from profiler.whole_subnets import measure_subnets
from supernet import Arch, ArchSpace, count_macs
from supernet.errors import OFAProfileError, UsageError
from supernet.files import atomic_write
from supernet.plan import MOBILENETV3, Family

__all__ = ["calibrate", "fewshot_subnets", "measured_before", "random_subnets", "remeasure", "spread_subnets",
           "table_anchor"]

# What a measurement of a subnet is, as measure_subnets gives it; predictions are recomputed from the table.
_MEASURED = ("measured_ms", "measured_p10_ms", "measured_p90_ms", "absolute_ms", "steady_ms", "regime", "ratio",
             "reference", "reference_ms", "anchor_ms", "block_ms", "settle_ms", "count", "memory_mb")


def table_anchor(table: Table) -> float | None:
    """The reference latency the table's values are stated at (None for tables built without the reference)."""
    anchor = (table.meta.get("reference") or {}).get("anchor") or {}
    return anchor.get("anchor_ms")


def compare(
    archs: Sequence[Arch], measured: Sequence[dict], predictor: LatencyPredictor | None, width: float, n_classes: int,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Measured latency per arch, with the table's prediction (calibrated where it has a calibration, with its
    interval) beside it when there is a table."""
    frame = pd.DataFrame(measured)
    frame.insert(0, "arch", [arch.to_json() for arch in archs])
    frame.insert(1, "resolution", [arch.r for arch in archs])
    frame.insert(2, "macs_m", [count_macs(arch, width, n_classes) / 1e6 for arch in archs])
    frame["width_mult"] = width
    frame["n_classes"] = n_classes
    frame["precision"] = precision
    if predictor is None:
        return frame
    result = predictor.predict_result(archs)
    frame["raw_sum_ms"] = result.raw_ms
    frame["predicted_ms"] = result.latency_ms
    frame["low_ms"] = result.low_ms
    frame["high_ms"] = result.high_ms
    frame["calibrated"] = result.calibrated
    frame["error_pct"] = (frame["predicted_ms"] - frame["measured_ms"]) / frame["measured_ms"] * 100
    frame["raw_error_pct"] = (frame["raw_sum_ms"] - frame["measured_ms"]) / frame["measured_ms"] * 100
    return frame


def random_subnets(n: int, seed: int, width: float, resolutions: Sequence[int],
                   family: Family = MOBILENETV3) -> list[Arch]:
    """``n`` distinct seeded random archs of the width's space at ``resolutions`` (what ``random:N`` measures)."""
    rng = random.Random(seed)
    space = ArchSpace.for_width(width, family.layout)
    archs: dict[Arch, None] = {}
    while len(archs) < n:
        archs[space.sample(rng).with_resolution(rng.choice(list(resolutions)))] = None
    return list(archs)


def _candidates(n: int, seed: int, width: float, resolutions: Sequence[int], family: Family) -> list[Arch]:
    """The seeded random subnets ``n`` chosen ones are picked from: 50 per subnet asked for, at least 2,000."""
    return random_subnets(max(2000, 50 * n), seed, width, resolutions, family)


def fewshot_subnets(priors: Sequence[str], n: int, seed: int, width: float, resolutions: Sequence[int],
                    family: Family = MOBILENETV3) -> list[Arch]:
    """The ``n`` subnets most worth measuring on a new device given ``priors`` (what ``fewshot:N`` measures),
    picked from 50 seeded random candidates per subnet asked for (at least 2,000)."""
    loaded = load_priors(priors)
    for prior in loaded:
        try:
            prior.check(family, width, resolutions, "give --resolutions within what it covers")
        except LatencyModelError as exc:  # a command line to change: the usage exit code
            raise UsageError(exc.problem, exc.fix) from None
    candidates = _candidates(n, seed, width, resolutions, family)
    return [candidates[i] for i in informative_subnets(loaded, ArchBatch.from_archs(candidates), n)]


def spread_subnets(predictor: LatencyPredictor, n: int, seed: int, resolutions: Sequence[int]) -> list[Arch]:
    """``n`` subnets at evenly spaced quantiles of the table's raw sums over 50 seeded random candidates per subnet
    asked for (at least 2,000): the smallest, the largest and the range between.

    A line fitted through points spread over the range is pinned by its ends; through ``n`` random subnets, which
    bunch in the middle, a few percent of noise can tip its slope (5 random subnets at 128 px once fitted a slope
    of -5.7).
    """
    candidates = _candidates(n, seed, predictor.width_mult, resolutions, predictor.family)
    order = np.argsort(predictor.predict(candidates), kind="stable")
    return [candidates[i] for i in order[np.round(np.linspace(0, len(order) - 1, n)).astype(int)]]


def measured_before(out_csv: Path, width: float, anchor_ms: float | None,
                     reference: Reference, precision: str = "fp32") -> tuple[dict[str, dict], float | None]:
    """Rows a killed or earlier run already measured into ``out_csv`` at this width, reference and anchor, by arch
    JSON (rows that name no reference are older, timed against the block).

    Without a table the first run's anchor is kept, so every row of the file stays at one device state.
    """
    if not out_csv.is_file():
        return {}, anchor_ms
    try:
        before = pd.read_csv(out_csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return {}, anchor_ms
    if not {"arch", "measured_ms", "anchor_ms", "width_mult"} <= set(before.columns):
        return {}, anchor_ms
    if "reference" not in before.columns:
        before = before.assign(reference=BLOCK_REFERENCE.id)
    others = sorted(set(before["reference"].dropna()) - {reference.id})
    if others:
        # Rewriting the file with this run's rows would drop them; ratios to two workloads cannot share a file.
        raise OFAProfileError(f"{out_csv} holds subnets timed against the {others[0]} reference, and this run "
                              f"times against the {reference.id} one",
                              f"give --reference {others[0]}, or another --out")
    stated = sorted(set(before["precision"].dropna()) if "precision" in before.columns else {"fp32"})
    if stated != [precision]:
        raise OFAProfileError(f"{out_csv} holds subnets measured in {', '.join(stated)}, and this run measures "
                              f"{precision}", f"give --precision {stated[0]}, or another --out")
    before = before[before["width_mult"] == width]
    if anchor_ms is None and len(before):
        anchor_ms = float(before["anchor_ms"].iloc[0])
    same = before[np.isclose(before["anchor_ms"], anchor_ms)] if anchor_ms is not None else before.iloc[:0]
    kept = [c for c in _MEASURED if c in same.columns]
    return {row["arch"]: {c: row[c] for c in kept} for _, row in same.iterrows()}, anchor_ms


def remeasure(
    profile: DeviceProfile,
    transport: Transport,
    archs: Sequence[Arch],
    table_path: Path | None,
    out_csv: Path,
    cache_dir: Path,
    protocol: Protocol,
    *,
    width: float | None = None,
    n_classes: int = 1000,
    chunk: int = 25,
    on_subnets: Callable[[int], None] | None = None,
    reference: Reference = BLOCK_REFERENCE,
    family: Family = MOBILENETV3,
    yes: bool = False,
) -> pd.DataFrame:
    """Measure each distinct arch end to end and write it to ``out_csv``, one line per arch, beside the table's
    prediction (raw sum and calibrated) when there is a table.

    Subnets are measured ``chunk`` at a time and the CSV is rewritten (atomically) after each chunk; a rerun
    into the same CSV measures only the archs it lacks, so a killed run loses at most one chunk. They are timed
    against ``reference``, or the table's when there is a table; the archs are of ``family``'s supernet, or the table's.
    What the archs still to measure will cost is checked first (:func:`profiler.cost.check_cost`; ``yes`` starts a
    long run).
    """
    predictor = None
    anchor = None
    if table_path is not None:
        table = read_table(table_path)
        predictor = LatencyPredictor(table)
        check_precision_of(profile, predictor.precision, str(table_path))
        width, n_classes, anchor = predictor.width_mult, predictor.n_classes, table_anchor(table)
        reference = reference_of(table.meta)
        family = predictor.family
        protocol = with_table_blocks(protocol, table.meta)
    if width is None:
        raise ValueError("remeasure without a table needs the supernet width")
    space = ArchSpace.for_width(width, family.layout)
    archs = list(dict.fromkeys(space.validate(arch) for arch in archs))
    if predictor is not None:
        predictor.predict(archs)  # a table that lacks rows or resolutions fails before anything is exported
    keys = {arch: arch.to_json() for arch in archs}
    done, anchor = measured_before(out_csv, width, anchor, reference, profile.precision)
    pending = [arch for arch in archs if keys[arch] not in done]
    check_cost(subnets_cost(pending, profile, width, n_classes), cache_dir, yes)
    if on_subnets is not None:
        on_subnets(len(archs) - len(pending))

    asked = set(keys.values())
    # Rows an earlier run with other inputs left in the file stay in it, after this run's: a second list of archs
    # must not replace the first one's (those the table cannot predict are left out; none are measured again).
    kept = {arch: key for key, arch in ((k, Arch.from_json(k)) for k in done if k not in asked)
            if predictor is None or arch.r in predictor.measured}
    keys.update(kept)

    def write() -> pd.DataFrame:
        """Rewrite the file; the frame of this run's archs."""
        measured_archs = [arch for arch in archs if keys[arch] in done]
        rows = [*measured_archs, *kept]
        frame = compare(rows, [done[keys[a]] for a in rows], predictor, width, n_classes, profile.precision)
        atomic_write(out_csv, frame.to_csv(index=False))
        return frame.iloc[:len(measured_archs)]

    frame = None if pending else write()
    for start in range(0, len(pending), chunk):
        part = pending[start:start + chunk]
        measured = measure_subnets(profile, transport, part, width_mult=width, n_classes=n_classes, anchor_ms=anchor,
                                   reference=reference, protocol=protocol, cache_dir=cache_dir, scratch=out_csv.parent,
                                   work_name=out_csv.stem)
        anchor = measured[0]["anchor_ms"]
        done.update({keys[arch]: m for arch, m in zip(part, measured, strict=True)})
        frame = write()
        if on_subnets is not None:
            on_subnets(len(part))
    return frame


def calibrate(
    profile: DeviceProfile,
    transport: Transport,
    table_path: Path,
    n_subnets: int,
    cache_dir: Path,
    protocol: Protocol,
    seed: int = 0,
    yes: bool = False,
) -> Calibration:
    """Fit measured ≈ a·sum + b on ``n_subnets`` subnets spread over the table's range (:func:`spread_subnets`),
    timed against the reference; store it.

    Both sides are stated at the table's anchor (measured ratios times the table's anchor), so drift between the
    table run and now does not leak into the fit.
    """
    table = read_table(table_path)
    predictor = LatencyPredictor(table, calibrated=False)
    check_precision_of(profile, predictor.precision, str(table_path))
    width, n_classes = predictor.width_mult, predictor.n_classes
    archs = spread_subnets(predictor, n_subnets, seed, table.resolutions)
    check_cost(subnets_cost(archs, profile, width, n_classes), cache_dir, yes)
    sums = predictor.predict(archs)
    measured = measure_subnets(profile, transport, archs, width_mult=width, n_classes=n_classes,
                               anchor_ms=table_anchor(table), reference=reference_of(table.meta),
                               protocol=with_table_blocks(protocol, table.meta), cache_dir=cache_dir,
                               scratch=table_path.parent, work_name=f"{table_path.stem}.calibrate")
    calibration = fit_calibration(sums, [m["measured_ms"] for m in measured])
    store_calibration(table_path, calibration)
    return calibration


def store_calibration(table_path: Path, calibration: Calibration) -> None:
    stored = read_table(table_path)
    write_table(table_path, Table(stored.rows, {**stored.meta, "calibration": calibration.to_dict()}))
