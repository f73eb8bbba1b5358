"""``ofa-fit``: fit a predictor on measured archs, and save it where ``ofa-search`` reads it.

    ofa-fit accuracy runs/digits/accuracy.csv --out runs/digits/predictor
    ofa-search --predictor runs/digits/predictor --width 0.25 --resolutions 32 --macs 5M

``accuracy``: a CSV with ``arch`` (OFA JSON) and ``accuracy`` (top-1, 0..1), as ``predictors.dataset`` or
``ofa-train dataset`` writes it. A seeded share of its rows is held out; the report gives the held-out RMSE and
rank correlations; the predictor saved is then refitted on every row.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from supernet.cli_args import command_parser, finite_float, non_negative_int, positive_int
from supernet.errors import OFAProfileError, UsageError, run_command

__all__ = ["encoding_for", "main"]


def encoding_for(resolutions: Iterable[int]):
    """OFA's encoding where the resolutions fit its bins (112..239 by 16); else one bin per step of the data."""
    from .accuracy import ArchEncoding

    values = sorted(set(resolutions))
    default = ArchEncoding()
    top = default.resolution_start + default.resolution_step * default.resolution_bins
    if values and default.resolution_start <= values[0] and values[-1] < top:
        return default
    step = math.gcd(*(b - a for a, b in itertools.pairwise(values))) if len(values) > 1 else 16
    return ArchEncoding(values[0], step, (values[-1] - values[0]) // step + 1)


def _parser() -> argparse.ArgumentParser:
    parser, commands = command_parser("ofa-fit", __doc__)
    accuracy = commands.add_parser("accuracy", help="an accuracy predictor from (arch, accuracy) rows")
    accuracy.add_argument("data", type=Path, help="CSV with columns arch and accuracy")
    accuracy.add_argument("--out", type=Path, required=True, help="predictor stem: writes OUT.pt and OUT.json")
    accuracy.add_argument("--model", choices=("mlp", "ridge"), default="mlp",
                          help="OFA's MLP (400-400-400), or ridge regression on the same features (mlp)")
    accuracy.add_argument("--test-fraction", type=finite_float, default=0.2, help="rows held out (0.2)")
    accuracy.add_argument("--epochs", type=positive_int, default=200, help="MLP: passes over the rows (200)")
    accuracy.add_argument("--lr", type=finite_float, default=1e-3, help="MLP: Adam learning rate (1e-3)")
    accuracy.add_argument("--weight-decay", type=finite_float, default=1e-4, help="MLP: Adam weight decay (1e-4)")
    accuracy.add_argument("--alpha", type=finite_float, default=1.0, help="ridge: L2 penalty (1.0)")
    accuracy.add_argument("--seed", type=non_negative_int, default=0, help="seed of the split and the fit (0)")
    accuracy.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ofa-fit``: 0 when done; every error is one line on stderr and a non-zero status."""
    return run_command("ofa-fit", _main, argv)


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return _accuracy(args)


def _model(args: argparse.Namespace):
    from .train import MLPAccuracyRegressor, RidgeAccuracyRegressor

    if args.model == "ridge":
        return RidgeAccuracyRegressor(alpha=args.alpha)
    return MLPAccuracyRegressor(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                                random_state=args.seed)


def _accuracy(args: argparse.Namespace) -> int:
    from .train import as_predictor, fit_held_out, read_accuracy_csv

    try:
        batch, accuracy = read_accuracy_csv(args.data)
    except FileNotFoundError:
        raise UsageError(f"{args.data}: no such file", "give the CSV the accuracy dataset builder wrote") from None
    except ValueError as err:
        raise OFAProfileError(str(err), "fix that row or rebuild the dataset") from None
    encoding = encoding_for(int(r) for r in batch.r)
    features = encoding.transform(batch)
    try:
        _, report = fit_held_out(features, accuracy, _model(args), args.test_fraction, args.seed, str(args.data))
        model = _model(args).fit(features, accuracy)
    except ValueError as err:
        raise OFAProfileError(str(err), "measure more archs, or lower --test-fraction") from None
    meta = {"fitted_on": str(args.data), "rows": len(accuracy), "held_out": report, "model": args.model}
    weights, sidecar = as_predictor(model, encoding, meta).save(args.out)
    report = {"model": args.model, "rows": len(accuracy), **report, "predictor": [str(weights), str(sidecar)]}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.model}: held-out RMSE {report['rmse']:.4f}, Kendall tau {report['kendall_tau']:.3f}, "
              f"Spearman rho {report['spearman_rho']:.3f} on {report['n']} of {len(accuracy)} archs")
        print(f"saved {weights} and {sidecar} (refitted on all rows): ofa-search --predictor {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
