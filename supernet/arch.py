"""Architectures of the OFA MobileNetV3 space: one validated value type and the space it lives in.

An arch is what users, tables, predictors and the released tools exchange, in OFA's JSON shape
``{"ks": [20 ints], "e": [20 ints], "d": [5 ints], "r": [resolution]}``. Entries of blocks that a stage's
depth skips are kept as given (so JSON round-trips), but equality and hashing look only at the active part:
two archs that build the same network are the same arch.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .errors import OFAProfileError

__all__ = [
    "DEPTHS",
    "EXPAND_RATIOS",
    "KERNEL_SIZES",
    "MAX_DEPTH",
    "N_BLOCKS",
    "N_STAGES",
    "Arch",
    "ArchError",
    "ArchSpace",
]

KERNEL_SIZES = (3, 5, 7)
EXPAND_RATIOS = (3, 4, 6)
DEPTHS = (2, 3, 4)
N_STAGES = 5
MAX_DEPTH = 4
N_BLOCKS = N_STAGES * MAX_DEPTH


class ArchError(OFAProfileError, ValueError):
    """An architecture, or its JSON, that is not in the space; the message says which field and what is allowed."""


def _allowed(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


def _check_list(name: str, values: Any, length: int, allowed: Sequence[int], what: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ArchError(f"{name} must be a list of {length} ints ({what}), got {values!r}")
    if len(values) != length:
        raise ArchError(f"{name} has {len(values)} entries; expected {length} ({what})")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or v not in allowed:
            raise ArchError(f"{name}[{i}] = {v!r} is not allowed; allowed values: {_allowed(allowed)}")
    return tuple(values)


@dataclass(frozen=True, eq=False)
class Arch:
    """One subnet of the OFA MobileNetV3 space.

    Args:
        ks: Depthwise kernel size of each of the 20 elastic blocks (3, 5 or 7).
        e: Expand ratio of each elastic block (3, 4 or 6).
        d: Depth of each of the 5 stages (2, 3 or 4): a stage runs its first ``d`` blocks.
        r: Input resolution (square images).

    Construction checks the elastic choices; whether ``r`` is in a given supernet's resolution list is
    checked by :meth:`ArchSpace.validate`, because that list depends on the width multiplier.
    """

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int = 224

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", _check_list("ks", self.ks, N_BLOCKS, KERNEL_SIZES,
                                                   "one kernel size per elastic block"))
        object.__setattr__(self, "e", _check_list("e", self.e, N_BLOCKS, EXPAND_RATIOS,
                                                  "one expand ratio per elastic block"))
        object.__setattr__(self, "d", _check_list("d", self.d, N_STAGES, DEPTHS, "one depth per stage"))
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ArchError(f"r = {self.r!r} is not a resolution; expected a positive int such as 224")

    # --- the part that defines the network -------------------------------------------------------------
    @cached_property
    def active_blocks(self) -> tuple[int, ...]:
        """Indices (0..19) of the elastic blocks that the depths keep, in network order."""
        return tuple(s * MAX_DEPTH + j for s, depth in enumerate(self.d) for j in range(depth))

    def _identity(self) -> tuple:
        active = self.active_blocks
        return (tuple(self.ks[i] for i in active), tuple(self.e[i] for i in active), self.d, self.r)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Arch):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def canonical(self) -> Arch:
        """The same network with skipped blocks' entries set to the smallest choices, for stable output."""
        active = set(self.active_blocks)
        ks = tuple(k if i in active else KERNEL_SIZES[0] for i, k in enumerate(self.ks))
        e = tuple(x if i in active else EXPAND_RATIOS[0] for i, x in enumerate(self.e))
        return Arch(ks=ks, e=e, d=self.d, r=self.r)

    def with_resolution(self, r: int) -> Arch:
        return Arch(ks=self.ks, e=self.e, d=self.d, r=r)

    # --- JSON in the OFA shape -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, list[int]]:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": [self.r]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Arch:
        """Read OFA's dict shape; ``"image_size": 224`` is accepted in place of ``"r": [224]``."""
        if not isinstance(config, Mapping):
            raise ArchError(f"an arch must be a JSON object like {_EXAMPLE}, got {type(config).__name__}")
        unknown = sorted(set(config) - {"ks", "e", "d", "r", "image_size"})
        if unknown:
            raise ArchError(f"unknown key(s) {unknown} in arch; expected the keys ks, e, d and r (or image_size)")
        missing = [k for k in ("ks", "e", "d") if k not in config]
        if missing:
            raise ArchError(f"arch is missing key(s) {missing}; expected {_EXAMPLE}")
        r = _read_resolution(config)
        return cls(ks=config["ks"], e=config["e"], d=config["d"], r=r)

    @classmethod
    def from_json(cls, text: str | bytes) -> Arch:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArchError(f"arch is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
                            f"expected {_EXAMPLE}") from None
        return cls.from_dict(config)

    def __str__(self) -> str:
        return self.to_json()


