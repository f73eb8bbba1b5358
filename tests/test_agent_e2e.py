"""End to end over each transport: push the agent and two models, run, pull, parse, clean up."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from profiler.agent_run import parse_results, run_python_agent
from profiler.transports.base import Transport
from profiler.transports.errors import ConnectionFailed
from profiler.transports.ssh import SshTransport
from tests.peers.sshd import Sshd
from tests.peers.waiting import wait_until

SETTINGS = {"warmup": 2, "min_count": 5, "min_time_s": 0.0, "threads": 1}


@pytest.mark.slow
def test_agent_measures_onnx_and_tflite_and_cleans_up(transport: Transport, models: dict[str, Path], tmp_path: Path):
    """Both models come back measured, and the device folder is gone afterwards."""
    remote_dir = str(tmp_path / "device" / "ofa run")
    run = run_python_agent(
        transport,
        [{"name": "conv onnx", "path": models["onnx"]}, {"name": "conv tflite", "path": models["tflite"]}],
        remote_dir=remote_dir,
        results=tmp_path / "results.jsonl",
        timeout=120,
        python=sys.executable,
        settings=SETTINGS,
    )
    assert set(run.results) == {"conv onnx", "conv tflite"}
    assert all(record["summary"]["count"] >= 5 for record in run.results.values())
    assert run.environments[0]["phase"] == "start"
    assert transport.run(["test", "-e", remote_dir], timeout=10, check=False).exited == 1


def _wait_for_results(path: Path, count: int, stop: threading.Event) -> bool:
    """Until ``count`` whole result lines are in ``path``: a line caught half-written (the agent writes a long line
    in more than one call) would be torn by pulling the plug and then skipped, as a torn line must be."""
    return wait_until(lambda: path.exists() and len(parse_results(path.read_text()).results) >= count,
                      f"{count} result(s) in {path}", stop=stop.is_set)


@pytest.mark.slow
def test_device_going_away_mid_run_then_rerun_continues(sshd: Sshd, models: dict[str, Path], tmp_path: Path):
    """sshd and the agent killed after the first model: a clear error, then a rerun measures only the rest."""
    entries = [{"name": "model 0", "path": models["onnx"]}]
    entries += [{"name": "tflite", "path": models["tflite"]}, {"name": "broken", "path": models["broken"]}]
    remote_dir = tmp_path / "device"
    device_results = remote_dir / "results.jsonl"
    options = {
        "remote_dir": str(remote_dir),
        "results": tmp_path / "results.jsonl",
        "timeout": 120,
        "python": sys.executable,
        "settings": {**SETTINGS, "min_time_s": 1.0},
    }
    stop = threading.Event()

    def pull_the_plug() -> None:
        if _wait_for_results(device_results, 1, stop):
            sshd.stop()

    plug = threading.Thread(target=pull_the_plug)
    plug.start()
    try:
        with (
            SshTransport(
                "127.0.0.1", port=sshd.port, user=sshd.user, key_filename=sshd.client_key, known_hosts=sshd.known_hosts
            ) as ssh,
            pytest.raises(ConnectionFailed, match="went away"),
        ):
            run_python_agent(ssh, entries, **options)
    finally:
        stop.set()
        plug.join()
    measured = parse_results(device_results.read_text())
    assert list(measured.results) == ["model 0"]
    first = measured.results["model 0"]

    sshd.start()
    with SshTransport(
        "127.0.0.1", port=sshd.port, user=sshd.user, key_filename=sshd.client_key, known_hosts=sshd.known_hosts
    ) as ssh:
        run = run_python_agent(ssh, entries, **options)
    assert run.results["model 0"] == first
    assert set(run.results) == {"model 0", "tflite"}
    assert "onnxruntime cannot load" in run.errors["broken"]["error"]
    assert [env["phase"] for env in run.environments] == ["start", "start", "end"]
    assert not remote_dir.exists()


def test_models_sharing_one_file_at_two_resolutions(local_transport: Transport, tmp_path: Path):
    """One ONNX file with symbolic height and width serves two models, fixed by dim_overrides; pushed once."""
    from torch import nn

    from supernet.export import onnx_bytes
    from supernet.formats import ONNX_FREE_DIMS

    shared = tmp_path / "host" / "any.onnx"
    shared.parent.mkdir()
    shared.write_bytes(onnx_bytes(nn.Conv2d(3, 8, 3, padding=1), (1, 3, 16, 16), any_resolution=True))
    entries = [{"name": f"r{r}", "path": shared, "inputs": [[1, 3, r, r]],
                "dim_overrides": dict.fromkeys(ONNX_FREE_DIMS, r)} for r in (16, 64)]
    options = {"remote_dir": str(tmp_path / "device"), "results": tmp_path / "results.jsonl", "timeout": 60,
               "python": sys.executable, "settings": SETTINGS}
    run = run_python_agent(local_transport, entries, **options)
    assert set(run.results) == {"r16", "r64"} and not run.errors
    assert run.results["r64"]["summary"]["median"] > run.results["r16"]["summary"]["median"]

    other = tmp_path / "elsewhere" / "any.onnx"
    other.parent.mkdir()
    other.write_bytes(shared.read_bytes())
    with pytest.raises(ValueError, match=r"two models share the file name 'any\.onnx'"):
        run_python_agent(local_transport, [entries[0], {**entries[1], "path": other}], **options)
