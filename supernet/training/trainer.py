"""Progressive shrinking, on one process or on torchrun: train, checkpoint, resume, evaluate each phase.

Every random draw of a step (its subnets, its resolution, each shard's augmentation and dropout) is seeded by
(seed, phase, step, shard), never by the rank or by how often the run was restarted. So a run killed with
SIGKILL and started again from its last checkpoint ends with the weights of a run that was never killed, and one
rank accumulating two shards computes what two ranks compute (each shard is one BN batch either way).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from supernet.arch import DEPTHS, EXPAND_RATIOS, KERNEL_SIZES, Arch
from supernet.bn import recalibrate_bn
from supernet.errors import OFAProfileError
from supernet.files import atomic_write
from supernet.mobilenetv3 import MobileNetV3
from supernet.ofa_supernet import SUPERNETS, OFASupernet
from supernet.plan import FAMILIES, MOBILENETV3

from .data import Batch, FirstImages, ImageSource, ShardedBatches, evaluation_batches, on_device
from .dataset import subnet_top1
from .distributed import Context
from .schedule import PHASE_NAMES, Phase, lr_factor, progressive_shrinking, step_seed

__all__ = ["CHECKPOINT", "TrainError", "TrainSettings", "bn_batches", "evaluate", "parameter_groups", "train"]

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
FORMAT = 1


class TrainError(OFAProfileError):
    """A training run that cannot start or continue as asked."""


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the weights a run ends with (a resumed run must be given the same)."""

    width_mult: float = 1.0
    resolutions: tuple[int, ...] = tuple(range(128, 225, 4))
    family: str = MOBILENETV3.name  # its name, as ofa-train --space gives it
    batch_size: int = 256
    accumulate: int = 1
    epochs: tuple[int, ...] | None = None
    warmup_epochs: tuple[int, ...] | None = None
    base_lr: tuple[float, ...] | None = None
    start: str = "full"
    init: str | None = None
    label_smoothing: float = 0.1
    kd_ratio: float = 1.0
    weight_decay: float = 3e-5
    momentum: float = 0.9
    dropout: float = 0.1
    bn_images: int = 2000
    seed: int = 0
    data: str = "digits"
    limit_train: int | None = None

    def phases(self) -> list[Phase]:
        return progressive_shrinking(self.epochs, self.warmup_epochs, self.base_lr, self.start)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        """The settings a checkpoint holds (JSON lists back to tuples; checkpoints before 2026-12-07 call the
        family ``space``)."""
        return cls(**{("family" if k == "space" else k): tuple(v) if isinstance(v, list) else v
                      for k, v in values.items()})

    def supernet(self, n_classes: int) -> OFASupernet:
        """The supernet these settings train (of their family), freshly initialised."""
        return SUPERNETS[FAMILIES[self.family]](self.width_mult, n_classes, self.dropout, self.resolutions)


