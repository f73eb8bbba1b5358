"""``ofa-search``: the most accurate subnet under latency, MACs and parameter limits, or a sweep over budgets.

Results go to stdout (JSON with ``--json``), progress and errors to stderr. The JSON is a subnet document
(:mod:`supernet.subnets`) that ``ofa-profile --subnets`` reads as it is; ``--out`` writes it to a file.
Latency is calibrated with each table's stored calibration where it has one (``--raw-latency``: plain table sums);
limits apply to the calibrated values, and each found subnet carries its raw sum and interval beside them.
``--latency-model`` limits the latency a model fitted on measured subnets predicts (``ofa-fit latency``), alone
or beside tables, with the interval its cross-validation gave.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from supernet.arch import ArchSpace
from supernet.cli_args import (
    OneLineParser,
    budget_list,
    finite_float,
    non_negative_int,
    positive_float,
    positive_int,
    resolution_list,
    width_multiplier,
)
from supernet.errors import UsageError, run_command
from supernet.plan import FAMILIES, MOBILENETV3, Family
from supernet.subnets import SUBNETS_SCHEMA_VERSION, write_subnets

from .accuracy import AccuracyPredictor, warn_precision_mismatch
from .complexity import MacsPredictor, ParamsPredictor
from .latency import LatencyPredictor, LatencySource
from .latency_model import LatencyModel
from .search import Constraint, SearchResult, evolution_search, pareto_sweep

__all__ = ["build_parser", "main"]

_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9}


def _count(text: str) -> float:
    """``300M``, ``0.3G``, ``3e8`` or ``300000000``: finite and above 0."""
    scale = _SUFFIXES.get(text[-1:].lower(), 1.0)
    number = text[:-1] if scale != 1.0 else text
    try:
        return positive_float(number) * scale
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count above 0; use e.g. 300M, 0.3G or 3e8") from None


def _population(text: str) -> int:
    """Archs per generation: memory and time grow with it; 10,000 is far past where a larger one helps."""
    value = positive_int(text)
    if value > 10_000:
        raise argparse.ArgumentTypeError(f"{value:,} archs per generation: give at most 10,000 (OFA's search uses 100)")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="ofa-search", description=__doc__.split("\n\n")[0])
    for flag, metavar, what in (
        ("--table", "CSV", "latency table (repeat for several devices)"),
        ("--latency-model", "MODEL",
         "latency model fitted on measured subnets (ofa-fit latency); repeatable, limits follow the tables'"),
    ):
        p.add_argument(flag, action="append", default=[], type=Path, metavar=metavar, help=what)
    p.add_argument(
        "--latency-ms",
        action="append",
        type=positive_float,
        default=[],
        metavar="MS",
        help="latency limit: one for all tables and models, or one per --table, then per --latency-model, in order",
    )
    p.add_argument("--memory-model", type=Path, metavar="MODEL",
                   help="memory model fitted on measured subnets (ofa-fit memory): reports each subnet's memory")
    p.add_argument("--memory-mb", type=positive_float, metavar="MB",
                   help="memory limit: the peak memory a subnet adds, by --memory-model")
    p.add_argument("--macs", type=_count, help="MACs limit, e.g. 300M")
    p.add_argument("--params", type=_count, help="parameter limit, e.g. 5M")
    p.add_argument("--budgets", type=budget_list, help="sweep these limits (e.g. 15,20,25,30) and report each best")
    p.add_argument(
        "--sweep",
        choices=("latency", "macs", "params"),
        default="latency",
        help="what --budgets limits (latency: the first table's)",
    )
    p.add_argument("--space", dest="family", choices=sorted(FAMILIES),
                   help="supernet family, mobilenetv3 or proxyless (default: the tables', else mobilenetv3)")
    p.add_argument("--width", type=width_multiplier,
                   help="supernet width (default: the tables', else 1.2; 1.3 for proxyless)")
    p.add_argument("--n-classes", type=positive_int, default=None,
                   help="classifier outputs (default: the tables', else 1000)")
    p.add_argument("--predictor", type=Path, help="accuracy predictor (.pt + .json); default: OFA's, for w1.2")
    p.add_argument("--rank", choices=("accuracy", "macs"), default="accuracy",
                   help="what the search maximises: predicted accuracy (default), or MACs as a stand-in where no "
                        "accuracy predictor exists (the largest network that meets the limits)")
    p.add_argument("--resolutions", type=resolution_list, metavar="R,...",
                   help="the supernet's resolutions, for one trained on other images (default OFA's for the width)")
    p.add_argument("--interpolate", action="store_true", help="also search resolutions between measured ones")
    p.add_argument("--statistic", choices=("median_ms", "mean_ms"), default="median_ms", help="table column to sum")
    p.add_argument(
        "--raw-latency", action="store_true", help="plain table sums: do not apply the tables' stored calibration"
    )
    p.add_argument("--population", type=_population, default=100, help="archs per generation (default 100)")
    p.add_argument("--generations", type=int, default=500, help="the most generations to run")
    p.add_argument(
        "--patience", type=int, default=100, help="stop once the best has not improved for this many generations"
    )
    p.add_argument("--mutate-prob", type=finite_float, default=0.1, help="chance each choice mutates (default 0.1)")
    p.add_argument("--parent-ratio", type=finite_float, default=0.25,
                   help="share of a generation kept as parents (default 0.25)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed of the search (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", type=Path, help="also write the JSON result to this file (atomically)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def _log(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    sources = len(args.table) + len(args.latency_model)
    if args.rank == "macs" and args.predictor:
        p.error("--predictor ranks by accuracy and --rank macs by MACs: give one of them")
    if args.latency_ms and not sources:
        p.error("--latency-ms needs a --table or --latency-model to predict latency from")
    if len(args.latency_ms) not in (0, 1, sources):
        p.error(
            f"{len(args.latency_ms)} --latency-ms for {sources} --table/--latency-model: give one for all, or one "
            f"per table, then per model"
        )
    if args.budgets:
        if args.sweep == "latency" and not sources:
            p.error("--budgets sweeps latency: give a --table or --latency-model (or --sweep macs / --sweep params)")
        if args.sweep == "latency" and len(args.latency_ms) > 1:
            p.error(
                "--budgets replaces the first table's --latency-ms; give limits for the other tables only "
                "through one --latency-ms each after the first, or drop --budgets"
            )
    elif not (args.latency_ms or args.macs is not None or args.params is not None or args.memory_mb is not None):
        p.error("no constraint: give --latency-ms (with --table or --latency-model), --macs, --params, --memory-mb "
                "(with --memory-model) or --budgets")
    if args.memory_mb is not None and args.memory_model is None:
        p.error("--memory-mb needs a --memory-model to predict memory from (ofa-fit memory)")


def _table_name(path: Path, names: list[str]) -> str:
    name = path.stem
    return name if names.count(name) == 1 else str(path)


def _build(args: argparse.Namespace):
    latency = [
        LatencyPredictor(
            t,
            statistic=args.statistic,
            interpolate=args.interpolate,
            width_mult=args.width,
            n_classes=args.n_classes,
            calibrated=not args.raw_latency,
        )
        for t in args.table
    ] + [LatencyModel.load(m, quantity="latency_ms") for m in args.latency_model]
    sources = [*args.table, *args.latency_model]
    memory = LatencyModel.load(args.memory_model, quantity="memory_mb") if args.memory_model else None
    family = FAMILIES[args.family] if args.family else latency[0].family if latency else MOBILENETV3
    width = args.width or (latency[0].width if latency else family.released_widths[0])
    n_classes = args.n_classes or (latency[0].classes if latency else 1000)
    for lat, path in [*zip(latency, sources, strict=True), *([(memory, args.memory_model)] if memory else [])]:
        if (lat.family, lat.width, lat.classes) != (family, width, n_classes):
            raise UsageError(
                f"{path} is for the {lat.family.name} space, width {lat.width}, {lat.classes} classes; "
                f"the search is for {family.name}, width {width}, {n_classes} classes: use tables and models of "
                f"one supernet"
            )
    accuracy = _ranking(args, family, width)
    if accuracy is not None:
        warn_precision_mismatch([lat.precision for lat in latency], accuracy, args.predictor)
    layout = family.layout
    space = ArchSpace(args.resolutions, layout=layout) if args.resolutions else ArchSpace.for_width(width, layout)
    resolutions = accuracy.resolutions(space.resolutions) if args.rank == "accuracy" else space.resolutions
    for lat in [*latency, *([memory] if memory else [])]:
        resolutions = tuple(r for r in resolutions if r in lat.supported_resolutions(space))
    if not resolutions:
        raise UsageError(
            "no resolution is covered by every table and the accuracy predictor; check the tables' "
            "resolutions, or pass --interpolate"
        )
    space = ArchSpace(resolutions=resolutions, layout=layout)
    names = [p.stem for p in sources]
    constraints = {}
    latency_by_name = {}
    for i, (lat, path) in enumerate(zip(latency, sources, strict=True)):
        limit = args.latency_ms[0] if len(args.latency_ms) == 1 else (args.latency_ms[i] if args.latency_ms else None)
        name = _table_name(path, names)
        latency_by_name[name] = lat
        constraints[f"latency_ms[{name}]"] = (lat, limit)
    constraints["macs"] = (MacsPredictor(width, n_classes, resolutions, layout), args.macs)
    constraints["params"] = (ParamsPredictor(width, n_classes, resolutions, layout), args.params)
    if memory is not None:
        constraints["memory_mb"] = (memory, args.memory_mb)
    if args.rank == "macs":
        accuracy = constraints["macs"][0]
    return accuracy, space, constraints, latency_by_name, width


def _ranking(args: argparse.Namespace, family: Family, width: float) -> AccuracyPredictor | None:
    """The accuracy predictor to rank by; None when ranking by MACs (built with the constraints)."""
    if args.rank == "macs":
        return None
    if args.predictor is not None:
        return AccuracyPredictor.load(args.predictor)
    return AccuracyPredictor.shipped_for(family, width)


def _subnet(result: SearchResult, constraints: dict, latency: dict[str, LatencySource], rank: str) -> dict:
    entry = {"arch": result.arch.to_dict(), "accuracy": result.accuracy if rank == "accuracy" else None}
    predicted = {name: lat.predict_result([result.arch]) for name, lat in latency.items()}
    entry["latency_ms"] = {name: p.latency_ms[0].item() for name, p in predicted.items()}
    entry["latency_low_ms"] = {name: p.low_ms[0].item() for name, p in predicted.items()}
    entry["latency_high_ms"] = {name: p.high_ms[0].item() for name, p in predicted.items()}
    entry["latency_raw_ms"] = {name: p.raw_ms[0].item() for name, p in predicted.items()}
    if any(p.any_interpolated for p in predicted.values()):
        entry["latency_interpolated"] = True
    entry["macs"] = int(constraints["macs"][0].predict([result.arch])[0])
    entry["params"] = int(constraints["params"][0].predict([result.arch])[0])
    if "memory_mb" in constraints:
        entry["memory_mb"] = float(constraints["memory_mb"][0].predict([result.arch])[0])
    entry["limits"] = result.limits
    entry["search_seconds"] = result.seconds
    entry["generations"] = result.generations
    entry["evaluated"] = result.evaluated
    return entry


def _run(args: argparse.Namespace) -> dict:
    accuracy, space, constraints, latency, width = _build(args)
    for name, lat in latency.items():
        _log(args, f"ofa-search: latency of {name}: {lat.describe()}")
    settings = {
        "population": args.population,
        "generations": args.generations,
        "mutate_prob": args.mutate_prob,
        "parent_ratio": args.parent_ratio,
        "seed": args.seed,
        "patience": args.patience,
    }
    active = [Constraint(name, pred, limit) for name, (pred, limit) in constraints.items() if limit is not None]
    started = time.perf_counter()
    if args.budgets:
        swept_name = next(iter(constraints)) if args.sweep == "latency" else args.sweep
        swept = Constraint(swept_name, constraints[swept_name][0], 0.0)
        others = [c for c in active if c.name != swept_name]
        _log(args, f"ofa-search: sweeping {swept_name} over {args.budgets} (resolutions {list(space.resolutions)})")
        results = pareto_sweep(accuracy, swept, args.budgets, space, others, **settings)
    else:
        _log(
            args,
            f"ofa-search: {', '.join(f'{c.name} <= {c.limit:g}' for c in active)} "
            f"(resolutions {list(space.resolutions)})",
        )
        results = [evolution_search(accuracy, active, space, **settings)]
    seconds = time.perf_counter() - started
    _log(args, f"ofa-search: done in {seconds:.2f} s")
    return {
        "schema_version": SUBNETS_SCHEMA_VERSION,
        "kind": "ofa-search result",
        "subnets": [_subnet(r, constraints, latency, args.rank) for r in results],
        "latency_model": {name: lat.report() for name, lat in latency.items()},
        "search_seconds": seconds,
        "settings": {
            **settings,
            "space": space.layout.family,
            "ranked_by": args.rank,
            "width_mult": width,
            "resolutions": list(space.resolutions),
            "tables": [str(t) for t in args.table],
            "latency_models": [str(m) for m in args.latency_model],
            "memory_model": str(args.memory_model) if args.memory_model else None,
            "statistic": args.statistic,
            "interpolate": args.interpolate,
            "predictor": str(args.predictor) if args.predictor else "default",
        },
    }


def _print_text(document: dict) -> None:
    for entry in document["subnets"]:
        lat = ", ".join(
            f"{name} {ms:.2f} ms" + _interval_text(entry["latency_low_ms"][name], entry["latency_high_ms"][name], ms)
            for name, ms in entry["latency_ms"].items()
        )
        score = "ranked by MACs" if entry["accuracy"] is None else f"accuracy {entry['accuracy']:.4f}"
        memory = f"  memory {entry['memory_mb']:.1f} MB" if "memory_mb" in entry else ""
        print(
            f"{score}  {lat}{memory}  MACs {entry['macs'] / 1e6:.1f}M  "
            f"params {entry['params'] / 1e6:.2f}M  search {entry['search_seconds']:.2f} s"
        )
        print(f"  {json.dumps(entry['arch'])}")


def _interval_text(low: float, high: float, ms: float) -> str:
    return "" if low == high == ms else f" [{low:.2f}, {high:.2f}]"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ofa-search``: 0 when done; every error ends as one line on stderr and a non-zero status."""
    return run_command("ofa-search", _main, argv)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    document = _run(args)
    if args.out is not None:
        write_subnets(args.out, document)
        _log(args, f"ofa-search: wrote {args.out} (ofa-profile --subnets {args.out} re-measures it)")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        _print_text(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
