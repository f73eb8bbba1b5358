"""Progressive shrinking against the same budget trained without KD, and without the progression.

On the bundled digits (w0.25, r 32, the settings of tests/test_training.py), from one trained full network:

- ``progressive``: kernel, depth-1, depth-2, expand-1, expand-2 (6, 2, 3, 2, 3 epochs; 1, 2, 2, 4, 4 subnets);
- ``no_kd``: the same with ``--kd-ratio 0``;
- ``no_progression``: the whole space (expand-2's choices) from the start, 4 subnets per step, for 9 epochs: the
  same number of subnet passes (6x1 + 2x2 + 3x2 + 2x4 + 3x4 = 36 epoch-subnets).

Prints JSON: held-out top-1 (BN recalibrated) of the smallest, middle and largest subnets and the mean over 30
random subnets, per variant. About 10 min on this 2-core machine; run it alone.

    .venv/bin/python benchmarks/train_ablation.py --out /tmp/ablation
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from supernet.arch import ArchSpace

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--data", "digits", "--width", "0.25", "--resolutions", "32", "--batch-size", "64", "--dropout", "0",
          "--bn-images", "500", "--quiet", "--warmup-epochs", "1,0,0,0,0,0"]
LR = ["--lr", "0.3,0.1,0.05,0.05,0.05,0.05"]
VARIANTS = {
    "progressive": ["--first-phase", "kernel", "--epochs", "10,6,2,3,2,3", *LR],
    "no_kd": ["--first-phase", "kernel", "--epochs", "10,6,2,3,2,3", "--kd-ratio", "0", *LR],
    "no_progression": ["--first-phase", "expand-2", "--epochs", "10,6,2,3,2,9", *LR],
}


def _cli(*argv: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "supernet.training.cli", *argv], check=True, env=env,
                          capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    full = args.out / "full"
    _cli("train", *COMMON, *LR, "--epochs", "10,0,0,0,0,0", "--out", str(full))
    archs = args.out / "random.json"
    archs.write_text(json.dumps([a.to_dict() for a in ArchSpace((32,)).samples(30, seed=7)]))
    report = {}
    for name, flags in VARIANTS.items():
        run = args.out / name
        _cli("train", *COMMON, *flags, "--init", str(full / "supernet-full.pt"), "--out", str(run))
        named = pd.read_csv(io.StringIO(_cli("eval", "--trained", str(run))))
        random = pd.read_csv(io.StringIO(_cli("eval", "--trained", str(run), "--archs", str(archs))))
        report[name] = {**{row.subnet: round(100 * row.top1, 2) for row in named.itertuples()},
                        "random_30_mean": round(100 * random["top1"].mean(), 2),
                        "random_30_min": round(100 * random["top1"].min(), 2)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
