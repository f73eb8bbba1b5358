"""Arch: validation with precise errors, OFA JSON, seeded sampling, the size of the space, dedup."""

from __future__ import annotations

import json

import pytest

from supernet import Arch, ArchError, ArchSpace

KS = [3, 5, 7, 3] * 5
E = [3, 4, 6, 4] * 5
D = [2, 3, 4, 2, 3]


def test_json_round_trip_in_ofa_shape():
    """to_json writes OFA's {"ks","e","d","r"} shape and from_json reads it back."""
    arch = Arch(ks=KS, e=E, d=D, r=192)
    assert json.loads(arch.to_json()) == {"ks": KS, "e": E, "d": D, "r": [192]}
    assert Arch.from_json(arch.to_json()) == arch
    assert Arch.from_json(arch.to_json()).ks == tuple(KS)


def test_image_size_accepted():
    """Tools that write "image_size": 224 instead of "r": [224] are read too."""
    arch = Arch.from_dict({"ks": KS, "e": E, "d": D, "image_size": 176})
    assert arch.r == 176
    assert Arch.from_dict({"ks": KS, "e": E, "d": D, "r": 176, "image_size": 176}) == arch


@pytest.mark.parametrize(
    ("config", "fragments"),
    [
        ({"ks": KS[:19], "e": E, "d": D, "r": [224]}, ["ks has 19 entries", "expected 20"]),
        ({"ks": [*KS[:7], 4, *KS[8:]], "e": E, "d": D, "r": [224]}, ["ks[7] = 4", "allowed values: 3, 5, 7"]),
        ({"ks": KS, "e": [*E[:3], 5, *E[4:]], "d": D, "r": [224]}, ["e[3] = 5", "3, 4, 6"]),
        ({"ks": KS, "e": E, "d": [2, 3, 4, 5, 2], "r": [224]}, ["d[3] = 5", "2, 3, 4"]),
        ({"ks": KS, "e": E, "d": D, "r": [224, 192]}, ["exactly one resolution"]),
        ({"ks": KS, "e": E, "d": D}, ["no resolution", "\"r\": [224]"]),
        ({"ks": KS, "e": E, "r": [224]}, ["missing key(s) ['d']"]),
        ({"ks": KS, "e": E, "d": D, "r": [224], "w": 1.2}, ["unknown key(s) ['w']"]),
        ({"ks": KS, "e": E, "d": D, "r": 224, "image_size": 192}, ["two different resolutions"]),
        ({"ks": KS, "e": E, "d": D, "r": ["224"]}, ["must be an int"]),
        ({"ks": "3,5,7", "e": E, "d": D, "r": [224]}, ["ks must be a list of 20 ints"]),
        ({"ks": [3.0] * 20, "e": E, "d": D, "r": [224]}, ["ks[0] = 3.0"]),
    ],
)
def test_bad_arch_says_which_field(config, fragments):
    """Each invalid arch raises one ArchError naming the field, the index and the allowed values."""
    with pytest.raises(ArchError) as excinfo:
        Arch.from_dict(config)
    for fragment in fragments:
        assert fragment in str(excinfo.value)


def test_bad_json_is_one_clear_error():
    """Malformed JSON raises ArchError with the position and the expected shape."""
    with pytest.raises(ArchError, match=r"not valid JSON .*line 1 column \d+.*\"ks\": \[20 ints\]"):
        Arch.from_json('{"ks": [3, 5,')
    with pytest.raises(ArchError, match="must be a JSON object"):
        Arch.from_json("[1, 2, 3]")


def test_resolution_checked_against_the_supernet_space():
    """r = 128 is valid for w1.0 but not for w1.2, whose list starts at 160."""
    arch = Arch(ks=KS, e=E, d=D, r=128)
    assert ArchSpace.for_width(1.0).validate(arch) is arch
    with pytest.raises(ArchError, match=r"r = 128 .* 160\.\.224 step 4"):
        ArchSpace.for_width(1.2).validate(arch)
    with pytest.raises(ArchError, match="r = 130"):
        ArchSpace.for_width(1.0).validate(arch.with_resolution(130))


