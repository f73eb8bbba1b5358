"""Images for training a supernet: an ImageFolder tree, or scikit-learn's bundled digits for tests and the demo.

A source makes whole batches at the resolution the step drew, with augmentation seeded per batch: the same batch
comes out on any rank, in any worker, before or after a resume. Batches of a step are sharded among the ranks
by ``DistributedSampler`` (each shard is one rank's batch and its BN batch), so one rank that accumulates two
shards computes what two ranks compute.

torchvision is not used: its PyPI wheels fail to import beside the CPU build of torch this project pins
(``operator torchvision::nms does not exist``). Its ImageFolder layout and OFA's augmentation are done here with
Pillow and torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from supernet.errors import OFAProfileError

__all__ = [
    "DataError",
    "Digits",
    "FirstImages",
    "ImageFolder",
    "ImageSource",
    "ShardedBatches",
    "evaluation_batches",
    "load_source",
    "on_device",
]

Batch = tuple[torch.Tensor, torch.Tensor]  # images (N, 3, r, r), labels (N,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


class DataError(OFAProfileError, ValueError):
    """A data folder the trainer cannot use."""


class ImageSource(Protocol):
    """What the trainer needs from a dataset: its size, its classes and batches at a resolution."""

    n_classes: int

    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int], resolution: int, augment: bool, seed: int) -> Batch: ...


class Digits:
    """scikit-learn's 1,797 real 8x8 handwritten digits, upsampled: real data that ships inside a package.

    ``split`` ``train`` or ``val``: a fixed, stratified 80/20 split. Augmentation is a random scale (0.8-1) and
    shift of the digit, as a random-resized crop would give.
    """

    n_classes = 10

    def __init__(self, split: str = "train", holdout: float = 0.2) -> None:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DataError("the bundled digits come with scikit-learn, which is not installed",
                            "pip install scikit-learn (a dependency of ofa-profile)") from None
        if split not in ("train", "val"):
            raise DataError(f"unknown split {split!r}", "use 'train' or 'val'")
        digits = load_digits()
        rng = np.random.default_rng(0)
        chosen = []
        for label in range(10):
            members = rng.permutation(np.flatnonzero(digits.target == label))
            cut = round(len(members) * holdout)
            chosen.append(members[cut:] if split == "train" else members[:cut])
        order = np.sort(np.concatenate(chosen))
        self.images = torch.from_numpy(digits.images[order] / 16.0).float().unsqueeze(1)
        self.labels = torch.from_numpy(digits.target[order]).long()

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int], resolution: int, augment: bool, seed: int) -> Batch:
        images = self.images[list(indices)]
        if augment:
            generator = torch.Generator().manual_seed(seed)
            n = len(images)
            scale = 0.8 + 0.2 * torch.rand(n, generator=generator)
            shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale).unsqueeze(1)
            theta = torch.zeros(n, 2, 3)
            theta[:, 0, 0] = theta[:, 1, 1] = scale
            theta[:, :, 2] = shift
            grid = F.affine_grid(theta, [n, 1, resolution, resolution], align_corners=False)
            images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        else:
            images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
        return ((images - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous(), self.labels[list(indices)]


class ImageFolder:
    """``root/CLASS/IMAGE`` (torchvision's layout): classes are the sorted folder names.

    Training batches get OFA's augmentation: a random-resized crop (scale 0.08-1, aspect 3/4-4/3), a horizontal
    flip, brightness (32/255) and saturation (0.5) jitter; evaluation batches are resized to ``r / 0.875`` on the
    short side and centre-cropped. Both are normalised with ImageNet's mean and std.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root} is not a folder", "give a folder with one subfolder of images per class")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.samples = [(path, label) for label, name in enumerate(self.classes)
                        for path in sorted((self.root / name).rglob("*")) if path.suffix.lower() in IMAGE_SUFFIXES]
        if len(self.classes) < 2 or not self.samples:
            raise DataError(f"{self.root} has {len(self.classes)} class folder(s) and {len(self.samples)} image(s)",
                            "give a folder with one subfolder of images per class (at least two classes)")
        self.n_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, indices: Sequence[int], resolution: int, augment: bool, seed: int) -> Batch:
        from PIL import Image

        rng = np.random.default_rng(seed)
        images, labels = [], []
        for index in indices:
            path, label = self.samples[index]
            try:
                with Image.open(path) as image:
                    image = image.convert("RGB")
            except OSError as err:
                raise DataError(f"cannot read image {path}: {err}", "remove or replace that file") from err
            image = _augmented(image, resolution, rng) if augment else _centre_crop(image, resolution)
            images.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1))
            labels.append(label)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (torch.stack(images) - mean) / std, torch.tensor(labels)


def _augmented(image, resolution: int, rng: np.random.Generator):
    from PIL import Image, ImageEnhance

    width, height = image.size
    box = (0, 0, width, height)
    for _ in range(10):
        area = width * height * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            box = (left, top, left + w, top + h)
            break
    image = image.resize((resolution, resolution), Image.BILINEAR, box=box)
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(1 + rng.uniform(-32 / 255, 32 / 255))
    return ImageEnhance.Color(image).enhance(1 + rng.uniform(-0.5, 0.5))


