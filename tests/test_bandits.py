"""Thompson sampling pieces checked against closed forms and numerical integration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import betaln

from bandits import apply_floor, choose, prob_best_beta, prob_best_normal
from bandits.thompson import GRID_STEPS, on_grid, revenue_posterior


def _p_b_beats_a(a_a: int, b_a: int, a_b: int, b_b: int) -> float:
    """Closed form of P(p_B > p_A) for Beta posteriors with integer a_B."""
    total = 0.0
    for i in range(a_b):
        total += np.exp(betaln(a_a + i, b_a + b_b) - np.log(b_b + i) - betaln(1 + i, b_b)
                        - betaln(a_a, b_a))
    return total


@pytest.mark.parametrize(("na", "ca", "nb", "cb"), [(100, 10, 100, 15), (1000, 40, 1000, 45),
                                                    (30, 3, 40, 2), (0, 0, 10, 1)])
def test_two_arm_prob_best_matches_closed_form(na, ca, nb, cb):
    p = prob_best_beta(np.array([1 + ca, 1 + cb]), np.array([1 + na - ca, 1 + nb - cb]),
                       np.random.default_rng(3), draws=400_000)
    exact = _p_b_beats_a(1 + ca, 1 + na - ca, 1 + cb, 1 + nb - cb)
    assert abs(p[1] - exact) < 0.004
    assert p.sum() == pytest.approx(1.0)


def test_three_arm_prob_best_matches_quadrature():
    arms = [(200, 20), (180, 24), (150, 21)]
    dists = [stats.beta(1 + c, 1 + n - c) for n, c in arms]
    exact = []
    for i, d in enumerate(dists):
        others = [o for j, o in enumerate(dists) if j != i]
        value, _ = integrate.quad(lambda x, d=d, others=others: d.pdf(x) * np.prod(
            [o.cdf(x) for o in others]), 0, 1, limit=200, points=[0.1, 0.13, 0.14])
        exact.append(value)
    p = prob_best_beta(np.array([1 + c for _, c in arms]), np.array([1 + n - c for n, c in arms]),
                       np.random.default_rng(5), draws=400_000)
    assert np.allclose(p, exact, atol=0.004)


def test_prior_is_used():
    # With no data a strong prior favouring arm 0 decides.
    p_flat = prob_best_beta(np.ones(2), np.ones(2), np.random.default_rng(1), draws=100_000)
    assert abs(p_flat[0] - 0.5) < 0.01
    p = prob_best_beta(np.array([1 + 9, 1.0]), np.array([50 + 1, 50.0]),
                       np.random.default_rng(1), draws=100_000)
    exact = _p_b_beats_a(1, 50, 1 + 9, 50 + 1)
    assert abs(p[0] - exact) < 0.005


def test_floor_keeps_every_arm_reachable():
    q = apply_floor(np.array([1.0, 0.0, 0.0, 0.0]), 0.05)
    assert q.min() == pytest.approx(0.05)
    assert q.sum() == pytest.approx(1.0)
    assert q[0] == pytest.approx(1 - 3 * 0.05)
    assert np.allclose(apply_floor(np.array([0.7, 0.3]), 0.5), [0.5, 0.5])
    assert np.allclose(apply_floor(np.array([0.7, 0.3]), 0.0), [0.7, 0.3])


def test_grid_probabilities_are_short_sum_to_one_and_keep_the_floor():
    rng = np.random.default_rng(5)
    for k in (2, 3, 5, 10):
        for _ in range(200):
            q = apply_floor(rng.dirichlet(np.full(k, 0.3)), 0.01)
            g = on_grid(q)
            units = np.rint(g * GRID_STEPS).astype(int)
            assert units.sum() == GRID_STEPS  # exactly 1 in grid units
            assert np.all(np.abs(g - units / GRID_STEPS) == 0)
            assert g.min() >= 0.01 and np.abs(g - q).max() <= k / GRID_STEPS
            assert max(len(repr(float(x))) for x in g) <= 8  # "0.249041" at most
    assert on_grid(np.full(3, 1 / 3)).tolist() == [0.333334, 0.333333, 0.333333]


def test_choose_draws_with_the_given_probabilities():
    rng = np.random.default_rng(11)
    q = np.array([0.6, 0.3, 0.1])
    cumulative = np.cumsum(q).tolist()
    counts = np.bincount([choose(cumulative, rng.random()) for _ in range(60_000)],
                         minlength=3)
    assert stats.chisquare(counts, 60_000 * q).pvalue > 0.001
    # Edges: u = 0 picks the first arm with mass, u near 1 the last; a zero arm never.
    assert choose([0.0, 0.5, 1.0], 0.0) == 1
    assert choose([0.5, 0.5, 1.0], 0.9999) == 2
    assert choose([0.5, 1.0, 1.0], 0.9999) == 1


def test_revenue_allocation_matches_the_sampling_distribution_of_the_means():
    # Simulated per-visitor revenue with known truth: 5% buy, order values exponential.
    sim = np.random.default_rng(8)
    sums, squares = [], []
    for mean_order in (40.0, 43.0):
        values = (sim.random(4000) < 0.05) * sim.exponential(mean_order, 4000)
        sums.append(float(values.sum()))
        squares.append(float((values**2).sum()))
    n = np.array([4000.0, 4000.0])
    mean, sd = revenue_posterior(n, np.array(sums), np.array(squares))
    q = prob_best_normal(mean, sd, np.random.default_rng(2), draws=200_000)
    # Independent check: the difference of means from the same samples' moments (large n:
    # the means are Normal with variance s^2 / n).
    m = [total / 4000 for total in sums]
    v = [(sq / 4000 - mi**2) / 4000 for sq, mi in zip(squares, m, strict=True)]
    expected = stats.norm.cdf((m[1] - m[0]) / np.sqrt(v[0] + v[1]))
    assert 0.2 < expected < 0.95  # a case where greedy (q = 1) and uniform (0.5) both fail
    assert abs(q[1] - expected) < 0.02
