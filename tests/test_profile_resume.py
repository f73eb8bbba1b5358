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

from supernet.units import all_units

ROOT = Path(__file__).resolve().parents[1]
KILLS = 20


def _command(out: Path) -> list[str]:
    # Tiny timings keep each batch short, so kills land in every phase: start-up, export, agent, ingest, write.
    return [sys.executable, "-m", "profiler.cli", "--device", "local", "--width", "1.0", "--resolutions", "128",
            "--min-time", "0.002", "--min-count", "3", "--warmup", "0", "--batch-rows", "6", "--retries", "0",
            "--drift-tolerance", "0.95", "--quiet", "--out", str(out), "--cache", str(out / "cache")]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(tmp_path):
    """20 SIGKILLs, then a clean finish: every key once in the CSV, one journal row per key, no batch twice."""
    rng = random.Random(1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = 0
    while killed < KILLS:
        process = subprocess.Popen(_command(tmp_path), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        try:
            process.wait(timeout=rng.uniform(1.5, 5.0))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed += 1
        else:
            assert process.returncode == 0, process.stderr.read().decode()
            break  # finished before we could kill it: the table is complete
        finally:
            process.stderr.close()
    assert killed >= KILLS, f"the run finished after {killed} kills; make the work longer"
    final = subprocess.run(_command(tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr

    table = pd.read_csv(tmp_path / "local_w1.0_onnxruntime_cpu.csv")
    expected = {u.key for u in all_units(1.0, [128])}
    assert set(table["key"]) == expected
    assert not table["key"].duplicated().any()

    records = [json.loads(line) for line in (tmp_path / "local_w1.0_onnxruntime_cpu.samples.jsonl").open()]
    rows = collections.Counter(r["key"] for r in records if r["type"] == "row")
    assert set(rows) == expected
    assert max(rows.values()) == 1, [k for k, n in rows.items() if n > 1]
    batches = collections.Counter(r["batch"] for r in records if r["type"] == "batch")
    assert max(batches.values()) == 1
    assert not (tmp_path / ".local_w1.0_onnxruntime_cpu.work").exists()
