"""ofa-profile over SSH (a real sshd on loopback) and ADB (the test daemon) builds the table a local run builds.

The Python agent runs on "the device" with this machine's Python; benchmark_model tables use the fake binary of
tests/conftest.py (no phone exists here) and an export cache filled with stand-in files, because exporting 97
TF-Lite units takes minutes and the fake does not read them.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from profiler.builder import DeviceLost, TableRun
from profiler.cli import main
from profiler.devices import resolve_device
from profiler.protocol import Protocol
from profiler.reference import BLOCK_REFERENCE
from profiler.transports.adb import AdbTransport
from supernet.model_cache import unit_path
from supernet.plan import PROXYLESS
from supernet.units import all_units
from tests.conftest import FakeBenchmarkModel, process_alive
from tests.peers.adb_daemon import AdbDaemon
from tests.peers.models import stand_in_tflite
from tests.peers.sshd import Sshd
from tests.peers.waiting import wait_until

WIDTH, RESOLUTION = 1.0, 128
# Tiny timings; no re-measuring, no drift cool-downs and no longer blocks after a regime check (this shared
# machine drifts; test_builder tests the check): keys are what is compared.
TINY = (
    f"--width {WIDTH} --resolutions {RESOLUTION} --min-time 0.002 --min-count 3 --warmup 0 --retries 0 "
    "--drift-tolerance 0.95 --cooldown 0 --block-ms 1 --regime-tolerance 0.99 --quiet"
).split()
EXPECTED = {unit.key for unit in all_units(WIDTH, [RESOLUTION])}


@pytest.fixture(scope="module")
def local_keys(export_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The keys of a local run with the same settings."""
    out = tmp_path_factory.mktemp("local")
    assert main(["--device", "local", *TINY, "--out", str(out), "--cache", str(export_cache)]) == 0
    return set(pd.read_csv(out / "local_w1.0_onnxruntime_cpu.csv")["key"])


def _space_run(space: str, local_keys: set[str]) -> tuple[list[str], str, set[str]]:
    """The settings, table name and expected keys of a tiny run of ``space``; ProxylessNAS at its one released
    width, 1.3."""
    if space == "mobilenetv3":
        return TINY, f"local_w{WIDTH}_onnxruntime_cpu.csv", local_keys
    return (["--space", space, *TINY[2:]], "local_proxyless_w1.3_onnxruntime_cpu.csv",
            {u.key for u in all_units(1.3, [RESOLUTION], family=PROXYLESS)})


