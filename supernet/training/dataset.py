"""Build the (arch, accuracy) CSV that trains an accuracy predictor for a supernet.

For each sampled arch: extract the subnet, recalibrate its BN statistics on training images
(docs/ofa_reference.md §5), measure top-1 on the evaluation data, in float or as deployed in int8. Rows are
appended and flushed as they come, and a rerun with the same file skips archs already measured, so a long build
can stop and resume.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from supernet.arch import Arch, ArchSpace
from supernet.bn import recalibrate_bn
from supernet.errors import UsageError
from supernet.files import atomic_write
from supernet.ofa_supernet import OFASupernet
from supernet.training.data import on_device

__all__ = ["COLUMNS", "build_accuracy_csv", "int8_top1", "merge_shards", "shard_path", "subnet_top1", "top1"]

Loader = Iterable | Callable[[int], Iterable]


def _at_resolution(loader: Loader, resolution: int) -> Iterable:
    """Batches at ``resolution``: a callable loader is asked for it, others are resized (bilinear)."""
    if callable(loader) and not hasattr(loader, "__iter__"):
        yield from loader(resolution)
        return
    for images, *rest in loader:
        if images.shape[-1] != resolution or images.shape[-2] != resolution:
            images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False,
                                   antialias=True)
        yield (images, *rest)


@torch.no_grad()
def top1(model: torch.nn.Module, batches: Iterable) -> float:
    """Share of images (0..1) whose top class is the label."""
    model.eval()
    correct = seen = 0
    device = next(model.parameters()).device
    for images, labels, *_ in batches:
        correct += int((model(on_device(images, device)).argmax(dim=1).cpu() == labels.cpu()).sum())
        seen += len(labels)
    if not seen:
        raise ValueError("the evaluation loader gave no images")
    return correct / seen


def subnet_top1(supernet: OFASupernet, arch: Arch, calibration: Loader, evaluation: Loader,
                n_bn_images: int = 2000, device: torch.device | str = "cpu", precision: str = "fp32") -> float:
    """Top-1 (0..1) of ``arch``'s subnet, extracted and BN-recalibrated first (docs/ofa_reference.md §5), on
    ``device``; with ``precision`` int8, of that subnet quantized (:func:`int8_top1`)."""
    subnet = supernet.extract(arch).to(device)
    calibration_batches = _at_resolution(calibration, arch.r)
    recalibrate_bn(subnet, ((on_device(images, device), *rest) for images, *rest in calibration_batches), n_bn_images)
    if precision == "int8":
        return int8_top1(subnet, arch.r, _at_resolution(calibration, arch.r), _at_resolution(evaluation, arch.r),
                         n_bn_images)
    return top1(subnet, _at_resolution(evaluation, arch.r))


def _single_images(batches: Iterable, limit: int | None = None) -> Iterable:
    """(image as a 1-image NCHW array, label) pairs, at most ``limit`` of them."""
    seen = 0
    for images, labels, *_ in batches:
        for image, label in zip(images, labels, strict=True):
            if limit is not None and seen >= limit:
                return
            seen += 1
            yield image.unsqueeze(0).cpu().numpy(), int(label)


def int8_top1(subnet: torch.nn.Module, resolution: int, calibration: Iterable, evaluation: Iterable,
              n_calibration_images: int) -> float:
    """Top-1 (0..1) of ``subnet`` (BN recalibrated) as a user deploys it in int8: exported to ONNX, quantized by
    :mod:`supernet.quantize`'s recipe with its scales calibrated on ``n_calibration_images`` training images
    (the BN recalibration's), and run by ONNX Runtime on the evaluation images."""
    import onnxruntime as ort

    from supernet.export import onnx_bytes
    from supernet.quantize import onnx_int8

    shape = (1, 3, resolution, resolution)
    images = (image for image, _ in _single_images(calibration, n_calibration_images))
    session = ort.InferenceSession(onnx_int8(onnx_bytes(subnet.cpu(), shape), shape, images),
                                   providers=["CPUExecutionProvider"])
    correct = seen = 0
    for image, label in _single_images(evaluation):
        correct += int(session.run(None, {"input": image})[0].argmax() == label)
        seen += 1
    if not seen:
        raise ValueError("the evaluation loader gave no images")
    return correct / seen


# One precision per file: an int8 dataset teaches a predictor of int8 accuracy, and a mixed one teaches nothing.
COLUMNS = ("arch", "accuracy", "precision")


def _rows(path: Path) -> dict[Arch, tuple[str, str]]:
    """(accuracy, precision) of each arch of a dataset or shard file, the first row of each arch; none if it is
    missing. Files written before the precision column hold fp32 accuracies."""
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows: dict[Arch, tuple[str, str]] = {}
        for row in csv.DictReader(f):
            rows.setdefault(Arch.from_json(row["arch"]), (row["accuracy"], row.get("precision") or "fp32"))
        return rows


def _write(path: Path, rows: dict[Arch, tuple[str, str]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([arch.canonical().to_json(), accuracy, precision] for arch, (accuracy, precision) in rows.items())
    atomic_write(path, text.getvalue())


def _check_one_precision(files: dict[Path, dict[Arch, tuple[str, str]]], precision: str | None = None) -> None:
    """Refuse files whose rows are of more than one precision, or of another than ``precision``."""
    held = {path: {prec for _, prec in rows.values()} for path, rows in files.items()}
    every = set().union(*held.values()) | ({precision} if precision else set())
    if len(every) > 1:
        where = "; ".join(f"{path} holds {'/'.join(sorted(precs))}" for path, precs in held.items() if precs)
        this = f"; this build measures {precision}" if precision else ""
        raise UsageError(f"accuracies of more than one precision: {where}{this}", "give each precision its own --out")


def shard_path(out: Path, rank: int) -> Path:
    """Where rank ``rank`` of a distributed build appends its rows, beside ``out``."""
    return out.with_name(f".{out.name}.rank{rank}")


def _shards(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.rank*"))


def merge_shards(out: str | os.PathLike) -> Path:
    """Fold every rank's shard file into ``out`` (each arch once, in a stable order), then remove the shards."""
    out = Path(out)
    files = {path: _rows(path) for path in [out, *_shards(out)]}
    _check_one_precision(files)
    rows: dict[Arch, tuple[str, str]] = {}
    for file_rows in files.values():
        for arch, row in file_rows.items():
            rows.setdefault(arch, row)
    _write(out, rows)
    for path in files:
        if path != out:
            path.unlink()
    return out


def build_accuracy_csv(supernet: OFASupernet, out: str | os.PathLike, n_archs: int, calibration: Loader,
                       evaluation: Loader, n_bn_images: int = 2000, seed: int = 0, space: ArchSpace | None = None,
                       archs: Iterable[Arch] | None = None, progress: bool = True, rank: int = 0,
                       world: int = 1, device: torch.device | str = "cpu", precision: str = "fp32") -> Path:
    """Measure ``n_archs`` seeded random archs (or the given ``archs``) and append them to ``out``.

    Args:
        supernet: The trained supernet.
        out: CSV with columns ``arch`` (OFA JSON), ``accuracy`` (top-1, 0..1) and ``precision``; created or
            extended, never with rows of another precision.
        n_archs: How many archs to sample (ignored when ``archs`` is given).
        calibration: Training images for BN recalibration: a loader of ``(images, labels)``, or a callable
            ``resolution -> loader``. Images of another size are resized.
        evaluation: Held-out images, same forms.
        n_bn_images: Images used to recalibrate BN.
        seed: Seed of the arch sample.
        space: Archs to sample from; default: the supernet's space.
        archs: Explicit archs to measure instead of a sample.
        progress: One line per arch on stderr.
        rank, world: This process's share of a distributed build (torchrun): it measures every ``world``-th
            arch of the sample, skipping those measured already, into a shard file of its own;
            :func:`merge_shards` folds the shards into ``out`` once every rank is done. With ``world`` 1 rows go
            straight into ``out``.
        device: Where each subnet is recalibrated and evaluated (the supernet itself stays where it is).
        precision: ``int8`` measures each subnet quantized as it is deployed (:func:`int8_top1`).
    """
    out = Path(out)
    todo = list(archs) if archs is not None else list((space or supernet.space).samples(n_archs, seed))
    files = {path: _rows(path) for path in [out, *_shards(out)]}
    _check_one_precision(files, precision)
    done = set().union(*files.values())
    # The split comes first and the measured ones are skipped after: each rank's share stays the same whatever
    # the others have measured when it starts.
    todo = [arch for arch in list(dict.fromkeys(todo))[rank::world] if arch not in done]
    target = out if world == 1 else shard_path(out, rank)
    _write(target, files.get(target, {}))  # a new file gets its header; an older one its precision column
    with open(target, "a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        for i, arch in enumerate(todo):
            accuracy = subnet_top1(supernet, arch, calibration, evaluation, n_bn_images, device, precision)
            writer.writerow([arch.canonical().to_json(), repr(accuracy), precision])
            f.flush()
            os.fsync(f.fileno())
            if progress:
                print(f"accuracy dataset (rank {rank}): {i + 1}/{len(todo)} r={arch.r} top1={accuracy:.4f}",
                      file=sys.stderr)
    return out
