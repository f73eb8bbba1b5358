"""Channel arithmetic of OFA's networks: rounding to multiples of 8, and SE bottleneck widths (no torch)."""

from __future__ import annotations

__all__ = ["CHANNEL_DIVISOR", "SE_REDUCTION", "make_divisible", "se_channels"]

CHANNEL_DIVISOR = 8
SE_REDUCTION = 4


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Round to the nearest multiple of ``divisor``, never below it, and never more than 10% down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def se_channels(mid_chs: int) -> int:
    return make_divisible(mid_chs // SE_REDUCTION)
