"""Our supernet against the reference implementation (PyPI ``ofa``) as an oracle.

Weights, BN statistics and kernel-transform matrices are all randomised, so a wrong crop, a wrong matrix,
a wrong channel slice or a wrong BN slice changes the outputs.
"""

from __future__ import annotations

import copy
import itertools
import re

import pytest
import torch

from supernet import Arch, OFAMobileNetV3, count_macs, count_params
from tests.ofa_oracle import reference_ofa_mbv3, reference_utils

N_ARCHS = 12  # per width: 24 archs in all, over many resolutions
TOL = 1e-5


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


def _reference(width_mult: float, seed: int = 0, n_classes: int = 1000) -> torch.nn.Module:
    cls = reference_ofa_mbv3()
    net = cls(n_classes=n_classes, width_mult=width_mult, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
              depth_list=[2, 3, 4])
    _randomise(net, seed)
    return net.eval()


@pytest.fixture(scope="module", params=[1.0, 1.2], ids=["w1.0", "w1.2"])
def pair(request):
    """A randomised reference supernet and ours with its state dict loaded."""
    reference = _reference(request.param)
    ours = OFAMobileNetV3(width_mult=request.param).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


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


def test_state_dict_names_match_reference():
    """Same 475 keys (w1.0) with the same shapes, so reference checkpoints load as they are."""
    reference = reference_ofa_mbv3()(width_mult=1.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                                     depth_list=[2, 3, 4])
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in OFAMobileNetV3(width_mult=1.0).state_dict().items()}
    assert len(ours) == 475
    assert ours == theirs


def test_outputs_and_counts_match_reference(pair):
    """Elastic forward and extracted subnet equal the reference; MACs and params equal its counts."""
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


def _sorted_pair(expand_stage: int):
    reference = _reference(1.0, seed=7)
    ours = OFAMobileNetV3(width_mult=1.0).eval()
    ours.load_state_dict(reference.state_dict())
    reference.re_organize_middle_weights(expand_ratio_stage=expand_stage)
    ours.sort_channels(expand_stage=expand_stage)
    return reference, ours


def test_channel_sorting_matches_reference():
    """The first sorting (before the first expand phase) gives the reference's state dict exactly."""
    reference, ours = _sorted_pair(0)
    theirs = reference.state_dict()
    for key, tensor in ours.state_dict().items():
        assert torch.equal(tensor, theirs[key]), key


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


def test_legacy_checkpoint_loads(tmp_path):
    """A checkpoint file with legacy key names under "state_dict" gives the reference's outputs."""
    reference = _reference(1.2, seed=3)
    legacy = _legacy_names(reference.state_dict())
    assert any("mobile_inverted_conv" in k for k in legacy)
    path = tmp_path / "ofa_mbv3_legacy.pth"
    torch.save({"state_dict": legacy, "epoch": 3}, path)
    ours = OFAMobileNetV3(width_mult=1.2).load_checkpoint(path).eval()
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


def test_bn_recalibration_matches_reference():
    """recalibrate_bn gives the reference's set_running_statistics on the same batches."""
    from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics

    from supernet.bn import recalibrate_bn

    ours = OFAMobileNetV3(width_mult=1.0, n_classes=10)
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
