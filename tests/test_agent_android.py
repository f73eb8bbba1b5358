"""The Android agent (POSIX sh driving TF-Lite's benchmark_model) through the ADB test daemon.

No phone exists here: the daemon runs the agent with this machine's sh (dash, which refuses bash-isms; mksh and
busybox ash too where installed), and a fake benchmark_model prints verbatim output of the real binary, or a time
set by the model file that drifts with every call (tests/conftest.py). A fake sysfs tree decides which cores are
fast; this machine's taskset does the pinning, and the fake reports the CPUs it was allowed to use.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from profiler.android_output import parse_agent_output
from profiler.android_run import AGENT, AgentFailed, benchmark_flags, run_android_agent
from profiler.transports.adb import AdbTransport
from profiler.transports.errors import ConnectionFailed
from tests.conftest import FakeBenchmarkModel, make_fake_sysfs, process_alive
from tests.peers.adb_daemon import AdbDaemon
from tests.peers.waiting import wait_until
from tests.test_benchmark_model_parse import NEW_WITH_MEDIAN

FAST = {"threads": 1, "warmup": 1, "min_count": 5, "min_time_s": 0.01, "provider": "xnnpack", "affinity": "fast"}


def _models(folder: Path, kinds: dict[str, str]) -> list[dict[str, object]]:
    """Model files whose first word tells the fake benchmark_model which output to print."""
    folder.mkdir(parents=True, exist_ok=True)
    models = []
    for name, kind in kinds.items():
        path = folder / f"{name}.tflite"
        path.write_text(f"{kind}\n")
        models.append({"name": name, "path": str(path)})
    return models


def _options(tmp_path: Path, fake_benchmark_model: FakeBenchmarkModel, **extra: object) -> dict[str, object]:
    """run_android_agent's options for the stand-in binary: results next to the test, short polls."""
    return {"results": tmp_path / "results.txt", "timeout": 60, "benchmark_model": str(fake_benchmark_model.path),
            "poll_interval": 0.05, **extra}


def _reboot_while_m1_runs(adb, models, options, fake_benchmark_model, remote_dir: Path) -> None:
    """Run the agent and SIGKILL its process group (a phone reboot) while m1.tflite is held mid-run."""
    fake_benchmark_model.hold("m1.tflite")

    def reboot() -> None:
        wait_until(lambda: "m1.tflite" in dict(fake_benchmark_model.calls()), "m1 to start")
        os.killpg(int((remote_dir / "agent.pid").read_text()), signal.SIGKILL)  # setsid made it a group leader

    phone = threading.Thread(target=reboot)
    phone.start()
    try:
        with pytest.raises(AgentFailed, match="stopped before finishing"):
            run_android_agent(adb, models, **options)
    finally:
        phone.join()


