"""ofa-search: JSON on stdout that is a subnet file, progress on stderr, flag conflicts and failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from predictors.cli import main
from predictors.complexity import MacsPredictor
from predictors.latency import LatencyPredictor
from predictors.subnets import SubnetFileError, parse_subnets, read_subnets

NOTE10 = str(Path(__file__).resolve().parents[1] / "tables" / "note10_w1.2_tflite.csv")
FAST = ["--population", "20", "--generations", "10"]


def test_json_result_is_a_subnet_file(capsys, tmp_path):
    """--json prints the arch (OFA JSON), accuracy, latency, MACs and search time; --out writes the same."""
    out = tmp_path / "found.json"
    assert main(["--table", NOTE10, "--latency-ms", "25", "--json", "--out", str(out), *FAST]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    (entry,) = document["subnets"]
    assert set(entry) >= {"arch", "accuracy", "latency_ms", "macs", "params", "search_seconds"}
    assert set(entry["arch"]) == {"ks", "e", "d", "r"}
    assert entry["latency_ms"]["note10_w1.2_tflite"] <= 25
    (arch,) = parse_subnets(document)
    assert LatencyPredictor(NOTE10).predict([arch])[0] == entry["latency_ms"]["note10_w1.2_tflite"]
    assert read_subnets(out) == [arch]
    assert "ofa-search: done" in captured.err and "done" not in captured.out


def test_budget_sweep_and_macs(capsys):
    """--budgets gives one subnet per budget; a MACs limit holds for each."""
    assert main(["--table", NOTE10, "--budgets", "15,20,25,30", "--macs", "350M", "--json", "--quiet", *FAST]) == 0
    captured = capsys.readouterr()
    subnets = json.loads(captured.out)["subnets"]
    assert [s["limits"]["latency_ms[note10_w1.2_tflite]"] for s in subnets] == [15, 20, 25, 30]
    for s in subnets:
        assert (
            s["macs"] <= 350e6
            and s["latency_ms"]["note10_w1.2_tflite"] <= s["limits"]["latency_ms[note10_w1.2_tflite]"]
        )
    assert captured.err == ""


def test_macs_only_text_output(capsys):
    """Without tables, a MACs limit on the w1.2 space; text output names accuracy and MACs."""
    assert main(["--macs", "0.3G", *FAST]) == 0
    out = capsys.readouterr().out
    assert out.startswith("accuracy ") and "MACs" in out
    arch = parse_subnets(json.loads(out.splitlines()[1]))[0]
    assert MacsPredictor(1.2).predict([arch])[0] <= 300e6


def test_patience_stops_a_stalled_search(capsys):
    """--patience ends the search once the best stalls; the JSON says how many generations ran."""
    argv = ["--table", NOTE10, "--latency-ms", "25", "--json", "--quiet", "--population", "16", "--generations", "300"]
    assert main([*argv, "--patience", "3"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["subnets"]
    assert entry["generations"] < 300


def test_impossible_limit_exits_1_with_the_smallest_value(capsys):
    """A limit below every arch: exit status 1 and the smallest reachable latency on stderr."""
    assert main(["--table", NOTE10, "--latency-ms", "5", *FAST]) == 1
    assert "smallest" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no constraint"),
        (["--latency-ms", "20"], "needs a --table"),
        (
            ["--table", NOTE10, "--table", NOTE10, "--latency-ms", "1", "--latency-ms", "2", "--latency-ms", "3"],
            "3 --latency-ms for 2 --table",
        ),
        (["--macs", "lots"], "is not a count"),
    ],
)
def test_flag_conflicts_exit_2(capsys, argv, message):
    """Bad flag combinations go through the parser: exit 2 and a message naming the flags."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_other_width_needs_a_predictor(capsys):
    """w1.0 has no shipped accuracy predictor: the error says to pass --predictor."""
    assert main(["--macs", "300M", "--width", "1.0", *FAST]) == 1
    assert "--predictor" in capsys.readouterr().err


def test_subnet_file_shapes(tmp_path):
    """A single arch, a list, entries with 'arch', and bad entries named by index."""
    arch = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": [160]}
    assert len(parse_subnets(arch)) == 1 and len(parse_subnets([arch, {"arch": arch}])) == 2
    with pytest.raises(SubnetFileError, match="entry 1"):
        parse_subnets([arch, {"ks": [9] * 20, "e": [3] * 20, "d": [2] * 5, "r": [160]}])
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(SubnetFileError, match="line 1"):
        read_subnets(bad)
