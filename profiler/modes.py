"""What ``ofa-profile`` does for one device, per mode: build a table, measure whole subnets (or calibrate), run the
closed loop. Each mode is a function of explicit values (:class:`Run` and its job), not of parsed arguments."""

from __future__ import annotations

import logging
import shlex
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from predictors.accuracy import AccuracyPredictor, warn_precision_mismatch
from predictors.table_io import Table, read_table, write_table
from profiler.builder import TableRun
from profiler.connect import open_transport
from profiler.devices import DeviceProfile
from profiler.protocol import Protocol
from profiler.reference import reference_named
from profiler.rows import RowStrategy, default_rows, merge_shards, strategy_for
from profiler.table_lock import table_lock
from supernet.arch import ArchSpace
from supernet.errors import UsageError
from supernet.files import read_input
from supernet.plan import MOBILENETV3, Family
from supernet.subnets import read_subnets

__all__ = ["MAX_SUBNETS", "FewShot", "LoopJob", "Run", "SubnetsJob", "TableJob", "check_subnet_count",
           "closed_loop_run", "parse_resolutions", "profile_device", "table_path", "whole_subnets"]

log = logging.getLogger("ofa-profile")

# Each subnet is exported (1-2 s and 5-30 MB here) and timed whole (seconds on this CPU, more on a phone): a run
# of more than this is days of device time and gigabytes of exports, a typo rather than a plan.
MAX_SUBNETS = 10_000


@dataclass(frozen=True)
class Run:
    """What every mode works with: the supernet, where files go, and how the command was given."""

    family: Family
    width: float
    n_classes: int
    resolutions: str | None  # as given: 'all', '160,192,224', or None (the mode's default)
    seed: int
    reference: str
    out: Path
    cache: Path
    quiet: bool
    command: str


@dataclass(frozen=True)
class TableJob:
    """A table run: how rows are taken, and whether to re-anchor an existing table instead."""

    rows: str | None = None
    cover_repeats: int = 1
    reanchor: bool = False


@dataclass(frozen=True)
class FewShot:
    """``--subnets fewshot:N``: the N subnets most worth measuring on a new device, given priors."""

    n: int


@dataclass(frozen=True)
class SubnetsJob:
    """Whole subnets: the archs of a file, ``random:N`` or ``fewshot:N`` (``subnets``; ``priors`` pick the last),
    or a calibration on N (``calibrate``)."""

    subnets: Path | int | FewShot | None = None
    calibrate: int | None = None
    table: Path | None = None
    yes: bool = False
    priors: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoopJob:
    """The closed loop: budgets, the search's settings, and what it ranks and predicts with."""

    budgets: tuple[float, ...]
    rounds: int
    generations: int
    max_slack: float
    guard: float
    rank: str
    predictor: Path | None = None
    raw_latency: bool = False
    table: Path | None = None
    latency_model: Path | None = None
    memory_model: Path | None = None
    memory_mb: float | None = None
    percentile: int = 50


def check_subnet_count(n: int, what: str, error: type[Exception]) -> None:
    if n > MAX_SUBNETS:
        raise error(f"{what}: {n:,} subnets; at most {MAX_SUBNETS:,} per run (each is exported, 5-30 MB, and timed "
                    f"whole: {n:,} would take days and about {n * 15 / 1000:,.0f} GB); measure them in parts")


def parse_resolutions(text: str, width_mult: float, family: Family = MOBILENETV3) -> list[int]:
    allowed = ArchSpace.for_width(width_mult, family.layout).resolutions
    if text == "all":
        return list(allowed)
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise UsageError(f"--resolutions {text!r}: expected 'all' or numbers like 160,192,224") from None
    bad = [r for r in values if r not in allowed]
    if bad or not values:
        raise UsageError(
            f"--resolutions {text!r}: {bad or 'none given'} not in the w{width_mult} list "
            f"{allowed[0]}..{allowed[-1]} step 4"
        )
    return values


def _supernet_stem(profile: DeviceProfile, width_mult: float, family: Family) -> str:
    """The device and supernet part of the names of a device's files (the family only where it is not MobileNetV3)."""
    named = "" if family == MOBILENETV3 else f"_{family.name}"
    return f"{profile.name}{named}_w{width_mult}"


def table_path(folder: Path, profile: DeviceProfile, width_mult: float, family: Family = MOBILENETV3) -> Path:
    stem = _supernet_stem(profile, width_mult, family)
    return folder / f"{stem}_{profile.runtime}_{profile.provider}{profile.precision_suffix}.csv".lower()


def _table_supernet(table: Table, name: str, run: Run) -> tuple[Family, float]:
    """The family and width of the supernet a table's rows are of: random subnets are drawn from it, whatever
    --space and --width say (the measurement follows the table too)."""
    from predictors.latency import LatencyPredictor

    stated = LatencyPredictor(table, calibrated=False)
    family, width = stated.family, stated.width_mult
    if (family, width) != (run.family, run.width):
        log.info("%s is a table of the %s w%g supernet: measuring its subnets", name, family.name, width)
    return family, width


