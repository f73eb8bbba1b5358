"""Lookup-table units: OFA's exact keys (checked against the released Note10 tables), modules, and chaining."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import yaml

from supernet import Arch, ArchError, ArchSpace, OFAMobileNetV3
from supernet.unit_modules import GlobalAvgPool, units_from_subnet
from supernet.units import Unit, UnitError, all_units, units_of

RELEASE = Path(__file__).resolve().parent / "data" / "ofa-release" / "note10"
RELEASED_RESOLUTIONS = (160, 176, 192, 208, 224)


@pytest.fixture(scope="module")
def released_keys() -> dict[int, set[str]]:
    """The key set of each released w1.2 Note10 table."""
    return {r: set(yaml.safe_load((RELEASE / f"{r}_lookup_table.yaml").read_text())) for r in RELEASED_RESOLUTIONS}


# --- keys against the released tables --------------------------------------------------------------------
@pytest.mark.parametrize("r", RELEASED_RESOLUTIONS)
def test_all_units_give_the_released_table_keys(released_keys, r):
    """For w1.2 at one resolution, all_units is exactly the released table's 96 rows."""
    units = all_units(1.2, [r])
    keys = [u.key for u in units]
    assert len(keys) == len(set(keys)) == 96
    assert set(keys) == released_keys[r], sorted(set(keys) ^ released_keys[r])


def test_units_of_sum_is_covered_by_the_released_tables(released_keys):
    """Every row of a random w1.2 arch is in its resolution's table, one per layer, in network order."""
    for i, arch in enumerate(ArchSpace.for_width(1.2).samples(30, seed=1)):
        arch = arch.with_resolution(RELEASED_RESOLUTIONS[i % len(RELEASED_RESOLUTIONS)])
        units = units_of(arch, width_mult=1.2)
        assert len(units) == 2 + sum(arch.d) + 4
        assert [u.kind for u in units] == ["Conv"] + ["expanded_conv"] * (1 + sum(arch.d)) + [
            "Conv_1", "AvgPool2D", "Conv_2", "Logits"]
        assert {u.key for u in units} <= released_keys[arch.r]
        for a, b in itertools.pairwise(units):
            assert b.input_shape[1:] == a.output_shape[1:], (a.key, b.key)


def test_all_units_w10_counts():
    """w1.0 over its 25 resolutions: 96 rows each, 1,257 distinct (deep layers repeat across resolutions)."""
    space = ArchSpace.for_width(1.0)
    assert len(space.resolutions) == 25
    assert all(len(all_units(1.0, [r])) == 96 for r in space.resolutions)
    # NOTE: e.g. 220 and 224 both reach 14x14 by stage 3, and the head is the same at every resolution.
    assert len(all_units(1.0)) == 1257


def test_units_of_rejects_a_resolution_outside_the_space():
    """w1.2 tables start at 160: 128 is refused with the space's error."""
    arch = ArchSpace.for_width(1.0).uniform(3, 3, 2, r=128)
    with pytest.raises(ArchError, match="r = 128"):
        units_of(arch, width_mult=1.2)


# --- parsing ---------------------------------------------------------------------------------------------
def test_every_key_parses_back_to_its_unit():
    """from_key(u.key) == u for every row of both spaces."""
    for width in (1.0, 1.2):
        for unit in all_units(width, n_classes=10):
            assert Unit.from_key(unit.key) == unit


@pytest.mark.parametrize(("key", "problem"), [
    ("Dense-input:1x1x8-output:10", "unknown kind 'Dense'"),
    ("Conv-input:160x160x3", "fields"),
    ("Conv-input:160x160x4-output:80x80x24", "in_chs must be 3"),
    ("Conv-input:160x160x3-output:81x81x24", "maps 160 to 80"),
    ("Conv_1-input:5x6x192-output:5x6x1152", "not square"),
    ("expanded_conv-input:20x20x48-output:20x20x48-expand:144-kernel:3-stride:1-idskip:2-se:1-hs:0", "0 or 1"),
    ("expanded_conv-input:40x40x32-output:20x20x48-expand:96-kernel:3-stride:2-idskip:1-se:1-hs:0", "idskip"),
    ("expanded_conv-input:20x20x48-output:20x20x48-kernel:3-expand:144-stride:1-idskip:1-se:1-hs:0", "fields"),
    ("Logits-input:1x1x1536-output:01000", "canonical form"),
    ("AvgPool2D-input:5x5x1152-output:1x1x1000", "same channels"),
])
def test_bad_keys_name_the_key_and_the_problem(key, problem):
    """A malformed key raises UnitError with the key and what is wrong."""
    with pytest.raises(UnitError) as info:
        Unit.from_key(key)
    assert problem in str(info.value)
    assert repr(key) in str(info.value)


