"""The picture of a training run: loss per step, coloured by phase, and the phases' subnet accuracies."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_training"]


def plot_training(steps: Sequence[dict[str, Any]], evaluations: Sequence[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from supernet.files import atomic_write

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    phases = list(dict.fromkeys(row["phase"] for row in steps))
    for phase in phases:
        rows = [row for row in steps if row["phase"] == phase]
        loss_axis.plot([offset + row["step"] for row in rows], [row["loss"] for row in rows], label=phase)
        offset += rows[-1]["step"]
    loss_axis.set(xlabel="optimizer step (all phases)", ylabel="training loss (CE + KD)", title="loss per phase")
    loss_axis.legend(fontsize=8)
    for which, marker in (("largest", "o"), ("smallest", "s")):
        rows = [row for row in evaluations if row["subnet"] == which]
        accuracy_axis.plot([row["phase"] for row in rows], [100 * row["top1"] for row in rows], marker=marker,
                           label=f"{which} subnet of the phase")
    accuracy_axis.set(ylabel="held-out top-1 (%), BN recalibrated", title="after each phase")
    accuracy_axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return atomic_write(path, buffer.getvalue())
