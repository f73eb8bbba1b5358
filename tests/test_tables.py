"""Table CSV schema: the shipped Note10 conversion, YAML both ways, atomic writes, and errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from predictors.table_io import (
    COLUMNS,
    Row,
    Table,
    TableError,
    append_rows,
    read_table,
    table_from_yaml,
    write_table,
    write_yaml_tables,
)
from tests.paths import NOTE10

RELEASE = Path(__file__).resolve().parent / "data" / "ofa-release" / "note10"
RESOLUTIONS = (160, 176, 192, 208, 224)
BLOCK_KEY = "expanded_conv-input:28x28x48-output:14x14x96-expand:192-kernel:5-stride:2-idskip:0-se:0-hs:1"
LOGITS_KEY = "Logits-input:1x1x1536-output:1000"


@pytest.fixture(scope="module")
def released() -> dict[int, dict]:
    return {r: yaml.safe_load((RELEASE / f"{r}_lookup_table.yaml").read_text()) for r in RESOLUTIONS}


def _small_table() -> Table:
    rows = (
        Row(LOGITS_KEY, median_ms=0.5, mean_ms=0.55, count=100, std_ms=0.01, p10_ms=0.45, p90_ms=0.6,
            extra={"note": "every resolution"}),
        Row(LOGITS_KEY, median_ms=0.7, mean_ms=0.75, count=90, resolution=224, extra={"note": "a, quoted"}),
        Row(BLOCK_KEY, median_ms=1.25, mean_ms=1.3, count=80, std_ms=0.2, resolution=160),
    )
    return Table(rows, {"width_mult": 1.2, "resolutions": [160, 224]})


# --- the shipped Note10 table ----------------------------------------------------------------------------
def test_note10_table_equals_the_released_yaml(released):
    """Every (resolution, key) of the release is one row with its mean, std and count; nothing else."""
    table = read_table(NOTE10)
    got = {(row.resolution, row.key): row for row in table.rows}
    expected = {(r, key): entry for r, entries in released.items() for key, entry in entries.items()}
    assert set(got) == set(expected)
    for ident, entry in expected.items():
        row = got[ident]
        assert (row.mean_ms, row.median_ms, row.std_ms, row.count) == (entry["mean"], entry["mean"], entry["std"],
                                                                       entry["count"])
        assert row.p10_ms is None and row.p90_ms is None


def test_note10_sidecar_has_provenance():
    """The sidecar names the source, licence, author, device, runtime and which statistic fills median_ms."""
    meta = read_table(NOTE10).meta
    assert meta["schema_version"] == 1 and meta["width_mult"] == 1.2 and meta["resolutions"] == list(RESOLUTIONS)
    assert "MIT" in meta["provenance"]["license"] and meta["provenance"]["author"] == "Han Cai"
    assert meta["device"]["name"] == "note10" and meta["runtime"]["name"] == "tflite"
    assert meta["statistics"]["median_ms"].startswith("mean_ms")
    for r in RESOLUTIONS:
        assert len(meta["converted_from"]["files"][str(r)]["sha256"]) == 64


def test_pandas_reads_a_table_as_it_is():
    """pandas.read_csv with no options: schema columns, integer fields as ints, times as floats."""
    frame = pd.read_csv(NOTE10)
    assert tuple(frame.columns) == COLUMNS and len(frame) == 480
    assert frame["kernel"].dtype.kind == "i" and frame["resolution"].dtype.kind == "i"
    assert frame["median_ms"].dtype.kind == "f" and frame["p10_ms"].isna().all()


def test_yaml_round_trip_is_exact(tmp_path, released):
    """YAML -> CSV -> YAML gives the released files' content back, value for value."""
    write_yaml_tables(read_table(NOTE10), tmp_path)
    for r in RESOLUTIONS:
        assert yaml.safe_load((tmp_path / f"{r}_lookup_table.yaml").read_text()) == released[r]


def test_yaml_conversion_refuses_a_bad_key(tmp_path):
    """A YAML key that is not an OFA key is an error naming the file and key."""
    (tmp_path / "160_lookup_table.yaml").write_text("Conv-input:160x160x3-output:80x80:\n  {count: 1, mean: 1.0}\n")
    with pytest.raises(TableError, match=r"160_lookup_table\.yaml"):
        table_from_yaml(tmp_path)


# --- writing and reading ---------------------------------------------------------------------------------
def test_write_read_round_trip(tmp_path):
    """Rows (shared and per-resolution), extra columns and the sidecar come back unchanged."""
    table = _small_table()
    path = write_table(tmp_path / "t.csv", table)
    back = read_table(path)
    assert back.rows == table.rows
    assert back.meta["schema_version"] == 1 and back.meta["table"] == "t.csv"
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*tmp"))


