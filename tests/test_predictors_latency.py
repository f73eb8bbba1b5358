"""Table-sum latency, MACs and params over batches: equal to the reference LatencyTable and to supernet's counts."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from predictors.archs import ArchBatch, sample_batch
from predictors.calibration import Calibration, CalibrationError
from predictors.complexity import MacsPredictor, ParamsPredictor
from predictors.latency import LatencyPredictor, MissingRowsError, UnknownResolutionError
from predictors.table_io import Row, Table, read_table
from supernet import Arch, ArchSpace, count_macs, count_params
from supernet.units import units_of
from tests.ofa_oracle import reference_utils
from tests.paths import NOTE10

RELEASE = Path(__file__).resolve().parent / "data" / "ofa-release" / "note10"
MEASURED = (160, 176, 192, 208, 224)
NOTE10_SPACE = ArchSpace(resolutions=MEASURED)
W10 = ArchSpace.for_width(1.0)
SMALL, DEEP = W10.uniform(ks=3, e=3, d=2, r=128), W10.uniform(ks=3, e=3, d=4, r=128)
# measured = 1.5 · sum + 0.2, and measurements fell 4% under to 6% over their leave-one-out predictions.
CALIBRATION = Calibration(a=1.5, b=0.2, n=5, rms_pct_before=20.0, rms_pct_after=2.0, loo_rms_pct=3.0,
                          residual_lo=-0.04, residual_hi=0.06)


@pytest.fixture(scope="module")
def note10() -> LatencyPredictor:
    return LatencyPredictor(NOTE10)


def _reference_latency_table():
    """The reference's tutorial LatencyTable over the released YAML files (its loader downloads; we fill it)."""
    reference_utils()
    from ofa.tutorial.latency_table import LatencyEstimator, LatencyTable

    table = LatencyTable.__new__(LatencyTable)
    table.latency_tables = {}
    for r in MEASURED:
        estimator = LatencyEstimator.__new__(LatencyEstimator)
        estimator.lut = yaml.safe_load((RELEASE / f"{r}_lookup_table.yaml").read_text())
        table.latency_tables[r] = estimator
    return table


def test_latency_equals_reference_latency_table(note10):
    """1,000 random archs: our table sum equals the reference LatencyTable's prediction (to float rounding)."""
    reference = _reference_latency_table()
    batch = sample_batch(1000, NOTE10_SPACE, np.random.default_rng(0))
    expected = np.array([reference.predict_efficiency(a.to_dict()) for a in batch.to_archs()])
    got = note10.predict(batch)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=0)
    assert len(np.unique(expected)) > 900


def test_batch_and_single_archs_agree(note10):
    """A batch gives the same values as its archs one by one, and as a list of Arch."""
    batch = sample_batch(50, NOTE10_SPACE, np.random.default_rng(1))
    archs = batch.to_archs()
    assert ArchBatch.from_archs(archs).to_archs() == archs
    np.testing.assert_array_equal(note10.predict(archs), note10.predict(batch))
    np.testing.assert_array_equal([note10.predict([a])[0] for a in archs], note10.predict(batch))


def test_skipped_blocks_do_not_count(note10):
    """Changing a block that depth skips leaves latency unchanged."""
    arch = NOTE10_SPACE.uniform(ks=3, e=3, d=2, r=176)
    other = Arch(ks=(*arch.ks[:2], 7, 5, *arch.ks[4:]), e=(*arch.e[:2], 6, 6, *arch.e[4:]), d=arch.d, r=176)
    assert note10.predict([arch, other])[0] == note10.predict([arch, other])[1]


def test_missing_rows_listed_in_one_error(tmp_path):
    """A table lacking rows: one error that lists every missing key an arch needs."""
    table = read_table(NOTE10)
    dropped = {row.key for row in table.rows if "kernel:7" in row.key and row.resolution == 160}
    rows = tuple(row for row in table.rows if not (row.resolution == 160 and row.key in dropped))
    predictor = LatencyPredictor(Table(rows, table.meta))
    k7 = NOTE10_SPACE.uniform(ks=7, e=6, d=4, r=160)
    with pytest.raises(MissingRowsError) as info:
        predictor.predict([NOTE10_SPACE.uniform(ks=3, e=3, d=2, r=160), k7])
    needed = {unit.key for unit in units_of(k7, 1.2)} & dropped
    assert info.value.keys == sorted((160, key) for key in needed) and len(needed) == 10
    for _, key in info.value.keys:
        assert key in str(info.value)
    assert predictor.predict([NOTE10_SPACE.uniform(ks=3, e=3, d=2, r=160)])[0] > 0


