"""Latency tables on disk: this project's CSV (plus a JSON sidecar) and OFA's per-resolution YAML files.

The CSV is the one format every part reads: the profiler writes it, the predictors read it, and users open it with
``pandas.read_csv`` as it is. The schema is documented in ``tables/README.md``. Parsed fields are derived from the
key (``supernet.units.Unit.from_key``), so a row whose fields disagree with its key is refused rather than trusted.
Writes are atomic (temp file in the same folder, then ``os.replace``), and a line cut short by a crash is reported
with its line number instead of being read as a smaller number.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from supernet.errors import OFAProfileError
from supernet.files import atomic_write, json_loads, read_input, sha256_of
from supernet.plan import FAMILIES, MOBILENETV3, Family
from supernet.units import Unit, UnitError, parse_key

__all__ = [
    "COLUMNS",
    "KEY_COLUMNS",
    "SCHEMA_VERSION",
    "STAT_COLUMNS",
    "Row",
    "Table",
    "TableError",
    "append_rows",
    "read_table",
    "read_yaml_tables",
    "sidecar_path",
    "table_from_yaml",
    "write_table",
    "write_yaml_tables",
    "yaml_name",
]

SCHEMA_VERSION = 1
KEY_COLUMNS = ("key", "resolution")
PARSED_COLUMNS = ("op", "input_size", "input_chs", "output_size", "output_chs", "mid_chs", "kernel", "stride",
                  "idskip", "se", "hs")
STAT_COLUMNS = ("median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms", "count")
COLUMNS = KEY_COLUMNS + PARSED_COLUMNS + STAT_COLUMNS
_OPTIONAL_STATS = ("std_ms", "p10_ms", "p90_ms")
_YAML_NAME = "{r}_lookup_table.yaml"


def yaml_name(resolution: int) -> str:
    """The name OFA's release gives the YAML table of one resolution."""
    return _YAML_NAME.format(r=resolution)


