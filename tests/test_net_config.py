"""Static networks from OFA ``net.config`` files (current and legacy names), their MACs, and clear errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from supernet import (
    CheckpointError,
    NetConfigError,
    OFAMobileNetV3,
    ProxylessNASNets,
    build_from_net_config,
    count_macs,
    count_params,
)
from supernet.ofa_supernet import OFAProxylessNASNets
from tests.ofa_oracle import reference_ofa_mbv3, reference_proxyless_nets, reference_utils


@pytest.fixture(scope="module")
def supernet():
    net = OFAMobileNetV3(width_mult=1.0, n_classes=10)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.dtype.is_floating_point and "running_var" not in name:
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
    return net.eval()


def _legacy(config: dict) -> dict:
    """A net.config as the oldest released specialized models wrote it."""
    config = copy.deepcopy(config)
    for block in config["blocks"]:
        block["name"] = "MobileInvertedResidualBlock"
        block["mobile_inverted_conv"] = block.pop("conv")
        block["mobile_inverted_conv"]["name"] = "MBInvertedConvLayer"
    return config


def _legacy_state_dict(state_dict: dict) -> dict:
    return {k.replace(".conv.", ".mobile_inverted_conv.", 1) if k.startswith("blocks.") else k: v
            for k, v in state_dict.items()}


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "legacy"])
def test_net_config_round_trip(supernet, tmp_path, legacy):
    """An extracted subnet saved as net.config (+ weights) rebuilds into the same network."""
    arch = supernet.space.sample(1).with_resolution(160)
    subnet = supernet.extract(arch).eval()
    config = _legacy(subnet.config) if legacy else subnet.config
    (tmp_path / "net.config").write_text(json.dumps(config, indent=2))
    state_dict = _legacy_state_dict(subnet.state_dict()) if legacy else subnet.state_dict()
    torch.save({"state_dict": state_dict}, tmp_path / "init")

    model = build_from_net_config(json.loads((tmp_path / "net.config").read_text()))
    model.load_checkpoint(tmp_path / "init").eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(model(x), subnet(x))
    assert model.config == subnet.config
    assert count_macs(model, resolution=160) == count_macs(arch, width_mult=1.0, n_classes=10)
    assert count_params(model) == count_params(arch, width_mult=1.0, n_classes=10)


def test_config_matches_the_reference_subnet_config():
    """Our extracted subnet's net.config equals the one the reference writes for the same arch."""
    reference = reference_ofa_mbv3()(width_mult=1.2, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                                     depth_list=[2, 3, 4])
    ours = OFAMobileNetV3(width_mult=1.2)
    arch = ours.space.sample(4)
    reference.set_active_subnet(ks=list(arch.ks), e=list(arch.e), d=list(arch.d))
    assert ours.extract(arch).config == reference.get_active_subnet().config


def test_reference_net_config_builds_equal_network():
    """A net.config written by the reference, with its weights, builds a network with the same outputs."""
    reference = reference_ofa_mbv3()(width_mult=1.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                                     depth_list=[2, 3, 4], n_classes=7)
    reference.set_active_subnet(ks=5, e=4, d=3)
    reference_subnet = reference.get_active_subnet().eval()
    model = build_from_net_config(json.loads(json.dumps(reference_subnet.config)))
    model.load_state_dict(reference_subnet.state_dict())
    x = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        assert (model.eval()(x) - reference_subnet(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["blocks"][2].update(name="Bottleneck"), r"blocks\[2\]: unknown layer 'Bottleneck'"),
        (lambda c: c["blocks"][1]["conv"].pop("kernel_size"), r"blocks\[1\]\.conv: missing field 'kernel_size'"),
        (lambda c: c.pop("classifier"), r"missing field 'classifier'"),
        (lambda c: c.update(name="ResNets"), r"describes a 'ResNets'; expected one of MobileNetV3, ProxylessNAS"),
        (lambda c: c["first_conv"].update(name="Conv"), r"first_conv: unknown layer 'Conv'"),
        (lambda c: c.update(blocks=[]), r"'blocks' must be a non-empty list"),
    ],
)
def test_bad_net_config_names_the_place(supernet, mutate, message):
    """A broken net.config raises one NetConfigError that names where in the file it is broken."""
    config = copy.deepcopy(supernet.extract(supernet.space.sample(0)).config)
    mutate(config)
    with pytest.raises(NetConfigError, match=message):
        build_from_net_config(config)


def test_checkpoint_for_another_width_is_one_clear_error():
    """A w1.2 checkpoint loaded into a w1.0 supernet says which width it was made for."""
    state_dict = OFAMobileNetV3(width_mult=1.2).state_dict()
    expected = r"24 and 1536 channels, as for width_mult in \[1.2\].*width_mult=1.0\) has 16 and 1280"
    with pytest.raises(CheckpointError, match=expected):
        OFAMobileNetV3(width_mult=1.0).load_checkpoint({"state_dict": state_dict})
    with pytest.raises(CheckpointError, match="width_mult"):
        OFAMobileNetV3(width_mult=1.0).load_state_dict(state_dict)


