"""A new device from a few measured subnets: latency models with priors, leave one device out. JSON + a plot.

Every runtime, thread count, batch size and precision this machine runs counts as a device (``DEVICES``). Each
measures the same seeded random w1.0 subnets at 160, 192 and 224 px (``ofa-profile --subnets random:N``, resumable:
a rerun measures only what is missing). A seeded half of those subnets is the test set of every device; the other
half is the pool that priors are fitted on and that a new device's N measured subnets are drawn from, so no
prediction is scored on a subnet any model saw.

For each device in turn (the new device) and N = 5, 10, 20, 50 measured subnets (several seeded draws for N
below the pool), on its test subnets:

- ``plain``: ``LatencyModel`` on the N subnets alone, method chosen by cross-validation;
- ``transfer``: the crude transfer: for each other device's model, fit ``log t = a · log p + b`` on the N
  subnets and keep the device that fits them best;
- ``few-shot``: ``LatencyModel(priors=...)`` with every other device's model as a prior, method chosen by
  cross-validation (``ofa-fit latency DATA --prior ...``);
- ``few-shot, picked``: the same, on the N subnets of the pool that ``informative_subnets`` picks from the priors
  (what ``ofa-profile --subnets fewshot:N`` measures) instead of N random ones.

Each other device's prior is ``ofa-fit latency`` on its whole pool.

    PYTHONPATH=. .venv/bin/python -m benchmarks.fewshot_latency --out /tmp/fs            # measures, then scores
    PYTHONPATH=. .venv/bin/python -m benchmarks.fewshot_latency --out /tmp/fs --skip-measure
    PYTHONPATH=. .venv/bin/python -m benchmarks.fewshot_latency --out /tmp/fs --skip-measure \
        --ship predictors/data/priors
    PYTHONPATH=. .venv/bin/python -m benchmarks.fewshot_latency --out /tmp/fs --from-shipped   # no measuring

``--ship`` also fits each device's model on all its subnets and writes it, with its provenance, into the library
of priors this package ships (``ofa-fit priors``). Each shipped model keeps the subnets it was fitted on with their
measured latencies, so ``--from-shipped`` scores those measurements (the README's) without measuring anything.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.commands import run
from predictors.archs import ArchBatch, batch_from_dicts
from predictors.latency_model import LatencyModel, Prior, latency_metrics
from predictors.latency_priors import informative_subnets
from profiler.plots import pyplot, save_figure

DEVICES = {
    "ort-t1": ["--runtime", "onnxruntime", "--threads", "1"],
    "ort-t2": ["--runtime", "onnxruntime", "--threads", "2"],
    "ort-b8": ["--runtime", "onnxruntime", "--threads", "1", "--batch", "8"],
    "ort-int8": ["--runtime", "onnxruntime", "--threads", "1", "--precision", "int8"],
    "tflite": ["--runtime", "tflite", "--threads", "1"],
    "torch": ["--runtime", "torch", "--threads", "1"],
}
RUNTIMES = {"ort": "ONNX Runtime 1.32 (CPU)", "tflite": "LiteRT 2.3 (XNNPACK)", "torch": "torch 2.13 (TorchScript)"}
MACHINE = "2-core AMD EPYC VM (AVX-512 VNNI)"
NOTE10 = {"name": "note10-tflite-w1.2", "kind": "table", "file": "note10_w1.2_tflite.csv", "space": "mobilenetv3",
          "width_mult": 1.2, "resolutions": list(range(160, 225, 16)),
          "device": "Samsung Galaxy Note10, TF-Lite, batch 1 (the latency table of OFA's release)",
          "source": "the Once-for-All release (Han Cai, MIT licence): note10/{160,176,192,208,224}_lookup_table.yaml, "
                    "converted to this project's CSV; the same file as tables/note10_w1.2_tflite.csv"}
METHODS = ("plain", "transfer", "few-shot", "few-shot, picked")
SCORES = ("within_10_pct", "within_5_pct", "spearman_rho", "rms_pct")  # of latency_metrics, per method


def measure(out: Path, n: int, seed: int, devices: list[str]) -> dict[str, float]:
    """``ofa-profile --subnets random:n`` on each device; seconds each took."""
    seconds = {}
    for name in devices:
        started = time.perf_counter()
        run(["--device", "local", "--width", "1.0", "--resolutions", "160,192,224", "--subnets", f"random:{n}",
             "--seed", str(seed), "--cache", str(out / "cache"), "--out", str(out / "data" / name), "--quiet",
             *DEVICES[name]])
        seconds[name] = round(time.perf_counter() - started, 1)
    return seconds


def from_shipped(data: Path, devices: list[str], library: Path) -> None:
    """Each device's measured subnets as ``--subnets`` wrote them, from the shipped prior fitted on them."""
    for name in devices:
        model = LatencyModel.load(library / f"local-{name}")
        folder = data / name
        folder.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame({"arch": [arch.to_json() for arch in model.train_batch_.to_archs()],
                              "measured_ms": model.train_ms_})
        frame.to_csv(folder / f"shipped_random_{len(frame)}.csv", index=False)


