"""The tree stays ruff clean: the same check CI and the before-stop hook run."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.paths import ROOT


def test_ruff_clean():
    """`ruff check .` reports nothing."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
