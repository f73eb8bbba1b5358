"""Shared fixtures. Keep each area's fixtures grouped under its own heading."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import threadpoolctl
import torch

from profiler.transports.adb import AdbTransport, load_or_create_key
from profiler.transports.base import Transport
from profiler.transports.local import LocalTransport
from profiler.transports.ssh import SshTransport
from tests.peers.adb_daemon import AdbDaemon
from tests.peers.models import make_broken, make_onnx, make_tflite, make_torchscript
from tests.peers.sshd import Sshd

# ----------------------------------------------------------------------------------------------------
# Disk: a run peaks at about 0.9 GB under pytest's temporary folder (measured over a full run).
# ----------------------------------------------------------------------------------------------------

DISK_NEEDED_MB = 1500


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop before the first test when the disk cannot hold a run: a full disk otherwise shows, minutes in, as
    hundreds of errors in unrelated fixtures."""
    folder = tempfile.gettempdir()
    free_mb = shutil.disk_usage(folder).free // 2**20
    if free_mb < DISK_NEEDED_MB:
        pytest.exit(f"only {free_mb} MB free under {folder}; the suite needs about {DISK_NEEDED_MB} MB there: free "
                    f"some disk, or point TMPDIR at a larger one, and rerun", returncode=1)


# ----------------------------------------------------------------------------------------------------
# Threads: one BLAS and OpenMP thread per test process, and per process a test starts.
# ----------------------------------------------------------------------------------------------------

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pytest_configure(config: pytest.Config) -> None:
    """Two xdist workers, and the agents and commands they start, share two cores. Pools sized to the machine
    oversubscribe it, and OpenBLAS's threads spin while they wait: the latency-model tests took 76 s on two
    workers with the default pools and 19 s with one thread each (2026-12-07). Products of these libraries are
    the same either way; tests that are about thread counts set their own."""
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))  # inherited by every process a test starts
    threadpoolctl.threadpool_limits(1)  # this process loaded its BLAS and OpenMP before this hook ran
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------
# No machine state: every test gets its own HOME, config and cache folders and working folder.
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_machine_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reads the developer's ~/.config, caches or a devices.toml in the folder pytest started in.

    Temporary files go there too (TMPDIR), and all of it is removed after the test: export caches and the scratch
    folders of agents killed on purpose would otherwise pile up to gigabytes a run on a shared disk.
    """
    home = tmp_path_factory.mktemp("home")
    scratch = home / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    yield
    for folder in (home, cwd):
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# Exports: one cache per test process for the tests that are not about the cache.
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported models shared by the tests of one process (an xdist worker, or the serial run).

    Sharing changes no result: files are named by the hash of their export recipe and checked against their
    digest before reuse (supernet/model_cache.py). It saves exporting the same units test after test (the 96 w1.0
    units at 128 px take 2.7 s in ONNX; int8 and TF-Lite files far longer). Tests about the cache itself (what it
    holds, damaged files, exports killed midway) keep their own.
    """
    return tmp_path_factory.mktemp("exports")


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


# ----------------------------------------------------------------------------------------------------
# Android agent and benchmark_model (issues 4 and 6): a fake benchmark_model binary and a fake sysfs tree.
# No phone exists here: the fake prints verbatim output of the real binary's formats, or a time that drifts with
# every call, chosen by the first line of the model file, and the ADB test daemon runs the agent with this
# machine's sh.
# ----------------------------------------------------------------------------------------------------

_FAKE_BENCHMARK_MODEL = """#!/bin/sh
# Fake TF-Lite benchmark_model: prints a verbatim sample of the real binary's output, chosen by the model file's
# first word (new, plain, old, oldest, unconsumed, fail), and logs "FILE<TAB>CPUS<TAB>PARENT<TAB>SHAPE" per call (the
# CPUs it may run on, the program that started it: the agent's shell, and the --input_layer_shape asked, if any).
# "timed MS" prints the newer format with a median of MS ms times a speed factor that drifts with every call:
# 1 + DRIFT * (N - 1) for the Nth call, DRIFT read from HERE/drift (0 without it), and count= the --num_runs asked.
# A call that finds HERE/FILE.hold waits until released (bounded), so tests can cut a run off at a known model.
here=$(dirname "$0")
graph=
runs=50
shape=
for arg in "$@"; do
    case $arg in
        --graph=*) graph=${arg#--graph=} ;;
        --num_runs=*) runs=${arg#--num_runs=} ;;
        --input_layer_shape=*) shape=${arg#--input_layer_shape=} ;;
    esac
done
file=$(basename "$graph")
printf '%s\\t%s\\t%s\\t%s\\n' "$file" "$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)" \\
    "$(readlink "/proc/$PPID/exe")" "$shape" >>"$here/calls.log"
call=$(wc -l <"$here/calls.log")
if [ -e "$here/$file.hold" ]; then
    mv "$here/$file.hold" "$here/$file.holding"  # holds this call only: a later call runs at once
    tries=0
    while [ -e "$here/$file.holding" ] && [ "$tries" -lt 600 ]; do
        tries=$((tries + 1))
        sleep 0.05
    done
fi
kind=$(head -n 1 "$graph" 2>/dev/null)
case $kind in
    unconsumed) echo "Unconsumed cmdline flags: --use_xnnpack=true"; cat "$here/plain.out" ;;
    fail) echo "ERROR: Failed to load model $graph"; exit 1 ;;
    timed\\ *)
        awk -v ms="${kind#timed }" -v call="$call" -v drift="$(cat "$here/drift" 2>/dev/null || echo 0)" \\
            -v runs="$runs" 'BEGIN {
            t = ms * 1000 * (1 + drift * (call - 1))
            printf "INFO: count=%d first=%.0f curr=%.0f min=%.0f max=%.0f avg=%.0f std=3 " \\
                "p5=%.0f median=%.0f p95=%.0f\\n", runs, t, t, t - 10, t + 40, t + 5, t - 8, t, t + 30
            printf "INFO: Inference timings in us: Init: 5579, First inference: %.0f, " \\
                "Warmup (avg): %.0f, Inference (avg): %.0f\\n", t, t, t + 5
        }' ;;
    *) cat "$here/$kind.out" ;;
esac
"""


