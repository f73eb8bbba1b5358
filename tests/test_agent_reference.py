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
from supernet import ArchSpace
from supernet.model_cache import export_subnet, subnet_model
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


def test_blocks_keep_settle_samples_apart_and_a_plain_loop_first(tmp_path: Path, models: dict[str, Path]):
    """Each block's first settle_ms of runs are discarded and kept apart; the plain loop comes first."""
    shutil.copy(models["onnx"], tmp_path / "conv.onnx")
    shutil.copy(models["onnx"], tmp_path / "ref.onnx")
    run = _run(tmp_path, [{"name": "m", "path": "conv.onnx"}], reference={"name": "ref", "path": "ref.onnx"},
               settle_ms=1.0, steady_min_count=7)
    record = run.results["m"]
    assert record["block_ms"] == 2.0 and record["settle_ms"] == 1.0
    assert len(record["steady_samples_ms"]) == 7 and record["steady"]["count"] == 7
    assert len(record["settle_samples_ms"]) >= 1 and len(record["ratio_samples"]) >= 6
    assert len(record["reference"]["settle_samples_ms"]) >= 1
    # Kept and settle samples time the same model: same order of magnitude.
    assert 0.2 < np.median(record["settle_samples_ms"]) / record["summary"]["median"] < 5


@pytest.mark.serial  # two loops of one model must agree within 12%: run with the machine to itself
def test_blocked_timing_agrees_with_a_plain_loop(subnet):
    """The protocol test: the agent's blocked timing of a subnet against the reference, and a plain back-to-back
    loop of the same session, alternated in one process, agree. The benchmark (docs/measurement.md) measured
    blocked/plain at 1.002 (0.98-1.03 over 21 items) on this machine; 12% leaves room for a loaded CI host while
    still catching the 1.18x excess of the old regime on small networks."""
    path, arch = subnet
    model = {**subnet_model("net", arch, 1.0, 1000, "onnx", path.parent, 1), "runtime": "onnxruntime",
             "provider": None}
    run_once, _, _ = python_agent.load(model, "", 1)
    timer = python_agent.Timer(run_once, 5, 0.0, None)
    reference = python_agent.Timer(run_once, 5, 0.0, None)
    ratios = []
    for _ in range(3):
        plain = np.median(python_agent.measure(timer, 20, 0.0))
        blocked = np.median(python_agent.measure_interleaved(timer, reference, 20, 0.0, 25.0)["samples"])
        ratios.append(blocked / plain)
    assert abs(np.median(ratios) - 1) < 0.12, ratios


def test_without_a_reference_records_are_as_before(tmp_path: Path, models: dict[str, Path]):
    shutil.copy(models["onnx"], tmp_path / "conv.onnx")
    record = _run(tmp_path, [{"name": "m", "path": "conv.onnx"}]).results["m"]
    assert "ratio" not in record and "reference" not in record and len(record["samples_ms"]) >= 6
    assert "steady_samples_ms" not in record and "settle_samples_ms" not in record


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
    assert record["profile_runs"] == 3 and record["profile_sessions"] == 2 and all(us >= 0 for _, _, us in nodes)
    assert any(name.startswith("/blocks.") for name, _, _ in nodes)
    units = units_of(arch, 1.0)
    shares = unit_shares(nodes, len(units))
    assert shares.sum() == pytest.approx(1.0) and (shares > 0).all()
    # The blocks of a network do most of its work; the classifier is a small part.
    assert shares[1:-4].sum() > 0.5 and shares[-1] < 0.2


def test_profiled_runs_are_shared_among_fresh_sessions_and_node_times_averaged(subnet, monkeypatch):
    """Three runs over two sessions: two and one, each loaded afresh; a node's time is the mean of the sessions'
    medians, in the first session's execution order (a node's time moves with where one load's memory lands)."""
    path, arch = subnet
    model = {**subnet_model("net", arch, 1.0, 1000, "onnx", path.parent, 1), "runtime": "onnxruntime",
             "provider": "CPU"}
    sessions = []
    profile_session = python_agent._profile_session

    def recorded(*args):
        nodes = profile_session(*args)
        sessions.append((args[3], nodes))
        return nodes

    monkeypatch.setattr(python_agent, "_profile_session", recorded)  # the real profiler, its calls recorded
    nodes = python_agent.profile_nodes(model, str(path), 1, runs=3, sessions=2)
    assert [runs for runs, _ in sessions] == [2, 1]
    first, second = ({name: us for name, _, us in profiled} for _, profiled in sessions)
    assert [name for name, _, _ in nodes] == [name for name, _, _ in sessions[0][1]] and first.keys() == second.keys()
    assert all(us == pytest.approx((first[name] + second[name]) / 2) for name, _, us in nodes)


def test_node_profile_needs_onnxruntime(tmp_path: Path, models: dict[str, Path]):
    shutil.copy(models["tflite"], tmp_path / "conv.tflite")
    run = _run(tmp_path, [{"name": "t", "path": "conv.tflite", "profile_nodes": True}])
    assert "profile_nodes needs onnxruntime" in run.errors["t"]["error"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"block_ms": -1}, '"block_ms" must be a number'), ({"profile_runs": 0}, '"profile_runs" must be an integer'),
     ({"settle_ms": "5"}, '"settle_ms" must be a number'),
     ({"steady_min_count": -1}, '"steady_min_count" must be an integer of at least 0'),
     ({"profile_runs": 3, "profile_sessions": 4}, '"profile_sessions" (4) cannot exceed "profile_runs" (3)'),
     ({"reference": {"name": "r"}}, 'need "name" and "path"')],
)
def test_bad_reference_settings_exit_2(tmp_path: Path, capsys, settings: dict, message: str):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({**settings, "models": [{"name": "m", "path": "m.onnx"}]}))
    assert python_agent.main([str(manifest), str(tmp_path / "r.jsonl")]) == 2
    assert message in capsys.readouterr().err
