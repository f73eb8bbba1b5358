"""A device that goes away mid-run: reconnect with backoff and finish, or stop clearly and resume later."""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from profiler.cli import main
from supernet.units import all_units
from tests.peers.adb_daemon import AdbDaemon
from tests.peers.waiting import wait_until

# A phone away for a second: the run must reconnect within its backoff, so the machine must not be shared.
pytestmark = pytest.mark.serial

EXPECTED = {unit.key for unit in all_units(1.0, [128])}
TABLE = "local_w1.0_onnxruntime_cpu.csv"


def _argv(tmp_path: Path, daemon: AdbDaemon, adb_key: Path, reconnects: int, cache: Path) -> list[str]:
    return [
        *("--device", "local", "--via", "adb", "--serial", daemon.serial, "--adb-key", str(adb_key)),
        *("--python", sys.executable, "--width", "1.0", "--resolutions", "128", "--batch-rows", "8"),
        *("--rows", "isolated", "--block-ms", "1", "--regime-tolerance", "0.99"),  # no escalation: see test_builder
        *("--min-time", "0.002", "--min-count", "3", "--warmup", "0", "--retries", "0", "--drift-tolerance", "0.95"),
        *("--reconnects", str(reconnects), "--backoff", "0.5", "--quiet"),
        *("--out", str(tmp_path / "tables"), "--cache", str(cache)),
    ]


def _journal(tmp_path: Path) -> list[dict]:
    path = tmp_path / "tables" / "local_w1.0_onnxruntime_cpu.samples.jsonl"
    return [json.loads(line) for line in path.open()] if path.exists() else []


def _wait_for_rows(tmp_path: Path, done: threading.Event) -> None:
    """Until the journal holds a measured row (bounded; polled)."""
    wait_until(lambda: any(r["type"] == "row" for r in _journal(tmp_path)), "a measured row", stop=done.is_set,
               timeout_s=60)


def _drop_mid_run(tmp_path: Path, daemon: AdbDaemon, adb_key: Path, reconnects: int,
                  cache: Path) -> tuple[threading.Thread, list, int]:
    """ofa-profile in a thread; once it has measured a row (or ended) the phone goes away. The thread, the list
    its exit code lands in, and the port the phone was on."""
    done, outcome = threading.Event(), []

    def run() -> None:
        outcome.append(main(_argv(tmp_path, daemon, adb_key, reconnects, cache)))
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    _wait_for_rows(tmp_path, done)
    port = daemon.port
    daemon.stop()
    return worker, outcome, port


def _phone(tmp_path: Path, adb_key: Path, monkeypatch: pytest.MonkeyPatch) -> AdbDaemon:
    """A phone that trusts the test's key, with the local profile's work folder under ``tmp_path``."""
    (tmp_path / "devices.toml").write_text(f"[devices.local]\nremote_dir = {json.dumps(str(tmp_path / 'dev'))}\n")
    monkeypatch.chdir(tmp_path)
    return AdbDaemon(tmp_path, authorized_keys=[Path(f"{adb_key}.pub").read_text()])


def _assert_complete(tmp_path: Path) -> None:
    table = pd.read_csv(tmp_path / "tables" / TABLE)
    assert set(table["key"]) == EXPECTED and not table["key"].duplicated().any()
    rows = collections.Counter(r["key"] for r in _journal(tmp_path) if r["type"] == "row")
    assert max(rows.values()) == 1


@pytest.mark.slow
def test_device_comes_back_and_the_run_finishes(tmp_path, adb_key, monkeypatch, caplog, export_cache):
    """The phone vanishes mid-run and returns a second later: the run reconnects and completes the table."""
    with _phone(tmp_path, adb_key, monkeypatch) as daemon:
        worker, outcome, port = _drop_mid_run(tmp_path, daemon, adb_key, 5, export_cache)
        time.sleep(1.0)  # the phone is away for a while: that is the scenario, not a wait for readiness
        daemon.start(port)
        worker.join(timeout=300)
    assert outcome == [0]
    assert "reconnecting in" in caplog.text
    _assert_complete(tmp_path)


@pytest.mark.slow
def test_device_stays_away_then_a_rerun_continues(tmp_path, adb_key, monkeypatch, capsys, export_cache):
    """After the last reconnect the run stops with the journal's path and what to do; a rerun completes it."""
    with _phone(tmp_path, adb_key, monkeypatch) as daemon:
        worker, outcome, port = _drop_mid_run(tmp_path, daemon, adb_key, 2, export_cache)
        worker.join(timeout=300)
        assert outcome == [1]
        err = capsys.readouterr().err
        assert "still unreachable after 2 reconnect(s)" in err and "rerun the same command to continue" in err
        kept = {r["key"] for r in _journal(tmp_path) if r["type"] == "row"}
        assert kept and kept < EXPECTED
        daemon.start(port)
        assert main(_argv(tmp_path, daemon, adb_key, 2, export_cache)) == 0
    _assert_complete(tmp_path)