def _centre_crop(image, resolution: int):
    from PIL import Image

    width, height = image.size
    short = math.ceil(resolution / 0.875)
    scale = short / min(width, height)
    image = image.resize((max(round(width * scale), resolution), max(round(height * scale), resolution)),
                         Image.BILINEAR)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


class FirstImages:
    """The first ``n`` images of a source (quick runs and tests train on a part of the data)."""

    def __init__(self, source: ImageSource, n: int) -> None:
        self.source, self.n, self.n_classes = source, min(n, len(source)), source.n_classes

    def __len__(self) -> int:
        return self.n

    def batch(self, indices: Sequence[int], resolution: int, augment: bool, seed: int) -> Batch:
        return self.source.batch(indices, resolution, augment, seed)


def load_source(data: str, split: str) -> ImageSource:
    """``digits`` (bundled), or an ImageFolder root holding ``train/`` and ``val/`` (or one tree for both)."""
    if data == "digits":
        return Digits(split)
    root = Path(data)
    if (root / split).is_dir():
        return ImageFolder(root / split)
    if (root / "train").is_dir() or (root / "val").is_dir():
        raise DataError(f"{root} has no {split}/ folder", f"add {root / split}, one subfolder per class")
    return ImageFolder(root)


class _Batches(Dataset):
    """Items are whole batches, keyed by (indices, resolution, seed), so DataLoader workers build them. A batch
    that cannot be built comes back as its error's (problem, fix), raised again in the main process: DataLoader
    would re-raise it with the worker's traceback as its message."""

    def __init__(self, source: ImageSource, augment: bool) -> None:
        self.source, self.augment = source, augment

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[tuple[int, ...], int, int]) -> Batch | tuple[str, str]:
        indices, resolution, seed = key
        try:
            return self.source.batch(indices, resolution, self.augment, seed)
        except DataError as err:
            return err.problem, err.fix


def _built(item: Batch | tuple[str, str]) -> Batch:
    """A worker's batch, or its error raised here."""
    if isinstance(item[0], str):
        raise DataError(*item)
    return item


class ShardedBatches:
    """A step's global batch, split into ``n_shards`` shards by ``DistributedSampler`` (one per rank and
    accumulation slot); each shard's images are augmented with a seed of their own."""

    def __init__(self, source: ImageSource, global_batch: int, n_shards: int, seed: int) -> None:
        if global_batch % n_shards:
            raise DataError(f"a global batch of {global_batch} cannot be split into {n_shards} equal shards",
                            f"make --batch-size a multiple of {n_shards} (ranks x --accumulate)")
        self.source, self.n_shards, self.seed = source, n_shards, seed
        self.shard_batch = global_batch // n_shards
        self.samplers = [DistributedSampler(range(len(source)), num_replicas=n_shards, rank=shard, shuffle=True,
                                            seed=seed, drop_last=True) for shard in range(n_shards)]
        self.steps_per_epoch = len(self.samplers[0]) // self.shard_batch
        if self.steps_per_epoch == 0:
            raise DataError(f"{len(source)} images do not fill one global batch of {global_batch}",
                            "lower --batch-size or give more images")

    def epoch(self, epoch: int, first_step: int, shards: Sequence[int], resolution_of: Callable[[int], int],
              seed_of: Callable[[int, int], int], workers: int = 0) -> Iterator[list[Batch]]:
        """For each step of ``epoch`` from ``first_step`` on, the batches of ``shards``, built by ``workers``
        DataLoader processes (0: in this one)."""
        orders = {}
        for shard in shards:
            self.samplers[shard].set_epoch(epoch)
            orders[shard] = list(self.samplers[shard])
        steps = [[(tuple(orders[shard][step * self.shard_batch:(step + 1) * self.shard_batch]), resolution_of(step),
                   seed_of(step, shard)) for shard in shards] for step in range(first_step, self.steps_per_epoch)]
        if workers == 0:
            for keys in steps:
                yield [self.source.batch(indices, r, True, seed) for indices, r, seed in keys]
            return
        flat = [key for keys in steps for key in keys]
        batches = iter(DataLoader(_Batches(self.source, augment=True), sampler=flat, batch_size=None,
                                  num_workers=workers))
        for keys in steps:
            yield [_built(next(batches)) for _ in keys]


def on_device(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A batch of images on ``device``, channels last (NHWC in memory, NCHW in shape).

    Convolutions follow their input's layout, so the whole network then runs channels last. On this project's
    2-core CPU that made a training step of the w0.25 digits supernet 1.5-1.8x faster (a 7x7 depthwise convolution
    forward and backward 3.6x); cuDNN's tensor-core kernels prefer it too. Outputs agree with NCHW's to 1e-5.
    """
    return images.to(device, memory_format=torch.channels_last)


def evaluation_batches(source: ImageSource, resolution: int, batch_size: int = 200,
                       augment: bool = False, limit: int | None = None, seed: int = 0):
    """Every image (or the first ``limit``) in order, at ``resolution``; a callable for BN recalibration too."""
    n = len(source) if limit is None else min(limit, len(source))
    for start in range(0, n, batch_size):
        yield source.batch(range(start, min(start + batch_size, n)), resolution, augment, seed + start)
