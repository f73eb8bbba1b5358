"""``ofa-fit``: fit a predictor on measured archs, and save it where ``ofa-search`` reads it.

    ofa-fit accuracy runs/digits/accuracy.csv --out runs/digits/predictor
    ofa-search --predictor runs/digits/predictor --width 0.25 --resolutions 32 --macs 5M

    ofa-profile --device local --width 1.0 --resolutions 160,192,224 --subnets random:100
    ofa-fit latency tables/local_subnets.csv --out tables/local.latency [--table tables/local_w1.0_....csv]
    ofa-fit predict tables/local.latency found.json
    ofa-search --latency-model tables/local.latency --latency-ms 8 --predictor ...

    ofa-profile --device phone --width 1.0 --resolutions 160,192,224 --subnets random:20     # a new device
    ofa-fit latency tables/phone_subnets.csv --prior local-ort-t1 --prior tables/local.latency --out tables/phone
    ofa-fit priors                                                      # the priors this package ships

``accuracy``: a CSV with ``arch`` (OFA JSON), ``accuracy`` (top-1, 0..1) and ``precision`` (fp32 or int8; fp32
when absent), as ``ofa-train dataset`` writes it. A seeded share of its rows is held out; the report gives the
held-out RMSE and rank correlations; the predictor saved is then refitted on every row, and states the precision.

``memory``: the same from ``arch`` and ``memory_mb`` (the peak memory each whole subnet added while it loaded
and ran, as ``ofa-profile --subnets`` records it); ``ofa-search --memory-model OUT --memory-mb MB`` limits by it.

``latency``: a CSV with ``arch`` and ``measured_ms``, as ``ofa-profile --subnets`` writes it. Fitting methods are
compared by cross-validation (share within ±10% and ±5%, Spearman), the best is refitted on every row and saved
as OUT.json and OUT.npz. With ``--prior`` (other devices' tables or latency models, or priors this package ships),
the ``priors`` and ``priors+ridge`` methods start from what those devices know, so a few measured subnets fit a
model; the saved model holds its priors and records their names, hashes and sources. ``predict`` writes
``arch,predicted_ms`` for a JSON list of archs (or ofa-search output) or a CSV with an ``arch`` column.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from predictors.latency_model import METHODS, PRIOR_METHODS
from supernet.cli_args import (
    at_least,
    command_parser,
    finite_float,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    width_multiplier,
)
from supernet.errors import OFAProfileError, UsageError, run_command
from supernet.files import json_loads, read_input

__all__ = ["build_parser", "main", "read_measured_subnets", "read_subnet_memory"]


def build_parser() -> argparse.ArgumentParser:
    parser, commands = command_parser("ofa-fit", __doc__)
    accuracy = commands.add_parser("accuracy", help="an accuracy predictor from (arch, accuracy) rows")
    accuracy.add_argument("data", type=Path, help="CSV with columns arch and accuracy")
    accuracy.add_argument("--out", type=Path, required=True, help="predictor stem: writes OUT.pt and OUT.json")
    accuracy.add_argument("--model", choices=("mlp", "ridge"), default="mlp",
                          help="OFA's MLP (400-400-400), or ridge regression on the same features (mlp)")
    accuracy.add_argument("--test-fraction", type=finite_float, default=0.2, help="rows held out (0.2)")
    accuracy.add_argument("--epochs", type=positive_int, default=200, help="MLP: passes over the rows (200)")
    accuracy.add_argument("--lr", type=positive_float, default=1e-3, help="MLP: Adam learning rate (1e-3)")
    accuracy.add_argument("--weight-decay", type=non_negative_float, default=1e-4, help="MLP: Adam weight decay (1e-4)")
    accuracy.add_argument("--alpha", type=non_negative_float, default=1.0, help="ridge: L2 penalty (1.0)")
    accuracy.add_argument("--seed", type=non_negative_int, default=0, help="seed of the split and the fit (0)")
    accuracy.add_argument("--json", action="store_true", help="print the report as JSON")
    latency = _model_command(commands, "latency", "measured_ms", METHODS)
    latency.add_argument("--table", type=Path, help="a latency table of the device: its sums become features")
    latency.add_argument("--prior", action="append", default=[], metavar="PRIOR",
                         help="another device's table (CSV), latency model (ofa-fit latency --out) or a prior "
                              "ofa-fit priors lists; repeat for several")
    commands.add_parser("priors", help="list the priors this package ships, with their provenance")
    _model_command(commands, "memory", "memory_mb", [m for m in METHODS if m != "calibrated-sum"
                                                     and m not in PRIOR_METHODS])
    predict = commands.add_parser("predict", help="latency (or memory) of archs from a fitted model")
    predict.add_argument("model", type=Path, help="the --out of ofa-fit latency or ofa-fit memory")
    predict.add_argument("archs", type=Path, help="JSON list of archs, ofa-search output, or a CSV with arch")
    predict.add_argument("--out", type=Path, help="CSV to write (default: stdout)")
    return parser


def _model_command(commands, quantity: str, column: str, methods: Sequence[str]) -> argparse.ArgumentParser:
    """``ofa-fit latency`` or ``ofa-fit memory``: a model of ``column`` over measured whole subnets."""
    command = commands.add_parser(quantity, help=f"a {quantity} model from (arch, {column}) rows")
    command.add_argument("data", type=Path, help=f"CSV with columns arch and {column} (ofa-profile --subnets)")
    command.add_argument("--out", type=Path, required=True, help="model stem: writes OUT.json and OUT.npz")
    command.add_argument("--method", "--family", choices=("auto", *methods), default="auto",
                         help="fitting method (auto: the best by cross-validation; --family is its former name)")
    command.add_argument("--width", type=width_multiplier, help="supernet width (default: the CSV's width_mult"
                         + (", or the table's)" if quantity == "latency" else ")"))
    command.add_argument("--cv", type=at_least(2), default=5, help="cross-validation folds, 2 or more (5)")
    command.add_argument("--seed", type=non_negative_int, default=0, help="seed of the folds and the fit (0)")
    command.add_argument("--json", action="store_true", help="print the report as JSON")
    return command


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ofa-fit``: 0 when done; every error is one line on stderr and a non-zero status."""
    return run_command("ofa-fit", _main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    commands = {"accuracy": _accuracy, "latency": _latency, "memory": _memory, "predict": _predict,
                "priors": _priors}
    return commands[args.command](args)


def _model(args: argparse.Namespace):
    from .train import MLPAccuracyRegressor, RidgeAccuracyRegressor

    if args.model == "ridge":
        return RidgeAccuracyRegressor(alpha=args.alpha)
    return MLPAccuracyRegressor(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                                random_state=args.seed)


def _accuracy(args: argparse.Namespace) -> int:
    from .accuracy import ArchEncoding
    from .train import as_predictor, fit_held_out, read_accuracy_csv

    try:
        batch, accuracy, precision = read_accuracy_csv(args.data)
    except FileNotFoundError:
        raise UsageError(f"{args.data}: no such file", "give the CSV the accuracy dataset builder wrote") from None
    encoding = ArchEncoding.for_resolutions((int(r) for r in batch.r), batch.layout.n_blocks)
    features = encoding.transform(batch)
    _, report = fit_held_out(features, accuracy, _model(args), args.test_fraction, args.seed, str(args.data))
    model = _model(args).fit(features, accuracy)
    meta = {"fitted_on": str(args.data), "rows": len(accuracy), "held_out": report, "model": args.model,
            "precision": precision}
    weights, sidecar = as_predictor(model, encoding, meta).save(args.out)
    report = {"model": args.model, "rows": len(accuracy), "precision": precision, **report,
              "predictor": [str(weights), str(sidecar)]}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.model} ({precision} accuracies): held-out RMSE {report['rmse']:.4f}, "
              f"Kendall tau {report['kendall_tau']:.3f}, Spearman rho {report['spearman_rho']:.3f} "
              f"on {report['n']} of {len(accuracy)} archs")
        print(f"saved {weights} and {sidecar} (refitted on all rows): ofa-search --predictor {args.out}")
    return 0


