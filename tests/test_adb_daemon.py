"""The test ADB device is faithful: Debian's own `adb` client connects, authenticates, runs, pushes and pulls."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.peers.adb_daemon import AdbDaemon
from tests.peers.sshd import free_port

AdbCli = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def adb_cli(tmp_path: Path) -> Iterator[AdbCli]:
    """Debian's adb with its own HOME (its key), TMPDIR (server log) and server port; killed afterwards."""
    adb = shutil.which("adb")
    assert adb, "Debian's adb client is missing: apt-get install adb (make test does it)"
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "ANDROID_ADB_SERVER_PORT": str(free_port())}

    def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([adb, *args], env=env, capture_output=True, text=True, timeout=timeout)

    try:
        assert run("start-server").returncode == 0
        yield run
    finally:
        run("kill-server")


def _client_key(tmp_path: Path) -> str:
    return (tmp_path / "home" / ".android" / "adbkey.pub").read_text()


def _connect(adb_cli: AdbCli, daemon: AdbDaemon) -> None:
    # `adb connect` exits 0 even when it failed: wait for the device state, bounded.
    adb_cli("connect", daemon.serial)
    waited = adb_cli("-s", daemon.serial, "wait-for-device", timeout=15)
    assert waited.returncode == 0, waited.stderr


@pytest.mark.parametrize("features", [("stat_v2",), ()], ids=["STA2", "STAT"])
def test_debian_adb_connects_runs_pushes_and_pulls(adb_cli: AdbCli, tmp_path: Path, features: tuple[str, ...]):
    """connect (AUTH with the client's key), shell, push and pull all work, with STA2 and with plain STAT."""
    with AdbDaemon(tmp_path / "device", authorized_keys=[_client_key(tmp_path)], features=features) as daemon:
        _connect(adb_cli, daemon)
        assert f"{daemon.serial}\tdevice" in adb_cli("devices").stdout
        shell = adb_cli("-s", daemon.serial, "shell", "echo out; echo err >&2; pwd")
        assert shell.stdout == f"out\nerr\n{daemon.sandbox}\n"
        payload = tmp_path / "payload.bin"
        payload.write_bytes(os.urandom(200_000))  # several 64 KiB DATA chunks
        remote = str(daemon.sandbox / "pushed file.bin")
        assert adb_cli("-s", daemon.serial, "push", str(payload), remote).returncode == 0
        assert Path(remote).read_bytes() == payload.read_bytes()
        back = tmp_path / "pulled.bin"
        assert adb_cli("-s", daemon.serial, "pull", remote, str(back)).returncode == 0
        assert back.read_bytes() == payload.read_bytes()


def test_debian_adb_with_an_unknown_key_stays_unauthorized(adb_cli: AdbCli, tmp_path: Path):
    """A client whose key the device does not trust is left 'unauthorized', and cannot run commands."""
    with AdbDaemon(tmp_path / "device") as daemon:
        adb_cli("connect", daemon.serial)
        for _ in range(100):
            if f"{daemon.serial}\tunauthorized" in adb_cli("devices").stdout:
                break
        else:
            pytest.fail("adb never reported the device as unauthorized")
        shell = adb_cli("-s", daemon.serial, "shell", "touch", "RAN")
        assert shell.returncode != 0
        assert "unauthorized" in shell.stderr
        assert not (daemon.sandbox / "RAN").exists()


def test_pull_of_missing_file_fails_like_a_phone(adb_cli: AdbCli, tmp_path: Path):
    """STA2 of a missing file answers ENOENT, which adb reports as a missing file."""
    with AdbDaemon(tmp_path / "device", authorized_keys=[_client_key(tmp_path)]) as daemon:
        _connect(adb_cli, daemon)
        pulled = adb_cli("-s", daemon.serial, "pull", str(daemon.sandbox / "missing"), str(tmp_path / "x"))
        assert pulled.returncode == 1
        assert "missing': No such file or directory" in pulled.stdout + pulled.stderr
