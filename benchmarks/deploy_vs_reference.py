"""Which export to deploy: this project's ``export_subnet`` against the reference ``ofa`` package's subnet exported
with ``torch.onnx``, same archs. Prints JSON.

For each seeded arch (w1.0, r 160/192/224): the reference supernet (PyPI ``ofa``, the test oracle) builds the
subnet with ``set_active_subnet`` + ``get_active_subnet``, and ``torch.onnx.export`` writes it (TorchScript
exporter, opset 17, as a user following the reference would); ``export_subnet`` writes ours. Both are counted in
ONNX nodes and timed by :mod:`benchmarks.plain_loop` (ONNX Runtime CPU, 1 thread) in the same interleaved rounds.
Fidelity (``benchmarks/table_fidelity.py``) is judged on our exports: they are what this tool measures and what
its users deploy.

    .venv/bin/python -m benchmarks.deploy_vs_reference --out /tmp/deploy
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import onnx
import torch

from benchmarks.plain_loop import PlainLoop, Timed
from supernet.arch import Arch, ArchSpace
from supernet.model_cache import export_subnet
from tests.ofa_oracle import reference_ofa_mbv3


def _reference_onnx(arch: Arch, path: Path) -> Path:
    net = reference_ofa_mbv3()(n_classes=1000, width_mult=1.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                               depth_list=[2, 3, 4])
    net.set_active_subnet(ks=list(arch.ks), e=list(arch.e), d=list(arch.d))
    subnet = net.get_active_subnet(preserve_weight=True).eval()
    with torch.no_grad():
        torch.onnx.export(subnet, (torch.zeros(1, 3, arch.r, arch.r),), str(path), opset_version=17, dynamo=False)
    return path


def _nodes(path: Path) -> int:
    return len(onnx.load(str(path)).graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/deploy"))
    parser.add_argument("--subnets", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    space = ArchSpace.for_width(1.0)
    rng = random.Random(11)
    archs = [space.sample(rng).with_resolution(r) for r in (160, 192, 224) for _ in range(args.subnets // 3)]
    models, nodes = {}, []
    for i, arch in enumerate(archs):
        ours = export_subnet(arch, 1.0, 1000, "onnx", args.out / "cache")
        reference = _reference_onnx(arch, args.out / f"reference-{i}.onnx")
        models[f"ours-{i}"] = Timed(ours, (1, 3, arch.r, arch.r))
        models[f"reference-{i}"] = Timed(reference, (1, 3, arch.r, arch.r))
        nodes.append((_nodes(ours), _nodes(reference)))
    harness = PlainLoop(rounds=args.rounds)
    truth = harness.measure(models, models["ours-0"])
    speed = [truth[f"reference-{i}"].normalized / truth[f"ours-{i}"].normalized for i in range(len(archs))]
    print(json.dumps({
        "subnets": [{"arch": arch.to_json(), "nodes_ours": ours_n, "nodes_reference": ref_n,
                     "ours_ms": round(truth[f"ours-{i}"].absolute_ms, 3),
                     "reference_ms": round(truth[f"reference-{i}"].absolute_ms, 3),
                     "reference_over_ours": round(s, 3)}
                    for i, (arch, (ours_n, ref_n), s) in enumerate(zip(archs, nodes, speed, strict=True))],
        "nodes_ours": [min(n for n, _ in nodes), max(n for n, _ in nodes)],
        "nodes_reference": [min(n for _, n in nodes), max(n for _, n in nodes)],
        "reference_over_ours_time": {"median": round(float(np.median(speed)), 3),
                                     "min": round(min(speed), 3), "max": round(max(speed), 3)},
        "ground_truth": harness.describe(),
    }, indent=1))


if __name__ == "__main__":
    main()
