"""Training speed per phase of progressive shrinking: images per second, as ``ofa-train`` logs them.

Runs one epoch of every phase on the bundled digits (upsampled to ``--resolution``) and prints JSON: per phase,
the median images/s over its logged steps (the global batch over all ranks, teacher forward and every subnet
of a step included). On a machine with CUDA it trains there unless ``--cpu``.

    .venv/bin/python benchmarks/train_speed.py --width 1.0 --resolution 128 --batch-size 64
    .venv/bin/python benchmarks/train_speed.py --ranks 2 --cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=640, help="training images per epoch")
    parser.add_argument("--ranks", type=int, default=1, help="processes under torchrun (1: no torchrun)")
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "run"
        train = ["supernet.training.cli", "train", "--data", "digits", "--width", str(args.width),
                 "--resolutions", str(args.resolution), "--batch-size", str(args.batch_size),
                 "--limit-train", str(args.images), "--epochs", "1,1,1,1,1,1", "--warmup-epochs", "0,0,0,0,0,0",
                 "--bn-images", "100", "--log-every", "1", "--checkpoint-every", "1000000", "--quiet",
                 "--out", str(out), *(["--cpu"] if args.cpu else [])]
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                     str(args.ranks), "-m"] if args.ranks > 1 else [sys.executable, "-m"])
        started = time.perf_counter()
        subprocess.run([*launcher, *train], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - started
        log = pd.read_csv(out / "train_log.csv")
    device = "cpu" if args.cpu or not torch.cuda.is_available() else torch.cuda.get_device_name()
    per_phase = {phase: round(float(rows["images_per_s"].iloc[1:].median() if len(rows) > 1 else
                                    rows["images_per_s"].median()), 1)
                 for phase, rows in log.groupby("phase", sort=False)}
    print(json.dumps({"device": device, "ranks": args.ranks, "threads_per_rank": torch.get_num_threads(),
                      "width": args.width, "resolution": args.resolution, "global_batch": args.batch_size,
                      "images_per_s": per_phase, "wall_s": round(wall, 1)}, indent=2))


if __name__ == "__main__":
    main()