def _read_csv(path: Path, columns: Sequence[str], fix: str, first: str = ""):
    """A CSV as a DataFrame, refused with one clear error when it is missing (``first``: how to make it),
    unreadable, or lacks ``columns`` (``fix``: what it should be)."""
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(read_input(path)))  # a regular file within the size limit
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", first) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise OFAProfileError(f"{path}: not a readable CSV ({err})", fix) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise OFAProfileError(f"{path}: missing column(s) {missing}; it has {list(frame.columns)}", fix)
    if frame.empty:
        raise OFAProfileError(f"{path}: no rows under its header", first or fix)
    return frame


def read_measured_subnets(path: Path) -> tuple[list[str], np.ndarray, dict]:
    """The arch texts and measured latencies of an ``ofa-profile --subnets`` CSV, and the width and the anchor
    (the reference latency its values are stated at) where it states one."""
    frame = _read_csv(path, ("arch", "measured_ms"),
                      "give the CSV ofa-profile --subnets wrote (arch as OFA JSON, measured_ms in ms)",
                      "measure subnets first: ofa-profile --subnets random:100")
    width = _width_of(frame, path)
    anchors = frame["anchor_ms"].dropna().unique() if "anchor_ms" in frame.columns else []
    # Rows that name no reference workload are older: timed against the block (see profiler.reference).
    references = sorted(set(frame["reference"].dropna())) if "reference" in frame.columns else ["block"]
    if len(references) > 1:
        raise OFAProfileError(f"{path}: subnets timed against several reference workloads {references}",
                              "fit on subnets measured in one ofa-profile --subnets run")
    # Rows that name no precision are older: fp32. A model of one precision must not steer a search in another.
    precisions = sorted(set(frame["precision"].dropna())) if "precision" in frame.columns else ["fp32"]
    if len(precisions) > 1:
        raise OFAProfileError(f"{path}: subnets measured in several precisions {precisions}",
                              "fit one model per precision")
    meta = {"width_mult": width, "anchor_ms": float(anchors[0]) if len(anchors) == 1 else None,
            "reference": {"id": (references or ["block"])[0]}, "precision": (precisions or ["fp32"])[0]}
    return list(frame["arch"].astype(str)), frame["measured_ms"].to_numpy(dtype=float), meta