class FakeBenchmarkModel:
    """A fake ``benchmark_model`` in a folder the ADB daemon can reach, with its call log, hold and drift switches."""

    def __init__(self, folder: Path) -> None:
        from tests.test_benchmark_model_parse import NEW_PLAIN, NEW_WITH_MEDIAN, OLD, OLDEST

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / "benchmark_model"
        self.path.write_text(_FAKE_BENCHMARK_MODEL)
        self.path.chmod(0o755)
        for kind, text in {"new": NEW_WITH_MEDIAN, "plain": NEW_PLAIN, "old": OLD, "oldest": OLDEST}.items():
            (folder / f"{kind}.out").write_text(text)

    def calls(self) -> list[tuple[str, str]]:
        """(model file name, CPUs it was allowed to run on) per call, in order."""
        return [(file, cpus) for file, cpus, *_ in self._log()]

    def shapes(self) -> list[tuple[str, str]]:
        """(model file name, the input shape benchmark_model was asked to resize it to, or "") per call."""
        return [(file, shape) for file, _, _, shape in self._log()]

    def parents(self) -> set[str]:
        """The programs that started the calls (the agent's shell, by its executable's path)."""
        return {parent for _, _, parent, _ in self._log()}

    def drift(self, per_call: float) -> None:
        """Make "timed" models slow down by ``per_call`` of their base time with every call."""
        (self.folder / "drift").write_text(f"{per_call}\n")

    def _log(self) -> list[list[str]]:
        log = self.folder / "calls.log"
        return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []

    def hold(self, file_name: str) -> None:
        """Make the next call for this model file wait until :meth:`release` (or until it is killed)."""
        (self.folder / f"{file_name}.hold").touch()

    def release(self, file_name: str) -> None:
        for suffix in (".hold", ".holding"):
            (self.folder / f"{file_name}{suffix}").unlink(missing_ok=True)


@pytest.fixture
def fake_benchmark_model(tmp_path: Path) -> FakeBenchmarkModel:
    """A fake benchmark_model binary inside the ADB daemon's sandbox."""
    return FakeBenchmarkModel(tmp_path / "bin")


def make_fake_sysfs(root: Path, max_khz: Mapping[int, int | None]) -> Path:
    """A sysfs tree with cpufreq files (cpu id -> cpuinfo_max_freq, None: offline) and one thermal zone."""
    for cpu, khz in max_khz.items():
        freq = root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "cpufreq"
        if khz is None:
            freq.parent.mkdir(parents=True)
            continue
        freq.mkdir(parents=True)
        (freq / "cpuinfo_max_freq").write_text(f"{khz}\n")
        (freq / "scaling_cur_freq").write_text(f"{khz // 2}\n")
        (freq / "scaling_governor").write_text("schedutil\n")
    (root / "devices" / "system" / "cpu" / "cpufreq").mkdir(parents=True, exist_ok=True)  # not a core: skipped
    zone = root / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-big\n")
    (zone / "temp").write_text("41500\n")
    return root


@pytest.fixture
def fast_core_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """A fake sysfs whose one fast core is the highest CPU we may run on; agents read it (OFA_AGENT_SYSFS).

    Returns:
        The fast core's id.
    """
    allowed = sorted(os.sched_getaffinity(0))
    fast = allowed[-1]
    root = make_fake_sysfs(tmp_path / "sysfs", {cpu: 2_000_000 if cpu == fast else 1_000_000 for cpu in allowed})
    monkeypatch.setenv("OFA_AGENT_SYSFS", str(root))  # the ADB daemon's commands inherit our environment
    return fast


def process_alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped by its parent, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
