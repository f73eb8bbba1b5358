"""--evict-cache-mb: units timed with cold caches, through the same agent path as every table row."""

from __future__ import annotations

import json

import pytest

from agents import python_agent
from profiler.devices import BUILTIN_PROFILES, resolve_device
from profiler.measure import measure_models
from profiler.protocol import Protocol, ProtocolError
from profiler.transports.local import LocalTransport
from supernet.model_cache import export_unit
from supernet.units import Unit

BLOCK = Unit.block(28, 40, 40, 120, 3, 1, idskip=True, se=False, hs=False)


def test_eviction_reaches_the_agent_and_is_recorded(tmp_path):
    """The setting travels profile -> protocol -> manifest; each record says the caches were evicted."""
    path = export_unit(BLOCK, "onnx", tmp_path / "cache")
    protocol = Protocol(warmup=1, min_count=5, min_time_s=0.0, evict_cache_mb=4)
    models = [{"name": "block", "path": str(path), "inputs": [list(BLOCK.input_shape)]}]
    with LocalTransport() as transport:
        run = measure_models(resolve_device("local"), transport, models, protocol, str(tmp_path / "dev"), tmp_path)
    record = run.results["block"]
    assert record["evict_cache_mb"] == 4 and len(record["samples_ms"]) >= 5


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_agent_refuses_a_bad_eviction_size(tmp_path, value, capsys):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"evict_cache_mb": value, "models": [{"name": "x", "path": "x.onnx"}]}))
    assert python_agent.main([str(manifest), str(tmp_path / "r.jsonl")]) == 2
    assert '"evict_cache_mb" must be an integer of at least 0' in capsys.readouterr().err


def test_benchmark_model_cannot_evict(tmp_path):
    """TF-Lite's benchmark_model has no such option: the run is refused with what to do instead."""
    with pytest.raises(ProtocolError, match="correct sums with --calibrate instead"):
        measure_models(BUILTIN_PROFILES["pixel1"], LocalTransport(), [], Protocol(evict_cache_mb=8), "/x", tmp_path)


def test_protocol_refuses_negative_eviction():
    with pytest.raises(ProtocolError, match="--evict-cache-mb -2 must be 0 or more"):
        Protocol(evict_cache_mb=-2)
