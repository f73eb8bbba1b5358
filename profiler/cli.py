"""``ofa-profile``: build per-device latency tables, convert tables, list devices.

    ofa-profile --device local --width 1.0 --resolutions 160,192,224
    ofa-profile --device xeon --via ssh --host xeon-a --space proxyless          # OFA's GPU/CPU space (w1.3)
    ofa-profile --device pixel1 --via adb --serial 192.168.1.20:5555
    ofa-profile --device jetson --via ssh --host jetson-a --host jetson-b      # one table, sharded over two
    ofa-profile --device local --device jetson                                # a fleet, measured concurrently
    ofa-profile convert tables/note10_w1.2_tflite.csv out_yaml/               # CSV <-> OFA YAML

Progress and logs go to stderr; the path of each table written goes to stdout. Rerunning the same command
continues a run that was stopped or killed.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import platformdirs

from predictors.calibration import MIN_CALIBRATION_SUBNETS
from predictors.table_io import (
    read_table,
    sidecar_path,
    table_from_yaml,
    write_table,
    write_yaml_tables,
    yaml_name,
)
from profiler.closed_loop import MAX_SLACK, PERCENTILES
from profiler.devices import load_profiles, resolve_device
from profiler.modes import (
    FewShot,
    LoopJob,
    Run,
    SubnetsJob,
    TableJob,
    check_subnet_count,
    closed_loop_run,
    profile_device,
    whole_subnets,
)
from profiler.protocol import Protocol, flag_of
from profiler.reference import BLOCK_REFERENCE, REFERENCE_IDS
from profiler.rows import STRATEGIES
from profiler.table_lock import table_lock
from profiler.transports.base import interrupt_all
from supernet.cli_args import (
    OneLineParser,
    at_least,
    budget_list,
    finite_float,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
)
from supernet.errors import UsageError, run_command
from supernet.plan import FAMILIES, MOBILENETV3, Family
from supernet.quantize import PRECISIONS

__all__ = ["build_parser", "main"]

log = logging.getLogger("ofa-profile")


def _family_width(family: Family, width: float | None) -> float:
    """The width to build rows for: a released one by default; any other is a supernet trained with ofa-train."""
    released = family.released_widths
    if width is None:
        return released[0]
    if not width > 0:
        widths = " or ".join(f"{w:g}" for w in released)
        raise UsageError(f"--width {width:g} must be positive",
                         f"use --width {widths} (the released {family.name} supernets)")
    if width not in released:
        log.info("width %g is not a released %s supernet width (%s): the rows are for a supernet trained at %g",
                 width, family.name, ", ".join(f"{w:g}" for w in released), width)
    return width


def _subnets_arg(text: str) -> Path | int | FewShot:
    """``--subnets``: a subnet file, ``random:N``, or ``fewshot:N``."""
    kind = next((k for k in ("random", "fewshot") if text.startswith(f"{k}:")), None)
    if kind is None:
        return Path(text)
    try:
        n = positive_int(text.removeprefix(f"{kind}:"))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {kind}:N with N positive, e.g. {kind}:20") from None
    check_subnet_count(n, text, argparse.ArgumentTypeError)
    return n if kind == "random" else FewShot(n)


# The measurement protocol's flags: each sets the Protocol field it is named after (profiler.protocol.flag_of).
_PROTOCOL_FLAGS = (
    ("warmup", non_negative_int, "untimed runs before timing"),
    ("min_count", positive_int, "samples per item at least"),
    ("min_time_s", finite_float, "seconds per row at least"),
    ("max_cv", finite_float, "re-measure rows noisier than this"),
    ("retries", non_negative_int, "re-measures of an item noisier than --max-cv"),
    ("batch_rows", positive_int, "items per agent run (and per journal write)"),
    ("cooldown_s", finite_float, "seconds to wait on drift"),
    ("drift_tolerance", finite_float, "re-measure a batch when the reference moved by more than this fraction"),
    ("seed", non_negative_int, "item order, covering subnets and random subnets"),
    ("min_sample_ms", finite_float,
     "each sample times enough back-to-back runs to last this long (0: one run per sample)"),
    ("block_ms", positive_float, "items and the reference workload alternate in blocks of about this many ms (the "
     "start of a ladder that lengthens them where they disagree with a plain loop)"),
    ("settle_ms", finite_float, "discard each block's first runs, this many ms of them"),
    ("regime_tolerance", finite_float, "measure a batch again in longer blocks when its blocked times differ from a "
     "plain loop by more than this fraction"),
    ("profile_runs", positive_int, "profiled runs per network"),
    ("profile_sessions", positive_int, "sessions of the network, each loaded afresh, that share the profiled runs"),
    ("reconnects", non_negative_int, "when a device goes away"),
    ("backoff_s", finite_float, "seconds before the first reconnect"),
    ("evict_cache_mb", non_negative_int,
     "write this many MB between timed runs, so units run with cold caches as inside a network"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ofa-profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", action="append", default=[], help="device profile name (repeat for a fleet)")
    parser.add_argument("--list-devices", action="store_true", help="show the known device profiles and exit")
    where = parser.add_argument_group("overrides of the device profile")
    where.add_argument("--via", dest="transport", choices=["local", "ssh", "adb"], help="how to reach the device")
    where.add_argument("--host", dest="hosts", action="append", help="SSH host (repeat to shard one table)")
    where.add_argument("--serial", dest="serials", action="append", help="ADB serial or host:port (repeatable)")
    where.add_argument("--user", help="SSH login name")
    where.add_argument("--key", help="SSH private key file")
    where.add_argument("--known-hosts", help="SSH known_hosts file to check the host key against")
    where.add_argument("--adb-key", help="ADB private key file (created on first use)")
    where.add_argument("--port", type=positive_int, help="SSH or ADB port")
    where.add_argument("--runtime", choices=["onnxruntime", "tflite", "torch", "benchmark_model"],
                       help="what runs the models on the device")
    where.add_argument("--provider", help="execution provider, delegate or torch device")
    where.add_argument("--threads", type=positive_int, help="inference threads on the device")
    where.add_argument("--batch", type=positive_int, help="images per inference")
    where.add_argument("--precision", choices=list(PRECISIONS),
                       help="fp32 (default) or int8: statically quantized models (ONNX Runtime; QDQ, per-channel)")
    where.add_argument("--python", help="the device's Python interpreter")
    what = parser.add_argument_group("what to measure")
    what.add_argument("--space", dest="family", choices=list(FAMILIES), default=MOBILENETV3.name,
                      help="supernet family: mobilenetv3 (phones; default) or proxyless (OFA's GPU and CPU space)")
    what.add_argument("--width", type=finite_float,
                      help="supernet width: the released 1.2 (default) or 1.0 for mobilenetv3, 1.3 for proxyless; "
                      "any other for a supernet trained with ofa-train")
    what.add_argument("--resolutions", help="'all' or a list such as 160,192,224 (default 224; for --subnets "
                      "random:N the table's)")
    what.add_argument("--n-classes", type=positive_int, default=1000, help="classifier outputs (default 1000)")
    what.add_argument(
        "--rows",
        choices=STRATEGIES,
        default=None,
        help="how rows are taken: in_network (whole covering subnets split by ONNX Runtime's profiler; the "
        "default for ONNX Runtime on CPU) or isolated (each unit exported and timed alone; the default elsewhere)",
    )
    what.add_argument("--cover-repeats", type=positive_int, default=1,
                      help="in-network rows: covering subnets per choice")
    how = parser.add_argument_group("measurement protocol")
    how.add_argument("--reference", choices=REFERENCE_IDS, default=BLOCK_REFERENCE.id,
                     help="the fixed workload every item is timed against: block (default) or network (a small "
                     "whole subnet); subnets measured against a table take the table's")
    defaults = Protocol()
    for field, kind, text in _PROTOCOL_FLAGS:
        flag = flag_of(field)
        how.add_argument(flag, dest=field, type=kind, default=getattr(defaults, field), help=text,
                         metavar=flag[2:].replace("-", "_").upper())
    subnets = parser.add_argument_group("whole subnets")
    subnets.add_argument(
        "--subnets",
        type=_subnets_arg,
        metavar="FILE|random:N|fewshot:N",
        help="measure whole subnets: the archs in FILE (ofa-search output, OFA JSON) against the table, N seeded "
        "random ones at --resolutions (the data ofa-fit latency learns from; the table is optional), or the N "
        "most informative ones given --prior (for ofa-fit latency --prior on a new device)",
    )
    subnets.add_argument("--prior", action="append", default=[], metavar="PRIOR",
                         help="fewshot:N: another device's table, latency model or a prior ofa-fit priors lists "
                              "(repeat for several)")
    subnets.add_argument("--calibrate", type=at_least(MIN_CALIBRATION_SUBNETS), metavar="N",
                         help="fit measured = a*sum + b on N subnets spread over the table's range")
    subnets.add_argument("--table", type=Path, help="the table to predict with or calibrate (default: the device's)")
    subnets.add_argument("--yes", action="store_true",
                         help="start a run of whole subnets estimated at over 2 h (its cost is stated first)")
    subnets.add_argument(
        "--reanchor",
        action="store_true",
        help="time the reference workload alone and restate the table's values at the device's speed now",
    )
    loop = parser.add_argument_group("closed loop: subnets that measure under their budget")
    loop.add_argument(
        "--search",
        action="store_true",
        help="build (or finish) the table, then search each --latency-ms budget, measure what was found and "
        "search again while the best subnet under a budget measures over it or leaves more than --max-slack unused",
    )
    loop.add_argument("--latency-ms", type=budget_list, help="budgets in ms, e.g. 8,10,12")
    loop.add_argument("--rounds", type=positive_int, default=3, help="searches per budget at most (default 3)")
    loop.add_argument("--generations", type=non_negative_int, default=500, help="search generations (default 500)")
    loop.add_argument("--max-slack", type=fraction, default=MAX_SLACK,
                      help="search a budget again while its best subnet leaves more than this share of it unused "
                      f"(default {MAX_SLACK})")
    loop.add_argument("--percentile", type=int, choices=list(PERCENTILES), default=50,
                      help="hold budgets on this percentile of a subnet's runs: 50, the median (default), or 90, "
                      "the slow frames (the search sums the table's p90_ms)")
    loop.add_argument("--guard", type=fraction, default=0.0,
                      help="keep this share of each budget free: deliver subnets measured under budget x (1 - "
                      "GUARD), for a device whose timing moves between runs (default 0; 0.03 on a noisy machine)")
    loop.add_argument("--predictor", type=Path, help="accuracy predictor (default: OFA's released one, w1.2)")
    loop.add_argument("--rank", choices=("accuracy", "macs"), default="accuracy",
                      help="what the search maximises under each budget: predicted accuracy (default), or MACs, a "
                      "stand-in where no accuracy predictor exists (the ProxylessNAS space)")
    loop.add_argument("--raw-latency", action="store_true", help="search with raw table sums, no calibration")
    loop.add_argument("--latency-model", type=Path, metavar="MODEL",
                      help="search with a latency model fitted on measured subnets (ofa-fit latency) instead of "
                      "the table; it is refitted with the loop's measurements into MODEL.refit")
    loop.add_argument("--memory-model", type=Path, metavar="MODEL",
                      help="memory model fitted on measured subnets (ofa-fit memory), for --memory-mb")
    loop.add_argument("--memory-mb", type=positive_float, metavar="MB",
                      help="deliver subnets whose peak memory, predicted and measured, stays under MB")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("tables"), help="folder for tables (default ./tables)")
    out.add_argument(
        "--cache", type=Path, default=Path(platformdirs.user_cache_dir("ofa-profile")), help="exported-model cache"
    )
    out.add_argument("--quiet", action="store_true",
                     help="print only the paths written: no progress bars or progress lines (for scripts)")
    out.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    names = (
        "transport",
        "hosts",
        "serials",
        "user",
        "key",
        "known_hosts",
        "adb_key",
        "port",
        "runtime",
        "provider",
        "threads",
        "batch",
        "precision",
        "python",
    )
    return {name: getattr(args, name) for name in names}


def _convert(argv: Sequence[str]) -> int:
    parser = OneLineParser(
        prog="ofa-profile convert", description="Convert a CSV table to OFA's YAML files, or a folder of them to CSV."
    )
    parser.add_argument("source", type=Path, help="a table .csv, or a folder of {r}_lookup_table.yaml")
    parser.add_argument("target", type=Path, help="a folder for the YAML files, or a .csv path")
    parser.add_argument(
        "--statistic",
        default="mean_ms",
        choices=["mean_ms", "median_ms"],
        help="the CSV column written as OFA's 'mean' (default mean_ms)",
    )
    parser.add_argument("--force", action="store_true", help="replace a table or YAML files that exist")
    args = parser.parse_args(argv)
    if args.source.is_dir():
        if args.target.suffix != ".csv":
            parser.error(f"converting YAML tables from {args.source} needs a .csv target, got {args.target}")
        table = table_from_yaml(args.source)
        with table_lock(args.target, "ofa-profile convert"):
            _refuse_to_replace([args.target, sidecar_path(args.target)], args.force)
            print(write_table(args.target, table))
    else:
        table = read_table(args.source)
        _refuse_to_replace([args.target / yaml_name(r) for r in table.resolutions], args.force)
        for path in write_yaml_tables(table, args.target, statistic=args.statistic):
            print(path)
    return 0


def _refuse_to_replace(paths: Sequence[Path], force: bool) -> None:
    """convert writes new files; a measured table (or OFA's YAML files) it would replace needs --force."""
    existing = [str(path) for path in paths if path.exists() or path.is_symlink()]
    if existing and not force:
        raise UsageError(f"{existing[0]} exists{f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''}",
                         "give another target, or --force to replace it")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ofa-profile``; every error ends as one line on stderr and a non-zero exit status."""
    # Our own progress at INFO; the libraries' (JAX, litert-torch) only from WARNING, or conversions flood stderr.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    _log_level(logging.INFO)
    return run_command("ofa-profile", _main, argv, on_stop=lambda signum: interrupt_all())


def _log_level(level: int) -> None:
    for name in ("ofa-profile", "profiler", "supernet", "predictors"):
        logging.getLogger(name).setLevel(level)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["convert"]:
        return _convert(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet:  # stdout has only the paths written; stderr only warnings and errors
        _log_level(logging.WARNING)
    family = FAMILIES[args.family]
    width = _family_width(family, args.width)
    if args.list_devices:
        for profile in load_profiles().values():
            print(profile.describe())
        return 0
    if not args.device:
        parser.error("give --device NAME (see --list-devices), or use `ofa-profile convert`")
    protocol = Protocol(**{field: getattr(args, field) for field, _, _ in _PROTOCOL_FLAGS})
    if sum([bool(args.subnets), args.calibrate is not None, args.search, args.reanchor]) > 1:
        parser.error("--subnets, --calibrate, --search and --reanchor are separate runs: give one of them")
    if args.search and not args.latency_ms:
        parser.error("--search needs budgets: --latency-ms 8,10,12")
    if args.latency_model and not args.search:
        parser.error("--latency-model is for --search (the closed loop); ofa-search takes it too")
    if (args.memory_model is None) != (args.memory_mb is None):
        parser.error("--memory-mb and --memory-model go together: a limit, and the model that predicts it")
    if args.memory_model and not args.search:
        parser.error("--memory-mb is for --search (the closed loop); ofa-search takes it too")
    if args.percentile != 50 and not args.search:
        parser.error("--percentile is for --search (the closed loop)")
    if args.rank != "accuracy" and not args.search:
        parser.error("--rank is for --search (the closed loop); ofa-search takes it too")
    if isinstance(args.subnets, FewShot) != bool(args.prior):
        parser.error("--subnets fewshot:N picks subnets from priors: give both, e.g. --subnets fewshot:20 "
                     "--prior local-ort-t1")
    if args.yes and not (args.subnets or args.calibrate is not None):
        parser.error("--yes starts a long run of whole subnets: it is for --subnets and --calibrate")
    if args.rank == "macs" and args.predictor:
        parser.error("--predictor ranks by accuracy and --rank macs by MACs: give one of them")
    if args.table and args.table.suffix.lower() != ".csv":
        table_csv = args.table.with_suffix(".csv")
        raise UsageError(f"--table {args.table}: a table is the .csv file ofa-profile writes",
                         f"give --table {table_csv} ({args.table.name} is its sidecar)" if table_csv.is_file()
                         else "give its .csv; a fitted latency model goes to --latency-model")
    profiles = [resolve_device(name, _overrides(args)) for name in args.device]
    for profile in profiles:
        if not profile.targets:
            flag = "host" if profile.transport == "ssh" else "serial"
            raise UsageError(f"device {profile.name!r} has no {flag}", f"give --{flag} or set it in devices.toml")
    run = Run(family=family, width=width, n_classes=args.n_classes, resolutions=args.resolutions, seed=args.seed,
              reference=args.reference, out=args.out, cache=args.cache, quiet=args.quiet,
              command=shlex.join(["ofa-profile", *argv]))
    table_job = TableJob(rows=args.rows, cover_repeats=args.cover_repeats, reanchor=args.reanchor)
    lock = threading.Lock()
    with ThreadPoolExecutor(len(profiles)) as pool:
        if args.search:
            job = LoopJob(budgets=tuple(args.latency_ms), rounds=args.rounds, generations=args.generations,
                          max_slack=args.max_slack, guard=args.guard, rank=args.rank, predictor=args.predictor,
                          raw_latency=args.raw_latency, table=args.table, latency_model=args.latency_model,
                          memory_model=args.memory_model, memory_mb=args.memory_mb, percentile=args.percentile)
            futures = [pool.submit(closed_loop_run, p, run, job, table_job, protocol, i, lock)
                       for i, p in enumerate(profiles)]
        elif args.subnets or args.calibrate is not None:
            job = SubnetsJob(subnets=args.subnets, calibrate=args.calibrate, table=args.table, yes=args.yes,
                             priors=tuple(args.prior))
            futures = [pool.submit(whole_subnets, p, run, job, protocol) for p in profiles]
        else:
            futures = [pool.submit(profile_device, p, run, table_job, protocol, i, lock)
                       for i, p in enumerate(profiles)]
        for future in futures:
            print(future.result())
    return 0


if __name__ == "__main__":
    sys.exit(main())