# --- modules ---------------------------------------------------------------------------------------------
def _sample_units() -> list[Unit]:
    arch = Arch(ks=(3, 5, 7, 3) * 5, e=(3, 4, 6, 6) * 5, d=(2, 3, 2, 2, 2), r=128)
    return units_of(arch, width_mult=1.0, n_classes=10)


def test_built_units_have_the_key_shapes():
    """Each built unit maps input_shape to output_shape."""
    for unit in _sample_units():
        with torch.no_grad():
            y = unit.build()(torch.randn(unit.input_shape))
        assert tuple(y.shape) == unit.output_shape, unit.key


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    """Same seed, same weights; another seed, other weights; the caller's RNG stream is unchanged."""
    unit = Unit.from_key("expanded_conv-input:20x20x48-output:20x20x48-expand:144-kernel:5-stride:1-idskip:1-se:1-hs:0")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = unit.build(seed=0).state_dict(), unit.build(seed=0).state_dict(), unit.build(seed=1).state_dict()
    assert torch.equal(torch.rand(3), expected)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv.depth_conv.bn.running_var"], c["conv.depth_conv.bn.running_var"])
    assert not unit.build().training


# --- cutting a subnet into units -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def supernet_w10() -> OFAMobileNetV3:
    torch.manual_seed(0)
    return OFAMobileNetV3(width_mult=1.0, n_classes=10).eval()


@pytest.mark.parametrize("seed", range(4))
def test_units_of_a_subnet_chain_into_the_subnet(supernet_w10, seed):
    """Running the cut units in order is exactly subnet(x); their keys are units_of(arch) and build() matches."""
    arch = ArchSpace.for_width(1.0).sample(seed).with_resolution((128, 160, 192, 224)[seed])
    subnet = supernet_w10.extract(arch).eval()
    pairs = units_from_subnet(subnet, arch.r)
    assert [u.key for u, _ in pairs] == [u.key for u in units_of(arch, 1.0, n_classes=10)]
    x = torch.randn(2, 3, arch.r, arch.r)
    with torch.no_grad():
        y = x
        for _unit, module in pairs:
            y = module(y)
        assert torch.equal(y, subnet(x))
    for unit, module in pairs:
        built = {k: v.shape for k, v in unit.build().state_dict().items()}
        assert built == {k: v.shape for k, v in module.state_dict().items()}, unit.key


def test_units_of_a_w12_subnet_match_the_released_keys(released_keys):
    """A w1.2 subnet cut into units gives rows of the released table for its resolution."""
    arch = ArchSpace.for_width(1.2).sample(7).with_resolution(176)
    subnet = OFAMobileNetV3(width_mult=1.2).eval().extract(arch)
    keys = [u.key for u, _ in units_from_subnet(subnet, arch.r)]
    assert keys == [u.key for u in units_of(arch, 1.2)]
    assert set(keys) <= released_keys[176]


def test_built_pool_computes_the_networks_mean():
    """The AvgPool2D row's module (a full-window AvgPool2d, for TF-Lite) equals the head's mean over HxW."""
    unit = Unit.pool(7, 960)
    x = torch.randn(unit.input_shape)
    torch.testing.assert_close(unit.build()(x), GlobalAvgPool()(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("r", [128, 160, 192])
def test_a_unit_at_another_size_is_its_row_in_that_resolutions_table(r):
    """The same subnet at two resolutions: each unit moved to the other's input size is that one's unit, so files
    shared across resolutions (TF-Lite) serve exactly the rows they stand for; 1x1 head layers stay as they are."""
    arch = ArchSpace.for_width(1.0).sample(3)
    here, there = units_of(arch.with_resolution(r), 1.0), units_of(arch.with_resolution(224), 1.0)
    assert [unit.at_size(other.in_size) for unit, other in zip(here, there, strict=True)] == there
    assert [unit.spatial for unit in here].count(False) == 2  # feature mix and classifier
