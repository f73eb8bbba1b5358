"""A table run killed with SIGKILL at random moments, and restarted, ends complete with no row measured twice."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from profiler.rows import InNetworkRows
from supernet.units import all_units
from tests.paths import ROOT
from tests.peers.waiting import wait_until

KILLS = 20


def _command(out: Path, rows: str) -> list[str]:
    # Tiny timings keep each batch short, so kills land in every phase: start-up, export, agent, ingest, write.
    return [sys.executable, "-m", "profiler.cli", "--device", "local", "--width", "1.0", "--resolutions", "128,160",
            "--rows", rows, "--block-ms", "1",
            # Tiny items in 1 ms blocks may fail the regime check, and the longer blocks it escalates to would make
            # the run after the kills long: this test is about kills (test_builder tests the check).
            "--regime-tolerance", "0.99",
            "--min-time", "0.002", "--min-count", "3", "--warmup", "0", "--batch-rows", "4", "--retries", "0",
            "--drift-tolerance", "0.95", "--quiet", "--out", str(out), "--cache", str(out / "cache")]


def _wait_for_a_batch(work: Path, process: subprocess.Popen, seen: set[str]) -> None:
    """Until a new batch folder appears on the "device" (or the run ends); bounded, polled, no fixed sleep."""
    def new_batch() -> bool:
        batches = {p.name for p in work.glob("b*")} if work.is_dir() else set()
        seen.update(batches)
        return bool(batches - before)

    before = set(seen)
    wait_until(new_batch, "a new batch folder", stop=lambda: process.poll() is not None, interval_s=0.02)


@pytest.mark.slow
@pytest.mark.parametrize(("rows", "kills"), [("isolated", KILLS), ("in_network", KILLS // 2)])
def test_sigkill_at_random_points_then_resume(tmp_path, rows: str, kills: int):
    """SIGKILLs, then a clean finish: every key once in the CSV, one journal record per item, no batch twice.

    Both ways of taking rows: units alone (an item per row) and covering subnets (an item per subnet).

    Kills are anchored to the run's own progress, so each attempt gets at most a batch or two done whatever the
    machine's speed: most land a random moment after a batch starts on the device (agent running, results being
    pulled, journal and CSV being written), every fourth during start-up and export.
    """
    rng = random.Random(1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    work = tmp_path / ".local_w1.0_onnxruntime_cpu.work"
    seen: set[str] = set()
    killed = 0
    while killed < kills:
        process = subprocess.Popen(_command(tmp_path, rows), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        try:
            if killed % 4 == 3:
                delay = rng.uniform(0.1, 1.5)
            else:
                _wait_for_a_batch(work, process, seen)
                delay = rng.uniform(0.0, 0.8)
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed += 1
        else:
            assert process.returncode == 0, process.stderr.read().decode()
            break  # finished before we could kill it: the table is complete
        finally:
            process.stderr.close()
    assert killed >= kills, f"the run finished after {killed} kills; make the work longer"
    progress = sum(1 for _ in (tmp_path / "local_w1.0_onnxruntime_cpu.samples.jsonl").open())
    assert progress > 0, "20 kills and not one row measured: the run never got past start-up"
    final = subprocess.run(_command(tmp_path, rows), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr

    table = pd.read_csv(tmp_path / "local_w1.0_onnxruntime_cpu.csv")
    expected = {u.key for u in all_units(1.0, [128, 160])}
    assert set(table["key"]) == expected
    assert not table["key"].duplicated().any()

    records = [json.loads(line) for line in (tmp_path / "local_w1.0_onnxruntime_cpu.samples.jsonl").open()]
    items = collections.Counter(r["key"] for r in records if r["type"] == "row")
    if rows == "in_network":
        expected = {item.name for item in InNetworkRows(1.0, (128, 160)).items()}
    assert set(items) == expected
    assert max(items.values()) == 1, [k for k, n in items.items() if n > 1]
    batches = collections.Counter(r["batch"] for r in records if r["type"] == "batch")
    assert max(batches.values()) == 1
    assert not (tmp_path / ".local_w1.0_onnxruntime_cpu.work").exists()
