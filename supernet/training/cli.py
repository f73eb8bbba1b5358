"""``ofa-train``: train an OFA supernet on your own images by progressive shrinking, and evaluate its subnets.

    ofa-train train --data digits --out runs/digits --width 0.25 --resolutions 32,40,48 --epochs 4,2,1,1,1,1
    torchrun --nproc-per-node 2 -m supernet.training.cli train --data /data/imagenet --out runs/in1k
    ofa-train eval --trained runs/digits --subnets smallest,middle,largest

Run the same command again after a crash or a kill: it continues from its last checkpoint. Under torchrun, each
rank trains its shard of every batch; logs and checkpoints come from rank 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from supernet.arch import ArchSpace
from supernet.cli_args import (
    command_parser,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    resolution_list,
    width_multiplier,
)
from supernet.errors import UsageError, run_command
from supernet.plan import family_named
from supernet.quantize import PRECISIONS

__all__ = ["build_parser", "main"]


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers of 0 or more, e.g. 4,2,1,1,1,1")
    return values


def _learning_rates(text: str) -> tuple[float, ...]:
    try:
        values = tuple(positive_float(v) for v in text.split(",") if v.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers above 0") from None
    if not values:
        raise argparse.ArgumentTypeError("give one number per phase, e.g. 0.025,0.03,0.0025,0.0075,0.0025,0.0075")
    return values


def build_parser() -> argparse.ArgumentParser:
    from .schedule import PHASE_NAMES

    parser, commands = command_parser("ofa-train", __doc__)

    train = commands.add_parser("train", help="run (or continue) progressive shrinking")
    _data_args(train)
    train.add_argument("--out", type=Path, required=True, help="folder for checkpoints, logs and the plot")
    train.add_argument("--space", dest="family", choices=("mobilenetv3", "proxyless"), default="mobilenetv3",
                       help="supernet family: mobilenetv3 (default) or proxyless (OFA's GPU/CPU space)")
    train.add_argument("--batch-size", type=positive_int, default=256, help="global batch, all ranks (256)")
    train.add_argument("--accumulate", type=positive_int, default=1,
                       help="shards each rank runs before a step: 1 rank with 2 equals 2 ranks with 1 (1)")
    train.add_argument("--epochs", type=_ints, metavar="N,...",
                       help=f"epochs after warm-up per phase ({','.join(PHASE_NAMES)}); default the paper's")
    train.add_argument("--warmup-epochs", type=_ints, metavar="N,...", help="warm-up epochs per phase")
    train.add_argument("--lr", type=_learning_rates, metavar="LR,...", help="learning rate per phase, per 64 images")
    train.add_argument("--first-phase", choices=PHASE_NAMES, default="full", help="phase to start with (full)")
    train.add_argument("--init", type=Path, help="start from these weights (e.g. a trained full network)")
    train.add_argument("--label-smoothing", type=fraction, default=0.1, help="(0.1)")
    train.add_argument("--kd-ratio", type=non_negative_float, default=1.0, help="weight of the distillation loss (1.0)")
    train.add_argument("--weight-decay", type=non_negative_float, default=3e-5,
                       help="on conv and linear weights (3e-5)")
    train.add_argument("--momentum", type=fraction, default=0.9, help="Nesterov momentum (0.9)")
    train.add_argument("--dropout", type=fraction, default=0.1, help="before the classifier (0.1)")
    train.add_argument("--seed", type=non_negative_int, default=0, help="seed of every draw (0)")
    train.add_argument("--checkpoint-every", type=positive_int, default=50, help="steps between checkpoints (50)")
    train.add_argument("--log-every", type=positive_int, default=10, help="steps per line of train_log.csv (10)")
    train.add_argument("--workers", type=non_negative_int, default=0, help="data loader processes per rank (0)")
    train.add_argument("--deterministic", action="store_true",
                       help="deterministic kernels only (a resumed run then ends with the same weights)")
    train.add_argument("--limit-train", type=positive_int, metavar="N",
                       help="train on the first N training images only (quick runs, tests)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    dataset = commands.add_parser("dataset", help="(arch, top-1) rows that train an accuracy predictor")
    dataset.add_argument("--trained", type=Path, required=True, help="a training run's --out folder")
    dataset.add_argument("--n-archs", type=positive_int, default=2000, help="random archs to measure (2000)")
    dataset.add_argument("--seed", type=non_negative_int, default=0, help="seed of the arch sample (0)")
    dataset.add_argument("--out", type=Path, required=True,
                         help="CSV to write or extend (a rerun measures only the archs it lacks)")
    dataset.add_argument("--cpu", action="store_true", help="measure on the CPU even where CUDA is available")
    dataset.add_argument("--precision", choices=PRECISIONS, default="fp32",
                         help="int8: measure each subnet quantized as ofa-profile --precision int8 does, its scales "
                         "calibrated on the BN recalibration's training images, run by ONNX Runtime (fp32)")
    dataset.add_argument("--quiet", action="store_true", help="no line per arch")

    evaluate = commands.add_parser("eval", help="top-1 of subnets, BN recalibrated first")
    evaluate.add_argument("--trained", type=Path, required=True, help="a training run's --out folder")
    evaluate.add_argument("--subnets", default="smallest,middle,largest",
                          help="any of smallest, middle, largest (default all three)")
    evaluate.add_argument("--archs", type=Path,
                          help="archs to evaluate instead of --subnets: a JSON arch, a list, or ofa-search's output")
    evaluate.add_argument("--resolution", type=positive_int, help="for --subnets (default the largest trained)")
    evaluate.add_argument("--out", type=Path, help="write the results as CSV here (default: stdout)")
    evaluate.add_argument("--cpu", action="store_true", help="evaluate on the CPU even where CUDA is available")
    evaluate.add_argument("--precision", choices=PRECISIONS, default="fp32",
                          help="int8: also each subnet quantized as ofa-profile --precision int8 does, its scales "
                          "calibrated on the BN recalibration's training images, run by ONNX Runtime (top1_int8)")
    return parser


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="digits",
                        help="an ImageFolder root (with train/ and val/, or one tree) or 'digits' (bundled)")
    parser.add_argument("--width", type=width_multiplier, default=1.0, help="width multiplier (1.0)")
    parser.add_argument("--resolutions", type=resolution_list,
                        help="input resolutions (default OFA's, 128..224 step 4)")
    parser.add_argument("--bn-images", type=positive_int, default=2000,
                        help="training images for BN recalibration before any evaluation (2000)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where CUDA is available")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ofa-train``: 0 when done; every error is one line on stderr and a non-zero status."""
    return run_command("ofa-train", _main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return {"train": _train, "dataset": _dataset, "eval": _evaluate}[args.command](args)


def _train(args: argparse.Namespace) -> int:
    import torch

    from .data import load_source
    from .distributed import start
    from .trainer import TrainSettings, train

    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    resolutions = args.resolutions or ArchSpace.for_width(args.width, family_named(args.family).layout).resolutions
    try:
        settings = TrainSettings(
            width_mult=args.width, resolutions=resolutions, family=args.family, batch_size=args.batch_size,
            accumulate=args.accumulate,
            epochs=args.epochs, warmup_epochs=args.warmup_epochs, base_lr=args.lr, start=args.first_phase,
            init=None if args.init is None else str(args.init), label_smoothing=args.label_smoothing,
            kd_ratio=args.kd_ratio, weight_decay=args.weight_decay, momentum=args.momentum, dropout=args.dropout,
            bn_images=args.bn_images, seed=args.seed, data=args.data,
            limit_train=args.limit_train)
        settings.phases()
    except ValueError as err:
        raise UsageError(str(err), "see ofa-train train --help") from None
    context = start(cpu=args.cpu)
    try:
        last = train(settings, args.out, context, load_source(args.data, "train"), load_source(args.data, "val"),
                     checkpoint_every=args.checkpoint_every, log_every=args.log_every, workers=args.workers,
                     progress=not args.quiet)
    finally:
        context.close()
    if context.is_main:
        print(f"ofa-train: trained supernet in {last}; subnets' accuracy: ofa-train eval --trained {args.out}",
              file=sys.stderr)
    return 0


def _load_run(run: Path):
    """The trained supernet of a run folder, with its settings and its data."""
    import torch

    from .data import load_source
    from .trainer import CHECKPOINT, TrainSettings

    path = run / CHECKPOINT
    if not path.exists():
        raise UsageError(f"{run} holds no {CHECKPOINT}", "give the --out folder of an ofa-train train run")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    settings = TrainSettings.from_dict(saved["settings"])
    train_source, val_source = load_source(settings.data, "train"), load_source(settings.data, "val")
    net = settings.supernet(train_source.n_classes)
    net.load_state_dict(saved["model"])
    return net.eval(), settings, train_source, val_source


def _dataset(args: argparse.Namespace) -> int:
    from .data import evaluation_batches
    from .dataset import build_accuracy_csv, merge_shards
    from .distributed import start
    from .trainer import bn_batches

    net, settings, train_source, val_source = _load_run(args.trained)
    context = start(cpu=args.cpu)
    try:
        build_accuracy_csv(net, args.out, args.n_archs, device=context.device,
                           calibration=lambda r: bn_batches(train_source, r, settings.bn_images),
                           evaluation=lambda r: evaluation_batches(val_source, r), n_bn_images=settings.bn_images,
                           seed=args.seed, progress=not args.quiet, rank=context.rank, world=context.world,
                           precision=args.precision)
        context.barrier()
        if context.is_main:
            merge_shards(args.out)
            print(f"ofa-train: {args.out} holds the measured archs; fit a predictor: ofa-fit accuracy {args.out} "
                  f"--out PREDICTOR", file=sys.stderr)
    finally:
        context.close()
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch

    from .trainer import TrainError, evaluate

    net, settings, train_source, val_source = _load_run(args.trained)
    if args.archs is not None:
        from supernet.subnets import read_subnets

        archs = read_subnets(args.archs)
        for arch in archs:
            try:
                net.space.validate(arch)
            except ValueError as err:
                raise TrainError(f"{args.archs}: {err}", "give archs of this supernet's space") from None
        names = [f"arch {i}" for i in range(len(archs))]
    else:
        r = args.resolution or max(settings.resolutions)
        names = [name.strip() for name in args.subnets.split(",") if name.strip()]
        choices = {"smallest": (3, 3, 2), "middle": (5, 4, 3), "largest": (7, 6, 4)}
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise UsageError(f"unknown subnets {unknown}", "use any of smallest, middle, largest")
        try:
            archs = [net.space.uniform(*choices[name], r) for name in names]
        except ValueError as err:
            raise UsageError(str(err), f"use one of the trained resolutions {list(settings.resolutions)}") from None
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    accuracies = evaluate(net, archs, train_source, val_source, settings.bn_images, device)
    table = pd.DataFrame({"subnet": names, "arch": [a.to_json() for a in archs], "top1": accuracies})
    if args.precision == "int8":
        table["top1_int8"] = evaluate(net, archs, train_source, val_source, settings.bn_images, device, "int8")
    text = table.to_csv(index=False)
    if args.out is None:
        sys.stdout.write(text)
    else:
        from supernet.files import atomic_write

        atomic_write(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
