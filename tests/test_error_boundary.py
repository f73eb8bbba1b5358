"""Every user error of both command lines ends as one line naming the problem and the fix, and a non-zero exit.

The inputs are the ones that used to escape as tracebacks (issue 10), plus the boundary's own cases.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from predictors.cli import main as search_main
from profiler.cli import main as profile_main
from supernet import ArchSpace
from supernet.errors import OFAProfileError, run_command
from tests.paths import NOTE10


def _exit_code(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """The exit status, whether the command returned it or argparse exited with it."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


def _one_line_error(capsys: pytest.CaptureFixture, prog: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: ")]
    assert len(lines) == 1, err
    return lines[0]


def _table_with_sidecar(tmp: Path, sidecar: str) -> Path:
    table = tmp / "t.csv"
    shutil.copy(NOTE10, table)
    table.with_suffix(".json").write_text(sidecar)
    return table


def _subnets(tmp: Path, archs: list[dict]) -> Path:
    path = tmp / "found.json"
    path.write_text(json.dumps(archs))
    return path


ARCH = ArchSpace.for_width(1.2).uniform(3, 3, 2, r=160).to_dict()

PROFILE_CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "an arch with r = 99999": (
        lambda tmp: ["--device", "local", "--width", "1.2", "--table", str(NOTE10), "--out", str(tmp),
                     "--subnets", str(_subnets(tmp, [{**ARCH, "r": [99999]}]))],
        "r = 99999 is not in this supernet's resolution list"),
    "--min-time nan": (lambda tmp: ["--device", "local", "--min-time", "nan"], "not a finite number"),
    "--min-time inf": (lambda tmp: ["--device", "local", "--min-time", "inf"], "not a finite number"),
    "--n-classes 0": (lambda tmp: ["--device", "local", "--n-classes", "0"], "must be 1 or more"),
    # Issue 25: values refused before any work (they were accepted, or failed after minutes or with exit 70).
    "--latency-ms nan": (lambda tmp: ["--device", "local", "--search", "--latency-ms", "nan"], "not a finite number"),
    "100 budgets": (lambda tmp: ["--device", "local", "--search", "--latency-ms", ",".join(["5"] * 100)],
                    "100 budgets: give at most 64"),
    "--block-ms 0": (lambda tmp: ["--device", "local", "--block-ms", "0"], "must be a number above 0"),
    "--calibrate 2": (lambda tmp: ["--device", "local", "--calibrate", "2"], "2 must be 3 or more"),
    "--seed -1": (lambda tmp: ["--device", "local", "--seed", "-1"], "-1 must be 0 or more"),
    "--search --table T.json": (
        lambda tmp: ["--device", "local", "--search", "--latency-ms", "20", "--table",
                     str(NOTE10.with_suffix(".json"))],
        f"give --table {NOTE10} (note10_w1.2_tflite.json is its sidecar)"),
    "random:1000000000": (lambda tmp: ["--device", "local", "--subnets", "random:1000000000"],
                          "1,000,000,000 subnets; at most 10,000 per run"),
    "a subnet file of 10,001 archs": (
        lambda tmp: ["--device", "local", "--width", "1.2", "--table", str(NOTE10), "--out", str(tmp),
                     "--subnets", str(_subnets(tmp, [ARCH] * 10_001))],
        "10,001 subnets; at most 10,000 per run"),
    "--n-classes -5": (lambda tmp: ["--device", "local", "--n-classes", "-5"], "must be 1 or more"),
    "a sidecar that is a JSON array (convert)": (
        lambda tmp: ["convert", str(_table_with_sidecar(tmp, "[1, 2]")), str(tmp / "yaml")],
        "a sidecar is a JSON object, not a list"),
    "--out under a regular file": (
        lambda tmp: ["--device", "local", "--out", str(_file(tmp) / "sub"), "--cache", str(tmp / "c")],
        "on this machine"),
    "--out that is a file": (lambda tmp: ["--device", "local", "--out", str(_file(tmp))], "on this machine"),
    "--out read-only": (lambda tmp: ["--device", "local", "--out", str(tmp / "read-only"), "--cache", str(tmp / "c")],
                        "make it writable"),
    "--cache read-only": (lambda tmp: ["--device", "local", "--out", str(tmp / "o"), "--cache",
                                       str(tmp / "read-only"), "--width", "1.0", "--resolutions", "128", "--rows",
                                       "isolated"],
                          "make it writable"),
    "convert into an existing file": (lambda tmp: ["convert", str(NOTE10), str(_file(tmp))], "on this machine"),
    "an ADB key readable by others": (
        lambda tmp: ["--device", "local", "--via", "adb", "--serial", "127.0.0.1:9", "--adb-key", str(_loose_key(tmp)),
                     "--out", str(tmp / "o"), "--cache", str(tmp / "c"), "--reconnects", "0"],
        "chmod 600"),
}


def _file(tmp: Path) -> Path:
    path = tmp / "a-file"
    path.write_text("x")
    return path


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write to: immutable (chattr +i) for root, who ignores modes; mode 0500 otherwise."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    yield folder
    if as_root:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(stat.S_IRWXU)


def _loose_key(tmp: Path) -> Path:
    from profiler.transports.adb import load_or_create_key

    key = tmp / "adbkey"
    load_or_create_key(key)
    key.chmod(0o644)
    return key


