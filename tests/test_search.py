"""Evolutionary search: reproducible, every returned arch meets every constraint, impossible limits explained."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predictors.accuracy import AccuracyPredictor
from predictors.archs import ArchBatch
from predictors.complexity import MacsPredictor, ParamsPredictor
from predictors.latency import LatencyPredictor
from predictors.search import (
    Constraint,
    InfeasibleConstraintError,
    _Evolution,
    distinct_parents,
    evolution_search,
    pareto_sweep,
)
from supernet import ArchSpace
from tests.paths import NOTE10

SPACE = ArchSpace(resolutions=(160, 176, 192, 208, 224))
SMALL = {"population": 24, "generations": 15}


@pytest.fixture(scope="module")
def accuracy() -> AccuracyPredictor:
    return AccuracyPredictor.default()


@pytest.fixture(scope="module")
def predictors() -> dict:
    return {
        "latency": LatencyPredictor(NOTE10),
        "macs": MacsPredictor(1.2, 1000, SPACE.resolutions),
        "params": ParamsPredictor(1.2, 1000, SPACE.resolutions),
    }


def test_same_seed_same_result(accuracy, predictors):
    """Two runs with one seed give the same arch and accuracy; the arch meets its limit."""
    limit = [Constraint("latency_ms", predictors["latency"], 22.0)]
    first = evolution_search(accuracy, limit, SPACE, seed=3, **SMALL)
    second = evolution_search(accuracy, limit, SPACE, seed=3, **SMALL)
    assert (first.arch, first.accuracy, first.history) == (second.arch, second.accuracy, second.history)
    assert first.metrics["latency_ms"] <= 22.0
    assert first.accuracy == pytest.approx(float(accuracy.predict([first.arch])[0]))


def test_search_improves_on_its_first_generation(accuracy, predictors):
    """The best accuracy never drops across generations and ends above where it started."""
    result = evolution_search(
        accuracy, [Constraint("latency_ms", predictors["latency"], 25.0)], SPACE, population=50, generations=60, seed=0
    )
    history = np.array(result.history)
    assert (np.diff(history) >= 0).all() and history[-1] > history[0]


def test_parents_are_distinct_networks():
    """Copies of one network count once among the parents, so the top quarter does not collapse onto it."""
    acc = np.array([0.9, 0.9, 0.8, 0.9, 0.7, 0.6])
    ids = np.array([7, 7, 3, 7, 5, 1])
    assert distinct_parents(acc, ids, 3).tolist() == [0, 2, 4]


def test_stops_after_patience_stalled_generations(accuracy, predictors):
    """The search ends once the best is flat for ``patience`` generations; patience = generations runs them all."""
    limit = [Constraint("latency_ms", predictors["latency"], 25.0)]
    short = evolution_search(accuracy, limit, SPACE, population=16, generations=300, patience=5, seed=0)
    assert short.generations < 300 and len(set(short.history[-6:])) == 1
    full = evolution_search(accuracy, limit, SPACE, population=16, generations=40, patience=40, seed=0)
    assert full.generations == 40


def test_first_population_is_feasible_and_diverse_at_a_tight_budget(predictors):
    """At 15 ms (0.15% of uniform draws pass) the first population is still 100 feasible, mostly distinct archs."""
    evo = _Evolution(
        SPACE, [Constraint("latency_ms", predictors["latency"], 15.0)], np.random.default_rng(0), 0.1, 1000
    )
    population = evo.initial(100)
    assert evo.feasible(population).all()
    assert len({a.canonical() for a in population.to_archs()}) >= 95


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    latency=st.one_of(st.none(), st.floats(8.0, 45.0)),
    macs=st.one_of(st.none(), st.floats(80e6, 600e6)),
    params=st.one_of(st.none(), st.floats(4e6, 10e6)),
    seed=st.integers(0, 2**16),
)
def test_returned_arch_meets_every_constraint(accuracy, predictors, latency, macs, params, seed):
    """Random combinations of limits: the result meets all of them, or the search says none can be met."""
    limits = {"latency": latency, "macs": macs, "params": params}
    constraints = [Constraint(name, predictors[name], limit) for name, limit in limits.items() if limit is not None]
    if not constraints:
        constraints = [Constraint("latency", predictors["latency"], 30.0)]
    try:
        result = evolution_search(accuracy, constraints, SPACE, population=12, generations=4, seed=seed)
    except InfeasibleConstraintError as err:
        assert "smallest" in str(err)
        mins = [c.predictor.minimum(SPACE.resolutions)[0] for c in constraints]
        assert any(m > c.limit for m, c in zip(mins, constraints, strict=True)) or "together" in str(err)
        return
    batch = ArchBatch.from_archs([result.arch])
    for c in constraints:
        assert c.predictor.predict(batch)[0] <= c.limit
        assert result.metrics[c.name] <= c.limit


def test_impossible_limit_gives_smallest_value(accuracy, predictors):
    """A latency limit below any arch: the error gives the smallest reachable latency."""
    with pytest.raises(InfeasibleConstraintError, match=r"smallest latency_ms any arch reaches is 9\.89"):
        evolution_search(accuracy, [Constraint("latency_ms", predictors["latency"], 5.0)], SPACE, **SMALL)


class _Never:
    """A constraint no arch meets, with no analytic minimum: only sampling can find that out."""

    def predict(self, batch: ArchBatch) -> np.ndarray:
        return np.ones(len(batch))


def test_jointly_impossible_constraints_are_reported(accuracy, predictors):
    """Constraints no sampled arch meets together: an error listing each limit, with no prompt."""
    constraints = [Constraint("latency_ms", predictors["latency"], 30.0), Constraint("never", _Never(), 0.5)]
    with pytest.raises(InfeasibleConstraintError, match=r"together: latency_ms <= 30 \(smallest reachable: 9\.89"):
        evolution_search(accuracy, constraints, SPACE, **SMALL)


def test_pareto_sweep(accuracy, predictors):
    """One sweep: a result per budget in the order given, each within its budget, accuracy rising with it."""
    budgets = [30.0, 15.0, 20.0, 25.0]
    results = pareto_sweep(
        accuracy,
        Constraint("latency_ms", predictors["latency"], 0.0),
        budgets,
        SPACE,
        [Constraint("macs", predictors["macs"], 500e6)],
        population=30,
        generations=20,
        seed=1,
    )
    assert [r.limits["latency_ms"] for r in results] == budgets
    for budget, r in zip(budgets, results, strict=True):
        assert r.metrics["latency_ms"] <= budget and r.metrics["macs"] <= 500e6
    by_budget = [r.accuracy for _, r in sorted(zip(budgets, results, strict=True))]
    assert by_budget == sorted(by_budget)


def test_bad_settings_are_refused(accuracy, predictors):
    """Out-of-range settings name the setting."""
    limit = [Constraint("latency_ms", predictors["latency"], 25.0)]
    with pytest.raises(ValueError, match="mutate_prob"):
        evolution_search(accuracy, limit, SPACE, mutate_prob=1.5)
    with pytest.raises(ValueError, match="patience"):
        evolution_search(accuracy, limit, SPACE, patience=0)
    with pytest.raises(ValueError, match="budgets is empty"):
        pareto_sweep(accuracy, limit[0], [], SPACE)
