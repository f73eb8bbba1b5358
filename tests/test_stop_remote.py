"""Ctrl-C on a remote run stops the agent on the device too, not only the host (issue 10).

Over SSH (a real sshd on loopback) the Python agent would stop only at its next orphan check; over ADB the
Android agent runs detached from the connection on purpose (a dropped cable must not stop it), so without a last
word from the host it would go on measuring after the run is gone. No phone exists here: the ADB peer is the
test daemon, and benchmark_model is the fake of tests/conftest.py, held inside its first call so that the agent
is busy when the signal comes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supernet.units import all_units
from tests.conftest import FakeBenchmarkModel, process_alive
from tests.paths import ROOT
from tests.peers.adb_daemon import AdbDaemon
from tests.peers.models import stand_in_tflite
from tests.peers.sshd import Sshd
from tests.peers.waiting import wait_until

SETTINGS = ["--width", "1.0", "--resolutions", "128", "--rows", "isolated", "--min-time", "0.5", "--min-count", "3",
            "--batch-rows", "5", "--block-ms", "1", "--retries", "0", "--quiet"]


def _start(argv: list[str], folder: Path, devices_toml: str) -> subprocess.Popen:
    """``ofa-profile`` in its own process, run from ``folder`` with that devices.toml, as a user would."""
    (folder / "devices.toml").write_text(devices_toml)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "profiler.cli", *argv, *SETTINGS, "--out", str(folder / "tables"),
                             "--cache", str(folder / "cache")], cwd=folder, env=env, stderr=subprocess.PIPE,
                            text=True)


def _stop(process: subprocess.Popen) -> str:
    """Send SIGINT; the run must end within 2 s with the rerun command, and no traceback."""
    stopped = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    took = time.monotonic() - stopped
    assert took < 2.0, f"took {took:.1f} s to stop: {stderr[-2000:]}"
    assert process.returncode == 130, stderr[-2000:]
    assert "stopped by SIGINT" in stderr and "Rerun the same command" in stderr
    return stderr


def _running(pattern: str) -> list[str]:
    return subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout.splitlines()


@pytest.mark.slow
def test_ctrl_c_over_ssh_stops_the_python_agent_on_the_device(sshd: Sshd, tmp_path: Path):
    device = tmp_path / "device"
    link = ["--via", "ssh", "--host", "127.0.0.1", "--port", str(sshd.port), "--user", sshd.user, "--key",
            str(sshd.client_key), "--known-hosts", str(sshd.known_hosts), "--python", sys.executable]
    process = _start(["--device", "local", *link], tmp_path,
                     f"[devices.local]\nremote_dir = {json.dumps(str(device))}\n")
    try:
        wait_until(lambda: any('"type": "result"' in p.read_text() for p in device.glob("**/b*/results.jsonl")),
                   "the first row measured on the device", timeout_s=180, stop=lambda: process.poll() is not None)
        assert process.poll() is None, f"the run ended before it was stopped: {process.stderr.read()[-2000:]}"
        _stop(process)
    finally:
        process.kill()
    wait_until(lambda: not _running(f"{device}/.*python_agent"), "the agent on the device to stop", timeout_s=2)


@pytest.mark.slow
def test_ctrl_c_over_adb_stops_the_detached_android_agent(
    adb_daemon: AdbDaemon, adb_key: Path, fake_benchmark_model: FakeBenchmarkModel, tmp_path: Path
):
    stand_in_tflite(all_units(1.0, [128]), tmp_path / "cache")
    device = tmp_path / "device"
    # The reference is timed first: holding every file holds that first call (for up to 30 s).
    for stand_in in (tmp_path / "cache").rglob("*.tflite"):
        fake_benchmark_model.hold(stand_in.name)
    process = _start(["--device", "pixel1", "--serial", adb_daemon.serial, "--adb-key", str(adb_key)], tmp_path,
                     f"[devices.pixel1]\nremote_dir = {json.dumps(str(device))}\n"
                     f"benchmark_model = {json.dumps(str(fake_benchmark_model.path))}\n")
    try:
        wait_until(lambda: fake_benchmark_model.calls(), "benchmark_model's first call", timeout_s=180,
                   stop=lambda: process.poll() is not None)
        assert process.poll() is None, f"the run ended before it was stopped: {process.stderr.read()[-2000:]}"
        agent = int(next(device.glob("*/b*/agent.pid")).read_text())
        _stop(process)
    finally:
        process.kill()
    wait_until(lambda: not process_alive(agent), "the detached agent on the phone to stop", timeout_s=2)
    wait_until(lambda: not _running(str(fake_benchmark_model.path)), "benchmark_model to stop", timeout_s=2)