_EXAMPLE = '{"ks": [20 ints], "e": [20 ints], "d": [5 ints], "r": [224]}'


def _read_resolution(config: Mapping[str, Any]) -> int:
    values = []
    if "r" in config:
        r = config["r"]
        if isinstance(r, list):
            if len(r) != 1:
                raise ArchError(f"r = {r!r} must hold exactly one resolution, such as [224]")
            r = r[0]
        values.append(r)
    if "image_size" in config:
        values.append(config["image_size"])
    if not values:
        raise ArchError(f"arch has no resolution; add \"r\": [224] (or \"image_size\": 224); expected {_EXAMPLE}")
    if len(values) == 2 and values[0] != values[1]:
        raise ArchError(f"arch gives two different resolutions, r = {values[0]!r} and image_size = {values[1]!r}; "
                        f"keep one")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ArchError(f"resolution {v!r} must be an int, such as 224")
    return values[0]


@dataclass(frozen=True)
class ArchSpace:
    """The choices of one supernet: elastic kernel, expand ratio and depth, and its resolution list."""

    resolutions: tuple[int, ...]
    kernel_sizes: tuple[int, ...] = KERNEL_SIZES
    expand_ratios: tuple[int, ...] = EXPAND_RATIOS
    depths: tuple[int, ...] = DEPTHS
    n_stages: int = field(default=N_STAGES, init=False)
    max_depth: int = field(default=MAX_DEPTH, init=False)

    @classmethod
    def for_width(cls, width_mult: float) -> ArchSpace:
        """OFA's resolution lists: 128..224 step 4 for w1.0 (and smaller widths), 160..224 for w1.2."""
        low = 160 if width_mult >= 1.2 else 128
        return cls(resolutions=tuple(range(low, 225, 4)))

    @property
    def size_per_resolution(self) -> int:
        """Distinct networks at one resolution: (9^2 + 9^3 + 9^4)^5 for the OFA space."""
        per_block = len(self.kernel_sizes) * len(self.expand_ratios)
        per_stage = sum(per_block**depth for depth in self.depths)
        return per_stage**self.n_stages

    @property
    def size(self) -> int:
        return self.size_per_resolution * len(self.resolutions)

    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` if it lies in this space, else raise :class:`ArchError` naming the field."""
        _check_list("ks", arch.ks, N_BLOCKS, self.kernel_sizes, "one kernel size per elastic block")
        _check_list("e", arch.e, N_BLOCKS, self.expand_ratios, "one expand ratio per elastic block")
        _check_list("d", arch.d, N_STAGES, self.depths, "one depth per stage")
        if arch.r not in self.resolutions:
            lo, hi = self.resolutions[0], self.resolutions[-1]
            step = self.resolutions[1] - lo if len(self.resolutions) > 1 else 0
            raise ArchError(f"r = {arch.r} is not in this supernet's resolution list: {lo}..{hi} step {step}")
        return arch

    def sample(self, rng: random.Random | int | None = None) -> Arch:
        """One uniformly random arch; an int seed makes it reproducible."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        return Arch(
            ks=tuple(rng.choice(self.kernel_sizes) for _ in range(N_BLOCKS)),
            e=tuple(rng.choice(self.expand_ratios) for _ in range(N_BLOCKS)),
            d=tuple(rng.choice(self.depths) for _ in range(N_STAGES)),
            r=rng.choice(self.resolutions),
        )

    def samples(self, n: int, seed: int | None = None) -> Iterator[Arch]:
        rng = random.Random(seed)
        for _ in range(n):
            yield self.sample(rng)

    def uniform(self, ks: int, e: int, d: int, r: int = 224) -> Arch:
        """The arch with one kernel, expand ratio and depth everywhere (e.g. K3/E3/D4)."""
        return self.validate(Arch(ks=(ks,) * N_BLOCKS, e=(e,) * N_BLOCKS, d=(d,) * N_STAGES, r=r))