@dataclass
class RunState:
    """Where a run is: the next (phase, step) to train, and the logs so far."""

    phase: int = 0
    step: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def _distributed(net: nn.Module) -> DistributedDataParallel:
    """DDP that leaves each rank's BN running statistics alone during forward passes (they only serve evaluation,
    which recalibrates them). Newer torch names that switch ``forward_sync_buffers`` and warns on the old one."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return DistributedDataParallel(net, find_unused_parameters=True, forward_sync_buffers=False)
    return DistributedDataParallel(net, find_unused_parameters=True, broadcast_buffers=False)

def parameter_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only: none on BN and biases (the reference's ``bn#bias``)."""
    decay, no_decay = [], []
    for name, parameter in net.named_parameters():
        (no_decay if ".bn." in f".{name}" or "bias" in name else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _loss(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None, settings: TrainSettings):
    loss = F.cross_entropy(logits, labels, label_smoothing=settings.label_smoothing)
    if soft is not None:
        loss = loss + settings.kd_ratio * torch.sum(-soft * F.log_softmax(logits, dim=1), dim=1).mean()
    return loss


def bn_batches(source: ImageSource, resolution: int, n_images: int) -> Iterator[Batch]:
    """The same ``n_images`` training images, augmented with a fixed seed, on every rank and every run."""
    return evaluation_batches(source, resolution, batch_size=100, augment=True, limit=n_images, seed=12345)


def evaluate(net: OFASupernet, archs: Sequence[Arch], train_source: ImageSource, val_source: ImageSource,
             bn_images: int, device: torch.device | str = "cpu", precision: str = "fp32") -> list[float]:
    """Top-1 (0..1) of each arch's subnet on ``val_source``, BN statistics recalibrated first
    (docs/ofa_reference.md §5); in int8, quantized after that with its scales calibrated on the same training
    images."""
    return [subnet_top1(net, arch, lambda r: bn_batches(train_source, r, bn_images),
                        lambda r: evaluation_batches(val_source, r), bn_images, device, precision) for arch in archs]


class _Run:
    """One process's share of a training run."""

    def __init__(self, settings: TrainSettings, out: Path, context: Context, train_source: ImageSource,
                 val_source: ImageSource, checkpoint_every: int, log_every: int, workers: int,
                 progress: bool) -> None:
        self.settings, self.out, self.context = settings, out, context
        if settings.limit_train is not None:
            train_source = FirstImages(train_source, settings.limit_train)
        self.train_source, self.val_source = train_source, val_source
        self.checkpoint_every, self.log_every, self.workers = checkpoint_every, log_every, workers
        self.progress = progress and context.is_main
        self.phases = settings.phases()
        self.first_phase = PHASE_NAMES.index(settings.start)
        self.n_shards = context.world * settings.accumulate
        self.shards = [context.rank * settings.accumulate + a for a in range(settings.accumulate)]
        self.batches = ShardedBatches(train_source, settings.batch_size, self.n_shards, settings.seed)
        torch.manual_seed(settings.seed)  # the initial weights, the same on every rank
        self.net = settings.supernet(train_source.n_classes).to(context.device)
        self.teacher: MobileNetV3 | None = None
        self.state = RunState()

    # --- checkpoints ---------------------------------------------------------------------------------
    def resume(self) -> dict[str, Any] | None:
        """Load the last checkpoint if there is one; else the ``init`` weights. Returns the optimizer's part."""
        path = self.out / CHECKPOINT
        if not path.exists():
            if self.settings.init is not None:
                self.net.load_checkpoint(self.settings.init)
            return None
        try:
            saved = torch.load(path, map_location=self.context.device, weights_only=False)
        except Exception as err:
            raise TrainError(f"cannot read the checkpoint {path}: {err}",
                             "remove it to start over, or give another --out") from err
        if saved.get("format") != FORMAT:
            raise TrainError(f"{path} was written by another version (format {saved.get('format')!r})",
                             "give another --out")
        stated = TrainSettings.from_dict(saved["settings"]).to_dict()
        if stated != self.settings.to_dict():
            changed = sorted(k for k, v in self.settings.to_dict().items() if stated.get(k) != v)
            raise TrainError(f"{path} was made with other settings ({', '.join(changed)} differ)",
                             "rerun with the settings it was made with, or give another --out")
        self.net.load_state_dict(saved["model"])
        if saved["teacher"] is not None:
            self.teacher = self._new_teacher()
            self.teacher.load_state_dict(saved["teacher"])
        self.state = RunState(saved["phase"], saved["step"], saved["steps"], saved["evaluations"])
        torch.set_rng_state(saved["rng"]["torch"])
        random.setstate(saved["rng"]["python"])
        np.random.set_state(saved["rng"]["numpy"])
        return saved["optimizer"]

    def save(self, optimizer: torch.optim.Optimizer | None, scheduler: Any) -> None:
        if not self.context.is_main:
            return
        payload = {
            "format": FORMAT,
            "settings": self.settings.to_dict(),
            "phase": self.state.phase,
            "step": self.state.step,
            "model": self.net.state_dict(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "optimizer": None if optimizer is None else {"optimizer": optimizer.state_dict(),
                                                         "scheduler": scheduler.state_dict()},
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
            "steps": self.state.steps,
            "evaluations": self.state.evaluations,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(self.out / CHECKPOINT, buffer.getvalue())
        self._write_logs()

    def _write_logs(self) -> None:
        import pandas as pd

        atomic_write(self.out / "train_log.csv", pd.DataFrame(self.state.steps).to_csv(index=False))
        atomic_write(self.out / "eval_log.csv", pd.DataFrame(self.state.evaluations).to_csv(index=False))

    def _new_teacher(self) -> MobileNetV3:
        """The full network (K7, E6, D4) as it is now, as a static network of its own."""
        space = self.net.space
        full = space.uniform(max(KERNEL_SIZES), max(EXPAND_RATIOS), max(DEPTHS), max(space.resolutions))
        return self.net.extract(full).to(self.context.device)

    # --- training ------------------------------------------------------------------------------------
    def run(self) -> None:
        saved_optimizer = self.resume()
        while self.state.phase < len(self.phases):
            self._phase(self.phases[self.state.phase], saved_optimizer)
            saved_optimizer = None

    def _start_phase(self, phase: Phase) -> None:
        """What a phase does once, before its first step: sort channels, take the teacher."""
        if phase.sort_stage is not None:
            self.net.sort_channels(phase.sort_stage)
        if phase.distill and self.teacher is None:
            self.teacher = self._new_teacher()
            r = max(self.settings.resolutions)
            recalibrate_bn(self.teacher, ((on_device(x, self.context.device), y) for x, y in
                                          bn_batches(self.train_source, r, self.settings.bn_images)),
                           self.settings.bn_images)
        if self.teacher is not None:
            self.teacher.eval().requires_grad_(False)

    def _phase(self, phase: Phase, saved_optimizer: dict[str, Any] | None) -> None:
        settings, number = self.settings, self.first_phase + self.state.phase
        if self.state.step == 0:
            self._start_phase(phase)
        elif self.teacher is not None:
            self.teacher.eval().requires_grad_(False)
        per_epoch = self.batches.steps_per_epoch
        total = phase.total_epochs * per_epoch
        lr = phase.base_lr * settings.batch_size / 64
        optimizer = torch.optim.SGD(parameter_groups(self.net, settings.weight_decay), lr=lr,
                                    momentum=settings.momentum, nesterov=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, phase.warmup_epochs * per_epoch, total))
        if saved_optimizer is not None:
            optimizer.load_state_dict(saved_optimizer["optimizer"])
            scheduler.load_state_dict(saved_optimizer["scheduler"])
        model = self.net
        if self.context.world > 1:
            model = _distributed(self.net)
        self.net.train()
        bar = self._bar(phase, total)
        losses, started, images = [], time.perf_counter(), 0
        while self.state.step < total:
            epoch, first = divmod(self.state.step, per_epoch)
            step_batches = self.batches.epoch(
                number * 100_000 + epoch, first, self.shards,
                resolution_of=lambda s, e=epoch: self._subnets(phase, number, e * per_epoch + s)[0].r,
                seed_of=lambda s, shard, e=epoch: step_seed(settings.seed, number, e * per_epoch + s, shard),
                workers=self.workers)
            for shard_batches in step_batches:
                step = self.state.step
                loss = self._step(model, phase, number, step, shard_batches, optimizer)
                scheduler.step()
                self.state.step += 1
                losses.append(loss)
                images += settings.batch_size
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=f"{step // per_epoch + 1}/{phase.total_epochs}", loss=f"{loss:.3f}",
                                    img_s=f"{images / (time.perf_counter() - started):.0f}")
                if self.state.step % self.log_every == 0 or self.state.step == total:
                    self.state.steps.append({"phase": phase.name, "step": self.state.step,
                                             "epoch": round(self.state.step / per_epoch, 3),
                                             "lr": optimizer.param_groups[0]["lr"],
                                             "loss": float(np.mean(losses)),
                                             "images_per_s": images / (time.perf_counter() - started)})
                    losses = []
                if self.state.step % self.checkpoint_every == 0 and self.state.step < total:
                    self.save(optimizer, scheduler)
        if bar is not None:
            bar.close()
        self._evaluate(phase)
        self.state.phase += 1
        self.state.step = 0
        self.save(None, None)
        if self.context.is_main:
            buffer = io.BytesIO()
            torch.save({"state_dict": self.net.state_dict()}, buffer)
            atomic_write(self.out / f"supernet-{phase.name}.pt", buffer.getvalue())
        self.context.barrier()

    def _subnets(self, phase: Phase, number: int, step: int) -> list[Arch]:
        return phase.subnets(self.settings.resolutions, step_seed(self.settings.seed, number, step),
                             self.net.FAMILY.layout)

    def _step(self, model: nn.Module, phase: Phase, number: int, step: int,
              shard_batches: list[Batch], optimizer: torch.optim.Optimizer) -> float:
        """One optimizer step: for each subnet and each local shard, forward and backward; then one update."""
        device, settings = self.context.device, self.settings
        shards = [(on_device(x, device), y.to(device)) for x, y in shard_batches]
        soft = [None] * len(shards)
        if phase.distill and self.teacher is not None:
            with torch.no_grad():
                soft = [F.softmax(self.teacher(x), dim=1) for x, _ in shards]
        optimizer.zero_grad(set_to_none=True)
        total, subnets = 0.0, self._subnets(phase, number, step)
        for index, arch in enumerate(subnets):
            self.net.set_active(arch)
            for (x, y), target, shard in zip(shards, soft, self.shards, strict=True):
                torch.manual_seed(step_seed(settings.seed, number, step, shard, index))  # dropout, per shard
                loss = _loss(model(x), y, target, settings)
                (loss / settings.accumulate).backward()
                total += float(loss.detach()) / settings.accumulate
        optimizer.step()
        return total / len(subnets)

    def _evaluate(self, phase: Phase) -> None:
        """Top-1 of the smallest and largest subnets the phase trained, at the largest resolution (rank 0)."""
        if self.context.is_main:
            r = max(self.settings.resolutions)
            extremes = phase.extremes(r, self.net.FAMILY.layout)
            accuracies = evaluate(self.net, list(extremes.values()), self.train_source, self.val_source,
                                  self.settings.bn_images, self.context.device)
            for (which, arch), accuracy in zip(extremes.items(), accuracies, strict=True):
                self.state.evaluations.append({"phase": phase.name, "subnet": which, "resolution": r,
                                               "arch": arch.to_json(), "top1": accuracy})
                log.info("after %s: %s subnet top-1 %.4f", phase.name, which, accuracy)
        self.net.train()

    def _bar(self, phase: Phase, total: int):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=self.state.step, desc=f"{phase.name}", unit="step", leave=True)


def train(settings: TrainSettings, out: str | Path, context: Context, train_source: ImageSource,
          val_source: ImageSource, checkpoint_every: int = 50, log_every: int = 10, workers: int = 0,
          progress: bool = True) -> Path:
    """Run (or continue) the schedule into ``out``; returns the last phase's supernet checkpoint."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(settings, out, context, train_source, val_source, checkpoint_every, log_every, workers, progress)
    run.run()
    if context.is_main:
        from .plots import plot_training

        plot_training(run.state.steps, run.state.evaluations, out / "training.png")
    return out / f"supernet-{run.phases[-1].name}.pt"
