"""The regime check: blocked timing against the plain loop that times each item first."""

from __future__ import annotations

import itertools

import pytest

from profiler.protocol import Protocol, ProtocolError
from profiler.steady import (
    ITEM_NOISE,
    LADDER,
    check_regime,
    next_blocks,
    regime_ratio,
    regime_summary,
    with_table_blocks,
)


def _result(blocked: float, plain: float, block_ms: float = 25.0, settle_ms: float = 0.0) -> dict:
    return {"samples_ms": [blocked * f for f in (0.99, 1.0, 1.01)], "steady_samples_ms": [plain, plain * 1.01, plain],
            "block_ms": block_ms, "settle_ms": settle_ms}


def test_ratio_is_blocked_median_over_plain_median():
    assert regime_ratio(_result(6.0, 5.0)) == pytest.approx(1.2)
    # benchmark_model's records have no plain loop of the agent's: nothing to compare.
    assert regime_ratio({"samples_ms": [], "summary": {"median": 5.0}}) is None
    assert check_regime([{"samples_ms": [1.0]}], Protocol()) is None


def test_a_batch_in_the_steady_state_passes_and_one_read_slow_fails():
    steady = check_regime([_result(5.0 * (1 + d), 5.0) for d in (-0.01, 0.0, 0.005, 0.01, -0.005) * 6], Protocol())
    assert steady.passed and steady.n == 30 and steady.tolerance == pytest.approx(0.02)
    # The figures: 160 px subnets read 1.18x, 192 px 1.10x, 224 px 1.05x slower in 25 ms blocks.
    slow = check_regime([_result(5.0 * r, 5.0) for r in (1.18, 1.10, 1.05) * 9], Protocol())
    assert not slow.passed and slow.median == pytest.approx(1.10) and slow.block_ms == 25.0
    assert "over 27 item(s)" in slow.describe()


def test_small_batches_get_a_wider_tolerance_than_noise_alone_would_fail():
    few = check_regime([_result(5.25, 5.0), _result(5.1, 5.0)], Protocol())
    assert few.tolerance == pytest.approx(3 * ITEM_NOISE / 2**0.5)
    assert few.passed
    assert not check_regime([_result(6.0, 5.0), _result(6.1, 5.0)], Protocol()).passed


def test_the_ladder_lengthens_blocks_and_ends():
    assert next_blocks(25.0, 0.0) == {"block_ms": 50.0, "settle_ms": 10.0}
    assert next_blocks(60.0, 30.0) == {"block_ms": 100.0, "settle_ms": 30.0}  # a user's longer settling stays
    assert next_blocks(*LADDER[-1]) is None
    assert all(a[0] < b[0] for a, b in itertools.pairwise(LADDER))


def test_measurements_against_a_table_take_its_blocks():
    meta = {"timing": {"block_ms": 100.0, "settle_ms": 25.0}}
    assert with_table_blocks(Protocol(), meta) == Protocol(block_ms=100.0, settle_ms=25.0)
    assert with_table_blocks(Protocol(block_ms=200.0), meta) == Protocol(block_ms=200.0)
    assert with_table_blocks(Protocol(), {}) == Protocol()


def test_summary_counts_failures():
    checks = [{"passed": False, "median": 1.1}, {"passed": True, "median": 1.0, "type": "regime"}]
    assert regime_summary(checks) == {"checks": 2, "failed": 1, "last": {"passed": True, "median": 1.0}}
    assert regime_summary([]) is None


@pytest.mark.parametrize("settings", [{"settle_ms": -1.0}, {"steady_count": -1}, {"regime_tolerance": 0.0},
                                      {"profile_sessions": 0}, {"profile_sessions": 41}])
def test_bad_settings_name_their_flag(settings):
    with pytest.raises(ProtocolError, match="--" + next(iter(settings)).replace("_", "-")):
        Protocol(**settings)
