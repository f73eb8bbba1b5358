"""Shared fixtures. Keep each area's fixtures grouped under its own heading."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from profiler.transports.adb import AdbTransport, load_or_create_key
from profiler.transports.base import Transport
from profiler.transports.local import LocalTransport
from profiler.transports.ssh import SshTransport
from tests.peers.adb_daemon import AdbDaemon
from tests.peers.models import make_broken, make_onnx, make_tflite, make_torchscript
from tests.peers.sshd import Sshd

# ----------------------------------------------------------------------------------------------------
# Transports and agents (issue 4): a real sshd, the ADB test daemon, small ONNX and TF-Lite models.
# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A real OpenSSH sshd on a free loopback port, with its own host and client keys."""
    server = Sshd.create(tmp_path / "sshd")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def ssh(sshd: Sshd) -> Iterator[SshTransport]:
    """An SSH transport to the test sshd, host key already trusted."""
    transport = SshTransport(
        "127.0.0.1",
        port=sshd.port,
        user=sshd.user,
        key_filename=sshd.client_key,
        known_hosts=sshd.known_hosts,
    )
    try:
        yield transport
    finally:
        transport.close()


@pytest.fixture(params=["local", "ssh", "adb"])
def transport(request: pytest.FixtureRequest) -> Transport:
    """Each transport in turn, connected to its real peer; the same contract holds for all."""
    return request.getfixturevalue(request.param if request.param != "local" else "local_transport")


@pytest.fixture
def local_transport() -> Iterator[LocalTransport]:
    """The local transport."""
    with LocalTransport() as transport:
        yield transport


@pytest.fixture
def device_dir(transport: Transport, tmp_path: Path) -> Iterator[str]:
    """An empty folder on the device side; removed afterwards over the transport itself."""
    folder = str(tmp_path / "device files")
    transport.make_dirs(folder)
    try:
        yield folder
    finally:
        transport.remove(folder)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small models made once per session: ``onnx``, ``tflite``, ``torchscript`` and ``broken`` (an .onnx)."""
    folder = tmp_path_factory.mktemp("models")
    return {
        "onnx": make_onnx(folder / "conv.onnx"),
        "tflite": make_tflite(folder / "conv.tflite"),
        "torchscript": make_torchscript(folder / "conv.pt"),
        "broken": make_broken(folder / "broken.onnx"),
    }


@pytest.fixture(scope="session")
def adb_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ADB host key (private key path; the public key beside it), made once per session."""
    path = tmp_path_factory.mktemp("adbkey") / "adbkey"
    load_or_create_key(path)
    return path


@pytest.fixture
def adb_daemon(tmp_path: Path, adb_key: Path) -> Iterator[AdbDaemon]:
    """The test ADB device on a free loopback port, sandboxed in this test's tmp_path, trusting ``adb_key``."""
    with AdbDaemon(tmp_path, authorized_keys=[Path(f"{adb_key}.pub").read_text()]) as daemon:
        yield daemon


@pytest.fixture
def adb(adb_daemon: AdbDaemon, adb_key: Path) -> Iterator[AdbTransport]:
    """An adb-shell transport to the test ADB device."""
    with AdbTransport(adb_daemon.serial, key_path=adb_key, connect_timeout=5) as transport:
        yield transport