@pytest.mark.parametrize("case", list(PROFILE_CASES))
def test_ofa_profile_errors_are_one_line(case, tmp_path, capsys, read_only):
    argv, expected = PROFILE_CASES[case]
    code = _exit_code(profile_main, argv(tmp_path))
    line = _one_line_error(capsys, "ofa-profile")
    assert code != 0 and expected in line, line


@pytest.mark.parametrize(("argv", "expected"), [
    (["--latency-ms", "nan"], "not a finite number"),
    (["--latency-ms", "-1"], "must be a number above 0"),
    (["--latency-ms", "25", "--macs", "nanM"], "is not a count above 0"),
    (["--latency-ms", "25", "--seed", "-1"], "-1 must be 0 or more"),
    (["--budgets", ",".join(["20"] * 65)], "65 budgets: give at most 64"),
    (["--latency-ms", "25", "--population", "10000000"], "10,000,000 archs per generation: give at most 10,000"),
])
def test_ofa_search_refuses_values_that_cannot_be_limits(argv, expected, capsys):
    """Issue 25: NaN, negative and endless budgets, and a negative seed (exit 70), in one line before any work."""
    assert _exit_code(search_main, ["--table", str(NOTE10), *argv]) == 2
    assert expected in _one_line_error(capsys, "ofa-search")


def test_a_sidecar_that_is_a_json_array_in_ofa_search(tmp_path, capsys):
    assert search_main(["--table", str(_table_with_sidecar(tmp_path, "[]")), "--latency-ms", "25"]) == 1
    assert "a sidecar is a JSON object, not a list" in _one_line_error(capsys, "ofa-search")


def test_a_non_utf8_devices_toml(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "devices.toml").write_bytes(b"[devices.x]\nhost = \"\xff\xfe\"\n")
    assert profile_main(["--list-devices"]) == 2
    line = _one_line_error(capsys, "ofa-profile")
    assert "not a UTF-8 text file" in line and "devices.toml" in line


def test_a_bare_csv_is_usable_and_a_bom_is_stripped(tmp_path, capsys):
    """No sidecar: width and resolutions come from the rows; a spreadsheet's BOM is not part of the header."""
    bare = tmp_path / "bare.csv"
    bare.write_bytes(b"\xef\xbb\xbf" + NOTE10.read_bytes())
    assert search_main(["--table", str(bare), "--latency-ms", "25", "--population", "20", "--generations", "5"]) == 0


def test_settings_given_two_ways_are_refused_naming_both(capsys):
    assert search_main(["--table", str(NOTE10), "--width", "1.0", "--latency-ms", "25"]) == 1
    line = _one_line_error(capsys, "ofa-search")
    assert "width 1.2 (its sidecar)" in line and "width 1.0 was given" in line


def test_classes_given_two_ways_are_refused_naming_both(capsys):
    assert search_main(["--table", str(NOTE10), "--n-classes", "10", "--latency-ms", "25"]) == 1
    line = _one_line_error(capsys, "ofa-search")
    assert "1000 classes (its sidecar)" in line and "10 were given" in line


def test_debug_shows_the_traceback(capsys):
    assert search_main(["--table", "/nonexistent.csv", "--latency-ms", "25", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_the_boundary_names_bugs_as_bugs(capsys):
    def broken(argv: list[str]) -> int:
        raise KeyError("boom")

    assert run_command("ofa-x", broken, []) == 70
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "--debug" in err and "Traceback" not in err


def test_project_errors_carry_problem_and_fix():
    err = OFAProfileError("the table is empty", "build it with ofa-profile")
    assert (err.problem, err.fix, str(err)) == ("the table is empty", "build it with ofa-profile",
                                                "the table is empty; build it with ofa-profile")


def test_every_flag_has_a_help_line():
    from predictors.cli import build_parser as search_parser
    from profiler.cli import build_parser as profile_parser

    for parser in (profile_parser(), search_parser()):
        missing = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
        assert not missing, missing


def test_the_sidecar_records_the_command_really_run(tmp_path, export_cache):
    argv = ["--device", "local", "--width", "1.0", "--resolutions", "128", "--rows", "isolated", "--min-time", "0",
            "--min-count", "3", "--warmup", "0", "--block-ms", "1", "--regime-tolerance", "0.99", "--out",
            str(tmp_path / "out"), "--cache", str(export_cache), "--quiet"]
    assert profile_main(argv) == 0
    sidecar = json.loads((tmp_path / "out" / "local_w1.0_onnxruntime_cpu.json").read_text())
    assert sidecar["command"].startswith("ofa-profile --device local --width 1.0")
    modes = {p.suffix: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert modes[".csv"] == modes[".json"] == modes[".jsonl"], modes


def test_an_affinity_the_device_lacks_is_the_agents_line_not_its_traceback(tmp_path, capsys, monkeypatch,
                                                                          export_cache):
    """Issue 25: affinity = [99] put the agent's OSError traceback inside ofa-profile's one-line error."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "devices.toml").write_text("[devices.pinned]\naffinity = [99]\n")
    argv = ["--device", "pinned", "--width", "1.0", "--resolutions", "128", "--rows", "isolated", "--out",
            str(tmp_path / "out"), "--cache", str(export_cache), "--min-time", "0", "--reconnects", "0"]
    assert _exit_code(profile_main, argv) != 0
    assert "cannot pin to CPUs [99] (Invalid argument)" in _one_line_error(capsys, "ofa-profile")