def test_resolution_row_wins_over_shared_row():
    """At 224 the 224-only row is used; at 160 the shared one."""
    table = _small_table()
    assert table.values(224)[LOGITS_KEY] == 0.7
    assert table.values(160)[LOGITS_KEY] == 0.5
    assert table.values(160, "mean_ms")[LOGITS_KEY] == 0.55


def test_failed_write_leaves_old_file(tmp_path):
    """A table with a bad row never reaches disk; the previous file stays as it was."""
    path = write_table(tmp_path / "t.csv", _small_table())
    before = path.read_text()
    bad = Table((Row("Conv-input:bad", median_ms=1.0, mean_ms=1.0, count=1),))
    with pytest.raises(TableError, match="Conv-input:bad"):
        write_table(path, bad)
    assert path.read_text() == before


def test_append_rows_then_read(tmp_path):
    """Appended rows are read back after the header that the first append wrote."""
    path = tmp_path / "t.csv"
    rows = _small_table().rows
    append_rows(path, rows[:1], extra_columns=["note"])
    append_rows(path, rows[1:], extra_columns=["note"])
    assert read_table(path).rows == rows
    with pytest.raises(TableError, match="line 1"):
        append_rows(path, rows[:1])


# --- malformed files: the error names the line -----------------------------------------------------------
def _lines(tmp_path) -> tuple[Path, list[str]]:
    path = write_table(tmp_path / "t.csv", _small_table())
    return path, path.read_text().splitlines(keepends=True)


def test_truncated_file_names_the_last_line(tmp_path):
    """A file cut inside its last line: the error says truncated and gives that line's number."""
    path, lines = _lines(tmp_path)
    path.write_text("".join(lines)[:-5])
    with pytest.raises(TableError, match=r"line 4: truncated"):
        read_table(path)
    assert len(read_table(path, allow_partial_last_line=True).rows) == 2


def test_missing_fields_name_the_line(tmp_path):
    """A line with fewer fields than the header."""
    path, lines = _lines(tmp_path)
    lines[2] = ",".join(lines[2].split(",")[:10]) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(TableError, match=r"line 3: 10 fields, expected 20"):
        read_table(path)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("median_ms", "1.2.3", "median_ms = '1.2.3' is not a number"),
    ("mean_ms", "-1", "must be a finite, non-negative"),
    ("count", "x", "count = 'x' is not an integer"),
    ("kernel", "7", "kernel = '7' disagrees with the key"),
    ("key", "Conv-input:1x1", "bad unit key"),
])
def test_bad_cell_names_the_line(tmp_path, column, value, message):
    """A bad value in one cell of line 3."""
    path = write_table(tmp_path / "t.csv", _small_table())
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[1, column] = value
    frame.to_csv(path, index=False)
    with pytest.raises(TableError, match=rf"line 3: .*{message}"):
        read_table(path)


def test_duplicate_row_is_refused(tmp_path):
    """The same key twice for the same resolution."""
    path, lines = _lines(tmp_path)
    path.write_text("".join([*lines, lines[3]]))
    with pytest.raises(TableError, match="appears twice"):
        read_table(path)


def test_bad_header_and_sidecar_version(tmp_path):
    """A foreign header names line 1; a sidecar of another schema version is refused."""
    path, lines = _lines(tmp_path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(TableError, match="line 1: header"):
        read_table(path)
    path.write_text("".join(lines))
    path.with_suffix(".json").write_text('{"schema_version": 99}')
    with pytest.raises(TableError, match="schema_version 99"):
        read_table(path)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("resolutions", [160, "abc"], "resolutions \\[160, 'abc'\\] is not a list of positive integers"),
    ("width_mult", "wide", "width_mult 'wide' is not a positive number"),
    ("width_mult", float("nan"), "width_mult nan is not a positive number"),
    ("n_classes", True, "n_classes True is not a positive integer"),
])
def test_a_tampered_sidecar_field_is_named(tmp_path, field, value, message):
    """Fields predictions compute with are checked where the sidecar is read, not met later as a ValueError."""
    path, lines = _lines(tmp_path)
    path.write_text("".join(lines))
    meta = {**read_table(NOTE10).meta, field: value}
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(TableError, match=f"{path.with_suffix('.json')}: {message}"):
        read_table(path)


def test_a_field_over_the_csv_limit_and_nesting_too_deep_are_one_error(tmp_path):
    """A 140,000-character field (the csv module stops at 131,072) and a sidecar nested 100,000 deep (Python's
    JSON parser recurses) name the file, as every other damaged table does."""
    path, lines = _lines(tmp_path)
    path.write_text(lines[0] + "x" * 140_000 + lines[1][lines[1].index(","):])
    with pytest.raises(TableError, match="line 2: field larger than field limit"):
        read_table(path)
    path.write_text("".join(lines))
    path.with_suffix(".json").write_text('{"deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(TableError, match="not valid JSON \\(nested too deeply\\)"):
        read_table(path)
