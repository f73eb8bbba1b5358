"""Our supernets of both families against the reference implementation (PyPI ``ofa``) as an oracle.

Weights, BN statistics and kernel-transform matrices are all randomised, so a wrong crop, a wrong matrix,
a wrong channel slice or a wrong BN slice changes the outputs.
"""

from __future__ import annotations

import copy
import itertools
import json
import re

import pytest
import torch

from supernet import Arch, OFAMobileNetV3, count_macs, count_params
from supernet.ofa_supernet import OFAProxylessNASNets
from tests.ofa_oracle import reference_ofa_mbv3, reference_ofa_proxyless, reference_utils

N_ARCHS = 12  # per supernet: 36 archs in all, over many resolutions
TOL = 1e-5
FAMILIES = {"mobilenetv3": (OFAMobileNetV3, reference_ofa_mbv3), "proxyless": (OFAProxylessNASNets,
                                                                             reference_ofa_proxyless)}
SUPERNETS = [("mobilenetv3", 1.0), ("mobilenetv3", 1.2), ("proxyless", 1.3)]


def _randomise(net: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if not tensor.dtype.is_floating_point:
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(noise.abs() + 0.5)
            elif name.endswith("_matrix"):
                tensor.copy_(torch.eye(tensor.shape[0]) + 0.2 * noise)
            else:
                tensor.copy_(0.2 * noise)


def _reference(width_mult: float, seed: int = 0, n_classes: int = 1000, family: str = "mobilenetv3"):
    cls = FAMILIES[family][1]()
    net = cls(n_classes=n_classes, width_mult=width_mult, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
              depth_list=[2, 3, 4])
    _randomise(net, seed)
    return net.eval()


def _loaded_pair(family: str, width_mult: float, seed: int = 0):
    reference = _reference(width_mult, seed, family=family)
    ours = FAMILIES[family][0](width_mult=width_mult).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.fixture(scope="module", params=SUPERNETS, ids=[f"{f}-w{w}" for f, w in SUPERNETS])
def pair(request):
    """A randomised reference supernet and ours with its state dict loaded."""
    return _loaded_pair(*request.param)


def _run_reference(reference, arch: Arch, x: torch.Tensor):
    reference.set_active_subnet(ks=list(arch.ks), e=list(arch.e), d=list(arch.d))
    with torch.no_grad():
        return reference(x), reference.get_active_subnet(preserve_weight=True).eval()


def _archs(space, n: int, seed: int) -> list[Arch]:
    """Seeded archs, with the smallest and largest resolutions and the extreme uniform archs included."""
    archs = list(space.samples(n - 2, seed=seed))
    archs.append(space.uniform(ks=7, e=6, d=4, r=space.resolutions[0]))
    archs.append(space.uniform(ks=3, e=3, d=2, r=space.resolutions[-1]))
    return archs


@pytest.mark.parametrize(("family", "width_mult", "n_keys"), [("mobilenetv3", 1.0, 475), ("proxyless", 1.3, 446)])
def test_state_dict_names_match_reference(family, width_mult, n_keys):
    """Same keys with the same shapes, so reference checkpoints load as they are."""
    ours_cls, reference_cls = FAMILIES[family]
    reference = reference_cls()(width_mult=width_mult, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                                depth_list=[2, 3, 4])
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in ours_cls(width_mult=width_mult).state_dict().items()}
    assert len(ours) == n_keys
    assert ours == theirs
    bn = {(m.momentum, m.eps) for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert {(m.momentum, m.eps) for m in ours_cls(width_mult=width_mult).modules()
            if isinstance(m, torch.nn.BatchNorm2d)} == bn


def test_outputs_and_counts_match_reference(pair):
    """Elastic forward and extracted subnet equal the reference, and so do the subnet's net.config, MACs and
    params (ours counted from the arch alone)."""
    reference, ours = pair
    utils = reference_utils()
    width = ours.width_mult
    for i, arch in enumerate(_archs(ours.space, N_ARCHS, seed=int(width * 10))):
        x = torch.randn(2, 3, arch.r, arch.r, generator=torch.Generator().manual_seed(i))
        expected, reference_subnet = _run_reference(reference, arch, x)
        ours.set_active(arch)
        subnet = ours.extract(arch).eval()
        with torch.no_grad():
            assert (ours(x) - expected).abs().max().item() <= TOL, arch
            assert (subnet(x) - expected).abs().max().item() <= TOL, arch
        reference_macs = utils.count_net_flops(reference_subnet, (1, 3, arch.r, arch.r))
        # NOTE: the reference accumulates per-layer counts in float32 buffers, so its totals are rounded to
        # float32 precision; ours are exact integers.
        assert count_macs(arch, width_mult=width) == pytest.approx(reference_macs, rel=2e-7, abs=0), arch
        assert count_params(arch, width_mult=width) == utils.count_parameters(reference_subnet), arch
        assert count_macs(subnet, resolution=arch.r) == count_macs(arch, width_mult=width)
        assert count_params(subnet) == count_params(arch, width_mult=width)
        assert subnet.config == _jsonable(reference_subnet.config), arch


def _jsonable(config: dict) -> dict:
    """The reference's config as JSON reads it back (tuples become lists)."""
    return json.loads(json.dumps(config))


def test_extracted_subnet_has_no_elastic_machinery(pair):
    """A subnet is plain torch: no dynamic layers, no transform matrices, weights not shared with the supernet."""
    _, ours = pair
    arch = ours.space.sample(3)
    subnet = ours.extract(arch)
    names = {type(m).__name__ for m in subnet.modules()}
    assert not any(name.startswith("Dynamic") or name.startswith("_Elastic") for name in names), names
    assert not any("matrix" in k for k in subnet.state_dict())
    supernet_ptrs = {p.data_ptr() for p in ours.parameters()}
    assert not supernet_ptrs & {p.data_ptr() for p in subnet.parameters()}


def _sorted_pair(expand_stage: int, family: str = "mobilenetv3", width_mult: float = 1.0):
    reference, ours = _loaded_pair(family, width_mult, seed=7)
    reference.re_organize_middle_weights(expand_ratio_stage=expand_stage)
    ours.sort_channels(expand_stage=expand_stage)
    return reference, ours


@pytest.mark.parametrize(("family", "width_mult"), [("mobilenetv3", 1.0), ("proxyless", 1.3)])
def test_channel_sorting_matches_reference(family, width_mult):
    """The first sorting (before the first expand phase) gives the reference's state dict exactly, except that
    channels of equal float32 importance may come in either order (the reference's sort is not stable)."""
    reference, ours = _sorted_pair(0, family, width_mult)
    theirs = reference.state_dict()
    tied = {index: _tied_channels(ours.blocks[index].conv) for index in range(1, len(ours.blocks))}
    for key, tensor in ours.state_dict().items():
        index = int(key.split(".")[1]) if key.startswith("blocks.") else 0
        keep = _untied(tensor, ours.blocks[index].conv, tied.get(index, set()))
        assert torch.equal(keep(tensor), keep(theirs[key])), key
    n_middle = sum(block.conv.mid_chs(max(block.conv.expand_ratios)) for block in ours.blocks[1:])
    assert sum(map(len, tied.values())) <= 0.001 * n_middle, "ties are rare, so almost every channel is checked"


def _tied_channels(block) -> set[int]:
    importance = block.point_linear.conv.conv.weight.abs().sum(dim=(0, 2, 3))
    equal = (importance[1:] == importance[:-1]).nonzero().flatten().tolist()
    return {i for j in equal for i in (j, j + 1)}


def _untied(tensor: torch.Tensor, block, tied: set[int]):
    """A view of a tensor without the tied middle channels (on the axis that holds the middle channels)."""
    mid = getattr(block, "mid_chs", None)
    if not tied or not callable(mid):
        return lambda t: t
    axis = next((a for a, size in enumerate(tensor.shape) if size == block.mid_chs(max(block.expand_ratios))), None)
    if axis is None:
        return lambda t: t
    kept = torch.tensor([i for i in range(tensor.shape[axis]) if i not in tied])
    return lambda t: t.index_select(axis, kept)


@pytest.mark.parametrize("expand_stage", [1, 2])
def test_later_sorting_keeps_the_reference_groups(expand_stage):
    """Later sortings put the same channels in each trained width as the reference, by exact importance.

    NOTE: the reference ranks by importance plus float32 penalties of -1e5 per group, which rounds importance to
    steps of 1/64 and can swap near-equal channels inside the penalised groups; we rank by exact importance.
    """
    reference, ours = _sorted_pair(expand_stage)
    for index in range(1, len(ours.blocks)):
        block = ours.blocks[index].conv
        ours_cols = block.point_linear.conv.conv.weight[:, :, 0, 0].T
        ref_cols = reference.blocks[index].conv.point_linear.conv.conv.weight[:, :, 0, 0].T
        cuts = [0, *sorted({block.mid_chs(e) for e in block.expand_ratios})]
        for lo, hi in itertools.pairwise(cuts):
            assert sorted(map(tuple, ours_cols[lo:hi].tolist())) == sorted(map(tuple, ref_cols[lo:hi].tolist()))
            importance = ours_cols[lo:hi].abs().sum(dim=1)
            assert torch.all(importance[:-1] >= importance[1:]), (index, lo, hi)
        assert torch.equal(ours_cols[: cuts[1]], ref_cols[: cuts[1]]), index


def test_outputs_after_reference_sorting():
    """A supernet sorted by the reference, loaded into ours, gives the reference's outputs."""
    reference, _ = _sorted_pair(1)
    ours = OFAMobileNetV3(width_mult=1.0).eval()
    ours.load_state_dict(reference.state_dict())
    for seed in (11, 12):
        arch = ours.space.sample(seed)
        x = torch.randn(1, 3, arch.r, arch.r)
        expected, _ = _run_reference(reference, arch, x)
        ours.set_active(arch)
        with torch.no_grad():
            assert (ours(x) - expected).abs().max().item() <= TOL
            assert (ours.extract(arch).eval()(x) - expected).abs().max().item() <= TOL


def _legacy_names(state_dict: dict) -> dict:
    """Keys as older releases wrote them: ``mobile_inverted_conv`` and no doubled nesting levels."""
    legacy = {}
    for key, tensor in state_dict.items():
        key = re.sub(r"^blocks\.(\d+)\.conv\.", r"blocks.\1.mobile_inverted_conv.", key)
        key = key.replace(".bn.bn.", ".bn.").replace(".conv.conv.", ".conv.").replace(".linear.linear.", ".linear.")
        legacy[key] = tensor
    return legacy


@pytest.mark.parametrize(("family", "width_mult"), [("mobilenetv3", 1.2), ("proxyless", 1.3)])
def test_legacy_checkpoint_loads(tmp_path, family, width_mult):
    """A checkpoint file with legacy key names under "state_dict" gives the reference's outputs."""
    reference = _reference(width_mult, seed=3, family=family)
    legacy = _legacy_names(reference.state_dict())
    assert any("mobile_inverted_conv" in k for k in legacy)
    path = tmp_path / "ofa_legacy.pth"
    torch.save({"state_dict": legacy, "epoch": 3}, path)
    ours = FAMILIES[family][0](width_mult=width_mult).load_checkpoint(path).eval()
    arch = ours.space.sample(5)
    x = torch.randn(1, 3, arch.r, arch.r)
    expected, _ = _run_reference(reference, arch, x)
    ours.set_active(arch)
    with torch.no_grad():
        assert (ours(x) - expected).abs().max().item() <= TOL


def test_bare_current_checkpoint_loads():
    """A bare state dict with current names loads through load_checkpoint too."""
    reference = _reference(1.0, seed=4)
    ours = OFAMobileNetV3(width_mult=1.0).load_checkpoint(copy.deepcopy(reference.state_dict()))
    for key, tensor in ours.state_dict().items():
        assert torch.equal(tensor, reference.state_dict()[key]), key


@pytest.mark.parametrize("family", FAMILIES)
def test_bn_recalibration_matches_reference(family):
    """recalibrate_bn gives the reference's set_running_statistics on the same batches."""
    from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics

    from supernet.bn import recalibrate_bn

    ours = FAMILIES[family][0](width_mult=1.0, n_classes=10)
    _randomise(ours, 9)
    subnet = ours.extract(ours.space.sample(2).with_resolution(128))
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 128, 128, generator=generator) * 2 + 1, torch.zeros(8)) for _ in range(3)]
    expected = copy.deepcopy(subnet)
    set_running_statistics(expected, batches)
    recalibrate_bn(subnet, batches, n_images=24)
    theirs = expected.state_dict()
    for key, tensor in subnet.state_dict().items():
        if "running" in key:
            assert torch.allclose(tensor, theirs[key], rtol=1e-4, atol=1e-5), key
