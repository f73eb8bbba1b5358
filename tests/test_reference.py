"""Which reference workload a table, a subnet CSV and a latency model are timed against, and what older ones mean."""

from __future__ import annotations

import pytest

from predictors.fit_cli import read_measured_subnets
from profiler.reference import (
    BLOCK_REFERENCE,
    NETWORK_REFERENCE,
    UnknownReferenceError,
    reference_named,
    reference_of,
)
from profiler.remeasure import measured_before
from supernet.errors import OFAProfileError


def test_references_are_named_and_an_unknown_name_says_which_exist():
    assert reference_named("network") is NETWORK_REFERENCE and reference_named("block") is BLOCK_REFERENCE
    with pytest.raises(UnknownReferenceError, match="block, network"):
        reference_named("gpu-blob")
    assert NETWORK_REFERENCE.describe()["subnet"] == NETWORK_REFERENCE.arch.to_json()
    assert BLOCK_REFERENCE.describe()["key"] == BLOCK_REFERENCE.unit.key


def test_a_sidecar_without_a_reference_id_is_older_and_means_the_block():
    assert reference_of({}) is BLOCK_REFERENCE
    assert reference_of({"reference": {"name": "reference", "key": BLOCK_REFERENCE.unit.key}}) is BLOCK_REFERENCE
    assert reference_of({"reference": {"id": "network"}}) is NETWORK_REFERENCE
    with pytest.raises(UnknownReferenceError, match=r"'gpu-blob'.*upgrade ofa-profile"):
        reference_of({"reference": {"id": "gpu-blob"}})


def test_subnets_measured_against_another_reference_are_not_mixed_in(tmp_path):
    """A rerun into the same CSV reuses rows of its own reference (rows naming none are the block's), and refuses
    a file of another reference rather than rewrite it without them."""
    csv = tmp_path / "s.csv"
    csv.write_text("arch,measured_ms,anchor_ms,width_mult,reference\na,1.0,2.0,1.0,network\n")
    assert set(measured_before(csv, 1.0, 2.0, NETWORK_REFERENCE)[0]) == {"a"}
    csv.write_text("arch,measured_ms,anchor_ms,width_mult\na,1.0,2.0,1.0\n")
    assert set(measured_before(csv, 1.0, None, BLOCK_REFERENCE)[0]) == {"a"}
    with pytest.raises(OFAProfileError, match=r"timed against the block reference.*--reference block"):
        measured_before(csv, 1.0, None, NETWORK_REFERENCE)


def test_a_latency_model_records_the_reference_of_its_subnets(tmp_path):
    """The closed loop measures at a model's anchor, so it must time against the same workload as its data."""
    csv = tmp_path / "s.csv"
    csv.write_text('arch,measured_ms,anchor_ms,width_mult,reference\n"{}",1.0,2.0,1.0,network\n')
    assert reference_of(read_measured_subnets(csv)[2]) is NETWORK_REFERENCE
    csv.write_text('arch,measured_ms,anchor_ms,width_mult\n"{}",1.0,2.0,1.0\n')
    assert reference_of(read_measured_subnets(csv)[2]) is BLOCK_REFERENCE
    csv.write_text('arch,measured_ms,anchor_ms,width_mult,reference\n"{}",1,2,1,network\n"{}",1,2,1,block\n')
    with pytest.raises(OFAProfileError, match="several reference workloads"):
        read_measured_subnets(csv)