def test_space_size_is_exact():
    """(9^2 + 9^3 + 9^4)^5 networks per resolution, about 2.17e19."""
    space = ArchSpace.for_width(1.0)
    assert space.size_per_resolution == (9**2 + 9**3 + 9**4) ** 5
    assert 2.17e19 < space.size_per_resolution < 2.18e19
    assert len(space.resolutions) == 25
    assert space.size == 25 * space.size_per_resolution
    assert len(ArchSpace.for_width(1.2).resolutions) == 17


def test_sampling_is_seeded_and_valid():
    """The same seed gives the same archs; every sample lies in the space; seeds differ."""
    space = ArchSpace.for_width(1.2)
    first = list(space.samples(50, seed=3))
    assert first == list(space.samples(50, seed=3))
    assert first != list(space.samples(50, seed=4))
    for arch in first:
        assert space.validate(arch) is arch
    assert len({a.r for a in first}) > 5


def test_equality_ignores_blocks_skipped_by_depth():
    """Archs that differ only in blocks their depths skip are the same network: equal, same hash."""
    a = Arch(ks=KS, e=E, d=D, r=224)
    ks = list(KS)
    ks[3] = 7  # stage 0 has depth 2: block 3 is skipped
    b = Arch(ks=ks, e=E, d=D, r=224)
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a.canonical().to_dict() == b.canonical().to_dict()
    ks[1] = 7  # block 1 is active
    assert Arch(ks=ks, e=E, d=D, r=224) != a
    assert a != a.with_resolution(192)


def test_active_blocks():
    assert Arch(ks=KS, e=E, d=D).active_blocks == (0, 1, 4, 5, 6, 8, 9, 10, 11, 12, 13, 16, 17, 18)


def test_arch_is_frozen():
    arch = Arch(ks=KS, e=E, d=D)
    with pytest.raises(AttributeError):
        arch.r = 160


PROXYLESS_KS, PROXYLESS_E, PROXYLESS_D = [3, 5, 7] * 7, [3, 4, 6] * 7, [2, 3, 4, 2, 3, 1]


def test_proxyless_archs_have_21_blocks_and_a_fixed_sixth_stage():
    """A ProxylessNAS arch (OFA's GPU/CPU space) is told apart by its 6 depths; its last stage is one block."""
    from supernet.arch import PROXYLESS_LAYOUT

    arch = Arch(ks=PROXYLESS_KS, e=PROXYLESS_E, d=PROXYLESS_D, r=160)
    assert arch.layout == PROXYLESS_LAYOUT
    assert arch.active_blocks == (0, 1, 4, 5, 6, 8, 9, 10, 11, 12, 13, 16, 17, 18, 20)
    assert Arch.from_json(arch.to_json()) == arch
    space = ArchSpace.for_width(1.3, PROXYLESS_LAYOUT)
    assert space.resolutions == tuple(range(128, 225, 4))
    assert space.size_per_resolution == (9**2 + 9**3 + 9**4) ** 5 * 9
    assert {a.d[-1] for a in space.samples(50, seed=0)} == {1}
    assert space.uniform(7, 6, 4, 224).d == (4, 4, 4, 4, 4, 1)
    with pytest.raises(ArchError, match=r"d\[5\] = 4 is not allowed; allowed values: 1 \(this stage is not elastic\)"):
        Arch(ks=PROXYLESS_KS, e=PROXYLESS_E, d=[2, 3, 4, 2, 3, 4])
    with pytest.raises(ArchError, match="ks has 20 entries; expected 21"):
        Arch(ks=KS, e=PROXYLESS_E, d=PROXYLESS_D)
    with pytest.raises(ArchError, match=r"d has 4 entries; expected 5 \(mobilenetv3\) or 6 \(proxyless\)"):
        Arch(ks=KS, e=E, d=[2, 2, 2, 2])
    with pytest.raises(ArchError, match="a proxyless arch, but this supernet is mobilenetv3"):
        ArchSpace.for_width(1.0).validate(arch)
