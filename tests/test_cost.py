"""A run of whole subnets states its cost first: one whose exports cannot fit is refused, a long one waits for
--yes, and nothing is exported or measured before."""

from __future__ import annotations

import shutil

import pytest

from profiler.cli import main
from profiler.cost import LONG_RUN_S, Cost, check_cost, subnets_cost
from profiler.devices import resolve_device
from supernet import ArchSpace
from supernet.complexity import count_params
from supernet.errors import UsageError


def test_the_cost_grows_with_the_subnets_their_weights_and_the_precision():
    archs = list(ArchSpace.for_width(1.0).samples(10, seed=0))
    fp32 = subnets_cost(archs, resolve_device("local"), 1.0, 1000)
    int8 = subnets_cost(archs, resolve_device("local", {"precision": "int8"}), 1.0, 1000)
    weights = sum(count_params(a, 1.0, 1000) for a in archs)
    assert fp32.subnets == 10 and fp32.export_bytes > 4 * weights > int8.export_bytes > weights
    assert int8.seconds > fp32.seconds > 10  # quantizing adds to every export; each subnet takes over a second
    phone = subnets_cost(archs, resolve_device("local", {"runtime": "tflite"}), 1.0, 1000)
    assert phone.seconds > fp32.seconds  # a TF-Lite conversion is slower than an ONNX export


def test_a_run_that_cannot_fit_is_refused_and_a_long_one_waits_for_yes(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(UsageError, match=r"^3 subnets: about 1 min and up to .* GB free; measure fewer subnets"):
        check_cost(Cost(3, 60.0, free + 10**9), tmp_path / "cache", yes=True)
    long = Cost(9_000, LONG_RUN_S + 60, 10**6)
    with pytest.raises(UsageError, match=r"^9,000 subnets: about 2.0 h and up to 0.0 GB of exports; add --yes"):
        check_cost(long, tmp_path / "cache", yes=False)
    check_cost(long, tmp_path / "cache", yes=True)
    check_cost(Cost(100, 150.0, 10**9), tmp_path / "cache", yes=False)


def test_the_command_states_the_cost_before_exporting_anything(tmp_path, capsys):
    argv = ["--device", "local", "--width", "1.0", "--resolutions", "160", "--subnets", "random:5000", "--out",
            str(tmp_path), "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "5,000 subnets: about 2." in error and "GB" in error, error
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "local", "--yes", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "--yes starts a long run of whole subnets" in capsys.readouterr().err
