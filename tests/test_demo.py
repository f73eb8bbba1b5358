"""`make demo` keeps working: profile, search and re-measure on this CPU, at tiny settings."""

import pandas as pd
import pytest

from profiler.demo import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    """The demo builds a table, finds four subnets and measures them, then prints the comparison."""
    tiny = ["--min-time", "0.01", "--generations", "20", "--retries", "1", "--quiet"]
    assert main(["--out", str(tmp_path), "--resolution", "160", *tiny]) == 0
    out = capsys.readouterr().out
    assert "pred. top-1" in out and "measured ms" in out
    frame = pd.read_csv(tmp_path / "local_subnets.csv")
    assert len(frame) == 4 and (frame["measured_ms"] > 0).all()
    assert (tmp_path / "local_subnets.png").stat().st_size > 0
