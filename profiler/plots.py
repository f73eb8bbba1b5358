"""Pictures where they beat numbers: predicted against measured subnets, and what the closed loop delivered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_delivered", "plot_predicted_vs_measured", "pyplot", "save_figure"]


def pyplot():
    """matplotlib's pyplot on the file backend, imported on first use (it costs a second; --help must not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, png: Path) -> Path:
    """Write ``fig`` to ``png`` at the size every plot of the project has, and free it."""
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    pyplot().close(fig)
    return png


def plot_predicted_vs_measured(frame: pd.DataFrame, png: Path, title: str) -> Path:
    """Scatter of table-predicted against measured latency, with y = x and a ±10% band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    measured = frame["measured_ms"].to_numpy()
    ax.scatter(measured, frame["raw_sum_ms"], s=18, label="table sum")
    if frame["calibrated"].any():
        ax.scatter(measured, frame["predicted_ms"], s=18, marker="x", label="calibrated")
    lo, hi = 0.9 * measured.min(), 1.1 * measured.max()
    line = np.linspace(lo, hi, 10)
    ax.plot(line, line, color="black", linewidth=1, label="y = x")
    ax.fill_between(line, 0.9 * line, 1.1 * line, color="grey", alpha=0.2, label="±10%")
    ax.set_xlabel("measured latency (ms, median, at the table's anchor)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return save_figure(fig, png)


def plot_delivered(frame: pd.DataFrame, png: Path, title: str) -> Path:
    """Per budget: the delivered subnet's predicted and measured latency against the budget line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    budgets = frame["budget_ms"].to_numpy()
    line = np.linspace(budgets.min() * 0.9, budgets.max() * 1.1, 10)
    ax.plot(line, line, color="black", linewidth=1, label="budget")
    met = frame["met"].to_numpy(dtype=bool)
    ax.errorbar(budgets, frame["predicted_ms"], yerr=[frame["predicted_ms"] - frame["low_ms"],
                                                       frame["high_ms"] - frame["predicted_ms"]],
                fmt="o", color="tab:blue", capsize=3, label="predicted (interval)")
    ax.scatter(budgets[met], frame["measured_ms"][met], marker="x", s=50, color="tab:green", label="measured, met")
    ax.scatter(budgets[~met], frame["measured_ms"][~met], marker="x", s=50, color="tab:red", label="measured, not met")
    for budget, measured, rounds in zip(budgets, frame["measured_ms"], frame["rounds"], strict=True):
        ax.annotate(f"{rounds}", (budget, measured), textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax.set_xlabel("latency budget (ms)")
    ax.set_ylabel("latency of the delivered subnet (ms)")
    ax.set_title(title + " (numbers: search rounds)")
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, png)