def profile_device(profile: DeviceProfile, run: Run, job: TableJob, protocol: Protocol, position: int,
                   lock: threading.Lock) -> Path:
    """One device's table; several targets (hosts or serials) each measure a shard, merged at the end."""
    if job.rows == "isolated" and job.cover_repeats != 1:
        raise UsageError("--cover-repeats is for --rows in_network")
    resolutions = parse_resolutions(run.resolutions or "224", run.width, run.family)
    strategy = strategy_for(job.rows or default_rows(profile), run.width, resolutions, run.n_classes,
                            job.cover_repeats, run.seed, run.family)
    path = table_path(run.out, profile, run.width, run.family)
    path.parent.mkdir(parents=True, exist_ok=True)
    targets = profile.targets
    meta = {
        "space": run.family.name,
        "width_mult": run.width,
        "resolutions": resolutions,
        "n_classes": run.n_classes,
        "command": run.command,
    }
    shards = []
    for i, target in enumerate(targets):
        shard_path = path if len(targets) == 1 else path.with_name(f"{path.stem}.shard{i}.csv")
        shards.append((target, shard_path, strategy.shard(i, len(targets))))

    def measure(target: str, shard_path: Path, shard: RowStrategy) -> Table:
        with lock:
            bar = tqdm(
                total=len(shard.items()),
                desc=f"{profile.name} {target}",
                unit="net" if shard.kind == "in_network" else "row",
                disable=run.quiet,
                position=position,
                leave=True,
                dynamic_ncols=True,
            )
        with open_transport(profile, target) as transport, bar:
            table_run = TableRun(profile, transport, shard, shard_path, run.cache, protocol, meta,
                                 on_rows=bar.update, reference=reference_named(run.reference))
            if job.reanchor:
                return table_run.reanchor()
            bar.update(table_run.total() - len(table_run.pending()))
            return table_run.run()

    with ThreadPoolExecutor(len(shards)) as pool:
        tables = list(pool.map(lambda shard: measure(*shard), shards))
    if len(shards) > 1:
        rows = merge_shards([table.rows for table in tables])
        write_table(
            path, Table(rows, {**tables[0].meta, "shards": [str(p.name) for _, p, _ in shards], "devices": targets})
        )
    return path


def whole_subnets(profile: DeviceProfile, run: Run, job: SubnetsJob, protocol: Protocol) -> Path:
    """--subnets: measured against predicted, CSV and PNG; --calibrate: the fit, stored in the table's sidecar."""
    from profiler.plots import plot_predicted_vs_measured  # pandas and matplotlib: not for --help
    from profiler.remeasure import calibrate, fewshot_subnets, random_subnets, remeasure

    table = job.table or table_path(run.out, profile, run.width, run.family)
    drawn = job.subnets if isinstance(job.subnets, (int, FewShot)) else None
    if table.exists() and not table.is_file():
        read_input(table)  # refuses a FIFO, device or folder, naming which (a FIFO is not "no table")
    if not table.is_file():
        if job.table or drawn is None:
            raise UsageError(
                f"no table {table} to predict with; build it first (ofa-profile --device {profile.name}) "
                f"or give --table PATH (--subnets random:N and fewshot:N measure without one)"
            )
        table = None
    if job.calibrate is not None:
        with table_lock(table, run.command), open_transport(profile, profile.targets[0]) as transport:
            fit = calibrate(profile, transport, table, job.calibrate, run.cache, protocol, seed=run.seed, yes=job.yes)
        log.info("calibration on %d subnets: measured = %.3f * sum %+.3f ms; RMS error %.1f%% -> %.1f%% "
                 "(leave-one-out %.1f%%)", fit.n, fit.a, fit.b, fit.rms_pct_before, fit.rms_pct_after,
                 fit.loo_rms_pct)
        return table
    if drawn is None:
        archs = read_subnets(job.subnets)
        check_subnet_count(len(archs), str(job.subnets), UsageError)
        # One file per input: a second --subnets file must not replace the first one's rows.
        out_csv = run.out / f"{profile.name}_subnets_{job.subnets.stem}{profile.precision_suffix}.csv"
    else:
        stated = read_table(table) if table is not None else None
        family, width = (run.family, run.width) if stated is None else _table_supernet(stated, table.name, run)
        if run.resolutions or stated is None:
            resolutions = parse_resolutions(run.resolutions or "224", width, family)
        else:
            resolutions = stated.resolutions
        span = "-".join(map(str, resolutions[:3])) + ("-etc" if len(resolutions) > 3 else "")
        if isinstance(drawn, FewShot):
            archs = fewshot_subnets(job.priors, drawn.n, run.seed, width, resolutions, family)
            kind = f"fewshot{drawn.n}"  # another N picks other subnets: a file of its own
        else:
            archs = random_subnets(drawn, run.seed, width, resolutions, family)
            kind = "random"  # one file per (family, width, resolutions, seed): a larger N, or a rerun, extends it
        out_csv = run.out / (f"{_supernet_stem(profile, width, family)}_{kind}_r{span}_seed{run.seed}"
                             f"{profile.precision_suffix}.csv")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(archs), desc=f"{profile.name} subnets", unit="net", disable=run.quiet, dynamic_ncols=True)
    with table_lock(table or out_csv, run.command), open_transport(profile, profile.targets[0]) as transport, bar:
        frame = remeasure(profile, transport, archs, table, out_csv, run.cache, protocol, width=run.width,
                          n_classes=run.n_classes, on_subnets=bar.update,
                          reference=reference_named(run.reference), family=run.family, yes=job.yes)
    if table is None:
        priors = "".join(f" --prior {shlex.quote(p)}" for p in job.priors)
        log.info("%d subnets measured (no table to compare with): %s; fit a model with ofa-fit latency %s%s --out "
                 "MODEL", len(frame), out_csv, shlex.quote(str(out_csv)), priors)
        return out_csv
    png = plot_predicted_vs_measured(frame, out_csv.with_suffix(".png"), f"{profile.name}: {table.name}")
    within = (frame["error_pct"].abs() <= 10).mean() * 100
    log.info(
        "%d subnets: %s prediction vs measured, mean error %+.1f%%, %.0f%% within ±10%%; plot %s",
        len(frame),
        "calibrated" if frame["calibrated"].any() else "raw table-sum",
        frame["error_pct"].mean(),
        within,
        png,
    )
    return out_csv