def test_a_partial_table_lacking_a_whole_block_gives_its_fastest_subnet_or_one_error():
    """Every choice of one block missing at 160 px: the fastest subnet is found at the other resolutions, with no
    numpy warning on stderr; missing at every resolution, it is the one error naming those rows, where
    ``ofa-search`` used to stop on numpy's "All-NaN slice" (issue 25)."""
    table = read_table(NOTE10)

    def block_keys(r: int, position: int = 5) -> set[str]:
        return {units_of(NOTE10_SPACE.uniform(ks=k, e=e, d=4, r=r), 1.2)[2 + position].key
                for k in (3, 5, 7) for e in (3, 4, 6)}

    def without(resolutions) -> LatencyPredictor:
        gone = {(r, key) for r in resolutions for key in block_keys(r)}
        return LatencyPredictor(Table(tuple(row for row in table.rows if (row.resolution, row.key) not in gone),
                                      table.meta), calibrated=False)

    complete = LatencyPredictor(table, calibrated=False)
    fastest_elsewhere = complete.minimum(MEASURED[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert without([160]).minimum() == fastest_elsewhere
    with pytest.raises(MissingRowsError) as info:
        without(MEASURED).minimum()
    assert info.value.keys == sorted((r, key) for r in MEASURED for key in block_keys(r))


def test_unmeasured_resolution_needs_interpolate(note10):
    """An arch at 184 is refused unless interpolation is asked for, and then flagged as interpolated."""
    arch = ArchSpace.for_width(1.2).uniform(ks=5, e=4, d=3, r=184)
    with pytest.raises(UnknownResolutionError, match="interpolate=True"):
        note10.predict([arch])
    interp = LatencyPredictor(NOTE10, interpolate=True)
    result = interp.predict_result([arch, arch.with_resolution(176), arch.with_resolution(192)])
    assert result.interpolated.tolist() == [True, False, False] and result.any_interpolated
    lo, hi = result.latency_ms[1], result.latency_ms[2]
    weight = (184**2 - 176**2) / (192**2 - 176**2)
    assert result.latency_ms[0] == pytest.approx(lo + weight * (hi - lo))
    assert interp.supported_resolutions() == tuple(range(160, 225, 4))
    with pytest.raises(UnknownResolutionError, match="outside"):
        LatencyPredictor(NOTE10, interpolate=True).predict([arch.with_resolution(128)])


def test_minimum_latency(note10):
    """The smallest reachable latency is the table's smallest arch, and no random arch goes below it."""
    value, r = note10.minimum()
    assert (value, r) == (pytest.approx(note10.predict([NOTE10_SPACE.uniform(3, 3, 2, 160)])[0]), 160)
    assert note10.predict(sample_batch(20000, NOTE10_SPACE, np.random.default_rng(2))).min() >= value


def _tiny_table(calibration: Calibration | None) -> Table:
    """The k3/e3 units of the w1.0 space at r=128, each 0.5 ms: an arch sums to 0.5 ms per unit it runs."""
    keys = sorted({unit.key for unit in units_of(DEEP, 1.0)})
    rows = tuple(Row(key, median_ms=0.5, mean_ms=0.5, count=10, resolution=128) for key in keys)
    meta = {"table": "tiny.csv", "width_mult": 1.0, "n_classes": 1000}
    return Table(rows, meta if calibration is None else {**meta, "calibration": calibration.to_dict()})


def test_tiny_table_sums_by_hand():
    """Stem and first block, 2 or 4 blocks in each of 5 stages, 4 head units: 16 and 26 units of 0.5 ms."""
    assert (len(units_of(SMALL, 1.0)), len(units_of(DEEP, 1.0))) == (16, 26)
    np.testing.assert_array_equal(LatencyPredictor(_tiny_table(None)).predict([SMALL, DEEP]), [8.0, 13.0])


def test_sidecar_calibration_applied_by_default():
    """A table with a calibration predicts 1.5 · sum + 0.2, with the raw sum and the interval beside it."""
    predictor = LatencyPredictor(_tiny_table(CALIBRATION))
    assert predictor.calibration == CALIBRATION and predictor.describe() == CALIBRATION.describe()
    calibrated = np.array([1.5 * 8.0 + 0.2, 1.5 * 13.0 + 0.2])
    np.testing.assert_array_equal(predictor.predict([SMALL, DEEP]), calibrated)
    result = predictor.predict_result([SMALL, DEEP])
    assert result.calibrated and not result.any_interpolated
    np.testing.assert_array_equal(result.latency_ms, calibrated)
    np.testing.assert_array_equal(result.raw_ms, [8.0, 13.0])
    np.testing.assert_array_equal(result.low_ms, calibrated * 0.96)
    np.testing.assert_array_equal(result.high_ms, calibrated * 1.06)


def test_raw_sums_on_request():
    """calibrated=False ignores the sidecar's calibration: raw sums, a zero-width interval, and it says so."""
    predictor = LatencyPredictor(_tiny_table(CALIBRATION), calibrated=False)
    assert predictor.calibration is None and "not applied" in predictor.describe()
    result = predictor.predict_result([SMALL, DEEP])
    assert not result.calibrated
    for values in (result.latency_ms, result.raw_ms, result.low_ms, result.high_ms):
        np.testing.assert_array_equal(values, [8.0, 13.0])
    assert predictor.minimum() == (8.0, 128)


def test_explicit_calibration_overrides_the_sidecar():
    """calibration= replaces the stored one (a refit, say); with calibrated=False it is refused."""
    other = Calibration(a=2.0, b=-1.0, n=3, rms_pct_before=1.0, rms_pct_after=1.0, loo_rms_pct=1.0,
                        residual_lo=0.0, residual_hi=0.0)
    predictor = LatencyPredictor(_tiny_table(CALIBRATION), calibration=other)
    np.testing.assert_array_equal(predictor.predict([SMALL, DEEP]), [15.0, 25.0])
    assert predictor.minimum() == (15.0, 128)
    with pytest.raises(ValueError, match="calibrated=False"):
        LatencyPredictor(_tiny_table(None), calibrated=False, calibration=other)


def test_table_without_calibration_says_how_to_get_one():
    """No calibration in the sidecar: raw sums, and describe() names ofa-profile --calibrate."""
    predictor = LatencyPredictor(_tiny_table(None))
    assert predictor.calibration is None and "ofa-profile --calibrate" in predictor.describe()
    assert not predictor.predict_result([SMALL]).calibrated


def test_minimum_is_calibrated():
    """The smallest reachable latency is the calibrated sum of the smallest arch: 1.5 · 8 + 0.2 ms."""
    assert LatencyPredictor(_tiny_table(CALIBRATION)).minimum() == (1.5 * 8.0 + 0.2, 128)


def test_calibration_with_a_falling_slope_is_refused():
    """A sidecar whose slope is not positive (edited by hand) would reorder archs: refused, naming the table."""
    bad = Calibration.from_dict({**CALIBRATION.to_dict(), "a": -0.5})
    with pytest.raises(CalibrationError, match=r"a = -0\.5 of table tiny\.csv"):
        LatencyPredictor(_tiny_table(bad))


@pytest.mark.parametrize("width_mult", [1.0, 1.2])
def test_macs_and_params_equal_supernet_counts(width_mult):
    """Vectorized MACs and params equal count_macs / count_params exactly on 1,500 random archs."""
    space = ArchSpace.for_width(width_mult)
    batch = sample_batch(1500, space, np.random.default_rng(3))
    archs = batch.to_archs()
    macs, params = MacsPredictor(width_mult), ParamsPredictor(width_mult)
    np.testing.assert_array_equal(macs.predict(batch), [count_macs(a, width_mult) for a in archs])
    np.testing.assert_array_equal(params.predict(batch), [count_params(a, width_mult) for a in archs])
    assert macs.minimum() == (count_macs(space.uniform(3, 3, 2, space.resolutions[0]), width_mult),
                              space.resolutions[0])


def test_macs_for_other_class_counts():
    """n_classes changes the classifier's share only."""
    arch = ArchSpace.for_width(1.0).uniform(5, 6, 3, 192)
    assert MacsPredictor(1.0, n_classes=10).predict([arch])[0] == count_macs(arch, 1.0, n_classes=10)
    assert ParamsPredictor(1.0, n_classes=10).predict([arch])[0] == count_params(arch, 1.0, n_classes=10)
