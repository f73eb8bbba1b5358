"""Lookup-table units: OFA's exact keys (checked against the released Note10 tables), modules, and chaining."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import yaml

from supernet import Arch, ArchError, ArchSpace, OFAMobileNetV3
from supernet.unit_modules import GlobalAvgPool, build_unit, units_from_subnet
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
            y = build_unit(unit)(torch.randn(unit.input_shape))
        assert tuple(y.shape) == unit.output_shape, unit.key


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    """Same seed, same weights; another seed, other weights; the caller's RNG stream is unchanged."""
    unit = Unit.from_key("expanded_conv-input:20x20x48-output:20x20x48-expand:144-kernel:5-stride:1-idskip:1-se:1-hs:0")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = (build_unit(unit, seed=seed).state_dict() for seed in (0, 0, 1))
    assert torch.equal(torch.rand(3), expected)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv.depth_conv.bn.running_var"], c["conv.depth_conv.bn.running_var"])
    assert not build_unit(unit).training


# --- cutting a subnet into units -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def supernet_w10() -> OFAMobileNetV3:
    torch.manual_seed(0)
    return OFAMobileNetV3(width_mult=1.0, n_classes=10).eval()


def _assert_units_chain(supernet, arch, width: float) -> list:
    """Running the cut units in order is exactly subnet(x); they are units_of(arch), and each built alone has its
    layer's parameter shapes. Gives the built modules."""
    subnet = supernet.extract(arch).eval()
    pairs = units_from_subnet(subnet, arch.r)
    assert [u for u, _ in pairs] == units_of(arch, width, n_classes=10)
    x = torch.randn(2, 3, arch.r, arch.r)
    with torch.no_grad():
        y = x
        for _unit, module in pairs:
            y = module(y)
        assert torch.equal(y, subnet(x))
    built = [build_unit(unit) for unit, _ in pairs]
    for (unit, module), alone in zip(pairs, built, strict=True):
        shapes = {k: v.shape for k, v in alone.state_dict().items()}
        assert shapes == {k: v.shape for k, v in module.state_dict().items()}, unit.key
    return built