class TableError(OFAProfileError, ValueError):
    """A table file that does not follow the schema; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Row:
    """One measured unit: its OFA key, the resolution it belongs to (None: every resolution) and statistics.

    Times are milliseconds per inference; ``count`` is the number of timed runs. ``extra`` keeps columns beyond
    the schema (a profiler's own notes) so that reading and writing a table loses nothing.
    """

    key: str
    median_ms: float
    mean_ms: float
    count: int
    std_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    resolution: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def unit(self) -> Unit:
        return parse_key(self.key)


@dataclass(frozen=True)
class Table:
    """Rows plus the sidecar's metadata (device, runtime, provenance, settings, width and resolutions).

    A row with ``resolution`` None serves every resolution; a row with a resolution serves only that one and
    wins over a shared row with the same key (OFA's tables keep one file per resolution).
    """

    rows: tuple[Row, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> Family:
        """The family its rows belong to: the sidecar's ``space`` (the family's name, as ``--space`` gives it),
        else what its keys say (MobileNetV3 by default: OFA's released tables are MobileNetV3's)."""
        return FAMILIES[self.meta.get("space") or _family_of_keys(row.key for row in self.rows) or MOBILENETV3.name]

    @property
    def resolutions(self) -> tuple[int, ...]:
        """The resolutions this table covers: the sidecar's list, else those its rows name."""
        listed = self.meta.get("resolutions")
        if listed:
            return tuple(sorted(int(r) for r in listed))
        return tuple(sorted({row.resolution for row in self.rows if row.resolution is not None}))

    def values(self, resolution: int, statistic: str = "median_ms") -> dict[str, float]:
        """``{key: value}`` of every row that serves ``resolution``, from the column ``statistic``."""
        if statistic not in ("median_ms", "mean_ms", "p10_ms", "p90_ms"):
            raise TableError(f"unknown statistic {statistic!r}; expected one of median_ms, mean_ms, p10_ms, p90_ms")
        out: dict[str, float] = {}
        for row in self.rows:
            if row.resolution is None or row.resolution == resolution:
                value = getattr(row, statistic)
                if value is None:
                    raise TableError(f"row {row.key!r} has no {statistic}; use statistic='median_ms'")
                if row.resolution is not None or row.key not in out:
                    out[row.key] = value
        return out

    def to_frame(self):
        """The table as a pandas DataFrame with the CSV's columns."""
        import pandas as pd

        return pd.read_csv(io.StringIO(_to_csv_text(self.rows)))


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where a table's JSON sidecar lives: same folder and stem, ``.json``."""
    return Path(path).with_suffix(".json")


# --- writing -----------------------------------------------------------------------------------------------
def _format_float(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _row_cells(row: Row, extra_columns: Sequence[str]) -> list[str]:
    u = row.unit
    parsed = [u.kind, u.in_size, u.in_chs, u.out_size, u.out_chs, u.mid_chs, u.kernel_size, u.stride,
              int(u.idskip), int(u.se), int(u.hs)]
    stats = [_format_float(row.median_ms), _format_float(row.mean_ms), _format_float(row.std_ms),
             _format_float(row.p10_ms), _format_float(row.p90_ms), str(row.count)]
    res = "" if row.resolution is None else str(row.resolution)
    return [row.key, res, *(str(v) for v in parsed), *stats, *(row.extra.get(c, "") for c in extra_columns)]


def _extra_columns(rows: Iterable[Row]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.extra))
    return list(names)


def _to_csv_text(rows: Sequence[Row], header: bool = True, extra_columns: Sequence[str] | None = None) -> str:
    extra = _extra_columns(rows) if extra_columns is None else list(extra_columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow([*COLUMNS, *extra])
    for row in rows:
        writer.writerow(_row_cells(row, extra))
    return buf.getvalue()


def write_table(path: str | os.PathLike, table: Table) -> Path:
    """Write the CSV and its sidecar atomically; returns the CSV path.

    Rows are checked first (known keys, no duplicate (key, resolution)), so a bad table never reaches disk.
    """
    path = Path(path)
    _check_unique(table.rows, str(path))
    for row in table.rows:
        _check_key(row.key, str(path), None)
    _check_family(table.rows, table.meta, str(path))
    meta = {"schema_version": SCHEMA_VERSION, **{k: v for k, v in table.meta.items() if k != "schema_version"}}
    meta["table"] = path.name
    atomic_write(path, _to_csv_text(table.rows))
    atomic_write(sidecar_path(path), json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return path


def append_rows(path: str | os.PathLike, rows: Sequence[Row], extra_columns: Sequence[str] = ()) -> None:
    """Append rows to a CSV (creating it with its header), flushed to disk before returning.

    For resumable measurement: each row is durable once this returns. A crash can leave at most one partial last
    line, which :func:`read_table` reports (or drops with ``allow_partial_last_line=True``).
    """
    path = Path(path)
    for row in rows:
        _check_key(row.key, str(path), None)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        header = path.read_text(encoding="utf-8").split("\n", 1)[0]
        expected = ",".join([*COLUMNS, *extra_columns])
        if header != expected:
            raise TableError(f"{path}: line 1: header {header!r} differs from {expected!r}; append with the same "
                             f"extra columns the file was created with")
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(_to_csv_text(rows, header=new, extra_columns=extra_columns))
        f.flush()
        os.fsync(f.fileno())


# --- reading -----------------------------------------------------------------------------------------------
def _check_key(key: str, where: str, line: int | None) -> Unit:
    try:
        return parse_key(key)
    except UnitError as err:
        at = f"{where}: line {line}: " if line is not None else f"{where}: "
        raise TableError(f"{at}{err}") from None


def _family_of_key(key: str) -> str | None:
    """The family whose format only this key is in; None for keys both families write alike (the first conv)."""
    unit = parse_key(key)
    if unit.family != MOBILENETV3.name:
        return unit.family
    try:
        Unit.from_key(key, "proxyless")
    except UnitError:
        return MOBILENETV3.name
    return None


def _family_of_keys(keys: Iterable[str]) -> str | None:
    """The one family whose own key formats appear among ``keys``; None if none do, ``"mixed"`` if both do."""
    families = {family for family in map(_family_of_key, keys) if family is not None}
    return families.pop() if len(families) == 1 else "mixed" if families else None


def _check_family(rows: Sequence[Row], meta: Mapping[str, Any], where: str) -> None:
    """Rows of one space only, and the one the sidecar names (a mix would sum one family's rows for another)."""
    found = _family_of_keys(row.key for row in rows)
    if found == "mixed":
        raise TableError(f"{where}: rows of both the mobilenetv3 and the proxyless space in one table",
                         "keep one space per table: build each with its own ofa-profile --space")
    stated = meta.get("space")
    if stated is not None and stated not in FAMILIES:
        raise TableError(f"{where}: the sidecar's space {stated!r} is none of {', '.join(FAMILIES)}")
    if stated is not None and found is not None and found != stated:
        raise TableError(f"{where}: the sidecar says space {stated!r}, but the rows are {found!r} rows",
                         "fix the sidecar's 'space', or rebuild the table")


def _check_unique(rows: Iterable[Row], where: str) -> None:
    seen: set[tuple[str, int | None]] = set()
    for row in rows:
        ident = (row.key, row.resolution)
        if ident in seen:
            res = "every resolution" if row.resolution is None else f"resolution {row.resolution}"
            raise TableError(f"{where}: key {row.key!r} appears twice for {res}; keep one row per key and resolution")
        seen.add(ident)


def _number(cells: Mapping[str, str], name: str, where: str, optional: bool = False) -> float | None:
    text = cells[name]
    if text == "" and optional:
        return None
    try:
        value = float(text)
    except ValueError:
        raise TableError(f"{where}: {name} = {text!r} is not a number (milliseconds)") from None
    if not math.isfinite(value) or value < 0:
        raise TableError(f"{where}: {name} = {text!r} must be a finite, non-negative number of milliseconds")
    return value


def _integer(text: str, name: str, where: str, optional: bool = False) -> int | None:
    if text == "" and optional:
        return None
    try:
        value = int(text)
    except ValueError:
        raise TableError(f"{where}: {name} = {text!r} is not an integer") from None
    if value < 0:
        raise TableError(f"{where}: {name} = {value} must not be negative")
    return value


def _parse_row(cells: dict[str, str], where: str, line: int, extra_columns: Sequence[str]) -> Row:
    unit = _check_key(cells["key"], where.rsplit(": line", 1)[0], line)
    parsed = {"op": unit.kind, "input_size": unit.in_size, "input_chs": unit.in_chs, "output_size": unit.out_size,
              "output_chs": unit.out_chs, "mid_chs": unit.mid_chs, "kernel": unit.kernel_size, "stride": unit.stride,
              "idskip": int(unit.idskip), "se": int(unit.se), "hs": int(unit.hs)}
    for name, value in parsed.items():
        if cells[name] != str(value):
            raise TableError(f"{where}: {name} = {cells[name]!r} disagrees with the key, which gives {value}; "
                             f"fix the row or rewrite it with predictors.table_io.write_table")
    return Row(
        key=cells["key"],
        resolution=_integer(cells["resolution"], "resolution", where, optional=True),
        median_ms=_number(cells, "median_ms", where),
        mean_ms=_number(cells, "mean_ms", where),
        std_ms=_number(cells, "std_ms", where, optional=True),
        p10_ms=_number(cells, "p10_ms", where, optional=True),
        p90_ms=_number(cells, "p90_ms", where, optional=True),
        count=_integer(cells["count"], "count", where),
        extra={c: cells[c] for c in extra_columns if cells[c] != ""},
    )


def _read_rows(reader, path: Path) -> list[Row]:
    """The rows under a checked header."""
    header = next(reader, None)
    if not header:
        raise TableError(f"{path}: line 1: empty file; a table starts with the header {','.join(COLUMNS)}")
    if tuple(header[: len(COLUMNS)]) != COLUMNS:
        raise TableError(f"{path}: line 1: header {','.join(header)!r} does not start with the schema's columns "
                         f"{','.join(COLUMNS)}; see tables/README.md")
    extra = header[len(COLUMNS):]
    rows = []
    for cells in reader:
        line = reader.line_num
        where = f"{path}: line {line}"
        if len(cells) != len(header):
            raise TableError(f"{where}: {len(cells)} fields, expected {len(header)}; the line is truncated or "
                             f"has a stray comma")
        rows.append(_parse_row(dict(zip(header, cells, strict=True)), where, line, extra))
    return rows


def _check_sidecar_fields(meta: Mapping[str, Any], side: Path) -> None:
    """The fields predictions compute with have the types the writer gives them; a tampered one is named."""
    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    checks = (("resolutions", lambda v: isinstance(v, list) and all(positive_int(r) for r in v),
               "a list of positive integers"),
              ("width_mult", lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
               and v > 0, "a positive number"),
              ("n_classes", positive_int, "a positive integer"),
              ("space", lambda v: isinstance(v, str), "a space name"))
    for name, valid, what in checks:
        if name in meta and meta[name] is not None and not valid(meta[name]):
            raise TableError(f"{side}: {name} {meta[name]!r} is not {what}",
                             "rebuild the table, or delete the sidecar to use the CSV alone")


def read_table(path: str | os.PathLike, allow_partial_last_line: bool = False) -> Table:
    """Read and check a table CSV and its sidecar (if present).

    Args:
        path: The CSV file.
        allow_partial_last_line: Drop a last line that lacks its newline (a crash during an append) instead of
            raising. Every complete line is still checked.

    Raises:
        TableError: naming the file and line of the first problem.
    """
    path = Path(path)
    try:
        # A spreadsheet's byte-order mark is not part of the header; newlines read as open() would (universal).
        text = read_input(path).decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise TableError(f"{path}: no such table; build one with ofa-profile or convert OFA's YAML") from None
    except UnicodeDecodeError as err:
        raise TableError(f"{path}: not a UTF-8 text file ({err.reason}); is it really a table CSV?") from None
    lines = text.split("\n")
    if text and not text.endswith("\n"):
        if not allow_partial_last_line:
            raise TableError(f"{path}: line {len(lines)}: truncated (the file ends inside this line); the write "
                             f"was cut short: re-run the command that made it, or delete the line")
        text = "\n".join(lines[:-1]) + "\n"
    reader = csv.reader(io.StringIO(text))
    try:
        rows = _read_rows(reader, path)
    except csv.Error as err:  # a field over the csv module's limit (131,072 characters), a NUL byte
        raise TableError(f"{path}: line {reader.line_num}: {err}", "is it really a table CSV?") from None
    _check_unique(rows, str(path))
    meta: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.exists():
        try:
            meta = json_loads(read_input(side).decode("utf-8"))
        except json.JSONDecodeError as err:
            raise TableError(f"{side}: line {err.lineno}: not valid JSON ({err.msg})") from None
        except UnicodeDecodeError as err:
            raise TableError(f"{side}: not a UTF-8 text file ({err.reason})", "rebuild or delete the sidecar") from None
        if not isinstance(meta, dict):
            raise TableError(f"{side}: a sidecar is a JSON object, not a {type(meta).__name__}",
                             "rebuild the table, or delete the sidecar to use the CSV alone") from None
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise TableError(f"{side}: schema_version {version!r} is not {SCHEMA_VERSION}, the one this version "
                             f"of ofa-profile reads")
        _check_sidecar_fields(meta, side)
    _check_family(rows, meta, str(path))
    return Table(tuple(rows), meta)


# --- OFA's YAML --------------------------------------------------------------------------------------------
def read_yaml_tables(folder: str | os.PathLike, resolutions: Iterable[int] | None = None) -> dict[int, dict]:
    """OFA's ``{r}_lookup_table.yaml`` files of a folder: ``{r: {key: {count, mean, std}}}``."""
    folder = Path(folder)
    if resolutions is None:
        names = [p.name.split("_", 1)[0] for p in folder.glob("*_lookup_table.yaml")]
        bad = sorted(name for name in names if not name.isdigit())
        if bad:
            raise TableError(f"{folder}: {bad[0]}_lookup_table.yaml does not start with a resolution",
                             f"name each file {_YAML_NAME}")
        resolutions = sorted(int(name) for name in names)
    tables = {}
    for r in resolutions:
        file = folder / yaml_name(r)
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TableError(f"{file}: missing; expected one OFA table per resolution named "
                             f"{_YAML_NAME}") from None
        except yaml.YAMLError as err:
            raise TableError(f"{file}: not valid YAML ({err})") from None
        except UnicodeDecodeError as err:
            raise TableError(f"{file}: not a UTF-8 text file ({err.reason})", "is it really an OFA table?") from None
        if not isinstance(data, dict):
            raise TableError(f"{file}: expected a mapping of keys to {{count, mean, std}}")
        tables[r] = data
    if not tables:
        raise TableError(f"{folder}: no files named {_YAML_NAME}")
    return tables


def table_from_yaml(folder: str | os.PathLike, meta: Mapping[str, Any] | None = None,
                    resolutions: Iterable[int] | None = None) -> Table:
    """Convert OFA's per-resolution YAML tables into one table (a row per key and resolution).

    OFA keeps only the mean, std and count of each row: ``median_ms`` is filled with the mean (recorded in the
    sidecar under ``statistics``), and p10/p90 are left empty.
    """
    folder = Path(folder)
    tables = read_yaml_tables(folder, resolutions)
    rows = []
    for r, entries in sorted(tables.items()):
        file = folder / yaml_name(r)
        bad = next((key for key in entries if not isinstance(key, str)), None)
        if bad is not None:
            raise TableError(f"{file}: key {bad!r} is not a unit's name such as "
                             f"'Conv-input:224x224x3-output:112x112x16'")
        for key, entry in sorted(entries.items()):
            where = f"{file}: key {key!r}"
            _check_key(key, str(file), None)
            if not isinstance(entry, dict) or not {"mean", "count"} <= set(entry):
                raise TableError(f"{where}: expected {{count, mean, std}}, got {entry!r}")
            mean = _number({"mean": str(entry["mean"])}, "mean", where)
            std = None if entry.get("std") is None else _number({"std": str(entry["std"])}, "std", where)
            count = _integer(str(entry["count"]), "count", where)
            rows.append(Row(key=key, resolution=r, median_ms=mean, mean_ms=mean, std_ms=std, count=count))
    files = {str(r): {"file": yaml_name(r), "sha256": sha256_of(folder / yaml_name(r))}
             for r in sorted(tables)}
    base = {
        "schema_version": SCHEMA_VERSION,
        "resolutions": sorted(tables),
        "statistics": {"median_ms": "mean_ms (OFA's YAML tables keep only mean, std and count)",
                       "p10_ms": "not available", "p90_ms": "not available"},
        "converted_from": {"format": "OFA lookup-table YAML", "files": files},
    }
    return Table(tuple(rows), {**base, **(meta or {})})


def write_yaml_tables(table: Table, folder: str | os.PathLike, statistic: str = "mean_ms",
                      resolutions: Iterable[int] | None = None) -> list[Path]:
    """Write OFA's ``{r}_lookup_table.yaml`` files, one per resolution, atomically.

    Args:
        table: The table; shared rows (no resolution) go into every file.
        folder: Output folder.
        statistic: The column written as OFA's ``mean``, the value OFA's ``LatencyTable`` sums. ``mean_ms`` keeps
            the field's meaning; ``median_ms`` makes OFA's tools predict with this project's table value.
        resolutions: Default: the table's resolutions.
    """
    if statistic not in ("mean_ms", "median_ms"):
        raise TableError(f"statistic {statistic!r} cannot fill OFA's 'mean'; use mean_ms or median_ms")
    folder = Path(folder)
    written = []
    for r in table.resolutions if resolutions is None else resolutions:
        chosen: dict[str, Row] = {}
        for row in table.rows:
            if row.resolution == r or (row.resolution is None and row.key not in chosen):
                chosen[row.key] = row
        if not chosen:
            raise TableError(f"table has no rows for resolution {r}; its resolutions: {table.resolutions}")
        data = {key: {"count": row.count, "mean": getattr(row, statistic),
                      **({"std": row.std_ms} if row.std_ms is not None else {})}
                for key, row in sorted(chosen.items())}
        path = folder / yaml_name(r)
        atomic_write(path, yaml.safe_dump(data, sort_keys=True))
        written.append(path)
    return written
