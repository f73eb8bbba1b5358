"""Commands that only parse, list, convert or search import no torch, pandas or matplotlib (torch alone takes ~2 s).

Each command runs in a fresh interpreter, as a user's would; afterwards its ``sys.modules`` is read.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from profiler.cli import main as profile_main
from tests.paths import NOTE10, ROOT

HEAVY = ("torch", "pandas", "matplotlib", "sklearn")
_PROBE = f"""
import importlib, json, sys
module, argv = sys.argv[1], sys.argv[2:]
try:
    code = importlib.import_module(module).main(argv)
except SystemExit as stop:
    code = stop.code
print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.stderr)
"""


def _heavy_after(module: str, *argv: str) -> tuple[int, list[str]]:
    result = subprocess.run([sys.executable, "-c", _PROBE, module, *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], report["heavy"]


@pytest.mark.parametrize(("module", "argv"), [
    ("profiler.cli", ["--help"]),
    ("profiler.cli", ["--list-devices"]),
    ("profiler.cli", ["--device", "local", "--width", "0"]),
    ("predictors.cli", ["--help"]),
    ("predictors.cli", ["--latency-ms", "20"]),
    ("predictors.fit_cli", ["--help"]),
    ("supernet.training.cli", ["--help"]),
], ids=lambda value: value if isinstance(value, str) else " ".join(value))
def test_help_and_argument_errors_import_nothing_heavy(module, argv):
    _, heavy = _heavy_after(module, *argv)
    assert heavy == []


def test_convert_imports_nothing_heavy(tmp_path):
    code, heavy = _heavy_after("profiler.cli", "convert", str(NOTE10), str(tmp_path / "yaml"))
    assert code == 0 and heavy == []
    assert sorted(p.name for p in (tmp_path / "yaml").iterdir())[0] == "160_lookup_table.yaml"


def test_a_whole_search_needs_no_torch(tmp_path):
    """ofa-search with OFA's released accuracy predictor (its NumPy arrays) and the Note10 table."""
    out = tmp_path / "found.json"
    code, heavy = _heavy_after("predictors.cli", "--table", str(NOTE10), "--latency-ms", "25", "--generations", "30",
                               "--quiet", "--out", str(out))
    assert code == 0 and heavy == []
    assert json.loads(out.read_text())["subnets"][0]["latency_ms"]["note10_w1.2_tflite"] <= 25


def test_a_table_run_whose_models_are_all_cached_imports_no_torch(tmp_path, export_cache):
    """A rerun, a resumed run or another table from the same exports loads no torch (2 s here): only a miss
    exports. The first run fills the cache with whatever the shared one lacks."""
    argv = ["--device", "local", "--width", "1.0", "--resolutions", "128", "--cache", str(export_cache),
            "--min-time", "0.005", "--min-count", "3", "--warmup", "0", "--retries", "0", "--block-ms", "1",
            "--profile-runs", "2",
            "--regime-tolerance", "0.99", "--drift-tolerance", "0.95", "--quiet"]
    assert profile_main([*argv, "--out", str(tmp_path / "first")]) == 0
    code, heavy = _heavy_after("profiler.cli", *argv, "--out", str(tmp_path / "second"))
    assert code == 0 and "torch" not in heavy
    assert (tmp_path / "second" / "local_w1.0_onnxruntime_cpu.csv").is_file()
