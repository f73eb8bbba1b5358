"""The Python agent's drift-proof timing: every model against the reference, ratios kept; node profiles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agents import python_agent
from profiler.agent_run import parse_results
from profiler.attribution import unit_shares
from profiler.whole_subnets import subnet_model
from supernet import ArchSpace
from supernet.export import export_subnet
from supernet.units import units_of

FAST = {"warmup": 2, "min_count": 6, "min_time_s": 0.0, "block_ms": 2.0}


def _run(folder: Path, models: list[dict], **settings) -> dict:
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({**FAST, **settings, "models": models}))
    results = folder / "results.jsonl"
    assert python_agent.main([str(manifest), str(results)]) == 0
    return parse_results(results.read_text())


@pytest.fixture(scope="module")
def subnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    arch = ArchSpace.for_width(1.0).uniform(ks=5, e=4, d=2, r=128)
    return export_subnet(arch, 1.0, 1000, "onnx", tmp_path_factory.mktemp("cache")), arch


def test_each_sample_has_a_ratio_to_the_bracketing_reference_blocks(tmp_path: Path, models: dict[str, Path]):
    """Ratios are one per model sample, and each is the sample over a reference median of its blocks."""
    shutil.copy(models["onnx"], tmp_path / "conv.onnx")
    shutil.copy(models["onnx"], tmp_path / "ref.onnx")
    run = _run(tmp_path, [{"name": "m", "path": "conv.onnx"}], reference={"name": "ref", "path": "ref.onnx"})
    record = run.results["m"]
    samples, ratios = np.array(record["samples_ms"]), np.array(record["ratio_samples"])
    reference = np.array(record["reference"]["samples_ms"])
    assert record["reference"]["name"] == "ref" and len(ratios) == len(samples) >= 6
    denominators = samples / ratios
    assert (denominators >= reference.min() * 0.999).all() and (denominators <= reference.max() * 1.001).all()
    assert record["ratio"]["median"] == pytest.approx(float(np.median(ratios)))
    # The same model as its own reference: the ratio is 1 up to timing noise.
    assert 0.5 < record["ratio"]["median"] < 2.0
    assert run.environments[0]["reference"] == "ref"


def test_without_a_reference_records_are_as_before(tmp_path: Path, models: dict[str, Path]):
    shutil.copy(models["onnx"], tmp_path / "conv.onnx")
    record = _run(tmp_path, [{"name": "m", "path": "conv.onnx"}]).results["m"]
    assert "ratio" not in record and "reference" not in record and len(record["samples_ms"]) >= 6


def test_a_failing_reference_is_reported_on_every_model(tmp_path: Path, models: dict[str, Path]):
    shutil.copy(models["onnx"], tmp_path / "conv.onnx")
    shutil.copy(models["broken"], tmp_path / "ref.onnx")
    run = _run(tmp_path, [{"name": "a", "path": "conv.onnx"}, {"name": "b", "path": "conv.onnx"}],
               reference={"name": "ref", "path": "ref.onnx"})
    assert set(run.errors) == {"a", "b"} and not run.results
    assert all("reference workload ref failed" in e["error"] for e in run.errors.values())


def test_node_profile_splits_a_subnet_among_all_its_units(tmp_path: Path, subnet):
    """ONNX Runtime's profile of an exported subnet names every node so that each unit gets a share."""
    path, arch = subnet
    shutil.copy(path, tmp_path / "net.onnx")
    model = {**subnet_model("net", arch, 1.0, 1000, "onnx", path.parent, 1), "path": "net.onnx", "profile_nodes": True}
    record = _run(tmp_path, [model], profile_runs=3).results["net"]
    nodes = record["node_times_us"]
    assert record["profile_runs"] == 3 and all(us >= 0 for _, _, us in nodes)
    assert any(name.startswith("/blocks.") for name, _, _ in nodes)
    units = units_of(arch, 1.0)
    shares = unit_shares(nodes, len(units))
    assert shares.sum() == pytest.approx(1.0) and (shares > 0).all()
    # The blocks of a network do most of its work; the classifier is a small part.
    assert shares[1:-4].sum() > 0.5 and shares[-1] < 0.2


def test_node_profile_needs_onnxruntime(tmp_path: Path, models: dict[str, Path]):
    shutil.copy(models["tflite"], tmp_path / "conv.tflite")
    run = _run(tmp_path, [{"name": "t", "path": "conv.tflite", "profile_nodes": True}])
    assert "profile_nodes needs onnxruntime" in run.errors["t"]["error"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"block_ms": -1}, '"block_ms" must be a number'), ({"profile_runs": 0}, '"profile_runs" must be an integer'),
     ({"reference": {"name": "r"}}, 'need "name" and "path"')],
)
def test_bad_reference_settings_exit_2(tmp_path: Path, capsys, settings: dict, message: str):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({**settings, "models": [{"name": "m", "path": "m.onnx"}]}))
    assert python_agent.main([str(manifest), str(tmp_path / "r.jsonl")]) == 2
    assert message in capsys.readouterr().err
