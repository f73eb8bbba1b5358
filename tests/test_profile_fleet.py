"""Fleets and shards: several devices in one command, and one table split over identical devices."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from profiler.cli import main
from supernet.units import all_units
from tests.peers.adb_daemon import AdbDaemon

TINY = [
    *("--width", "1.0", "--resolutions", "128", "--min-time", "0.002", "--min-count", "3", "--warmup", "0"),
    *("--retries", "0", "--drift-tolerance", "0.95", "--cooldown", "0", "--quiet"),
    # 1 ms blocks, kept whatever the regime check says (test_builder tests the check): keys are what is compared.
    *("--block-ms", "1", "--regime-tolerance", "0.99"),
]
EXPECTED = {unit.key for unit in all_units(1.0, [128])}


@pytest.mark.slow
def test_a_fleet_is_measured_concurrently(tmp_path, monkeypatch, capsys, export_cache):
    """`--device local --device cpu2`: one complete table per device, both paths on stdout."""
    (tmp_path / "devices.toml").write_text('[devices.cpu2]\ntransport = "local"\ndescription = "a second CPU"\n')
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "tables"
    assert main(["--device", "local", "--device", "cpu2", *TINY, "--out", str(out),
                 "--cache", str(export_cache)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "local_w1.0_onnxruntime_cpu.csv"), str(out / "cpu2_w1.0_onnxruntime_cpu.csv")]
    for path in printed:
        assert set(pd.read_csv(path)["key"]) == EXPECTED


@pytest.mark.slow
@pytest.mark.parametrize("rows", ["isolated", "in_network"])
def test_one_table_sharded_over_two_devices(tmp_path, adb_key, monkeypatch, rows, export_cache):
    """Two ADB devices (`--serial a --serial b`) each measure half the items; the merged table has every key.

    Units alone split the rows; covering subnets split the subnets, and rows both halves hold are merged."""
    public = [Path(f"{adb_key}.pub").read_text()]
    # Both sandboxed in this test's folder: each shard works in its own remote folder.
    with AdbDaemon(tmp_path, authorized_keys=public) as a, AdbDaemon(tmp_path, authorized_keys=public) as b:
        (tmp_path / "devices.toml").write_text(f"[devices.local]\nremote_dir = {json.dumps(str(tmp_path / 'dev'))}\n")
        monkeypatch.chdir(tmp_path)
        out = tmp_path / "tables"
        assert main(["--device", "local", "--via", "adb", "--serial", a.serial, "--serial", b.serial,
                     "--adb-key", str(adb_key), "--python", sys.executable, *TINY, "--out", str(out),
                     "--cache", str(export_cache), "--rows", rows]) == 0
    table = out / "local_w1.0_onnxruntime_cpu.csv"
    merged = pd.read_csv(table)
    assert set(merged["key"]) == EXPECTED and not merged["key"].duplicated().any()
    if rows == "isolated":
        shards = [pd.read_csv(out / f"local_w1.0_onnxruntime_cpu.shard{i}.csv") for i in (0, 1)]
        assert not set(shards[0]["key"]) & set(shards[1]["key"])
        assert min(len(s) for s in shards) >= len(EXPECTED) // 2 - 1
    else:
        journals = [out / f"local_w1.0_onnxruntime_cpu.shard{i}.samples.jsonl" for i in (0, 1)]
        items = [{r["key"] for r in map(json.loads, path.open()) if r["type"] == "row"} for path in journals]
        assert not items[0] & items[1] and len(items[0] | items[1]) == 9
        assert merged["count"].max() == 9  # the head's rows: every covering subnet, from both shards
    sidecar = json.loads(table.with_suffix(".json").read_text())
    assert sidecar["devices"] == [a.serial, b.serial]
    assert sidecar["shards"] == ["local_w1.0_onnxruntime_cpu.shard0.csv", "local_w1.0_onnxruntime_cpu.shard1.csv"]