def read_devices(data: Path, devices: list[str]) -> tuple[ArchBatch, list[str], dict[str, np.ndarray]]:
    """The subnets every device measured (in one order) and each device's latencies of them."""
    frames = {name: next((data / name).glob("*_random_*.csv")) for name in devices}
    frames = {name: pd.read_csv(path).drop_duplicates("arch").set_index("arch") for name, path in frames.items()}
    archs = sorted(set.intersection(*(set(f.index) for f in frames.values())))
    batch = batch_from_dicts([json.loads(a) for a in archs], "measured")
    return batch, archs, {name: f.loc[archs, "measured_ms"].to_numpy(float) for name, f in frames.items()}


def transfer(priors: list[Prior], batch: ArchBatch, ms: np.ndarray, test: ArchBatch) -> np.ndarray:
    """The crude transfer: the prior whose line in log space fits the measured subnets best, and that line."""
    best = None
    for prior in priors:
        p = np.log(prior.predict(batch))
        a, b = np.polyfit(p, np.log(ms), 1)
        rms = float(np.sqrt(np.mean((a * p + b - np.log(ms)) ** 2)))
        if best is None or rms < best[0]:
            best = (rms, prior, a, b)
    _, prior, a, b = best
    return np.exp(a * np.log(prior.predict(test)) + b)


def _scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    m = latency_metrics(predicted, measured)
    return {k: m[k] for k in SCORES}


def _draw(rng: np.random.Generator, pool: np.ndarray, n: int, r: np.ndarray) -> np.ndarray:
    """N random subnets of the pool with every resolution among them, as random:N at a few resolutions gives."""
    while True:
        train = rng.choice(pool, size=min(n, len(pool)), replace=False)
        if set(r[train].tolist()) == set(r[pool].tolist()):
            return train


def _curve(target: str, ms: np.ndarray, others: list[Prior], batch: ArchBatch, test: np.ndarray, pool: np.ndarray,
           sizes: list[int], draws: int, seed: int) -> list[dict]:
    """The learning curve of each method on one new device."""
    rng = np.random.default_rng([seed, sum(map(ord, target))])
    rows = []
    for n in sizes:
        picked = pool[informative_subnets(others, batch[pool], min(n, len(pool)))]
        chosen = LatencyModel(width_mult=1.0, random_state=seed, priors=others).fit(batch[picked], ms[picked])
        chosen_scores = _scores(chosen.predict(batch[test]), ms[test])
        for draw in range(1 if n >= len(pool) else draws):
            train = _draw(rng, pool, n, batch.r)
            plain = LatencyModel(width_mult=1.0, random_state=draw).fit(batch[train], ms[train])
            few = LatencyModel(width_mult=1.0, random_state=draw, priors=others).fit(batch[train], ms[train])
            predicted = {"plain": plain.predict(batch[test]),
                         "transfer": transfer(others, batch[train], ms[train], batch[test]),
                         "few-shot": few.predict(batch[test])}
            rows.append({"n": n, "few-shot method": few.method_, "few-shot, picked": chosen_scores,
                         **{m: _scores(p, ms[test]) for m, p in predicted.items()}})
    curve = []
    for n in sizes:
        at = [r for r in rows if r["n"] == n]
        curve.append({"n": n, "draws": len(at), **{m: {k: float(np.mean([r[m][k] for r in at])) for k in at[0][m]}
                                                   for m in METHODS},
                      "few-shot methods": sorted({r["few-shot method"] for r in at})})
    print(json.dumps({"device": target, "curve": curve}), flush=True)
    return curve


def score(batch: ArchBatch, latencies: dict[str, np.ndarray], sizes: list[int], draws: int, seed: int,
          n_test: int, jobs: int) -> dict:
    """Leave each device out in turn; the others' models, fitted on the pool, are its priors."""
    from concurrent.futures import ProcessPoolExecutor

    order = np.random.default_rng(seed).permutation(len(batch))
    test, pool = order[:n_test], order[n_test:]
    models = {name: LatencyModel(width_mult=1.0, random_state=seed).fit(batch[pool], ms[pool])
              for name, ms in latencies.items()}
    priors = {name: Prior(name, name, "benchmark", model, model.family, model.width) for name, model in models.items()}
    with ProcessPoolExecutor(jobs) as workers:
        futures = {target: workers.submit(_curve, target, ms, [p for n, p in priors.items() if n != target], batch,
                                          test, pool, sizes, draws, seed) for target, ms in latencies.items()}
        devices = {target: future.result() for target, future in futures.items()}
    mean = [{"n": n, **{m: {k: float(np.mean([c[i][m][k] for c in devices.values()])) for k in SCORES}
                        for m in METHODS}} for i, n in enumerate(sizes)]
    return {"n_test": len(test), "n_pool": len(pool), "prior_methods": {n: m.method_ for n, m in models.items()},
            "devices": devices, "mean": mean}


