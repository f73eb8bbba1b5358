"""The Python agent on this machine: records, resume, and one error record per model that cannot run."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents import python_agent
from profiler.agent_run import parse_results

FAST = {"warmup": 2, "min_count": 5, "min_time_s": 0.0}


def _run(tmp_path: Path, models: list[dict], **settings) -> tuple[int, Path]:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({**FAST, **settings, "models": models}))
    results = tmp_path / "results.jsonl"
    return python_agent.main([str(manifest), str(results)]), results


def _stage(tmp_path: Path, *sources: Path) -> None:
    for source in sources:
        shutil.copy(source, tmp_path / source.name)


def test_onnx_tflite_and_torch_each_give_samples_and_summary(tmp_path: Path, models: dict[str, Path]):
    """One result per model, with raw ms samples whose summary matches them."""
    _stage(tmp_path, models["onnx"], models["tflite"], models["torchscript"])
    code, results = _run(
        tmp_path,
        [
            {"name": "ort", "path": "conv.onnx"},
            {"name": "litert", "path": "conv.tflite"},
            {"name": "torch", "path": "conv.pt", "inputs": [[1, 3, 32, 32]]},
        ],
    )
    assert code == 0
    run = parse_results(results.read_text())
    assert set(run.results) == {"ort", "litert", "torch"}
    assert run.results["ort"]["provider"] == "CPUExecutionProvider"
    assert run.results["litert"]["provider"] == "xnnpack"
    assert run.results["torch"]["provider"] == "cpu"
    for record in run.results.values():
        samples = record["samples_ms"]
        assert len(samples) == record["summary"]["count"] >= 5
        assert record["summary"]["median"] == pytest.approx(sorted(samples)[len(samples) // 2], rel=0.5)
        assert 0 < record["summary"]["p10"] <= record["summary"]["median"] <= record["summary"]["p90"]


def test_environment_record_opens_and_closes_the_run(tmp_path: Path, models: dict[str, Path]):
    """The run starts and ends with the CPU, frequencies, thermal zones and runtime versions."""
    _stage(tmp_path, models["onnx"])
    _run(tmp_path, [{"name": "ort", "path": "conv.onnx"}])
    environments = parse_results((tmp_path / "results.jsonl").read_text()).environments
    assert [record["phase"] for record in environments] == ["start", "end"]
    start = environments[0]
    assert start["cores"] >= 1 and start["cpu_model"]
    assert start["runtimes"]["onnxruntime"] is not None
    assert len(start["cpus"]) >= 1 and {"governor", "cur_khz", "max_khz"} <= set(start["cpus"][0])


def test_frequencies_and_temperatures_come_from_sysfs(tmp_path: Path, models: dict[str, Path], monkeypatch):
    """Governor, frequencies and temperatures are read from cpufreq and thermal zones.

    This machine is a VM without cpufreq or thermal zones, so a folder laid out like a phone's /sys stands in.
    """
    sysfs = tmp_path / "sys"
    for cpu, max_khz in ((0, 1800000), (1, 2841600)):
        freq = sysfs / f"devices/system/cpu/cpu{cpu}/cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_governor").write_text("schedutil\n")
        (freq / "scaling_cur_freq").write_text(f"{max_khz // 2}\n")
        (freq / "cpuinfo_max_freq").write_text(f"{max_khz}\n")
    zone = sysfs / "class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-1-0-usr\n")
    (zone / "temp").write_text("41500\n")
    monkeypatch.setenv("OFA_AGENT_SYSFS", str(sysfs))
    _stage(tmp_path, models["onnx"])
    _run(tmp_path, [{"name": "ort", "path": "conv.onnx"}])
    start = parse_results((tmp_path / "results.jsonl").read_text()).environments[0]
    assert start["cpus"][1] == {"cpu": 1, "governor": "schedutil", "cur_khz": 1420800, "max_khz": 2841600}
    assert start["thermal"] == [{"zone": "thermal_zone0", "type": "cpu-1-0-usr", "temp_c": 41.5}]


def test_rerun_skips_measured_models_and_survives_a_torn_line(tmp_path: Path, models: dict[str, Path]):
    """A results file cut off mid-line is continued: done models are skipped, the rest measured once."""
    _stage(tmp_path, models["onnx"], models["tflite"])
    entries = [{"name": "first", "path": "conv.onnx"}, {"name": "second", "path": "conv.tflite"}]
    _run(tmp_path, entries[:1])
    results = tmp_path / "results.jsonl"
    with results.open("a") as handle:
        handle.write('{"type": "result", "name": "sec')  # power cut while writing the second record
    first_before = parse_results(results.read_text()).results["first"]
    assert _run(tmp_path, entries)[0] == 0
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.endswith("}")]
    names = [record["name"] for record in lines if record["type"] == "result"]
    assert names == ["first", "second"]
    assert parse_results(results.read_text()).results["first"] == first_before


def test_unloadable_model_gives_error_record_and_run_goes_on(tmp_path: Path, models: dict[str, Path]):
    """A file ONNX Runtime cannot load becomes an error record; the next model is still measured."""
    _stage(tmp_path, models["broken"], models["onnx"])
    code, results = _run(tmp_path, [{"name": "bad", "path": "broken.onnx"}, {"name": "good", "path": "conv.onnx"}])
    run = parse_results(results.read_text())
    assert code == 0
    assert "onnxruntime cannot load" in run.errors["bad"]["error"]
    assert "good" in run.results


def test_missing_model_file_and_unknown_provider_are_error_records(tmp_path: Path, models: dict[str, Path]):
    """A model not pushed, or an execution provider this build lacks, is named in its error record."""
    _stage(tmp_path, models["onnx"])
    _, results = _run(
        tmp_path,
        [
            {"name": "absent", "path": "absent.onnx"},
            {"name": "trt", "path": "conv.onnx", "provider": "TensorRT"},
            {"name": "tfl_gpu", "path": "conv.onnx", "runtime": "tflite", "provider": "hexagon"},
        ],
    )
    errors = parse_results(results.read_text()).errors
    assert "missing on the device; push it first" in errors["absent"]["error"]
    assert "TensorrtExecutionProvider" not in errors["trt"]["error"]
    assert "TensorRTExecutionProvider is not in this onnxruntime build" in errors["trt"]["error"]
    assert "CPUExecutionProvider" in errors["trt"]["error"]
    assert "unknown TF-Lite delegate 'hexagon'" in errors["tfl_gpu"]["error"]


def test_cuda_without_a_gpu_is_a_clear_error_record(tmp_path: Path, models: dict[str, Path]):
    """torch on CUDA where no GPU exists (this machine) gives an error record, not a crash or a CPU timing."""
    _stage(tmp_path, models["torchscript"])
    _, results = _run(tmp_path, [{"name": "gpu", "path": "conv.pt", "provider": "cuda", "inputs": [[1, 3, 32, 32]]}])
    assert "CUDA requested but torch" in parse_results(results.read_text()).errors["gpu"]["error"]


def test_missing_runtime_is_an_error_record(tmp_path: Path, models: dict[str, Path]):
    """A device without onnxruntime records that, and still measures its TF-Lite model.

    onnxruntime is installed here, so a package folder that fails to import shadows it in a child process.
    """
    shadow = tmp_path / "shadow" / "onnxruntime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named onnxruntime')\n")
    _stage(tmp_path, models["onnx"], models["tflite"])
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps({**FAST, "models": [{"name": "ort", "path": "conv.onnx"}, {"name": "tfl", "path": "conv.tflite"}]})
    )
    results = tmp_path / "results.jsonl"
    agent = Path(python_agent.__file__)
    subprocess.run(
        [sys.executable, str(agent), str(manifest), str(results)],
        check=True,
        timeout=120,
        capture_output=True,
        env={"PYTHONPATH": str(shadow.parent), "PATH": "/usr/bin:/bin"},
    )
    run = parse_results(results.read_text())
    assert "runtime onnxruntime is not installed here" in run.errors["ort"]["error"]
    assert "tfl" in run.results
    assert run.environments[0]["runtimes"]["onnxruntime"] is None


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"models": []}, 'needs a non-empty "models" list'),
        ({"models": [{"name": "a", "path": "a.bin"}]}, "runtime None is not one of onnxruntime, tflite, torch"),
        ({"threads": 0, "models": [{"name": "a", "path": "a.onnx"}]}, '"threads" must be an integer of at least 1'),
        ({"models": [{"name": "a", "path": "a.onnx"}, {"name": "a", "path": "b.onnx"}]}, "appears twice"),
    ],
)
def test_bad_manifest_exits_2_naming_the_problem(tmp_path: Path, capsys, manifest: dict, message: str):
    """A manifest the agent cannot use stops it before measuring, with the field and the fix."""
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    assert python_agent.main([str(path), str(tmp_path / "r.jsonl")]) == 2
    assert message in capsys.readouterr().err


def test_second_agent_on_the_same_results_file_is_refused(tmp_path: Path, capsys, models: dict[str, Path]):
    """While one agent holds the results file, another exits 3 instead of interleaving lines."""
    _stage(tmp_path, models["onnx"])
    results = tmp_path / "results.jsonl"
    with results.open("a") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        assert _run(tmp_path, [{"name": "ort", "path": "conv.onnx"}])[0] == 3
    assert "another agent is writing" in capsys.readouterr().err
    assert results.read_text() == ""


def test_pinning_to_cpus_the_device_lacks_is_one_line(tmp_path: Path, capsys, models: dict[str, Path]):
    """Issue 25: affinity [99] ended in the agent's OSError traceback inside the host's one-line error."""
    _stage(tmp_path, models["onnx"])
    assert _run(tmp_path, [{"name": "ort", "path": "conv.onnx"}], affinity=[99])[0] == 2
    err = capsys.readouterr().err
    assert "error: cannot pin to CPUs [99] (Invalid argument); this device's CPUs are [" in err
    assert "Traceback" not in err


def test_each_model_reports_the_peak_memory_it_added(tmp_path: Path, models: dict[str, Path]):
    """Issue 24: memory as a measured quantity. ONNX Runtime allocates its session and arena while the model
    loads and runs: the peak resident memory grows, and the record says how it was taken."""
    _stage(tmp_path, models["onnx"])
    code, results = _run(tmp_path, [{"name": "ort", "path": "conv.onnx"}])
    memory = parse_results(results.read_text()).results["ort"]["memory_mb"]
    assert code == 0 and memory["peak_growth"] > 0 and "VmHWM" in memory["how"]


def test_a_results_file_that_cannot_grow_is_one_line(tmp_path: Path, capsys, models: dict[str, Path], monkeypatch):
    """Issue 25: a disk filling mid-run ended in the agent's [Errno 28] traceback. (ENOSPC is mocked: a full file
    system cannot be made here without mounting one.)"""
    import errno

    def full(handle, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    _stage(tmp_path, models["onnx"])
    monkeypatch.setattr(python_agent, "append", full)
    assert _run(tmp_path, [{"name": "ort", "path": "conv.onnx"}])[0] == 5
    err = capsys.readouterr().err
    assert "cannot write" in err and "No space left on device; free some space" in err and "Traceback" not in err


def test_models_are_timed_with_the_garbage_collector_off(tmp_path: Path, models: dict[str, Path], monkeypatch):
    """As ``timeit`` times: a cyclic collection inside a timed run is a pause no C++ benchmark tool has. The
    collector is back on once the model's record is written. (The timer is wrapped to look, not replaced.)"""
    import gc

    seen = []
    sample = python_agent.Timer.sample

    def watched(self):
        seen.append(gc.isenabled())
        return sample(self)

    _stage(tmp_path, models["onnx"])
    monkeypatch.setattr(python_agent.Timer, "sample", watched)
    assert gc.isenabled()
    assert _run(tmp_path, [{"name": "ort", "path": "conv.onnx"}])[0] == 0
    assert seen and not any(seen)
    assert gc.isenabled()