def read_subnet_memory(path: Path) -> tuple[list[str], np.ndarray, float | None, int]:
    """The arch texts and peak memory (MB) of an ``ofa-profile --subnets`` CSV, its width where it states one, and
    how many rows were left out because the agent could not tell their memory."""
    import pandas as pd

    frame = _read_csv(path, ("arch", "memory_mb"),
                      "give the CSV ofa-profile --subnets wrote (arch as OFA JSON, memory_mb in MB)",
                      "measure subnets first: ofa-profile --subnets random:100")
    width = _width_of(frame, path)
    memory = pd.to_numeric(frame["memory_mb"], errors="coerce")
    known = memory.notna()
    return list(frame.loc[known, "arch"].astype(str)), memory[known].to_numpy(float), width, int((~known).sum())


def _width_of(frame, path: Path) -> float | None:
    widths = sorted(set(frame["width_mult"].dropna())) if "width_mult" in frame.columns else []
    if len(widths) > 1:
        raise OFAProfileError(f"{path}: subnets of several widths {widths}", "fit one model per supernet width")
    return float(widths[0]) if widths else None


def _arch_batch(texts: Sequence[str], where: str):
    from .archs import batch_from_dicts

    items = []
    for i, text in enumerate(texts):
        try:
            items.append(json_loads(text))
        except json.JSONDecodeError as err:
            raise OFAProfileError(f"{where}: arch {i + 1} is not JSON ({err.msg})", "fix or drop that row") from None
    return batch_from_dicts(items, where)


def _latency(args: argparse.Namespace) -> int:
    from .latency import LatencyPredictor
    from .latency_model import LatencyModel
    from .latency_priors import load_priors

    texts, measured, stated = read_measured_subnets(args.data)
    table = LatencyPredictor(args.table, calibrated=False) if args.table else None
    if table is not None and table.precision != stated["precision"]:
        raise OFAProfileError(f"{args.table} was measured in {table.precision} and {args.data} in "
                              f"{stated['precision']}", "give a table and subnets of one precision")
    priors = load_priors(args.prior)
    width = args.width or (None if table else stated["width_mult"] or (priors[0].width_mult if priors else None))
    model = LatencyModel(args.method, table, width_mult=width, cv=args.cv, random_state=args.seed, priors=priors)
    model.fit(_arch_batch(texts, str(args.data)), measured)
    # The closed loop (ofa-profile --search --latency-model) measures at the same anchor as the data.
    meta = {"fitted_on": str(args.data), "table": str(args.table) if args.table else None,
            "anchor_ms": stated["anchor_ms"], "reference": stated["reference"], "precision": stated["precision"]}
    files = model.save(args.out, meta)
    source = f" with table {args.table}" if table else ""
    if priors:
        source = f" from {len(priors)} prior(s) ({', '.join(p.name for p in priors)})"
    return _report_fit(args, model, files, {"with_table": table is not None,
                                            "priors": [p.provenance() for p in priors]},
                       source, f"ofa-search --latency-model {args.out} --latency-ms MS")