@pytest.mark.parametrize("seed", range(4))
def test_units_of_a_subnet_chain_into_the_subnet(supernet_w10, seed):
    """A MobileNetV3 subnet cut into its rows runs as the subnet does."""
    arch = ArchSpace.for_width(1.0).sample(seed).with_resolution((128, 160, 192, 224)[seed])
    _assert_units_chain(supernet_w10, arch, 1.0)


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
    torch.testing.assert_close(build_unit(unit)(x), GlobalAvgPool()(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("r", [128, 160, 192])
def test_a_unit_at_another_size_is_its_row_in_that_resolutions_table(r):
    """The same subnet at two resolutions: each unit moved to the other's input size is that one's unit, so files
    shared across resolutions (TF-Lite) serve exactly the rows they stand for; 1x1 head layers stay as they are."""
    arch = ArchSpace.for_width(1.0).sample(3)
    here, there = units_of(arch.with_resolution(r), 1.0), units_of(arch.with_resolution(224), 1.0)
    assert [unit.at_size(other.in_size) for unit, other in zip(here, there, strict=True)] == there
    assert [unit.spatial for unit in here].count(False) == 2  # feature mix and classifier


# --- the ProxylessNAS space ------------------------------------------------------------------------------
class _RecordingTable(dict):
    """A lookup table that answers 0 ms for any key and remembers which keys were asked, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def __getitem__(self, key: str) -> dict[str, float]:
        self.asked.append(key)
        return {"mean": 0.0}


@pytest.fixture(scope="module")
def proxyless_w13():
    from supernet import OFAProxylessNASNets

    torch.manual_seed(0)
    return OFAProxylessNASNets(width_mult=1.3, n_classes=10).eval()


@pytest.mark.parametrize("seed", range(3))
def test_proxyless_keys_are_those_the_reference_latency_table_asks_for(proxyless_w13, seed):
    """The reference's ProxylessNASLatencyTable, asked for a subnet of the w1.3 supernet (its net.config, which
    equals the reference's: tests/test_supernet_equivalence.py), queries exactly our units' keys in order: expand
    ratios, no SE or h-swish flags, Conv_1 the feature mix and Logits from the map."""
    from tests.ofa_oracle import reference_latency_tables

    arch = proxyless_w13.space.sample(seed).with_resolution((128, 172, 224)[seed])
    table = reference_latency_tables().ProxylessNASLatencyTable.__new__(
        reference_latency_tables().ProxylessNASLatencyTable)
    table.lut = _RecordingTable()
    table.predict_network_latency_given_config(proxyless_w13.extract(arch).config, arch.r)
    units = units_of(arch, 1.3, n_classes=10)
    assert table.lut.asked == [u.key for u in units]
    assert [u.kind for u in units] == ["Conv"] + ["expanded_conv"] * (1 + sum(arch.d)) + ["Conv_1", "Logits"]
    assert all(Unit.from_key(u.key, "proxyless") == u for u in units)


@pytest.mark.parametrize("seed", range(3))
def test_proxyless_units_chain_into_the_subnet(proxyless_w13, seed):
    """Cut units of a ProxylessNAS subnet run into subnet(x); built alone they use ReLU6 only."""
    arch = proxyless_w13.space.sample(seed + 10).with_resolution((128, 160, 208)[seed])
    for module in _assert_units_chain(proxyless_w13, arch, 1.3):
        acts = {type(m).__name__ for m in module.modules()} & {"ReLU", "ReLU6", "Hardswish"}
        assert acts <= {"ReLU6"}, acts


def test_proxyless_space_rows():
    """w1.3 at one resolution: block 0, and 9 choices at each stage's first block and at its later blocks (which
    share one shape), in 5 stages of 4 and one of 1: 100 block rows, with the first conv and the two head rows;
    moved to another size each spatial row is that table's row (Logits too: it pools the map)."""
    from supernet.plan import PROXYLESS

    units = all_units(1.3, [224], family=PROXYLESS)
    assert len(units) == len({u.key for u in units})
    assert {u.kind for u in units} == {"Conv", "expanded_conv", "Conv_1", "Logits"}
    assert sum(u.kind == "expanded_conv" for u in units) == 1 + 9 * (5 * 2 + 1) == 100
    assert len(units) == 103
    arch = ArchSpace.for_width(1.3, PROXYLESS.layout).sample(4)
    here, there = units_of(arch.with_resolution(160), 1.3), units_of(arch.with_resolution(224), 1.3)
    assert [unit.at_size(other.in_size) for unit, other in zip(here, there, strict=True)] == there
    assert all(unit.spatial for unit in here)
    with pytest.raises(UnitError, match="unknown proxyless unit kind 'AvgPool2D'"):
        Unit.pool(7, 960).__class__("AvgPool2D", 7, 8, 1, 8, kernel_size=7, family="proxyless")
    with pytest.raises(UnitError, match="fields"):
        Unit.from_key("expanded_conv-input:20x20x48-output:20x20x48-expand:144-kernel:3-stride:1-idskip:1-se:0-hs:0",
                      "proxyless")
    with pytest.raises(UnitError, match="no expand ratio"):
        Unit.block(20, 48, 48, 150, 3, 1, True, False, False, family="proxyless")


def test_built_proxyless_logits_compute_the_networks_pool_and_classifier():
    """The Logits row built alone (a full-window average pool, for TF-Lite) equals the network's mean then linear."""
    from supernet.unit_modules import PooledClassifier

    unit = Unit.proxyless_logits(5, 64, 10)
    built = build_unit(unit, seed=2)
    as_in_network = PooledClassifier(built.classifier)
    x = torch.randn(unit.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(built(x), as_in_network(x), rtol=0, atol=1e-6)
