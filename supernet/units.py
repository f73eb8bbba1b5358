"""The units that a latency lookup-table row times, named by OFA's table keys.

A network's table-predicted latency is the sum over its units: first conv, every active block (the fixed block 0
included), then the head: final expand, global pool, feature mix and classifier for MobileNetV3; feature mix
(``Conv_1``, on the feature map) and pool-and-classifier (``Logits``) for ProxylessNAS. :class:`Unit` is one row;
its ``key`` is the exact string of OFA's tables (the released ``{r}_lookup_table.yaml`` for MobileNetV3, the format
of the reference's ``ProxylessNASLatencyTable`` for ProxylessNAS, whose blocks give the expand ratio and no SE or
h-swish flags), so our tables and theirs interchange. Units are
built alone (seeded weights) for profiling, or cut out of an extracted subnet to check that they chain into it;
the torch modules for both live in :mod:`supernet.unit_modules`, so reading and planning rows needs no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from .arch import DEPTHS, EXPAND_RATIOS, KERNEL_SIZES, Arch, ArchSpace
from .channels import make_divisible
from .errors import OFAProfileError
from .plan import FAMILIES, MOBILENETV3, BlockPlan, Family, NetPlan, feature_size

__all__ = ["UNIT_KINDS", "Unit", "UnitError", "all_units", "parse_key", "units_of"]

UNIT_KINDS = ("Conv", "expanded_conv", "Conv_1", "AvgPool2D", "Conv_2", "Logits")
_BLOCK_FIELDS = ("input", "output", "expand", "kernel", "stride", "idskip", "se", "hs")
_KEY_FORMATS = {
    "Conv": "Conv-input:{r}x{r}x3-output:{h}x{h}x{C}",
    "expanded_conv": "expanded_conv-input:{h}x{h}x{cin}-output:{h2}x{h2}x{cout}-expand:{mid}-kernel:{k}-stride:{s}"
                     "-idskip:{0|1}-se:{0|1}-hs:{0|1}",
    "Conv_1": "Conv_1-input:{h}x{h}x{C}-output:{h}x{h}x{C2}",
    "AvgPool2D": "AvgPool2D-input:{h}x{h}x{C}-output:1x1x{C}",
    "Conv_2": "Conv_2-input:1x1x{C}-output:1x1x{C2}",
    "Logits": "Logits-input:1x1x{C}-output:{n_classes}",
}
_PROXYLESS_KEY_FORMATS = {
    **_KEY_FORMATS,
    "expanded_conv": "expanded_conv-input:{h}x{h}x{cin}-output:{h2}x{h2}x{cout}-expand:{ratio}-kernel:{k}"
                     "-stride:{s}-idskip:{0|1}",
    "Conv_1": "Conv_1-input:{h}x{h}x{C}-output:{h}x{h}x{C2} (the feature mix)",
    "Logits": "Logits-input:{h}x{h}x{C}-output:{n_classes} (pool and classifier)",
}
_PROXYLESS_KINDS = ("Conv", "expanded_conv", "Conv_1", "Logits")
# The fixed parts of OFA's networks that a key does not spell out.
FIRST_CONV_KERNEL, FIRST_CONV_STRIDE = 3, 2
_FIRST_BLOCK_KERNEL = 3


class UnitError(OFAProfileError, ValueError):
    """A unit or table key that is not a valid OFA table row; the message names the key."""


# --- the unit ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One lookup-table row: a layer or block with its input and output sizes.

    Build them with the class methods (:meth:`first_conv`, :meth:`block`, ...) or :meth:`from_key`; the fields
    mirror the key. Sizes are square feature maps; ``out_size`` of ``Logits`` is 1 (its output is flat).

    Args:
        kind: One of :data:`UNIT_KINDS`.
        in_size: Input height (= width).
        in_chs: Input channels.
        out_size: Output height (= width).
        out_chs: Output channels (classes for ``Logits``).
        mid_chs: Middle channels of a block (its input channels for the expand-free block 0); 0 otherwise.
        kernel_size: Depthwise kernel of a block; the conv kernel or pool window otherwise.
        stride: Stride of the block or conv.
        idskip: The block has an identity shortcut.
        se: The block has squeeze-and-excite.
        hs: The block uses h-swish (else ReLU, or ReLU6 in ProxylessNAS).
        family: The name of the family the row belongs to (``mobilenetv3`` or ``proxyless``): it decides the
            key's format and the layers' activations.
    """

    kind: str
    in_size: int
    in_chs: int
    out_size: int
    out_chs: int
    mid_chs: int = 0
    kernel_size: int = 1
    stride: int = 1
    idskip: bool = False
    se: bool = False
    hs: bool = False
    family: str = MOBILENETV3.name

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise UnitError(f"unknown space {self.family!r} of a unit; expected one of {', '.join(FAMILIES)}")
        kinds = _kinds(self.family)
        if self.kind not in kinds:
            raise UnitError(f"unknown {self.family} unit kind {self.kind!r}; expected one of {', '.join(kinds)}")
        if self.family != MOBILENETV3.name and (self.se or self.hs):
            raise UnitError(f"{self.family} blocks have no squeeze-and-excite or h-swish")
        for name in ("in_size", "in_chs", "out_size", "out_chs", "kernel_size", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UnitError(f"{self.kind} unit: {name} = {value!r} must be a positive int")
        problem = _SHAPE_CHECKS[self.kind](self) or self._expand_problem()
        if problem:
            raise UnitError(f"{self.kind} unit {self._fields_text()}: {problem}")

    def _fields_text(self) -> str:
        return (f"(in {self.in_size}x{self.in_size}x{self.in_chs}, out {self.out_size}x{self.out_size}x"
                f"{self.out_chs}, mid {self.mid_chs}, k{self.kernel_size}, s{self.stride})")

    def _expand_problem(self) -> str | None:
        if self.kind == "expanded_conv" and self.family != MOBILENETV3.name and self.expand_ratio is None:
            return f"mid_chs {self.mid_chs} is no expand ratio of in_chs {self.in_chs} (1, 3, 4 or 6)"
        return None

    @property
    def expand_ratio(self) -> int | None:
        """The block's expand ratio (1 for the expand-free block 0), which ProxylessNAS keys give."""
        if self.mid_chs == self.in_chs:
            return 1
        return next((e for e in EXPAND_RATIOS if make_divisible(round(self.in_chs * e)) == self.mid_chs), None)

    # --- constructors -------------------------------------------------------------------------------------
    @classmethod
    def first_conv(cls, resolution: int, out_chs: int, family: str = MOBILENETV3.name) -> Unit:
        return cls("Conv", resolution, 3, feature_size(resolution, FIRST_CONV_STRIDE), out_chs,
                   kernel_size=FIRST_CONV_KERNEL, stride=FIRST_CONV_STRIDE, family=family)

    @classmethod
    def block(cls, in_size: int, in_chs: int, out_chs: int, mid_chs: int, kernel_size: int, stride: int,
              idskip: bool, se: bool, hs: bool, family: str = MOBILENETV3.name) -> Unit:
        return cls("expanded_conv", in_size, in_chs, feature_size(in_size, stride), out_chs, mid_chs, kernel_size,
                   stride, idskip, se, hs, family)

    @classmethod
    def from_block_plan(cls, b: BlockPlan, family: str = MOBILENETV3.name) -> Unit:
        return cls.block(b.in_size, b.in_chs, b.out_chs, b.mid_chs, b.kernel_size, b.stride, b.has_shortcut,
                         b.use_se, b.act_func == "h_swish", family)

    @classmethod
    def final_expand(cls, size: int, in_chs: int, out_chs: int) -> Unit:
        return cls("Conv_1", size, in_chs, size, out_chs)

    @classmethod
    def pool(cls, size: int, chs: int) -> Unit:
        return cls("AvgPool2D", size, chs, 1, chs, kernel_size=size)

    @classmethod
    def feature_mix(cls, in_chs: int, out_chs: int) -> Unit:
        return cls("Conv_2", 1, in_chs, 1, out_chs)

    @classmethod
    def logits(cls, in_chs: int, n_classes: int) -> Unit:
        return cls("Logits", 1, in_chs, 1, n_classes)

    @classmethod
    def proxyless_feature_mix(cls, size: int, in_chs: int, out_chs: int) -> Unit:
        """ProxylessNAS's ``Conv_1``: the 1x1 feature mix, on the feature map before the pool."""
        return cls("Conv_1", size, in_chs, size, out_chs, family="proxyless")

    @classmethod
    def proxyless_logits(cls, size: int, in_chs: int, n_classes: int) -> Unit:
        """ProxylessNAS's ``Logits``: global pool and classifier, from the feature map."""
        return cls("Logits", size, in_chs, 1, n_classes, family="proxyless")

    @property
    def plan_family(self) -> Family:
        return FAMILIES[self.family]

    # --- the key ------------------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """OFA's lookup-table key for this row."""
        src = f"input:{self.in_size}x{self.in_size}x{self.in_chs}"
        dst = f"output:{self.out_size}x{self.out_size}x{self.out_chs}"
        if self.kind == "expanded_conv" and self.family != MOBILENETV3.name:
            return (f"expanded_conv-{src}-{dst}-expand:{self.expand_ratio}-kernel:{self.kernel_size}"
                    f"-stride:{self.stride}-idskip:{int(self.idskip)}")
        if self.kind == "expanded_conv":
            return (f"expanded_conv-{src}-{dst}-expand:{self.mid_chs}-kernel:{self.kernel_size}-stride:{self.stride}"
                    f"-idskip:{int(self.idskip)}-se:{int(self.se)}-hs:{int(self.hs)}")
        if self.kind == "Logits":
            dst = f"output:{self.out_chs}"
        return f"{self.kind}-{src}-{dst}"

    @classmethod
    def from_key(cls, key: str, family: str = MOBILENETV3.name) -> Unit:
        """Parse an OFA table key of a space (``family``); the error names the key and the format its kind
        expects."""
        if not isinstance(key, str):
            raise UnitError(f"a unit key must be a str, got {type(key).__name__}")
        if family not in FAMILIES:
            raise UnitError(f"unknown space {family!r}; expected one of {', '.join(FAMILIES)}")
        formats = _KEY_FORMATS if family == MOBILENETV3.name else _PROXYLESS_KEY_FORMATS
        kind, *fields = key.split("-")
        if kind not in _kinds(family):
            raise UnitError(f"bad {family} unit key {key!r}: unknown kind {kind!r}; expected one of "
                            f"{', '.join(_kinds(family))}")
        try:
            unit = _parse_fields(kind, fields, family)
        except (ValueError, KeyError, IndexError) as err:
            raise UnitError(f"bad unit key {key!r} ({err}); expected {formats[kind]}") from None
        if unit.key != key:  # e.g. leading zeros, "idskip:2", or a non-square map
            raise UnitError(f"bad unit key {key!r}: not in canonical form {unit.key!r}; expected {formats[kind]}")
        return unit

    # --- shapes and modules -------------------------------------------------------------------------------
    @property
    def spatial(self) -> bool:
        """Its input is a feature map whose size follows the resolution (all but MobileNetV3's 1x1 head layers)."""
        return self.kind in ("Conv", "expanded_conv", "Conv_1", "AvgPool2D") or (
            self.kind == "Logits" and self.family != MOBILENETV3.name)

    def at_size(self, in_size: int) -> Unit:
        """The same layer on an input of ``in_size`` (its row in another resolution's table); 1x1 layers stay."""
        if not self.spatial:
            return self
        if self.kind == "AvgPool2D":
            return replace(self, in_size=in_size, kernel_size=in_size)
        if self.kind == "Logits":
            return replace(self, in_size=in_size)
        out_size = in_size if self.kind == "Conv_1" else feature_size(in_size, self.stride)
        return replace(self, in_size=in_size, out_size=out_size)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """NCHW shape of one input (batch 1)."""
        return (1, self.in_chs, self.in_size, self.in_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the output for batch 1: NCHW, or ``(1, n_classes)`` for ``Logits``."""
        if self.kind == "Logits":
            return (1, self.out_chs)
        return (1, self.out_chs, self.out_size, self.out_size)


def parse_key(key: str) -> Unit:
    """A table key in whichever space's format it is written: MobileNetV3's, else ProxylessNAS's.

    The first conv and ``Conv_1`` keys read the same in both; their fields (what a table's columns hold) are the
    same too, so reading them as MobileNetV3's loses nothing there. Which layers they stand for is the table's
    ``space`` (its sidecar).
    """
    try:
        return Unit.from_key(key)
    except UnitError as mobilenet_error:
        try:
            return Unit.from_key(key, "proxyless")
        except UnitError as proxyless_error:
            looks_proxyless = isinstance(key, str) and key.startswith("expanded_conv-") and "-se:" not in key
            raise (proxyless_error if looks_proxyless else mobilenet_error) from None


# --- key parsing and shape rules -------------------------------------------------------------------------
def _parse_map(text: str) -> tuple[int, int]:
    h, w, c = (int(v) for v in text.split("x"))
    if h != w:
        raise ValueError(f"feature map {text} is not square")
    return h, c


def _kinds(family: str) -> tuple[str, ...]:
    return UNIT_KINDS if family == MOBILENETV3.name else _PROXYLESS_KINDS


def _parse_fields(kind: str, fields: Sequence[str], family: str = MOBILENETV3.name) -> Unit:
    pairs = [field.split(":", 1) for field in fields]
    names = [p[0] for p in pairs]
    proxyless_block = kind == "expanded_conv" and family != MOBILENETV3.name
    block_fields = list(_BLOCK_FIELDS[:-2] if proxyless_block else _BLOCK_FIELDS)
    expected = block_fields if kind == "expanded_conv" else ["input", "output"]
    if names != expected:
        raise ValueError(f"fields {names}, expected {expected}")
    values = dict(pairs)
    in_size, in_chs = _parse_map(values["input"])
    if kind == "Logits":
        return Unit(kind, in_size, in_chs, 1, int(values["output"]), family=family)
    out_size, out_chs = _parse_map(values["output"])
    if proxyless_block:
        idskip, ratio = int(values["idskip"]), int(values["expand"])
        if idskip not in (0, 1):
            raise ValueError(f"idskip must be 0 or 1, got {idskip}")
        mid = in_chs if ratio == 1 else make_divisible(round(in_chs * ratio))
        return Unit(kind, in_size, in_chs, out_size, out_chs, mid, int(values["kernel"]), int(values["stride"]),
                    bool(idskip), family=family)
    if kind == "expanded_conv":
        flags = {name: int(values[name]) for name in ("idskip", "se", "hs")}
        if any(v not in (0, 1) for v in flags.values()):
            raise ValueError(f"idskip, se and hs must be 0 or 1, got {flags}")
        return Unit(kind, in_size, in_chs, out_size, out_chs, int(values["expand"]), int(values["kernel"]),
                    int(values["stride"]), bool(flags["idskip"]), bool(flags["se"]), bool(flags["hs"]))
    if kind == "Conv":
        return Unit(kind, in_size, in_chs, out_size, out_chs, kernel_size=FIRST_CONV_KERNEL,
                    stride=FIRST_CONV_STRIDE, family=family)
    if kind == "AvgPool2D":
        return Unit(kind, in_size, in_chs, out_size, out_chs, kernel_size=in_size)
    return Unit(kind, in_size, in_chs, out_size, out_chs, family=family)


def _check_conv(u: Unit) -> str | None:
    if u.in_chs != 3:
        return f"the first conv reads RGB images: in_chs must be 3, not {u.in_chs}"
    if (u.kernel_size, u.stride) != (FIRST_CONV_KERNEL, FIRST_CONV_STRIDE):
        return f"the first conv is {FIRST_CONV_KERNEL}x{FIRST_CONV_KERNEL} stride {FIRST_CONV_STRIDE}"
    if u.out_size != feature_size(u.in_size, u.stride):
        return f"a stride-2 conv maps {u.in_size} to {feature_size(u.in_size, u.stride)}, not {u.out_size}"
    return None


def _check_block(u: Unit) -> str | None:
    if u.stride not in (1, 2):
        return "stride must be 1 or 2"
    if u.kernel_size % 2 == 0:
        return "the depthwise kernel size must be odd"
    if u.mid_chs < 1:
        return "mid_chs (the key's 'expand') must be a positive int"
    if u.out_size != feature_size(u.in_size, u.stride):
        return f"stride {u.stride} maps {u.in_size} to {feature_size(u.in_size, u.stride)}, not {u.out_size}"
    if u.idskip and (u.stride != 1 or u.in_chs != u.out_chs):
        return "an identity shortcut (idskip) needs stride 1 and in_chs == out_chs"
    return None


def _check_same_size(u: Unit) -> str | None:
    return None if u.in_size == u.out_size else "a 1x1 conv keeps the feature size"


def _check_pool(u: Unit) -> str | None:
    if u.out_size != 1 or u.in_chs != u.out_chs:
        return "global pooling gives 1x1 with the same channels"
    return None if u.kernel_size == u.in_size else "the pool window is the whole feature map"


def _check_head(u: Unit) -> str | None:
    if u.kind == "Logits" and u.family != MOBILENETV3.name:
        return None if u.out_size == 1 else "pool and classifier give a flat output"
    return None if u.in_size == u.out_size == 1 else "the feature mix and classifier run on the pooled 1x1 map"


_SHAPE_CHECKS: dict[str, Callable[[Unit], str | None]] = {
    "Conv": _check_conv,
    "expanded_conv": _check_block,
    "Conv_1": _check_same_size,
    "AvgPool2D": _check_pool,
    "Conv_2": _check_head,
    "Logits": _check_head,
}


# --- units of a network and of the space -----------------------------------------------------------------
def units_of(arch: Arch, width_mult: float = 1.0, n_classes: int = 1000) -> list[Unit]:
    """The table rows of one subnet, in network order; its predicted latency is the sum of their entries.

    The arch's length says its family (20 blocks: MobileNetV3, 21: ProxylessNAS)."""
    ArchSpace.for_width(width_mult, arch.layout).validate(arch)
    plan = NetPlan.for_arch(arch, width_mult)
    family = plan.family.name
    size = feature_size(arch.r, FIRST_CONV_STRIDE)
    c0, c1 = plan.first_conv_chs, plan.first_block_chs
    units = [
        Unit.first_conv(arch.r, c0, family),
        Unit.block(size, c0, c1, c0, _FIRST_BLOCK_KERNEL, 1, idskip=plan.first_block_has_shortcut, se=False,
                   hs=False, family=family),
    ]
    units.extend(Unit.from_block_plan(b, family) for b in plan.blocks(arch))
    final = plan.final_size(arch.r)
    if plan.family.mixes_before_pool:
        return [*units, Unit.proxyless_feature_mix(final, plan.last_block_chs, plan.feature_mix_chs),
                Unit.proxyless_logits(final, plan.feature_mix_chs, n_classes)]
    return [
        *units,
        Unit.final_expand(final, plan.last_block_chs, plan.final_expand_chs),
        Unit.pool(final, plan.final_expand_chs),
        Unit.feature_mix(plan.final_expand_chs, plan.feature_mix_chs),
        Unit.logits(plan.feature_mix_chs, n_classes),
    ]


def all_units(width_mult: float = 1.0, resolutions: Iterable[int] | None = None, n_classes: int = 1000,
              family: Family = MOBILENETV3) -> list[Unit]:
    """Every distinct table row of the space, in network order per resolution (a row shared by resolutions once).

    Args:
        width_mult: Width multiplier of the supernet.
        resolutions: Resolutions to cover; default: the supernet's whole resolution list.
        n_classes: Classifier outputs.
        family: The supernet's family (:data:`supernet.plan.MOBILENETV3` or :data:`supernet.plan.PROXYLESS`).
    """
    space = ArchSpace.for_width(width_mult, family.layout)
    seen: dict[str, Unit] = {}
    for r in space.resolutions if resolutions is None else resolutions:
        # Any block of any arch has the sizes of the same position in the deepest arch, so the nine uniform
        # deepest archs (one per kernel and expand ratio) hold every row.
        per_choice = [units_of(space.uniform(k, e, max(DEPTHS), r), width_mult, n_classes)
                      for k in KERNEL_SIZES for e in EXPAND_RATIOS]
        for position in zip(*per_choice, strict=True):
            for unit in position:
                seen.setdefault(unit.key, unit)
    return list(seen.values())