def _devices_toml(folder: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Run from ``folder`` with this devices.toml, as a user would set a device's folders."""
    (folder / "devices.toml").write_text(text)
    monkeypatch.chdir(folder)


def _over_ssh(sshd: Sshd, known_hosts: Path) -> list[str]:
    """The local device reached through ``sshd`` on loopback, trusting the hosts in ``known_hosts``."""
    return ["--device", "local", "--via", "ssh", "--host", "127.0.0.1", "--port", str(sshd.port), "--user", sshd.user,
            "--key", str(sshd.client_key), "--known-hosts", str(known_hosts)]


def _table_options(settings: list[str], tmp_path: Path, cache: Path) -> list[str]:
    """The local table's settings, this interpreter as the device's Python, tables and exports under the test's."""
    return ["--python", sys.executable, *settings, "--out", str(tmp_path / "tables"), "--cache", str(cache)]


@pytest.mark.slow
@pytest.mark.parametrize("space", ["mobilenetv3", "proxyless"])
def test_over_ssh_the_table_has_the_local_keys(
    sshd: Sshd, export_cache: Path, local_keys: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
    space: str,
):
    """`ofa-profile --device local --via ssh ...` against sshd on loopback: every key of the local table; and of
    the ProxylessNAS w1.3 space with --space proxyless."""
    settings, name, expected = _space_run(space, local_keys)
    device = tmp_path / "device"
    _devices_toml(tmp_path, monkeypatch, f"[devices.local]\nremote_dir = {json.dumps(str(device))}\n")
    argv = [
        *_over_ssh(sshd, sshd.known_hosts),
        *_table_options(settings, tmp_path, export_cache),
    ]
    assert main(argv) == 0
    table = tmp_path / "tables" / name
    assert capsys.readouterr().out.strip() == str(table)
    assert set(pd.read_csv(table)["key"]) == expected
    assert local_keys == EXPECTED
    sidecar = json.loads(table.with_suffix(".json").read_text())
    assert sidecar["space"] == space
    assert sidecar["device"]["transport"] == "ssh" and sidecar["environment"]["cpus"]
    assert not (device / table.stem).exists()
    # The drift-proof path over SSH: covering subnets, each timed against the reference, split by node profiles.
    assert sidecar["rows"] == "in_network" and sidecar["reference"]["anchor"]["anchor_ms"] > 0
    journal = [json.loads(line) for line in table.with_name(table.stem + ".samples.jsonl").open()]
    items = [r for r in journal if r["type"] == "row"]
    assert items and all(len(r["ratio_samples"]) == len(r["samples_ms"]) and r["node_times_us"] for r in items)


@pytest.mark.slow
@pytest.mark.parametrize("space", ["mobilenetv3", "proxyless"])
def test_over_adb_the_table_has_the_local_keys(
    adb_daemon: AdbDaemon,
    adb_key: Path,
    export_cache: Path,
    local_keys: set[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    space: str,
):
    """`ofa-profile --device local --via adb --serial HOST:PORT ...` against the ADB daemon, Python agent; and
    the ProxylessNAS space with --space proxyless."""
    settings, name, expected = _space_run(space, local_keys)
    device = tmp_path / "device"
    _devices_toml(tmp_path, monkeypatch, f"[devices.local]\nremote_dir = {json.dumps(str(device))}\n")
    argv = [
        "--device",
        "local",
        "--via",
        "adb",
        "--serial",
        adb_daemon.serial,
        "--adb-key",
        str(adb_key),
        *_table_options(settings, tmp_path, export_cache),
    ]
    assert main(argv) == 0
    table = tmp_path / "tables" / name
    assert set(pd.read_csv(table)["key"]) == expected
    assert local_keys == EXPECTED
    assert not (device / table.stem).exists()


def test_unknown_host_key_without_known_hosts_fails_with_the_trust_command(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """Without --known-hosts naming the file that trusts the host, the run is refused, with the way out."""
    _devices_toml(tmp_path, monkeypatch, "")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [
        *_over_ssh(sshd, empty),
        *TINY,
        "--out",
        str(tmp_path / "tables"),
        "--cache",
        str(tmp_path / "cache"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "unknown host key" in err and f"--known-hosts {empty}" in err


@pytest.mark.slow
def test_benchmark_model_table_over_adb(
    adb_daemon: AdbDaemon,
    adb_key: Path,
    fake_benchmark_model: FakeBenchmarkModel,
    fast_core_sysfs: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """`ofa-profile --device pixel1 --serial ...` at two resolutions: the Android agent fills every key, pinned to
    the fast core. Rows of one layer at both resolutions share one TF-Lite file, which benchmark_model resizes to
    each row's input."""
    cache = tmp_path / "cache"
    units = all_units(WIDTH, [RESOLUTION, 160])
    stand_in_tflite(units, cache)
    device = tmp_path / "device"
    _devices_toml(
        tmp_path,
        monkeypatch,
        f"[devices.pixel1]\nremote_dir = {json.dumps(str(device))}\n"
        f"benchmark_model = {json.dumps(str(fake_benchmark_model.path))}\n",
    )
    argv = [
        "--device",
        "pixel1",
        "--serial",
        adb_daemon.serial,
        "--adb-key",
        str(adb_key),
        *TINY,
        "--resolutions",
        f"{RESOLUTION},160",
        "--out",
        str(tmp_path / "tables"),
        "--cache",
        str(cache),
        "--batch-rows",
        "100",
    ]
    assert main(argv) == 0
    table_path = tmp_path / "tables" / "pixel1_w1.0_benchmark_model_xnnpack.csv"
    table = pd.read_csv(table_path)
    assert set(table["key"]) == {u.key for u in units} and not table["key"].duplicated().any()
    files = {unit.key: unit_path(unit, "tflite", cache).name for unit in units}
    assert len(set(files.values())) < 0.6 * len(units)
    reference = unit_path(BLOCK_REFERENCE.unit, "tflite", cache, seed=BLOCK_REFERENCE.seed).name
    asked = {call for call in fake_benchmark_model.shapes() if call[0] != reference}
    assert asked == {(files[u.key], f"1,{u.in_size},{u.in_size},{u.in_chs}") for u in units}
    # The fake prints the same time for every model and the reference: each ratio is 1, each value the anchor.
    assert np.allclose(table["median_ms"], 1239.807) and np.allclose(table["ratio"], 1.0)
    rounds = int(table["count"].iloc[0])
    assert rounds > 1 and (table["count"] == rounds).all()  # one sample per benchmark_model invocation
    calls = fake_benchmark_model.calls()
    assert len(calls) == len(units) * (2 * rounds + 1)  # reference, model, reference, ..., reference
    journal = [json.loads(line) for line in table_path.with_name(table_path.stem + ".samples.jsonl").open()]
    assert all(len(r["ratio_samples"]) == rounds for r in journal if r["type"] == "row")
    assert {cpus for _, cpus in calls} == {str(fast_core_sysfs)}
    sidecar = json.loads(table_path.with_suffix(".json").read_text())
    assert sidecar["environment"]["affinity_mask"] == format(1 << fast_core_sysfs, "x")
    assert not (device / table_path.stem).exists()


@pytest.mark.slow
def test_killed_benchmark_model_table_run_keeps_its_batch(
    adb_daemon: AdbDaemon,
    adb_key: Path,
    fake_benchmark_model: FakeBenchmarkModel,
    tmp_path: Path,
):
    """The host dies mid-batch; the rerun stops the orphaned agent, keeps the rows it wrote, measures the rest."""
    units = sorted(all_units(WIDTH, [RESOLUTION]), key=lambda unit: unit.key)[:5]
    cache = tmp_path / "cache"
    stand_in_tflite(units, cache)
    device = tmp_path / "device"
    profile = resolve_device(
        "pixel1",
        {"serials": [adb_daemon.serial], "remote_dir": str(device), "benchmark_model": str(fake_benchmark_model.path)},
    )
    # No reconnects: the host gives up at once, as if it had died with the device.
    protocol = Protocol(
        warmup=0, min_count=3, min_time_s=0.002, retries=0, drift_tolerance=0.95, cooldown_s=0, reconnects=0
    )
    table = tmp_path / "tables" / "t.csv"
    table.parent.mkdir()

    def table_run(transport: AdbTransport) -> TableRun:
        return TableRun(profile, transport, units, table, cache, protocol)

    files = {unit.key: unit_path(unit, "tflite", cache).name for unit in units}
    reference = unit_path(BLOCK_REFERENCE.unit, "tflite", cache, seed=BLOCK_REFERENCE.seed).name
    with AdbTransport(adb_daemon.serial, key_path=adb_key, connect_timeout=5) as adb:
        order = [files[item.name] for item in table_run(adb).pending()]
    fake_benchmark_model.hold(order[2])

    with (
        adb_daemon.unplugged_when(lambda: order[2] in dict(fake_benchmark_model.calls()), f"{order[2]} to start"),
        AdbTransport(adb_daemon.serial, key_path=adb_key, connect_timeout=5) as adb,
        pytest.raises(DeviceLost),
    ):
        table_run(adb).run()
    orphan = int(next(device.glob("*/b*/agent.pid")).read_text())

    adb_daemon.start(adb_daemon.port)
    with AdbTransport(adb_daemon.serial, key_path=adb_key, connect_timeout=5) as adb:
        result = table_run(adb).run()
    fake_benchmark_model.release(order[2])
    assert {row.key for row in result.rows} == set(files)
    # Each model runs in rounds between reference invocations; the cut-off one once more, from its first round.
    calls = [name for name, _ in fake_benchmark_model.calls()]
    models = [name for name in calls if name != reference]
    assert list(dict.fromkeys(models)) == order and calls[0] == reference
    counts = collections.Counter(models)
    rounds = counts[order[0]]
    assert rounds > 1 and counts[order[2]] == rounds + 1
    assert all(counts[name] == rounds for name in order if name != order[2])
    assert len(calls) - len(models) == len(order) * (rounds + 1) + 1  # + the cut-off sequence's first
    wait_until(lambda: not process_alive(orphan), "the rerun to stop the killed run's agent", timeout_s=10)
