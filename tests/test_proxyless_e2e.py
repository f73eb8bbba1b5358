"""The ProxylessNAS space end to end on this machine's CPU: a table, a search over it, and its subnets re-measured.

Real ONNX Runtime runs, through the commands users type (ofa-profile, ofa-search); nothing is mocked.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from predictors.cli import main as search_main
from predictors.latency import LatencyPredictor
from predictors.table_io import read_table
from profiler.cli import main as profile_main
from supernet.plan import PROXYLESS
from supernet.units import all_units


@pytest.mark.slow
def test_a_proxyless_table_search_and_remeasure_on_the_local_cpu(tmp_path, capsys):
    """`ofa-profile --space proxyless` builds the w1.3 table at 128 (all 103 rows, in-network on ORT CPU);
    `ofa-search` refuses to rank by accuracy without a predictor and says how, ranks by MACs under a latency limit,
    and the found subnet measures within 15% of its table sum when `ofa-profile --subnets` re-measures it."""
    common = ["--device", "local", "--space", "proxyless", "--out", str(tmp_path), "--cache", str(tmp_path / "cache"),
              "--min-time", "0.02", "--retries", "0", "--block-ms", "2", "--quiet"]
    assert profile_main([*common, "--resolutions", "128"]) == 0
    path = tmp_path / "local_proxyless_w1.3_onnxruntime_cpu.csv"
    table = read_table(path)
    assert (table.space, table.meta["width_mult"], table.meta["rows"]) == ("proxyless", 1.3, "in_network")
    assert {row.key for row in table.rows} == {u.key for u in all_units(1.3, [128], family=PROXYLESS)}
    fastest, _ = LatencyPredictor(path).minimum()
    limit = f"{1.6 * fastest:.3f}"

    assert search_main(["--table", str(path), "--latency-ms", limit, "--quiet"]) == 2
    assert "no accuracy predictor for the proxyless space" in capsys.readouterr().err
    found = tmp_path / "found.json"
    assert search_main(["--table", str(path), "--latency-ms", limit, "--rank", "macs", "--generations", "30",
                        "--out", str(found), "--quiet"]) == 0
    document = json.loads(found.read_text())
    subnet = document["subnets"][0]
    assert (len(subnet["arch"]["ks"]), subnet["arch"]["d"][-1], subnet["accuracy"]) == (21, 1, None)
    assert document["settings"]["space"] == "proxyless" and document["settings"]["ranked_by"] == "macs"
    assert subnet["latency_ms"][path.stem] <= float(limit)

    assert profile_main([*common, "--subnets", str(found), "--table", str(path)]) == 0
    measured = pd.read_csv(tmp_path / "local_subnets.csv")
    assert len(measured) == 1 and measured["width_mult"].iloc[0] == 1.3
    assert abs(measured["error_pct"].iloc[0]) < 15, measured.to_dict("records")
