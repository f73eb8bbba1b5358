"""Property-based fuzzing of every reader of outside input: each input parses, or raises the project's error.

Arbitrary bytes and structured garbage (valid files with fields swapped for anything) go to the table CSV
reader, OFA's YAML converter, the subnet-file reader, the devices.toml reader, both agent-result parsers, the
accuracy-dataset reader and the latency-model loader.
``OFA_FUZZ_EXAMPLES`` sets the inputs per reader: 1,000 by default (`make test`), 10,000 under `make fuzz` (what CI
runs as well). A reader with two tests (raw bytes, structured garbage) takes half from each.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predictors.latency_model import LatencyModel
from predictors.latency_priors import load_priors
from predictors.table_io import COLUMNS, read_table, table_from_yaml
from predictors.train import read_accuracy_csv
from profiler.agent_run import parse_results
from profiler.android_output import parse_agent_output
from profiler.devices import load_profiles
from profiler.records import result_problem, row_problem
from supernet.arch import ArchSpace
from supernet.errors import OFAProfileError
from supernet.subnets import parse_subnets, read_subnets
from supernet.units import all_units
from tests.paths import NOTE10

EXAMPLES = int(os.environ.get("OFA_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HALF = settings(FUZZ, max_examples=EXAMPLES // 2)
KEYS = [u.key for u in all_units(1.0, [128])][:20]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=8,
)
cells = st.one_of(st.sampled_from(KEYS), st.text(max_size=15), st.floats().map(repr), st.integers().map(str),
                  st.sampled_from(["", "nan", "inf", "-1", "0", "1e400", "224", "1"]))


def _only_project_errors(call: Any) -> None:
    """Run a reader; the project's error is an answer, any other exception fails the test."""
    with contextlib.suppress(OFAProfileError):
        call()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the whole module: Hypothesis reruns a test body thousands of times within one test."""
    return tmp_path_factory.mktemp("fuzz")


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


# --- the table CSV ---------------------------------------------------------------------------------------
@HALF
@given(st.binary(max_size=1500))
def test_table_reader_on_bytes(scratch, data):
    _only_project_errors(lambda: read_table(_write(scratch, "t.csv", data)))


@HALF
@given(st.lists(st.lists(cells, min_size=len(COLUMNS) - 2, max_size=len(COLUMNS) + 1), max_size=4),
       st.booleans(), json_values)
def test_table_reader_on_structured_garbage(scratch, rows, bom, sidecar):
    text = ",".join(COLUMNS) + "\n" + "\n".join(",".join(row) for row in rows) + "\n"
    path = _write(scratch, "s.csv", (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass"))
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    _only_project_errors(lambda: read_table(path))
    path.with_suffix(".json").unlink()


# --- OFA's YAML ------------------------------------------------------------------------------------------
@FUZZ
@given(st.one_of(st.binary(max_size=800),
                 json_values.map(lambda v: yaml.safe_dump(v).encode()),
                 st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10),
                                 st.dictionaries(st.sampled_from(["mean", "count", "std"]) | st.text(max_size=5),
                                                 json_values, max_size=3), max_size=4)
                 .map(lambda v: yaml.safe_dump(v).encode())))
def test_yaml_converter(scratch, data):
    folder = scratch / "yaml"
    folder.mkdir(exist_ok=True)
    (folder / "128_lookup_table.yaml").write_bytes(data)
    _only_project_errors(lambda: table_from_yaml(folder))


# --- subnet files ----------------------------------------------------------------------------------------
arch_like = st.fixed_dictionaries(
    {"ks": st.lists(st.integers(-1, 9), max_size=22) | json_values,
     "e": st.lists(st.integers(-1, 9), max_size=22) | json_values,
     "d": st.lists(st.integers(-1, 9), max_size=6) | json_values},
    optional={"r": st.lists(st.integers(-(2**40), 2**40), max_size=2) | json_values, "image_size": json_values},
)


@HALF
@given(st.one_of(arch_like, st.lists(arch_like, max_size=3), st.fixed_dictionaries({"subnets": st.lists(arch_like,
                 max_size=3)}), json_values))
def test_subnet_documents(document):
    _only_project_errors(lambda: parse_subnets(document, "fuzz"))


@HALF
@given(st.binary(max_size=800))
def test_subnet_file_bytes(scratch, data):
    _only_project_errors(lambda: read_subnets(_write(scratch, "s.json", data)))


# --- devices.toml ----------------------------------------------------------------------------------------
toml_values = st.one_of(st.integers(-5, 2**64), st.text(max_size=10), st.booleans(),
                        st.lists(st.integers(-2, 20), max_size=4), st.floats(allow_nan=False))
fields = st.sampled_from(["transport", "host", "hosts", "serial", "serials", "runtime", "provider", "threads",
                          "affinity", "batch", "python", "port", "user", "key", "remote_dir", "known_hosts",
                          "benchmark_model", "adb_key", "bogus"])


@FUZZ
@given(st.one_of(st.binary(max_size=600),
                 st.dictionaries(st.text("abcxyz_-", min_size=1, max_size=6),
                                 st.dictionaries(fields, toml_values, max_size=5), max_size=3)
                 .map(lambda devices: "".join(
                     f"[devices.{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in body.items())
                     for name, body in devices.items()).encode())))
def test_devices_toml(scratch, data):
    _only_project_errors(lambda: load_profiles([_write(scratch, "devices.toml", data)]))


# --- what agents send back -------------------------------------------------------------------------------
agent_lines = st.lists(st.one_of(json_values.map(json.dumps), st.text(max_size=60),
                                 st.sampled_from(["### begin m", "### end m", "### rounds x", "### status -",
                                                  "### invocation model q", "### environment", "count=3 std=x"])),
                       max_size=12)


@FUZZ
@given(agent_lines)
def test_agent_result_parsers(lines):
    text = "\n".join(lines)
    _only_project_errors(lambda: parse_results(text))
    _only_project_errors(lambda: parse_agent_output(text))


@settings(FUZZ, max_examples=EXAMPLES // 5)
@given(json_values)
def test_result_and_row_checks_never_raise(value):
    assert result_problem(value) is None or isinstance(result_problem(value), str)
    assert row_problem(value) is None or isinstance(row_problem(value), str)


# --- accuracy datasets -----------------------------------------------------------------------------------
@HALF
@given(st.binary(max_size=800))
def test_accuracy_csv_bytes(scratch, data):
    _only_project_errors(lambda: read_accuracy_csv(_write(scratch, "a.csv", data)))


@HALF
@given(st.lists(st.tuples(st.one_of(arch_like.map(json.dumps), st.text(max_size=20)), cells), max_size=4),
       st.sampled_from(["arch,accuracy", "accuracy,arch", "arch", "arch,accuracy,extra"]))
def test_accuracy_csv_structured_garbage(scratch, rows, header):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header.split(","))
    writer.writerows(rows)
    path = _write(scratch, "b.csv", buffer.getvalue().encode("utf-8", "surrogatepass"))
    _only_project_errors(lambda: read_accuracy_csv(path))


# --- latency-model files ---------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["plain", "with priors"])
def saved_model(scratch, request) -> tuple[dict, bytes]:
    """A small fitted model's two files: its JSON document and its npz arrays; the second one (w1.2) fitted with the
    Note10 table and a model as priors, nested in its files."""
    width = 1.2 if request.param == "with priors" else 1.0
    archs = [a.with_resolution(160) for a in ArchSpace.for_width(width).samples(8, seed=1)]
    ms = [1.0 + sum(a.d) / 10 + a.ks[0] / 50 for a in archs]
    stem = scratch / request.param.replace(" ", "-")
    priors = ()
    if request.param == "with priors":
        LatencyModel(width_mult=width, method="ridge", cv=2).fit(archs, ms).save(scratch / "prior")
        priors = load_priors([NOTE10, scratch / "prior"])
    method = "priors+ridge" if priors else "ridge"
    LatencyModel(width_mult=width, method=method, cv=2, priors=priors).fit(archs, ms).save(stem)
    return json.loads(stem.with_suffix(".json").read_text()), stem.with_suffix(".npz").read_bytes()


def _mutated(document: dict, draw) -> dict:
    """The document with some fields dropped, some swapped for anything, and nested objects treated alike."""
    out = {}
    for key, value in document.items():
        choice = draw(st.integers(0, 7))
        if choice == 1:
            out[key] = draw(json_values)
        elif choice == 2 and isinstance(value, dict):
            out[key] = _mutated(value, draw)
        elif choice == 2 and isinstance(value, list):
            out[key] = [_mutated(v, draw) if isinstance(v, dict) else v for v in value]
        elif choice != 0:
            out[key] = value
    return out


def _load_and_predict(stem: Path) -> None:
    model = LatencyModel.load(stem)
    model.predict([ArchSpace.for_width(1.0).uniform(3, 3, 2, 160)])


@HALF
@given(st.data())
def test_latency_model_documents(scratch, saved_model, data):
    document, npz = saved_model
    stem = scratch / "doc"
    stem.with_suffix(".json").write_text(json.dumps(_mutated(document, data.draw)))
    stem.with_suffix(".npz").write_bytes(npz)
    _only_project_errors(lambda: _load_and_predict(stem))


@HALF
@given(st.one_of(st.binary(max_size=1200), st.integers(0, 4000)))
def test_latency_model_arrays(scratch, saved_model, data):
    """Arbitrary bytes, or the real arrays cut short at any length, beside a sound JSON document."""
    document, npz = saved_model
    stem = scratch / "arrays"
    stem.with_suffix(".json").write_text(json.dumps(document))
    stem.with_suffix(".npz").write_bytes(data if isinstance(data, bytes) else npz[:data])
    _only_project_errors(lambda: _load_and_predict(stem))