def _accuracy(run: Run, job: LoopJob) -> AccuracyPredictor | None:
    """The accuracy predictor the closed loop ranks by; None when it ranks by MACs."""
    if job.rank == "macs":
        return None
    if job.predictor:
        return AccuracyPredictor.load(job.predictor)
    return AccuracyPredictor.shipped_for(run.family, run.width)


def closed_loop_run(profile: DeviceProfile, run: Run, job: LoopJob, table_job: TableJob, protocol: Protocol,
                    position: int, lock: threading.Lock) -> Path:
    """--search: the table (resumed or built with ``table_job``), then search, measure, refit, search again; the
    report."""
    from profiler.deliver import deliver, delivered_stem, write_report  # pandas and matplotlib: not for --help

    accuracy = _accuracy(run, job)
    if accuracy is not None:
        warn_precision_mismatch([profile.precision], accuracy, job.predictor)
    source = job.latency_model or job.table or table_path(run.out, profile, run.width, run.family)
    with table_lock(source, run.command):
        table = job.latency_model or job.table or profile_device(profile, run, table_job, protocol, position, lock)
        with open_transport(profile, profile.targets[0]) as transport:
            loop = deliver(profile, transport, table, job.budgets, accuracy, protocol, run.cache,
                           max_rounds=job.rounds, generations=job.generations, seed=run.seed,
                           raw_latency=job.raw_latency, max_slack=job.max_slack, guard=job.guard,
                           memory_model=job.memory_model, memory_mb=job.memory_mb, percentile=job.percentile)
        statistic = "" if job.percentile == 50 else f", p{job.percentile}"
        settings = {"source": str(table), "rounds": job.rounds, "generations": job.generations,
                    "max_slack": job.max_slack, "guard": job.guard, "rank": job.rank, "seed": run.seed,
                    "raw_latency": job.raw_latency, "memory_mb": job.memory_mb}
        paths = write_report(loop, run.out / delivered_stem(profile, job.budgets, job.percentile),
                             f"{profile.name}: {table.name}{statistic}", job.percentile, settings)
    deliveries = loop.deliveries
    for d in deliveries:
        verdict = "met" if d.met else "NOT MET"
        score = f"top-1 {d.accuracy:.4f}" if d.accuracy is not None else f"MACs {d.macs / 1e6:.1f}M"
        if d.memory_mb is not None:
            score += f", {d.memory_mb:.1f} MB"
        log.info("budget %.2f ms: %s, measured %.2f ms (%.2f ms now), slack %.1f%%, predicted %.2f ms [%.2f, %.2f], "
                 "%s, %d round(s)%s", d.budget_ms, verdict, d.measured_ms, d.absolute_ms, 100 * d.slack,
                 d.predicted_ms, d.low_ms, d.high_ms, score, d.rounds, f"; {d.note}" if d.note else "")
    met = [d.slack for d in deliveries if d.met]
    if met:
        log.info("mean slack over %d met budget(s): %.1f%%", len(met), 100 * sum(met) / len(met))
    return paths[0]