def _priors(args: argparse.Namespace) -> int:
    from .latency_priors import describe_shipped

    print(describe_shipped())
    return 0


def _memory(args: argparse.Namespace) -> int:
    from .latency_model import LatencyModel

    texts, memory, width, left_out = read_subnet_memory(args.data)
    model = LatencyModel(args.method, None, width_mult=args.width or width, cv=args.cv, random_state=args.seed)
    model.fit(_arch_batch(texts, str(args.data)), memory)
    meta = {"fitted_on": str(args.data), "quantity": "memory_mb", "rows_without_memory": left_out,
            "memory": "peak resident memory each whole subnet added while it loaded and ran (ofa-profile --subnets)"}
    files = model.save(args.out, meta)
    return _report_fit(args, model, files, {"quantity": "memory_mb", "rows_without_memory": left_out},
                       f" ({left_out} row(s) without a memory figure left out)" if left_out else "",
                       f"ofa-search --memory-model {args.out} --memory-mb MB")


def _report_fit(args: argparse.Namespace, model, files: Sequence[Path], extra: dict, source: str,
                next_step: str) -> int:
    """The cross-validation of each method, as JSON or a table, and the command that uses the saved model."""
    n = len(model.train_ms_)
    report = {"kept": model.method_, "n": n, "folds": min(args.cv, n), **extra, "methods": model.cv_report_,
              "model": [str(f) for f in files]}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['folds']}-fold cross-validation on {n} measured subnets{source}:")
    print(f"  {'method':<16}{'within ±10%':>12}{'within ±5%':>12}{'Spearman':>10}{'RMS':>8}")
    for method, m in model.cv_report_.items():
        mark = "  <- kept" if method == model.method_ else ""
        print(f"  {method:<16}{m['within_10_pct']:>11.0f}%{m['within_5_pct']:>11.0f}%{m['spearman_rho']:>10.3f}"
              f"{m['rms_pct']:>7.1f}%{mark}")
    print(f"saved {files[0]} and {files[1]} (refitted on all rows): {next_step}")
    return 0


def _archs_of(path: Path) -> tuple[list[str], object]:
    """Arch texts and their batch from a JSON list, an ofa-search result, or a CSV with an ``arch`` column."""
    from supernet.subnets import read_subnet_document, subnet_entries

    from .archs import batch_from_dicts

    if path.suffix.lower() == ".csv":
        frame = _read_csv(path, ("arch",), "give a CSV with one OFA arch JSON per row in a column named arch")
        texts = list(frame["arch"].astype(str))
        return texts, _arch_batch(texts, str(path))
    batch = batch_from_dicts(subnet_entries(read_subnet_document(path), str(path)), str(path))
    columns = zip(batch.ks.tolist(), batch.e.tolist(), batch.d.tolist(), batch.r.tolist(), strict=True)
    return [json.dumps({"ks": ks, "e": e, "d": d, "r": [r]}) for ks, e, d, r in columns], batch


def _predict(args: argparse.Namespace) -> int:
    import csv
    import io

    from .latency_model import LatencyModel

    model = LatencyModel.load(args.model)
    texts, batch = _archs_of(args.archs)
    predicted = model.predict(batch)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["arch", "predicted_mb" if model.quantity == "memory_mb" else "predicted_ms"])
    writer.writerows(zip(texts, (f"{v:.6g}" for v in predicted), strict=True))
    if args.out:
        from supernet.files import atomic_write

        atomic_write(args.out, buffer.getvalue())
        print(f"{len(texts)} archs: {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(buffer.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
