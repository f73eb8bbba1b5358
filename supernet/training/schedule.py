"""The progressive-shrinking schedule (docs/ofa_reference.md §5) as data: phases, the subnets a step trains, the
learning rate.

Pure functions of a seed and a step, so that every rank of a distributed run draws the same subnets and the same
resolution at each step, and a resumed run draws what the killed one would have drawn.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from supernet.arch import DEPTHS, EXPAND_RATIOS, KERNEL_SIZES, MOBILENETV3_LAYOUT, Arch, ArchSpace, Layout

__all__ = ["PHASE_NAMES", "Phase", "lr_factor", "progressive_shrinking", "step_seed"]


@dataclass(frozen=True)
class Phase:
    """One phase: the choices it trains, how long, how many subnets per step and at what learning rate.

    Args:
        name: ``full``, ``kernel``, ``depth-1``, ``depth-2``, ``expand-1`` or ``expand-2``.
        kernel_sizes, expand_ratios, depths: The elastic choices its subnets are drawn from.
        epochs: Epochs after the warm-up.
        warmup_epochs: Epochs of linear warm-up from 0 to the phase's learning rate.
        base_lr: Learning rate per 64 images of global batch (scaled linearly with the batch, as the
            reference scales it with the number of GPUs at 64 images each).
        subnets_per_step: Subnets whose gradients are summed before each optimizer step.
        sort_stage: Channel sorting before the phase (the ``expand_stage`` of ``sort_channels``); None: none.
        distill: Train against the full network's soft outputs (every phase after the first).
    """

    name: str
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int, ...]
    depths: tuple[int, ...]
    epochs: int
    warmup_epochs: int
    base_lr: float
    subnets_per_step: int
    sort_stage: int | None = None
    distill: bool = True

    def space(self, resolutions: Sequence[int], layout: Layout = MOBILENETV3_LAYOUT) -> ArchSpace:
        return ArchSpace(tuple(resolutions), self.kernel_sizes, self.expand_ratios, self.depths, layout)

    def subnets(self, resolutions: Sequence[int], seed: int, layout: Layout = MOBILENETV3_LAYOUT) -> list[Arch]:
        """The subnets one step trains, all at one resolution drawn for the step (the batch's image size)."""
        rng = random.Random(seed)
        space = self.space(resolutions, layout)
        r = rng.choice(space.resolutions)
        return [space.sample(rng).with_resolution(r) for _ in range(self.subnets_per_step)]

    def extremes(self, resolution: int, layout: Layout = MOBILENETV3_LAYOUT) -> dict[str, Arch]:
        """The smallest and the largest subnet this phase trains, at ``resolution``."""
        space = self.space((resolution,), layout)
        return {
            "smallest": space.uniform(min(self.kernel_sizes), min(self.expand_ratios), min(self.depths), resolution),
            "largest": space.uniform(max(self.kernel_sizes), max(self.expand_ratios), max(self.depths), resolution),
        }

    @property
    def total_epochs(self) -> int:
        return self.warmup_epochs + self.epochs


PHASE_NAMES = ("full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2")


def progressive_shrinking(epochs: Sequence[int] | None = None, warmup_epochs: Sequence[int] | None = None,
                          base_lr: Sequence[float] | None = None, start: str = "full") -> list[Phase]:
    """OFA's schedule from phase ``start`` on; each list, when given, has one value per phase of the six.

    The defaults are the reference's: the elastic phases run 120 + 5 warm-up epochs (25 without warm-up for the
    first depth and expand phases) at 3e-2, 2.5e-3 and 7.5e-3 per 64 images. The full network's own training is
    not in the reference schedule; 180 epochs at 2.5e-2 per 64 images with 5 warm-up are ours.
    """
    ks, es, ds = KERNEL_SIZES, EXPAND_RATIOS, DEPTHS
    k7, e6, d4 = (max(ks),), (max(es),), (max(ds),)
    phases = [
        Phase("full", k7, e6, d4, 175, 5, 2.5e-2, 1, distill=False),
        Phase("kernel", ks, e6, d4, 120, 5, 3e-2, 1),
        Phase("depth-1", ks, e6, (3, 4), 25, 0, 2.5e-3, 2),
        Phase("depth-2", ks, e6, ds, 120, 5, 7.5e-3, 2),
        Phase("expand-1", ks, (4, 6), ds, 25, 0, 2.5e-3, 4, sort_stage=0),
        Phase("expand-2", ks, es, ds, 120, 5, 7.5e-3, 4, sort_stage=1),
    ]
    for name, values in (("epochs", epochs), ("warmup_epochs", warmup_epochs), ("base_lr", base_lr)):
        if values is None:
            continue
        if len(values) != len(phases):
            raise ValueError(f"{name} needs one value per phase ({', '.join(PHASE_NAMES)}), got {list(values)}")
        phases = [dataclasses.replace(phase, **{name: value}) for phase, value in zip(phases, values, strict=True)]
    if start not in PHASE_NAMES:
        raise ValueError(f"unknown phase {start!r}; expected one of {', '.join(PHASE_NAMES)}")
    return phases[PHASE_NAMES.index(start):]


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from 0, then cosine to 0, per optimizer step (the reference's per-batch schedule)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def step_seed(seed: int, *parts: int) -> int:
    """A seed for one (phase, step, ...) that does not depend on the rank or on how the run was resumed."""
    return random.Random(repr((seed, *parts))).getrandbits(63)
