"""Architectures of the OFA spaces: one validated value type and the space it lives in.

An arch is what users, tables, predictors and the released tools exchange, in OFA's JSON shape
``{"ks": [20 ints], "e": [20 ints], "d": [5 ints], "r": [resolution]}`` for MobileNetV3 and
``{"ks": [21 ints], "e": [21 ints], "d": [6 ints], "r": ...}`` for ProxylessNAS, whose sixth stage is one fixed
block. Entries of blocks that a stage's depth skips are kept as given (so JSON round-trips), but equality and
hashing look only at the active part: two archs that build the same network are the same arch.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .errors import OFAProfileError
from .files import json_loads

__all__ = [
    "DEPTHS",
    "EXPAND_RATIOS",
    "KERNEL_SIZES",
    "LAYOUTS",
    "MAX_DEPTH",
    "MOBILENETV3_LAYOUT",
    "N_BLOCKS",
    "N_STAGES",
    "PROXYLESS_LAYOUT",
    "Arch",
    "ArchError",
    "ArchSpace",
    "Layout",
]

KERNEL_SIZES = (3, 5, 7)
EXPAND_RATIOS = (3, 4, 6)
DEPTHS = (2, 3, 4)
N_STAGES = 5
MAX_DEPTH = 4
N_BLOCKS = N_STAGES * MAX_DEPTH


@dataclass(frozen=True)
class Layout:
    """How a family's elastic blocks group into stages.

    Args:
        family: The family's name, as ``--space`` gives it (``mobilenetv3``, ``proxyless``).
        stage_blocks: Blocks each stage holds. A stage with fewer blocks than the deepest depth choice is not
            elastic: it always runs all of them (ProxylessNAS's last stage, one block).
    """

    family: str
    stage_blocks: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.stage_blocks)

    @property
    def n_blocks(self) -> int:
        return sum(self.stage_blocks)

    def stage_start(self, stage: int) -> int:
        """Index of the stage's first elastic block."""
        return sum(self.stage_blocks[:stage])

    def is_fixed(self, stage: int, depths: Sequence[int] = DEPTHS) -> bool:
        return self.stage_blocks[stage] < max(depths)

    def depth_choices(self, stage: int, depths: Sequence[int] = DEPTHS) -> tuple[int, ...]:
        return (self.stage_blocks[stage],) if self.is_fixed(stage, depths) else tuple(depths)

    def stage_of_blocks(self) -> tuple[int, ...]:
        """The stage of each elastic block, in network order."""
        return tuple(s for s, blocks in enumerate(self.stage_blocks) for _ in range(blocks))


MOBILENETV3_LAYOUT = Layout("mobilenetv3", (MAX_DEPTH,) * N_STAGES)
PROXYLESS_LAYOUT = Layout("proxyless", (MAX_DEPTH,) * 5 + (1,))
LAYOUTS = (MOBILENETV3_LAYOUT, PROXYLESS_LAYOUT)


def _layout_with_stages(d: Any) -> Layout:
    """The layout an arch's depth list belongs to: 5 stages for MobileNetV3, 6 for ProxylessNAS."""
    if isinstance(d, (str, bytes)) or not isinstance(d, Sequence):
        raise ArchError(f"d must be a list of {N_STAGES} ints (one depth per stage), got {d!r}")
    for layout in LAYOUTS:
        if len(d) == layout.n_stages:
            return layout
    expected = " or ".join(f"{layout.n_stages} ({layout.family})" for layout in LAYOUTS)
    raise ArchError(f"d has {len(d)} entries; expected {expected} (one depth per stage)")


class ArchError(OFAProfileError, ValueError):
    """An architecture, or its JSON, that is not in the space; the message says which field and what is allowed."""


def _check_depths(d: Sequence[int], layout: Layout, depths: Sequence[int]) -> tuple[int, ...]:
    """Each stage's depth among its choices: the space's depths, or the block count of a fixed stage."""
    for s, v in enumerate(d):
        allowed = layout.depth_choices(s, depths)
        if isinstance(v, bool) or not isinstance(v, int) or v not in allowed:
            fixed = " (this stage is not elastic)" if layout.is_fixed(s, depths) else ""
            raise ArchError(f"d[{s}] = {v!r} is not allowed; allowed values: {_allowed(allowed)}{fixed}")
    return tuple(d)


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
    """One subnet of an OFA space.

    Args:
        ks: Depthwise kernel size of each elastic block (3, 5 or 7): 20 for MobileNetV3, 21 for ProxylessNAS.
        e: Expand ratio of each elastic block (3, 4 or 6).
        d: Depth of each stage (2, 3 or 4): a stage runs its first ``d`` blocks. MobileNetV3 has 5 stages;
            ProxylessNAS has 6, the last always 1.
        r: Input resolution (square images).

    Construction checks the elastic choices; whether ``r`` is in a given supernet's resolution list is
    checked by :meth:`ArchSpace.validate`, because that list depends on the width multiplier.
    """

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int = 224

    def __post_init__(self) -> None:
        layout = _layout_with_stages(self.d)
        object.__setattr__(self, "ks", _check_list("ks", self.ks, layout.n_blocks, KERNEL_SIZES,
                                                   "one kernel size per elastic block"))
        object.__setattr__(self, "e", _check_list("e", self.e, layout.n_blocks, EXPAND_RATIOS,
                                                  "one expand ratio per elastic block"))
        object.__setattr__(self, "d", _check_depths(self.d, layout, DEPTHS))
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ArchError(f"r = {self.r!r} is not a resolution; expected a positive int such as 224")

    # --- the part that defines the network -------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        return _layout_with_stages(self.d)

    @cached_property
    def active_blocks(self) -> tuple[int, ...]:
        """Indices (0..19, or 0..20) of the elastic blocks that the depths keep, in network order."""
        layout = self.layout
        return tuple(layout.stage_start(s) + j for s, depth in enumerate(self.d) for j in range(depth))

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
            config = json_loads(text)
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
    """The choices of one supernet: elastic kernel, expand ratio and depth, its resolution list, and its layout
    (which family's blocks and stages)."""

    resolutions: tuple[int, ...]
    kernel_sizes: tuple[int, ...] = KERNEL_SIZES
    expand_ratios: tuple[int, ...] = EXPAND_RATIOS
    depths: tuple[int, ...] = DEPTHS
    layout: Layout = MOBILENETV3_LAYOUT

    @classmethod
    def for_width(cls, width_mult: float, layout: Layout = MOBILENETV3_LAYOUT) -> ArchSpace:
        """OFA's resolution lists: 128..224 step 4 for w1.0 (and smaller widths), 160..224 for MobileNetV3 w1.2;
        128..224 for ProxylessNAS at any width (its released GPU and CPU nets run at 128 to 208)."""
        low = 160 if width_mult >= 1.2 and layout == MOBILENETV3_LAYOUT else 128
        return cls(resolutions=tuple(range(low, 225, 4)), layout=layout)

    @property
    def n_stages(self) -> int:
        return self.layout.n_stages

    @property
    def n_blocks(self) -> int:
        return self.layout.n_blocks

    def stage_depths(self, stage: int) -> tuple[int, ...]:
        return self.layout.depth_choices(stage, self.depths)

    @property
    def fixed_depths(self) -> dict[int, int]:
        """The stages that are not elastic, with their one depth (ProxylessNAS's last stage: 1)."""
        return {s: self.layout.stage_blocks[s] for s in range(self.n_stages) if self.layout.is_fixed(s, self.depths)}

    @property
    def size_per_resolution(self) -> int:
        """Distinct networks at one resolution: (9^2 + 9^3 + 9^4)^5 for the MobileNetV3 space."""
        per_block = len(self.kernel_sizes) * len(self.expand_ratios)
        size = 1
        for s in range(self.n_stages):
            size *= sum(per_block**depth for depth in self.stage_depths(s))
        return size

    @property
    def size(self) -> int:
        return self.size_per_resolution * len(self.resolutions)

    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` if it lies in this space, else raise :class:`ArchError` naming the field."""
        if arch.layout != self.layout:
            raise ArchError(f"the arch has {len(arch.d)} stages and {len(arch.ks)} blocks, a {arch.layout.family} "
                            f"arch, but this supernet is {self.layout.family} ({self.n_stages} stages, "
                            f"{self.n_blocks} blocks)")
        _check_list("ks", arch.ks, self.n_blocks, self.kernel_sizes, "one kernel size per elastic block")
        _check_list("e", arch.e, self.n_blocks, self.expand_ratios, "one expand ratio per elastic block")
        _check_depths(arch.d, self.layout, self.depths)
        if arch.r not in self.resolutions:
            rs = self.resolutions
            steps = {b - a for a, b in itertools.pairwise(rs)}
            listed = f"{rs[0]}..{rs[-1]} step {steps.pop()}" if len(rs) > 8 and len(steps) == 1 else \
                ", ".join(map(str, rs))
            raise ArchError(f"r = {arch.r} is not in this supernet's resolution list: {listed}")
        return arch

    def sample(self, rng: random.Random | int | None = None) -> Arch:
        """One uniformly random arch; an int seed makes it reproducible."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        return Arch(
            ks=tuple(rng.choice(self.kernel_sizes) for _ in range(self.n_blocks)),
            e=tuple(rng.choice(self.expand_ratios) for _ in range(self.n_blocks)),
            d=tuple(rng.choice(self.stage_depths(s)) for s in range(self.n_stages)),
            r=rng.choice(self.resolutions),
        )

    def samples(self, n: int, seed: int | None = None) -> Iterator[Arch]:
        rng = random.Random(seed)
        for _ in range(n):
            yield self.sample(rng)

    def uniform(self, ks: int, e: int, d: int, r: int = 224) -> Arch:
        """The arch with one kernel, expand ratio and depth everywhere (e.g. K3/E3/D4); a stage that is not
        elastic keeps its own depth."""
        fixed = self.fixed_depths
        depths = tuple(fixed.get(s, d) for s in range(self.n_stages))
        return self.validate(Arch(ks=(ks,) * self.n_blocks, e=(e,) * self.n_blocks, d=depths, r=r))