@pytest.mark.parametrize(
    ("max_khz", "affinity", "mask"),
    [
        (
            {
                0: 1_800_000,
                1: 1_800_000,
                2: 1_800_000,
                3: 1_800_000,
                4: 2_400_000,
                5: 2_400_000,
                6: 2_400_000,
                7: 2_400_000,
            },
            "fast",
            "f0",
        ),  # big.LITTLE, 4 + 4 (Pixel 1 class)
        (
            {
                0: 1_800_000,
                1: 1_800_000,
                2: 1_800_000,
                3: 1_800_000,
                4: 2_420_000,
                5: 2_420_000,
                6: 2_420_000,
                7: 2_840_000,
            },
            "fast",
            "80",
        ),  # three clusters, one prime core
        ({0: 2_000_000, 1: 2_000_000}, "fast", "3"),  # all cores alike
        ({0: 2_000_000, 11: 2_500_000, 10: 2_500_000}, "fast", "c00"),  # ids above 9 sort apart from their values
        ({0: None, 1: 1_500_000, 2: 1_500_000}, "fast", "6"),  # an offline core has no cpufreq folder
        ({}, "fast", ""),  # no cpufreq readable: no pinning
        ({0: 1_000_000}, "4,5", "30"),  # explicit CPU ids
        ({0: 1_000_000}, "none", ""),
    ],
)
def test_taskset_mask_from_cpuinfo_max_freq(tmp_path: Path, max_khz: dict[int, int | None], affinity: str, mask: str):
    """The mask the agent gives taskset: the cores with the highest cpuinfo_max_freq, or the listed ones."""
    root = make_fake_sysfs(tmp_path / "sysfs", max_khz)
    result = subprocess.run(
        ["sh", str(AGENT), "mask", affinity],
        env={**os.environ, "OFA_AGENT_SYSFS": str(root)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert (result.stdout.strip(), result.stderr) == (mask, "")


def test_bad_cpu_id_is_refused(tmp_path: Path):
    """A non-numeric CPU id fails with a message naming it, rather than pinning somewhere else."""
    result = subprocess.run(["sh", str(AGENT), "mask", "4,x"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "bad CPU id 'x'" in result.stderr


def test_both_output_formats_bad_flags_and_failures_pinned_to_the_fast_core(
    adb: AdbTransport, fake_benchmark_model: FakeBenchmarkModel, fast_core_sysfs: int, tmp_path: Path
):
    """Each format parses into the Python agent's record shape; unconsumed flags and a crash are error records."""
    kinds = {
        "new": "new",
        "plain": "plain",
        "old": "old",
        "oldest": "oldest",
        "bad flags": "unconsumed",
        "broken; $(touch pwned)": "fail",
    }
    remote_dir = tmp_path / "device"
    run = run_android_agent(
        adb,
        _models(tmp_path / "models", kinds),
        remote_dir=str(remote_dir),
        results=tmp_path / "results.txt",
        timeout=60,
        benchmark_model=str(fake_benchmark_model.path),
        settings=FAST,
        poll_interval=0.05,
    )
    assert set(run.results) == {"new", "plain", "old", "oldest"}
    new = run.results["new"]
    assert new["median_from"] == "median" and new["summary"]["median"] == pytest.approx(1239.807)
    assert new["summary"]["mean"] == pytest.approx(1240.27) and new["summary"]["count"] == 50
    assert new["samples_ms"] == [] and new["summary"]["p10"] is None
    plain = run.results["plain"]
    assert plain["median_from"] == "avg" and plain["summary"]["median"] == pytest.approx(2950.34)
    assert run.results["old"]["summary"]["median"] == pytest.approx(79.7609)
    assert run.results["oldest"]["summary"]["median"] == pytest.approx(747.733)

    assert "ignored flags it does not know" in run.errors["bad flags"]["error"]
    assert "--use_xnnpack=true" in run.errors["bad flags"]["error"]
    assert "status 1" in run.errors["broken; $(touch pwned)"]["error"]
    assert not list(tmp_path.rglob("pwned"))

    mask = format(1 << fast_core_sysfs, "x")
    assert new["command"].startswith(f"taskset {mask} {fake_benchmark_model.path} --graph={remote_dir}/new.tflite")
    assert "--use_xnnpack=true" in new["command"] and "--num_runs=5" in new["command"]
    assert {cpus for _, cpus in fake_benchmark_model.calls()} == {str(fast_core_sysfs)}
    start, end = run.environments
    assert (start["phase"], end["phase"], start["affinity_mask"]) == ("start", "end", mask)
    assert {cpu["cpu"]: cpu["max_khz"] for cpu in start["cpus"]}[fast_core_sysfs] == 2_000_000
    assert start["thermal"] == [{"zone": "thermal_zone0", "type": "cpu-big", "temp_c": 41.5}]
    assert not remote_dir.exists()


def test_missing_binary_says_where_to_push_it(adb: AdbTransport, tmp_path: Path):
    """No benchmark_model at the profile's path: the agent stops at once with the path and the push command."""
    with pytest.raises(AgentFailed, match=r"status 127.*not executable at /nonexistent/benchmark_model.*adb push"):
        run_android_agent(
            adb,
            _models(tmp_path / "models", {"m": "new"}),
            remote_dir=str(tmp_path / "device"),
            results=tmp_path / "results.txt",
            timeout=60,
            benchmark_model="/nonexistent/benchmark_model",
            poll_interval=0.05,
        )


@pytest.mark.slow
def test_agent_survives_the_host_going_away_and_the_host_picks_up(
    adb_daemon: AdbDaemon, adb_key: Path, fake_benchmark_model: FakeBenchmarkModel, tmp_path: Path
):
    """The ADB link drops mid-run: the agent keeps measuring and writing; reconnected, the host pulls it all."""
    models = _models(tmp_path / "models", {"m0": "new", "m1": "plain", "m2": "old"})
    remote_dir = tmp_path / "device"
    device_results = remote_dir / "results.txt"
    options = _options(tmp_path, fake_benchmark_model, remote_dir=str(remote_dir))
    fake_benchmark_model.hold("m1.tflite")
    def m1_running() -> bool:  # once m0 is written and m1 is running, the cable goes
        return "m1.tflite" in dict(fake_benchmark_model.calls()) and device_results.exists()

    with (
        adb_daemon.unplugged_when(m1_running, "m1 to start"),
        AdbTransport(adb_daemon.serial, key_path=adb_key, connect_timeout=5) as adb,
        pytest.raises(ConnectionFailed),
    ):
        run_android_agent(adb, models, **options)
    pid = int((remote_dir / "agent.pid").read_text())
    assert process_alive(pid), "the agent died with the ADB connection"
    assert set(parse_agent_output(device_results.read_text()).results) == {"m0"}

    fake_benchmark_model.release("m1.tflite")
    wait_until(lambda: (remote_dir / "done").exists(), "the agent to finish while the host is away")
    assert set(parse_agent_output(device_results.read_text()).results) == {"m0", "m1", "m2"}

    adb_daemon.start(adb_daemon.port)
    with AdbTransport(adb_daemon.serial, key_path=adb_key, connect_timeout=5) as adb:
        run = run_android_agent(adb, models, **options)
    assert set(run.results) == {"m0", "m1", "m2"}
    assert [name for name, _ in fake_benchmark_model.calls()] == ["m0.tflite", "m1.tflite", "m2.tflite"]
    assert not remote_dir.exists()


@pytest.mark.slow
def test_agent_killed_mid_run_then_rerun_measures_only_the_rest(
    adb: AdbTransport, fake_benchmark_model: FakeBenchmarkModel, tmp_path: Path
):
    """The phone reboots mid-run (agent and binary killed): a clear error; the rerun skips finished models."""
    models = _models(tmp_path / "models", {"m0": "new", "m1": "plain", "m2": "old"})
    remote_dir = tmp_path / "device"
    options = _options(tmp_path, fake_benchmark_model, remote_dir=str(remote_dir))
    _reboot_while_m1_runs(adb, models, options, fake_benchmark_model, remote_dir)
    fake_benchmark_model.release("m1.tflite")
    run = run_android_agent(adb, models, **options)
    assert set(run.results) == {"m0", "m1", "m2"}
    calls = [name for name, _ in fake_benchmark_model.calls()]
    assert calls == ["m0.tflite", "m1.tflite", "m1.tflite", "m2.tflite"]


def test_a_block_cut_off_mid_write_is_ignored():
    """Only blocks with their end line count; a torn one and a torn environment block are dropped cleanly."""
    block = (
        "=== ofa-agent begin {name}\n=== ofa-agent command taskset 80 bm --graph=x\n{body}\n"
        "=== ofa-agent status 0\n=== ofa-agent end {name}\n"
    )
    text = (
        "=== ofa-agent environment start\ncpu 0 schedutil 900000 1800000\ncpu 1 - - -\nmask 2\n"
        + block.format(name="a", body=NEW_WITH_MEDIAN)
        + "=== ofa-agent begin b\nINFO: count=50 first=1\n"
        + "=== ofa-agent environment start\ncpu 0 schedutil 900000 1800000\n"
        + block.format(name="b", body=NEW_WITH_MEDIAN)[:-20]
    )
    run = parse_agent_output(text)
    assert list(run.results) == ["a"] and not run.errors
    assert run.environments[0]["cpus"][1] == {"cpu": 1, "governor": None, "cur_khz": None, "max_khz": None}
    assert [env["phase"] for env in run.environments] == ["start", "start"]


def test_unknown_delegate_and_bad_names_are_refused(adb: AdbTransport, tmp_path: Path):
    """Settings benchmark_model cannot honour, and names the TAB-separated manifest cannot hold, fail up front."""
    with pytest.raises(ValueError, match="provider 'hexagon' has no benchmark_model delegate"):
        benchmark_flags({"provider": "hexagon"})
    assert benchmark_flags({"provider": "CPU", "min_time_s": 0.002}) == [
        "--num_threads=1",
        "--warmup_runs=10",
        "--num_runs=50",
        "--min_secs=0.002",
    ]
    with pytest.raises(ValueError, match="without TAB or newline"):
        run_android_agent(
            adb,
            _models(tmp_path / "models", {"a\tb": "new"}),
            remote_dir=str(tmp_path / "device"),
            results=tmp_path / "results.txt",
            timeout=60,
        )


# ---- timed against the reference (issue 9) ----------------------------------------------------------------------

DRIFT = 0.04  # per call: the fake's speed moves 4% of its base time with every invocation


@pytest.fixture(params=["dash", "mksh", "busybox"])
def phone_shell(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each POSIX sh a phone may have, as the ``sh`` the ADB daemon and the agent start (the path it runs as)."""
    program = shutil.which(request.param)
    if program is None:
        pytest.skip(f"{request.param} is not installed here (apt-get install mksh busybox)")
    shim = tmp_path / "shell"
    shim.mkdir()
    (shim / "sh").symlink_to(program)  # busybox runs its ash when called as sh
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")  # the daemon's commands inherit it
    return os.path.realpath(program)


def _interleaved(files: list[str], reference: str, rounds: int) -> list[str]:
    """The call order of models timed against the reference: reference, model, ..., model, reference."""
    return [name for file in files for name in [reference, file] * rounds + [reference]]


def test_ratios_hold_while_absolute_times_drift(
    adb: AdbTransport, fake_benchmark_model: FakeBenchmarkModel, phone_shell: str, tmp_path: Path
):
    """Each model bracketed by the reference, in every shell: the speed moves by over 20%, the ratios not at all."""
    fake_benchmark_model.drift(DRIFT)
    models = _models(tmp_path / "models", {"m0": "timed 2.5", "m1": "timed 4"})
    [reference] = _models(tmp_path / "reference", {"ref": "timed 1"})
    run = run_android_agent(
        adb,
        models,
        remote_dir=str(tmp_path / "device"),
        results=tmp_path / "results.txt",
        timeout=60,
        benchmark_model=str(fake_benchmark_model.path),
        settings={**FAST, "affinity": "none"},
        reference=reference,
        rounds=5,
        poll_interval=0.05,
    )
    assert fake_benchmark_model.parents() == {phone_shell}
    calls = [name for name, _ in fake_benchmark_model.calls()]
    assert calls == _interleaved(["m0.tflite", "m1.tflite"], "ref.tflite", 5)
    assert set(run.results) == {"m0", "m1"} and not run.errors
    for name, ratio in {"m0": 2.5, "m1": 4.0}.items():
        result = run.results[name]
        samples = result["samples_ms"]
        assert len(samples) == 5 and max(samples) / min(samples) > 1.2, "the fake's speed did not drift"
        assert result["ratio_samples"] == pytest.approx([ratio] * 5, rel=1e-12)
        assert result["ratio"]["median"] == pytest.approx(ratio) and result["ratio"]["std"] == pytest.approx(0)
        assert result["summary"]["median"] == pytest.approx(float(np.median(samples)))
        assert (result["summary"]["count"], result["summary"]["p10"], result["rounds"]) == (5, None, 5)
        assert result["median_from"] == "median"
        assert result["reference"]["name"] == "ref" and len(result["reference"]["samples_ms"]) == 6
        assert "--num_runs=1 " in result["command"] and "--min_secs=0.002 " in result["command"]
        assert "--warmup_min_secs=0.1 " in result["command"]


def test_a_failing_reference_or_model_stops_that_sequence_with_an_error_record(
    adb: AdbTransport, fake_benchmark_model: FakeBenchmarkModel, tmp_path: Path
):
    """A reference that fails is named with the binary's output; a model failing mid-sequence stops it there."""
    options = _options(tmp_path, fake_benchmark_model, settings=FAST, rounds=3)
    models = _models(tmp_path / "models", {"good": "timed 2", "broken": "fail"})
    [broken_reference] = _models(tmp_path / "broken reference", {"ref": "fail"})
    run = run_android_agent(adb, models, remote_dir=str(tmp_path / "a"), reference=broken_reference, **options)
    assert not run.results and set(run.errors) == {"good", "broken"}
    error = run.errors["good"]["error"]
    assert "the reference 'ref' failed in its invocation 1 of 4" in error
    assert "status 1" in error and "ERROR: Failed to load model" in error and "ref.tflite" in error
    assert [name for name, _ in fake_benchmark_model.calls()] == ["ref.tflite", "ref.tflite"]

    [reference] = _models(tmp_path / "reference", {"ref": "timed 1"})
    run = run_android_agent(adb, models, remote_dir=str(tmp_path / "b"), reference=reference, **options)
    assert set(run.results) == {"good"} and set(run.errors) == {"broken"}
    assert "the model failed in its invocation 1 of 3" in run.errors["broken"]["error"]
    calls = [name for name, _ in fake_benchmark_model.calls()][2:]
    assert calls == [*_interleaved(["good.tflite"], "ref.tflite", 3), "ref.tflite", "broken.tflite"]


@pytest.mark.slow
def test_killed_mid_sequence_then_rerun_times_that_model_again_whole(
    adb: AdbTransport, fake_benchmark_model: FakeBenchmarkModel, tmp_path: Path
):
    """Killed inside a model's sequence: nothing of it reaches the results; the rerun skips the finished model."""
    fake_benchmark_model.drift(DRIFT)
    models = _models(tmp_path / "models", {"m0": "timed 2.5", "m1": "timed 4", "m2": "timed 3"})
    [reference] = _models(tmp_path / "reference", {"ref": "timed 1"})
    remote_dir = tmp_path / "device"
    options = _options(tmp_path, fake_benchmark_model, remote_dir=str(remote_dir), reference=reference, rounds=3)
    _reboot_while_m1_runs(adb, models, options, fake_benchmark_model, remote_dir)  # m1's first model invocation
    assert set(parse_agent_output((remote_dir / "results.txt").read_text()).results) == {"m0"}
    fake_benchmark_model.release("m1.tflite")
    run = run_android_agent(adb, models, **options)
    assert set(run.results) == {"m0", "m1", "m2"}
    calls = [name for name, _ in fake_benchmark_model.calls()]
    first = _interleaved(["m0.tflite"], "ref.tflite", 3)
    assert calls == [*first, "ref.tflite", "m1.tflite", *_interleaved(["m1.tflite", "m2.tflite"], "ref.tflite", 3)]
    for name, ratio in {"m0": 2.5, "m1": 4.0, "m2": 3.0}.items():
        assert run.results[name]["ratio_samples"] == pytest.approx([ratio] * 3, rel=1e-12)
        assert len(run.results[name]["reference"]["samples_ms"]) == 4


def test_reference_block_parsing_and_split_flags():
    """The last model invocation without a reference after it divides by the one before; flags are split."""
    invocation = (
        "=== ofa-agent invocation {role} {round}\n=== ofa-agent command bm --graph={role}\n"
        "INFO: count=10 first=1 curr=1 min=1 max=1 avg={avg} std=1\n"
        "INFO: Inference timings in us: Init: 100, First inference: 1, Warmup (avg): 1, Inference (avg): {avg}\n"
        "\n=== ofa-agent status 0\n"
    )
    sequence = [("reference", 0, 1000), ("model", 0, 3000), ("reference", 1, 2000), ("model", 1, 6000)]
    body = "".join(invocation.format(role=role, round=number, avg=avg) for role, number, avg in sequence)
    text = f"=== ofa-agent begin m\n=== ofa-agent reference ref\n=== ofa-agent rounds 2\n{body}=== ofa-agent end m\n"
    result = parse_agent_output(text).results["m"]
    assert result["median_from"] == "avg" and result["samples_ms"] == pytest.approx([3.0, 6.0])
    assert result["ratio_samples"] == pytest.approx([2.0, 3.0])
    assert result["reference"]["samples_ms"] == pytest.approx([1.0, 2.0])
    assert result["command"] == "bm --graph=model" and result["init_ms"] == pytest.approx(0.1)

    flags = benchmark_flags({"min_count": 50, "min_time_s": 1.0, "warmup": 10}, rounds=5)
    assert flags == ["--num_threads=1", "--warmup_runs=10", "--warmup_min_secs=0.1", "--num_runs=10", "--min_secs=0.2"]
    assert benchmark_flags({"min_count": 3}, rounds=5)[3] == "--num_runs=1"


def test_rounds_below_one_are_refused(adb: AdbTransport, tmp_path: Path):
    """A reference with no rounds would time nothing: refused before anything is pushed."""
    [reference] = _models(tmp_path / "reference", {"ref": "timed 1"})
    with pytest.raises(ValueError, match="rounds must be a whole number of at least 1, got 0"):
        run_android_agent(
            adb,
            _models(tmp_path / "models", {"m": "timed 2"}),
            remote_dir=str(tmp_path / "device"),
            results=tmp_path / "results.txt",
            timeout=60,
            reference=reference,
            rounds=0,
        )
    assert not (tmp_path / "device").exists()
