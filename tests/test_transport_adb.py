"""ADB transport failures against the test ADB device: each gives a clear error, and none hangs."""

from __future__ import annotations

import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from profiler.agent_run import parse_results, run_python_agent
from profiler.transports.adb import AdbTransport, load_or_create_key
from profiler.transports.errors import AuthenticationFailed, ConnectionFailed, DeviceBusy
from tests.peers.adb_daemon import AdbDaemon
from tests.peers.sshd import free_port
from tests.peers.waiting import wait_until, when_running


def test_key_is_created_on_first_use_owner_only(tmp_path: Path):
    """A missing key is created with 0600, and the public key beside it."""
    key = tmp_path / "android" / "adbkey"
    load_or_create_key(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Path(f"{key}.pub").read_text().split()[0]


def test_key_readable_by_others_is_refused(tmp_path: Path):
    """A private key others can read is refused, with the chmod that fixes it."""
    key = tmp_path / "adbkey"
    load_or_create_key(key)
    key.chmod(0o644)
    with pytest.raises(PermissionError, match=f"chmod 600 {key}"):
        load_or_create_key(key)


def test_connection_refused(tmp_path: Path, adb_key: Path):
    """Nothing listening: ConnectionFailed naming the address."""
    port = free_port()
    with (
        AdbTransport(f"127.0.0.1:{port}", key_path=adb_key) as transport,
        pytest.raises(ConnectionFailed, match=f"adb://127.0.0.1:{port}: could not connect"),
    ):
        transport.run(["true"], timeout=5)


def test_unknown_key_is_refused_within_the_timeout(adb_daemon: AdbDaemon, tmp_path: Path):
    """A key the device never approves: AuthenticationFailed after connect_timeout, pointing at the phone's dialog."""
    stranger = tmp_path / "stranger"
    started = time.monotonic()
    with (
        AdbTransport(adb_daemon.serial, key_path=stranger, connect_timeout=1) as transport,
        pytest.raises(AuthenticationFailed, match="did not accept key") as caught,
    ):
        transport.run(["true"], timeout=5)
    assert "Allow USB debugging" in str(caught.value)
    assert time.monotonic() - started < 10


def test_usb_serial_without_libusb_names_the_extra(adb_key: Path):
    """A USB serial on a host without libusb1 says which extra to install."""
    with (
        AdbTransport("0123456789ABCDEF", key_path=adb_key) as transport,
        pytest.raises(ConnectionFailed, match=r"adb-shell\[usb\]"),
    ):
        transport.open()


class _BusyUsb(AdbTransport):
    """A USB phone held by an adb server cannot exist here: this device fails the way libusb1 does."""

    def _make_device(self):
        class Device:
            def connect(self, **_):
                raise RuntimeError("LIBUSB_ERROR_BUSY [-6]")

            def close(self):
                pass

        return Device()


def test_usb_busy_suggests_adb_kill_server(adb_key: Path):
    """LIBUSB_ERROR_BUSY becomes DeviceBusy with the `adb kill-server` hint."""
    with (
        _BusyUsb("0123456789ABCDEF", key_path=adb_key) as transport,
        pytest.raises(DeviceBusy, match="adb kill-server"),
    ):
        transport.open()


def test_device_going_away_mid_command(adb: AdbTransport, adb_daemon: AdbDaemon):
    """The device vanishing during a command gives ConnectionFailed at once, not after the timeout."""
    adb.open()
    # A command line no other test runs: the watcher matches any process on the machine, and the SSH twin of this
    # test ran its `sleep 60` on the other worker once, which stopped the wrong peer before its command started.
    join = when_running("sleep 62", adb_daemon.stop)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectionFailed, match="went away"):
            adb.run(["sleep", "62"], timeout=30)
    finally:
        join()
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_device_going_away_mid_run_then_rerun_continues(
    adb_daemon: AdbDaemon, adb_key: Path, models: dict[str, Path], tmp_path: Path
):
    """The device gone after the first model: the rerun (new connection) measures only what is missing."""
    entries = [{"name": "onnx", "path": models["onnx"]}, {"name": "tflite", "path": models["tflite"]}]
    remote_dir = tmp_path / "device"
    options = {
        "remote_dir": str(remote_dir),
        "results": tmp_path / "results.jsonl",
        "timeout": 120,
        "python": sys.executable,
        "settings": {"warmup": 1, "min_count": 5, "min_time_s": 1.0},
    }
    device_results = remote_dir / "results.jsonl"
    stop = threading.Event()

    def unplug() -> None:
        wait_until(lambda: device_results.exists() and '"type": "result"' in device_results.read_text(),
                   "the first result", stop=stop.is_set)
        adb_daemon.stop()

    unplugger = threading.Thread(target=unplug)
    unplugger.start()
    try:
        with AdbTransport(adb_daemon.serial, key_path=adb_key) as adb, pytest.raises(ConnectionFailed):
            run_python_agent(adb, entries, **options)
    finally:
        stop.set()
        unplugger.join()
    first = parse_results(device_results.read_text())
    assert list(first.results) == ["onnx"]

    back = AdbDaemon(adb_daemon.sandbox, authorized_keys=[Path(f"{adb_key}.pub").read_text()])
    with back, AdbTransport(back.serial, key_path=adb_key) as adb:
        run = run_python_agent(adb, entries, **options)
    assert run.results["onnx"] == first.results["onnx"]
    assert set(run.results) == {"onnx", "tflite"}
    assert not remote_dir.exists()
