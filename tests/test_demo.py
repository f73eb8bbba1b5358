"""`make demo` keeps working: profile, then the closed loop (search, measure, refit) on this CPU, at tiny settings."""

import pandas as pd
import pytest

from profiler.demo import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    """The demo builds a table, delivers a measured subnet for each of four budgets, and prints the report."""
    tiny = ["--min-time", "0.01", "--generations", "20", "--retries", "1", "--quiet"]
    assert main(["--out", str(tmp_path), "--resolution", "160", *tiny]) == 0
    out = capsys.readouterr().out
    assert "pred. top-1" in out and "measured ms" in out and "rounds" in out
    (report,) = tmp_path.glob("local_delivered_*ms.csv")  # named by the budgets the demo picked
    frame = pd.read_csv(report)
    assert len(frame) == 4 and (frame["measured_ms"] > 0).all()
    assert (frame["measured_ms"][frame["met"]] <= frame["budget_ms"][frame["met"]]).all()
    assert report.with_suffix(".png").stat().st_size > 0
