"""ofa-search: JSON on stdout that is a subnet file, progress on stderr, flag conflicts and failures."""

from __future__ import annotations

import json

import pytest

from predictors.calibration import Calibration
from predictors.cli import main
from predictors.complexity import MacsPredictor
from predictors.latency import LatencyPredictor
from predictors.table_io import Table, read_table, write_table
from supernet.arch import Arch, ArchError
from supernet.subnets import SubnetFileError, parse_subnets, read_subnets
from tests.paths import NOTE10 as NOTE10_TABLE

NOTE10 = str(NOTE10_TABLE)
FAST = ["--population", "20", "--generations", "10"]
CALIBRATION = Calibration(a=1.5, b=0.2, n=5, rms_pct_before=20.0, rms_pct_after=2.0, loo_rms_pct=3.0,
                          residual_lo=-0.04, residual_hi=0.06)


@pytest.fixture
def calibrated(tmp_path) -> str:
    """The Note10 table with measured = 1.5 · sum + 0.2 in its sidecar."""
    table = read_table(NOTE10)
    path = tmp_path / "note10_cal.csv"
    write_table(path, Table(table.rows, {**table.meta, "calibration": CALIBRATION.to_dict()}))
    return str(path)


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
    assert document["latency_model"]["note10_w1.2_tflite"]["calibrated"] is False
    assert "raw table sums" in captured.err


def test_calibrated_by_default(capsys, calibrated, tmp_path):
    """A table with a calibration: limits hold for 1.5 · sum + 0.2; raw sum and interval are reported beside it."""
    out = tmp_path / "found.json"
    assert main(["--table", calibrated, "--latency-ms", "25", "--json", "--out", str(out), *FAST]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["latency_model"]["note10_cal"]["calibrated"] is True
    assert Calibration.from_dict(document["latency_model"]["note10_cal"]["calibration"]) == CALIBRATION
    assert CALIBRATION.describe() in captured.err
    (entry,) = document["subnets"]
    (arch,) = read_subnets(out)
    raw = LatencyPredictor(NOTE10).predict([arch])[0]
    predicted = 1.5 * raw + 0.2
    assert entry["latency_raw_ms"]["note10_cal"] == raw
    assert entry["latency_ms"]["note10_cal"] == predicted <= 25
    assert entry["latency_low_ms"]["note10_cal"] == predicted * 0.96
    assert entry["latency_high_ms"]["note10_cal"] == predicted * 1.06


def test_raw_latency_changes_what_is_feasible(capsys, calibrated):
    """12 ms lies between the raw minimum (9.89) and the calibrated one: met raw, refused calibrated."""
    raw_minimum, r = LatencyPredictor(NOTE10).minimum()
    assert raw_minimum < 12 < 1.5 * raw_minimum + 0.2
    assert main(["--table", calibrated, "--latency-ms", "12", *FAST]) == 1
    assert f"smallest latency_ms[note10_cal] any arch reaches is {1.5 * raw_minimum + 0.2:g} (at r={r})" in (
        capsys.readouterr().err
    )
    assert main(["--table", calibrated, "--latency-ms", "12", "--raw-latency", "--json", *FAST]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    (entry,) = document["subnets"]
    assert document["latency_model"]["note10_cal"] == {
        "calibrated": False,
        "calibration": None,
        "description": "raw table sums (the table's calibration is not applied)",
    }
    ms = entry["latency_ms"]["note10_cal"]
    assert ms <= 12 and ms == entry["latency_raw_ms"]["note10_cal"] == entry["latency_low_ms"]["note10_cal"]
    assert "not applied" in captured.err


def test_each_table_keeps_its_own_latency_model(capsys, calibrated):
    """A calibrated and a raw table searched together: each limit holds for its own table's latency."""
    argv = ["--table", calibrated, "--table", NOTE10, "--latency-ms", "22", "--latency-ms", "16", "--json", *FAST]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert {name: model["calibrated"] for name, model in document["latency_model"].items()} == {
        "note10_cal": True,
        "note10_w1.2_tflite": False,
    }
    (entry,) = document["subnets"]
    raw = entry["latency_raw_ms"]
    assert raw["note10_cal"] == raw["note10_w1.2_tflite"] == entry["latency_ms"]["note10_w1.2_tflite"] <= 16
    assert entry["latency_ms"]["note10_cal"] == 1.5 * raw["note10_cal"] + 0.2 <= 22


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
    assert main(["--macs", "300M", "--width", "1.0", *FAST]) == 2  # a usage error
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
    bad.write_text("[" * 100_000 + "]" * 100_000)  # Python's JSON parser recurses: RecursionError, before
    with pytest.raises(SubnetFileError, match="not valid JSON \\(nested too deeply\\)"):
        read_subnets(bad)
    with pytest.raises(ArchError, match="nested too deeply"):
        Arch.from_json("[" * 100_000 + "]" * 100_000)