def test_checkpoint_for_another_class_count_is_one_clear_error():
    state_dict = OFAMobileNetV3(width_mult=1.0, n_classes=1000).state_dict()
    with pytest.raises(CheckpointError, match="it has 1000 classes, but this network has n_classes=10"):
        OFAMobileNetV3(width_mult=1.0, n_classes=10).load_checkpoint(state_dict)


def test_checkpoint_with_missing_keys_lists_them(tmp_path):
    state_dict = OFAMobileNetV3(width_mult=1.0).state_dict()
    del state_dict["blocks.3.conv.point_linear.bn.bn.weight"]
    state_dict["blocks.3.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.3\.conv\.point_linear\.bn\.bn\.weight.*"
                                              r"unexpected keys: blocks\.3\.extra\.weight"):
        OFAMobileNetV3(width_mult=1.0).load_checkpoint(state_dict)


def test_unreadable_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        OFAMobileNetV3().load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        OFAMobileNetV3().load_checkpoint(tmp_path / "junk.pth")


def test_small_width_for_fast_experiments():
    """Widths below 1.0 build, run and extract, for quick experiments and tests."""
    net = OFAMobileNetV3(width_mult=0.5, n_classes=3).eval()
    arch = net.space.uniform(ks=5, e=4, d=2, r=128)
    net.set_active(arch)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(net(x), net.extract(arch).eval()(x), atol=1e-5)
    assert count_macs(arch, width_mult=0.5, n_classes=3) < count_macs(arch, width_mult=1.0, n_classes=3)


def test_published_macs():
    """docs/ofa_reference.md §1: K3/E3/D4 at 224 on w1.0 is 226M; the largest w1.0 subnet is about 566M."""
    space = OFAMobileNetV3(width_mult=1.0).space
    assert round(count_macs(space.uniform(ks=3, e=3, d=4, r=224)) / 1e6) == 226
    assert round(count_macs(space.uniform(ks=7, e=6, d=4, r=224)) / 1e6) == 566


# Released ProxylessNAS-space networks kept as test data (one per device OFA searched that space for).
ZOO = Path(__file__).parent / "data" / "ofa-release" / "zoo"


@pytest.mark.parametrize("name", sorted(p.name for p in ZOO.iterdir()))
def test_released_proxyless_nets_build_like_the_reference(name):
    """Each released ProxylessNAS net.config builds with the reference's state-dict names, gives its outputs with
    the same weights (within 1e-5), counts its MACs within 0.5M, and writes back the config it was read from."""
    config = json.loads((ZOO / name / "net.config").read_text())
    resolution = json.loads((ZOO / name / "run.config").read_text())["image_size"]
    ours = build_from_net_config(config).eval()
    theirs = reference_proxyless_nets().build_from_config(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in theirs.state_dict().values():
            if tensor.dtype.is_floating_point:
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator) if tensor.dim() == 1
                             else 0.1 * torch.randn(tensor.shape, generator=generator))
    ours.load_checkpoint(theirs.state_dict())
    x = torch.randn(2, 3, resolution, resolution, generator=generator)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    flops = reference_utils().count_net_flops(theirs, (1, 3, resolution, resolution))
    assert abs(count_macs(ours, resolution=resolution) - flops) < 0.5e6
    assert count_params(ours) == reference_utils().count_parameters(theirs)
    rebuilt = build_from_net_config(json.loads(json.dumps(ours.config)))
    assert rebuilt.config == ours.config and isinstance(rebuilt, ProxylessNASNets)


@pytest.mark.parametrize("name", sorted(p.name for p in ZOO.iterdir()))
def test_released_proxyless_nets_are_subnets_of_the_w13_supernet(name):
    """Each released GPU/CPU net is one arch of our ProxylessNAS w1.3 supernet (6 stages, the last of depth 1):
    its net.config reads back as that arch, and extracting the arch writes the released blocks and head."""
    config = json.loads((ZOO / name / "net.config").read_text())
    resolution = json.loads((ZOO / name / "run.config").read_text())["image_size"]
    supernet = OFAProxylessNASNets(width_mult=1.3)
    arch = supernet.arch_of(config, resolution)
    assert (len(arch.ks), len(arch.d), arch.d[-1], arch.r) == (21, 6, 1, resolution)
    written = supernet.extract(arch).config
    for key in ("blocks", "first_conv", "feature_mix_layer", "bn"):
        assert written[key] == build_from_net_config(config).config[key], key
    assert count_macs(arch, width_mult=1.3) == count_macs(build_from_net_config(config), resolution=resolution)


def test_a_net_config_of_another_supernet_is_refused():
    config = json.loads((ZOO / "cpu_lat-10ms_top1-71.1_finetune-25" / "net.config").read_text())
    with pytest.raises(NetConfigError, match="no stage of this OFAProxylessNASNets"):
        OFAProxylessNASNets(width_mult=1.0).arch_of(config, 160)
    with pytest.raises(NetConfigError, match="OFAMobileNetV3"):
        OFAMobileNetV3(width_mult=1.2).arch_of(config, 160)
