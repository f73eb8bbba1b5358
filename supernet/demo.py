"""``make demo``: what the project does today, end to end on the local CPU.

Builds the w1.0 supernet, samples archs and counts their MACs, extracts the smallest one as a plain network,
checks it against the elastic forward, exports it to ONNX and times it with ONNX Runtime.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from supernet import OFAMobileNetV3, count_macs, count_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supernet.demo", description=__doc__)
    parser.add_argument("--checkpoint", help="a released OFA w1.0 checkpoint; random weights when omitted")
    parser.add_argument("--archs", type=int, default=5, help="how many archs to sample (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    net = OFAMobileNetV3(width_mult=1.0).eval()
    if args.checkpoint:
        net.load_checkpoint(args.checkpoint)
    print(f"OFA MobileNetV3 w1.0: {net.space.size:.3e} subnets over {len(net.space.resolutions)} resolutions "
          f"({'checkpoint ' + args.checkpoint if args.checkpoint else 'random weights'})")

    archs = list(net.space.samples(args.archs, seed=args.seed))
    print(f"\n{'arch':>4}  {'r':>3}  {'depths':<15}  {'MMACs':>7}  {'Mparams':>7}")
    for i, arch in enumerate(archs):
        print(f"{i:>4}  {arch.r:>3}  {arch.d!s:<15}  {count_macs(arch) / 1e6:>7.1f}  {count_params(arch) / 1e6:>7.2f}")

    arch = min(archs, key=count_macs)
    x = torch.randn(1, 3, arch.r, arch.r)
    net.set_active(arch)
    subnet = net.extract(arch).eval()
    with torch.no_grad():
        difference = (net(x) - subnet(x)).abs().max().item()
    print(f"\nsmallest arch: {arch.to_json()}\nextracted subnet vs elastic forward: max |diff| = {difference:.1e}")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "subnet.onnx"
        torch.onnx.export(subnet, (x,), str(path), dynamo=False, opset_version=17)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        output = session.run(None, feed)[0]
        samples = []
        for _ in range(60):
            start = time.perf_counter()
            session.run(None, feed)
            samples.append((time.perf_counter() - start) * 1e3)
    with torch.no_grad():
        onnx_difference = float(np.abs(output - subnet(x).numpy()).max())
    print(f"ONNX Runtime (CPU, 1 thread): median {statistics.median(samples[10:]):.2f} ms over 50 runs; "
          f"max |diff| vs torch = {onnx_difference:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