def plot(report: dict, png: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    sizes = [row["n"] for row in report["mean"]]
    for method in METHODS:
        for ax, metric in zip(axes, ("within_10_pct", "spearman_rho"), strict=True):
            ax.plot(sizes, [row[method][metric] for row in report["mean"]], marker="o", label=method)
    for ax, label in zip(axes, ("test subnets within ±10% (%)", "Spearman"), strict=True):
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("subnets measured on the new device")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 102)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"a new device from a few subnets: mean over {len(report['devices'])} local devices, each left "
                 f"out in turn ({report['n_test']} test subnets)")
    return save_figure(fig, png)


def _flag(flags: list[str], name: str, default: str) -> str:
    return flags[flags.index(name) + 1] if name in flags else default


def ship(batch: ArchBatch, latencies: dict[str, np.ndarray], library: Path) -> list[dict]:
    """Each device's model on all its subnets, as a shipped prior, and the library's index."""
    import shutil

    note10_table = Path(__file__).resolve().parents[1] / "tables" / NOTE10["file"]
    library.mkdir(parents=True, exist_ok=True)
    for suffix in (".csv", ".json"):
        shutil.copyfile(note10_table.with_suffix(suffix), library / Path(NOTE10["file"]).with_suffix(suffix))
    entries = [NOTE10]
    for name, ms in latencies.items():
        flags = DEVICES[name]
        model = LatencyModel(width_mult=1.0).fit(batch, ms)
        command = (f"ofa-profile --device local --width 1.0 --resolutions 160,192,224 --subnets random:{len(ms)} "
                   f"--seed 1 {' '.join(flags)}")
        stem = f"local-{name}"
        model.save(library / stem, {"fitted_on": f"{len(ms)} subnets: {command}"})
        threads, batch_size = _flag(flags, "--threads", "1"), _flag(flags, "--batch", "1")
        precision = "int8 (QDQ, per-channel)" if "int8" in flags else "fp32"
        entries.append({"name": stem, "kind": "model", "file": f"{stem}.json", "space": "mobilenetv3",
                        "width_mult": 1.0, "resolutions": list(model.resolutions_),
                        "device": f"{RUNTIMES[name.split('-')[0]]}, {threads} thread(s), batch {batch_size}, "
                                  f"{precision}, on a {MACHINE}: {model.describe()}",
                        "source": f"measured by this project on 2026-12-06 ({command}), fitted with ofa-fit "
                                  f"latency; yours to use and redistribute under this project's MIT licence"})
    (library / "index.json").write_text(json.dumps({"priors": entries}, indent=2) + "\n")
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/fewshot"))
    parser.add_argument("--devices", default=",".join(DEVICES))
    parser.add_argument("--subnets", type=int, default=100, help="subnets each device measures (100)")
    parser.add_argument("--test", type=int, default=50, help="of them, held out on every device (50)")
    parser.add_argument("--sizes", default="5,10,20,50")
    parser.add_argument("--draws", type=int, default=4, help="seeded draws of N subnets, below the pool (4)")
    parser.add_argument("--jobs", type=int, default=2, help="devices scored at once (2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-measure", action="store_true", help="score what --out already holds")
    parser.add_argument("--ship", type=Path, help="write each device's model, fitted on all its subnets, here")
    parser.add_argument("--from-shipped", action="store_true",
                        help="score the measurements the shipped priors were fitted on, measuring nothing")
    args = parser.parse_args()
    devices = args.devices.split(",")
    data = args.out / ("shipped" if args.from_shipped else "data")
    if args.from_shipped:
        from_shipped(data, devices, Path(__file__).resolve().parents[1] / "predictors" / "data" / "priors")
    seconds = None if args.skip_measure or args.from_shipped else measure(args.out, args.subnets, args.seed, devices)
    batch, _, latencies = read_devices(data, devices)
    if args.ship:
        print(json.dumps(ship(batch, latencies, args.ship), indent=2))
        return
    report = score(batch, latencies, [int(s) for s in args.sizes.split(",")], args.draws, args.seed, args.test,
                   args.jobs)
    report |= {"measured": len(batch), "measure_seconds": seconds}
    (args.out / "fewshot.json").write_text(json.dumps(report, indent=2) + "\n")
    report["plot"] = str(plot(report, args.out / "fewshot.png"))
    print(json.dumps({"mean": report["mean"], "plot": report["plot"]}, indent=2))


if __name__ == "__main__":
    main()
