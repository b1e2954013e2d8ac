"""Bayesian statistics of experiments/stats.py checked against independent computations.

References are closed forms written out again here, scipy quadrature, Monte Carlo with at
least a million draws and simulations with known truth; nothing is compared with numbers taken
from the module itself. Seeds are fixed, so every run sees the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import integrate, stats

import experiments.stats as stats_module
from experiments.model import DecisionSettings
from experiments.stats import (
    BetaPosterior,
    RevenuePosterior,
    always_valid_half_width,
    beat_best_and_loss,
    beta_posterior,
    decide_verdict,
    expected_loss,
    prob_best,
    prob_best_and_expected_loss,
    prob_greater,
    revenue_posterior,
    sample_expected_loss,
    sample_prob_best,
    sample_prob_greater,
    srm_test,
    uplift,
)

MC_DRAWS = 1_000_000


def _closed_form_b_beats_a(a: BetaPosterior, b: BetaPosterior) -> float:
    """Evan Miller's sum for P(X_b > X_a), integer b.alpha, term by term with math.lgamma."""
    def lbeta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    assert float(b.alpha).is_integer()
    return math.fsum(
        math.exp(lbeta(a.alpha + i, a.beta + b.beta) - math.log(b.beta + i)
                 - lbeta(1 + i, b.beta) - lbeta(a.alpha, a.beta))
        for i in range(int(b.alpha))
    )


def _quad_b_beats_a(a: BetaPosterior, b: BetaPosterior) -> float:
    """P(X_b > X_a) = integral of pdf_b * cdf_a over b's support, by adaptive quadrature."""
    da, db = stats.beta(a.alpha, a.beta), stats.beta(b.alpha, b.beta)
    lo, hi = db.ppf(1e-13), db.isf(1e-13)
    points = [x for x in (da.ppf(0.5), db.ppf(0.5)) if lo < x < hi]
    value, _ = integrate.quad(lambda x: db.pdf(x) * da.cdf(x), lo, hi, points=points,
                              limit=500, epsabs=1e-12, epsrel=1e-11)
    return float(value)


def _mc_draws(posteriors: list[BetaPosterior], seed: int, draws: int = MC_DRAWS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.beta(p.alpha, p.beta, size=draws) for p in posteriors])


# --- posteriors -----------------------------------------------------------------------------


def test_beta_posterior_matches_conjugate_update_and_scipy_quantiles():
    post = beta_posterior(37, 420, prior_alpha=2.0, prior_beta=3.0)
    assert (post.alpha, post.beta) == (39.0, 386.0)
    ref = stats.beta(39, 386)
    interval = post.interval(0.9)
    assert interval.estimate == pytest.approx(39 / 425, rel=1e-12)
    assert interval.lower == pytest.approx(ref.ppf(0.05), rel=1e-9)
    assert interval.upper == pytest.approx(ref.ppf(0.95), rel=1e-9)
    draws = post.sample(np.random.default_rng(0), 400_000)
    assert draws.mean() == pytest.approx(ref.mean(), abs=5 * ref.std() / math.sqrt(400_000))
    assert draws.std() == pytest.approx(ref.std(), rel=0.01)
    assert interval.to_dict() == {"estimate": interval.estimate, "lower": interval.lower,
                                  "upper": interval.upper}


def test_beta_posterior_rejects_bad_priors_and_clips_inconsistent_counts():
    with pytest.raises(ValueError):
        beta_posterior(1, 10, prior_alpha=0.0)
    with pytest.raises(ValueError):
        BetaPosterior(1.0, -2.0)
    with pytest.raises(ValueError):
        beta_posterior(1, 10).interval(1.5)
    # A snapshot where a conversion arrived before its exposure still gives a proper posterior.
    assert beta_posterior(12, 10) == BetaPosterior(11.0, 1.0)
    assert beta_posterior(-3, -1) == BetaPosterior(1.0, 1.0)


# --- 1. chance to beat control --------------------------------------------------------------

PAIRS = [
    pytest.param(beta_posterior(10, 100), beta_posterior(15, 100), id="small-integer"),
    pytest.param(BetaPosterior(10.5, 90.3), BetaPosterior(14.7, 88.2), id="non-integer"),
    pytest.param(beta_posterior(2500, 50_000), beta_posterior(2560, 50_000), id="50k-exposures"),
    pytest.param(beta_posterior(2500, 50_000, 0.5, 0.5), beta_posterior(2540, 50_000, 0.5, 0.5),
                 id="50k-jeffreys"),
    pytest.param(beta_posterior(100_000, 1_000_000), beta_posterior(100_400, 1_000_000),
                 id="1M-exposures-quadrature"),
    pytest.param(beta_posterior(0, 800, 0.5, 0.5), beta_posterior(3, 900, 0.5, 0.5),
                 id="zero-conversions-singular-density"),
    pytest.param(beta_posterior(3, 40), beta_posterior(2, 500), id="lopsided"),
]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_prob_greater_matches_a_million_monte_carlo_draws(a, b):
    x = _mc_draws([a, b], seed=11)
    mc = float(np.mean(x[1] > x[0]))
    # The Monte Carlo standard error is at most 0.5 / sqrt(1e6) = 0.0005, so 0.003 is 6 of them.
    assert abs(prob_greater(a, b) - mc) < 0.003


INTEGER_PAIRS = [
    # (a, b) chosen so that each of the four closed forms is the shortest one at least once.
    pytest.param(beta_posterior(10, 100), beta_posterior(15, 100), id="sum-over-b.alpha"),
    pytest.param(beta_posterior(3, 98), beta_posterior(55_000, 1_000_000),
                 id="sum-over-a.alpha"),
    pytest.param(beta_posterior(99_990, 100_000), beta_posterior(99_985, 100_000),
                 id="sum-over-a.beta"),
    pytest.param(beta_posterior(99_990, 100_000), beta_posterior(89_995, 90_000),
                 id="sum-over-b.beta"),
    pytest.param(beta_posterior(2500, 50_000), beta_posterior(2560, 50_000), id="50k-exposures"),
    pytest.param(beta_posterior(100_000, 1_000_000), beta_posterior(100_400, 1_000_000),
                 id="all-terms-above-limit"),
    pytest.param(BetaPosterior(5, 1), BetaPosterior(1, 5), id="far-apart"),
]


@pytest.mark.parametrize(("a", "b"), INTEGER_PAIRS)
def test_prob_greater_matches_closed_form_sum(a, b):
    assert prob_greater(a, b) == pytest.approx(_closed_form_b_beats_a(a, b), abs=1e-7)


@pytest.mark.parametrize(("a", "b"), [
    (BetaPosterior(10.5, 90.3), BetaPosterior(14.7, 88.2)),
    (BetaPosterior(2500.5, 47500.5), BetaPosterior(2540.5, 47460.5)),
    (BetaPosterior(100_000.5, 900_000.5), BetaPosterior(100_300.5, 899_700.5)),
    (BetaPosterior(1.5, 30.2), BetaPosterior(40.5, 30.5)),
])
def test_prob_greater_non_integer_matches_scipy_quad(a, b):
    assert prob_greater(a, b) == pytest.approx(_quad_b_beats_a(a, b), abs=1e-7)


def test_prob_greater_quadrature_path_matches_closed_form(monkeypatch):
    # With no closed form allowed, integer cases go through quadrature as well.
    monkeypatch.setattr(stats_module, "MAX_CLOSED_FORM_TERMS", 0)
    for a, b in [(beta_posterior(10, 100), beta_posterior(15, 100)),
                 (beta_posterior(2500, 50_000), beta_posterior(2560, 50_000)),
                 (beta_posterior(0, 40), beta_posterior(1, 3))]:
        assert prob_greater(a, b) == pytest.approx(_closed_form_b_beats_a(a, b), abs=1e-8)


def test_prob_greater_keeps_the_closed_form_short(monkeypatch):
    lengths: list[float] = []
    original = stats_module._miller_sum

    def spy(ax: float, bx: float, ay: float, by: float) -> float:
        lengths.append(ay)
        return original(ax, bx, ay, by)

    monkeypatch.setattr(stats_module, "_miller_sum", spy)
    # b.alpha = 55,001 but a.alpha = 4: the symmetric form with 4 terms is used.
    prob_greater(beta_posterior(3, 98), beta_posterior(55_000, 1_000_000))
    # Every integer parameter is above the limit: quadrature, no sum at all.
    prob_greater(beta_posterior(100_000, 1_000_000), beta_posterior(100_400, 1_000_000))
    assert lengths == [4]


@pytest.mark.parametrize("posteriors", [
    [BetaPosterior(0.5, 0.5), BetaPosterior(0.5, 10.5), BetaPosterior(3.5, 7.5)],
    [BetaPosterior(0.5, 0.5), BetaPosterior(10.5, 0.5), BetaPosterior(7.5, 3.5)],
], ids=["singular-at-0", "singular-at-1"])
def test_singular_densities_match_quadrature_in_probability_space(posteriors):
    # A variant without data under the Jeffreys prior has a density that is infinite at 0 and
    # 1. Reference: P(best_i) = integral over u in (0, 1) of prod_{j != i} F_j(F_i^-1(u)),
    # which has no density in it, by adaptive quadrature.
    dists = [stats.beta(p.alpha, p.beta) for p in posteriors]
    reference = []
    for i, d in enumerate(dists):
        others = [o for j, o in enumerate(dists) if j != i]
        value, _ = integrate.quad(lambda u, d=d, others=others: np.prod(
            [o.cdf(d.ppf(u)) for o in others]), 0, 1, limit=500, epsabs=1e-12)
        reference.append(value)
    assert prob_best(posteriors) == pytest.approx(reference, abs=1e-6)
    assert prob_greater(posteriors[1], posteriors[0]) == pytest.approx(
        integrate.quad(lambda u: dists[1].cdf(dists[0].ppf(u)), 0, 1, limit=500,
                       epsabs=1e-12)[0], abs=1e-6)


def test_prob_greater_is_symmetric():
    rng = np.random.default_rng(2)
    for _ in range(40):
        n = int(10 ** rng.uniform(1, 6.2))
        priors = [(1.0, 1.0), (0.5, 0.5)]
        pa, pb = priors[rng.integers(2)], priors[rng.integers(2)]
        a = beta_posterior(rng.binomial(n, 0.1), n, *pa)
        b = beta_posterior(rng.binomial(n, 0.102), n, *pb)
        assert prob_greater(a, b) + prob_greater(b, a) == pytest.approx(1.0, abs=1e-8)
    same = beta_posterior(40, 1000)
    assert prob_greater(same, same) == pytest.approx(0.5, abs=1e-9)


# --- 2. chance to be best and expected loss -------------------------------------------------

ARM_SETS = [
    pytest.param([(50, 1000), (60, 1000), (55, 1000)], id="3-arms"),
    pytest.param([(5, 40), (8, 45), (3, 30), (10, 60)], id="4-arms-small"),
    pytest.param([(500, 10_000), (520, 10_000), (480, 10_000), (0, 0), (2, 20)],
                 id="5-arms-with-an-empty-one"),
    pytest.param([(50_000, 1_000_000), (50_200, 1_000_000), (50_500, 1_000_000)],
                 id="narrow-1M-each"),
]


@pytest.mark.parametrize("arms", ARM_SETS)
def test_prob_best_and_expected_loss_match_monte_carlo(arms):
    posteriors = [beta_posterior(c, n) for c, n in arms]
    x = _mc_draws(posteriors, seed=21)
    best = np.bincount(np.argmax(x, axis=0), minlength=len(arms)) / x.shape[1]
    regret = x.max(axis=0) - x
    mc_loss = regret.mean(axis=1)
    mc_se = regret.std(axis=1) / math.sqrt(x.shape[1])

    p = prob_best(posteriors)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.abs(p - best).max() < 0.003

    rtol = 0.02
    loss = expected_loss(posteriors)
    # The tolerance is only meaningful if Monte Carlo resolves it: at least 5 standard errors.
    assert np.all(mc_se <= rtol * mc_loss / 5)
    assert np.allclose(loss, mc_loss, rtol=rtol, atol=0)

    both = prob_best_and_expected_loss(posteriors)
    assert np.allclose(both[0], p, rtol=0, atol=1e-12)
    assert np.allclose(both[1], loss, rtol=1e-12, atol=0)


def test_prob_best_two_arms_equals_closed_form():
    a, b = beta_posterior(40, 400), beta_posterior(52, 410)
    exact = _closed_form_b_beats_a(a, b)
    assert prob_best([a, b]) == pytest.approx([1 - exact, exact], abs=1e-8)


def test_narrow_far_apart_arms_are_resolved():
    # Rates 0.05 and 0.30 from a million visitors each do not overlap at all: the better arm is
    # best with certainty and choosing the worse one loses exactly the difference of means.
    # A fixed uniform grid on [0, 1] would miss both peaks.
    low, high = beta_posterior(50_000, 1_000_000), beta_posterior(300_000, 1_000_000)
    assert prob_best([low, high]) == pytest.approx([0.0, 1.0], abs=1e-12)
    loss = expected_loss([low, high])
    assert loss[0] == pytest.approx(high.mean - low.mean, rel=1e-9)
    assert loss[1] == pytest.approx(0.0, abs=1e-12)


def test_identical_arms_split_evenly():
    arms = [beta_posterior(30, 700)] * 4
    assert prob_best(arms) == pytest.approx([0.25] * 4, abs=1e-10)


def test_sample_based_comparisons_match_closed_forms():
    rng = np.random.default_rng(8)
    a, b, c = beta_posterior(30, 400), beta_posterior(42, 410), beta_posterior(36, 380)
    exact = _closed_form_b_beats_a(a, b)
    assert abs(sample_prob_greater(a, b, rng, draws=MC_DRAWS) - exact) < 0.003
    # Quadrature reference for three arms, written out with scipy.integrate.quad.
    dists = [stats.beta(p.alpha, p.beta) for p in (a, b, c)]
    reference = []
    for i, d in enumerate(dists):
        others = [o for j, o in enumerate(dists) if j != i]
        value, _ = integrate.quad(lambda x, d=d, others=others: d.pdf(x) * np.prod(
            [o.cdf(x) for o in others]), 0, 0.3, points=[0.075, 0.1], limit=200)
        reference.append(value)
    assert np.abs(sample_prob_best([a, b, c], rng, draws=MC_DRAWS) - reference).max() < 0.003


@dataclass(frozen=True)
class _Normal:
    """A sampler with a known distribution, to check the sample-based helpers."""

    loc: float
    scale: float

    @property
    def mean(self) -> float:
        return self.loc

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.normal(self.loc, self.scale, size=n)


@dataclass(frozen=True)
class _LogNormal:
    mu: float
    sigma: float

    @property
    def mean(self) -> float:
        return math.exp(self.mu + self.sigma**2 / 2)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.lognormal(self.mu, self.sigma, size=n)


def test_sample_expected_loss_matches_normal_closed_form():
    # For D = Y - X ~ N(m, s^2): E[max(X, Y) - X] = E[D+] = m Phi(m/s) + s phi(m/s).
    x, y = _Normal(1.0, 0.3), _Normal(1.2, 0.4)
    m, s = 0.2, 0.5
    loss_x = m * stats.norm.cdf(m / s) + s * stats.norm.pdf(m / s)
    loss_y = loss_x - m
    got = sample_expected_loss([x, y], np.random.default_rng(4), draws=MC_DRAWS)
    assert got == pytest.approx([loss_x, loss_y], rel=0.01)


def test_sample_prob_best_splits_exact_ties():
    @dataclass(frozen=True)
    class Constant:
        mean: float

        def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
            return np.full(n, self.mean)

    rng = np.random.default_rng(0)
    assert sample_prob_best([Constant(0.0), Constant(0.0)], rng, 1000) == pytest.approx([.5, .5])
    assert sample_prob_greater(Constant(0.0), Constant(0.0), rng, 1000) == pytest.approx(0.5)


# --- uplift ---------------------------------------------------------------------------------


def test_uplift_matches_closed_forms():
    rng = np.random.default_rng(6)
    # Absolute: the difference of two Normals is Normal.
    control, treatment = _Normal(0.10, 0.004), _Normal(0.12, 0.003)
    absolute, _ = uplift(control, treatment, rng, draws=MC_DRAWS, level=0.9)
    sd = math.hypot(0.004, 0.003)
    assert absolute.estimate == pytest.approx(0.02, abs=1e-12)
    assert absolute.lower == pytest.approx(0.02 - 1.6448536 * sd, abs=1e-4)
    assert absolute.upper == pytest.approx(0.02 + 1.6448536 * sd, abs=1e-4)
    # Relative: the ratio of two log-normals is log-normal, so its median and quantiles are
    # known; its mean would be pulled up by the tail, which is why the estimate is the median.
    c, t = _LogNormal(math.log(0.05), 0.3), _LogNormal(math.log(0.06), 0.2)
    _, relative = uplift(c, t, rng, draws=MC_DRAWS)
    sigma = math.hypot(0.3, 0.2)
    assert relative.estimate == pytest.approx(0.06 / 0.05 - 1, abs=0.003)
    assert relative.lower == pytest.approx(1.2 * math.exp(-1.959964 * sigma) - 1, abs=0.005)
    assert relative.upper == pytest.approx(1.2 * math.exp(1.959964 * sigma) - 1, abs=0.01)


# --- 3. interval coverage with known truth --------------------------------------------------
#
# Each check counts how often a 95% interval contains the truth over R independent simulated
# experiments. Ideal coverage is 0.95 with binomial standard error sqrt(.95 * .05 / R): 0.0034
# for R = 4000, 0.0049 for R = 2000. Bayesian intervals under a weak prior are only
# approximately calibrated in the frequentist sense (discreteness, finite samples), so the
# accepted band 93%-97% leaves about 1 point for that and still over 2 standard errors
# for the noise; a badly calibrated interval (e.g. a 90% or 99% one) falls well outside.

COVERAGE_BAND = (0.93, 0.97)


def _covered(hits: np.ndarray) -> float:
    return float(np.mean(hits))


def test_rate_interval_coverage():
    rng = np.random.default_rng(101)
    truth, n, runs = 0.08, 1000, 4000
    conversions = rng.binomial(n, truth, size=runs)
    hits = []
    for c in conversions:
        interval = beta_posterior(int(c), n).interval()
        hits.append(interval.lower <= truth <= interval.upper)
    coverage = _covered(np.array(hits))
    assert COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1], coverage


def test_uplift_interval_coverage():
    rng = np.random.default_rng(102)
    p_control, p_treatment, n, runs = 0.10, 0.12, 2000, 2000
    cc = rng.binomial(n, p_control, size=runs)
    ct = rng.binomial(n, p_treatment, size=runs)
    abs_hits, rel_hits = [], []
    for a, b in zip(cc, ct, strict=True):
        absolute, relative = uplift(beta_posterior(int(a), n), beta_posterior(int(b), n), rng,
                                    draws=4000)
        abs_hits.append(absolute.lower <= p_treatment - p_control <= absolute.upper)
        rel_hits.append(relative.lower <= p_treatment / p_control - 1 <= relative.upper)
    for hits in (abs_hits, rel_hits):
        coverage = _covered(np.array(hits))
        assert COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1], coverage


def _simulate_revenue(rng: np.random.Generator, n: int, p: float, values) -> tuple[int, float,
                                                                                  float]:
    """Bernoulli(p) conversion for n visitors, then a value per converter from `values`."""
    c = int(rng.binomial(n, p))
    v = values(rng, c)
    return c, float(v.sum()), float(np.sum(v**2))


VALUE_PROCESSES = [
    # Exactly the Exponential special case of the model.
    pytest.param(lambda rng, c: rng.exponential(40.0, size=c), id="exponential"),
    # Heavier tail (CV = 1.41): still in the model family, the dispersion comes from q.
    pytest.param(lambda rng, c: rng.gamma(0.5, 80.0, size=c), id="gamma-shape-0.5"),
]


@pytest.mark.parametrize("values", VALUE_PROCESSES)
def test_revenue_interval_coverage(values):
    rng = np.random.default_rng(103)
    p, n, runs = 0.05, 2000, 2000
    truth = p * 40.0
    hits = []
    for _ in range(runs):
        c, s, q = _simulate_revenue(rng, n, p, values)
        interval = revenue_posterior(n, c, s, q).interval(rng=rng, draws=4000)
        hits.append(interval.lower <= truth <= interval.upper)
    coverage = _covered(np.array(hits))
    assert COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1], coverage


def test_revenue_uplift_coverage():
    rng = np.random.default_rng(104)
    n, runs = 3000, 2000
    p_c, p_t, value_c, value_t = 0.05, 0.06, 40.0, 45.0
    truth = p_t * value_t - p_c * value_c
    hits = []
    for _ in range(runs):
        control = revenue_posterior(n, *_simulate_revenue(
            rng, n, p_c, lambda r, c: r.exponential(value_c, size=c)))
        treatment = revenue_posterior(n, *_simulate_revenue(
            rng, n, p_t, lambda r, c: r.exponential(value_t, size=c)))
        absolute, _ = uplift(control, treatment, rng, draws=4000)
        hits.append(absolute.lower <= truth <= absolute.upper)
    coverage = _covered(np.array(hits))
    assert COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1], coverage


# --- 4. revenue posterior -------------------------------------------------------------------


@pytest.mark.parametrize("values", [
    pytest.param(lambda rng, c: rng.exponential(50.0, size=c), id="exponential"),
    pytest.param(lambda rng, c: rng.lognormal(math.log(50.0) - 0.5, 1.0, size=c),
                 id="log-normal"),
])
def test_revenue_posterior_on_a_large_sample(values):
    rng = np.random.default_rng(105)
    n, p = 400_000, 0.04
    c = int(rng.binomial(n, p))
    v = values(rng, c)
    per_visitor = np.concatenate([v, np.zeros(n - c)])
    # Frequentist reference from the raw per-visitor data: the sample mean and its standard
    # error (CLT), both independent of the model.
    sample_mean = per_visitor.mean()
    standard_error = per_visitor.std(ddof=1) / math.sqrt(n)

    post = revenue_posterior(n, c, float(v.sum()), float(np.sum(v**2)))
    assert abs(post.mean - 2.0) < 4 * standard_error
    assert post.mean == pytest.approx(sample_mean, abs=0.05 * standard_error)
    draws = post.sample(rng, 400_000)
    assert draws.mean() == pytest.approx(post.mean, abs=5 * draws.std() / math.sqrt(400_000))
    # The width follows the observed spread: posterior sd ~ the standard error of the mean.
    assert draws.std() == pytest.approx(standard_error, rel=0.1)
    interval = post.interval(rng=rng)
    assert interval.lower < 2.0 < interval.upper


def test_revenue_posterior_prior_mean_is_the_documented_closed_form():
    # Model: E[p] * (w m0 + s) / (w + c) with a Beta(1, 1) prior and w = 1 pseudo-converter.
    post = revenue_posterior(1000, 20, 900.0, 60_000.0, value_prior_mean=30.0)
    assert post.mean == pytest.approx((21 / 1002) * (30.0 + 900.0) / 21, rel=1e-12)
    draws = post.sample(np.random.default_rng(3), 1_000_000)
    assert draws.mean() == pytest.approx(post.mean, rel=0.01)


def test_all_zero_arm():
    rng = np.random.default_rng(9)
    empty = revenue_posterior(5000, 0, 0.0, 0.0)
    interval = empty.interval(rng=rng, draws=10_000)
    assert 0.0 <= interval.lower <= interval.upper < 1e-6
    assert 0.0 <= empty.mean < 1e-6
    # With the pooled mean value as prior the arm is P(convert) x that value: E[p] = 1 / 5002.
    pooled = revenue_posterior(5000, 0, 0.0, 0.0, value_prior_mean=40.0)
    assert pooled.mean == pytest.approx(40.0 / 5002, rel=1e-12)
    assert np.all(np.isfinite(pooled.sample(rng, 10_000)))
    busy = revenue_posterior(5000, 250, 10_000.0, 800_000.0)
    absolute, relative = uplift(empty, busy, rng, draws=10_000)
    assert absolute.lower > 0
    assert all(math.isfinite(x) for x in (*absolute.to_dict().values(),
                                          *relative.to_dict().values()))
    none_at_all = revenue_posterior(0, 0, 0.0, 0.0)
    assert math.isfinite(none_at_all.mean)


def test_negative_value_sum_does_not_crash():
    rng = np.random.default_rng(10)
    refunds = revenue_posterior(1000, 10, -250.0, 9_000.0)
    assert math.isfinite(refunds.mean) and refunds.mean >= 0
    interval = refunds.interval(rng=rng, draws=10_000)
    assert 0 <= interval.lower <= interval.upper and math.isfinite(interval.upper)
    other = revenue_posterior(1000, 12, 400.0, 20_000.0)
    p = sample_prob_best([refunds, other], rng, draws=10_000)
    assert p.sum() == pytest.approx(1.0) and p[1] > 0.99
    # Refunds mixed into a positive total: the spread is far beyond what positive totals allow.
    mixed = revenue_posterior(1000, 10, 5.0, 1e6)
    assert math.isfinite(mixed.mean)
    assert math.isfinite(mixed.interval(rng=rng, draws=10_000).upper)


def test_revenue_posterior_rejects_bad_parameters():
    with pytest.raises(ValueError):
        RevenuePosterior(beta_posterior(1, 10), 0.0, 1.0)
    with pytest.raises(ValueError):
        revenue_posterior(10, 1, 5.0, 25.0, value_prior_weight=0.0)


# --- 5. sample-ratio mismatch ---------------------------------------------------------------


@pytest.mark.parametrize("shares", [[0.5, 0.5], [0.5, 0.3, 0.2]])
def test_srm_false_alarm_rate_on_healthy_splits(shares):
    rng = np.random.default_rng(106)
    runs = 20_000
    counts = rng.multinomial(10_000, shares, size=runs)
    flagged = sum(srm_test(row, shares) < 0.001 for row in counts)
    # Expected 20 false alarms (0.1%), Poisson sd ~4.5: 6..50 is roughly -3 to +6 sd.
    assert 0.0003 <= flagged / runs <= 0.0025, flagged


def test_srm_flags_a_broken_split():
    # Configured 50/50, served 52/48 to 10,000 visitors: chi-square = 16 with 1 dof, whose
    # p-value is erfc(sqrt(16 / 2)) (the two-sided Normal tail at z = 4).
    p = srm_test([5200, 4800], [1, 1])
    assert p == pytest.approx(math.erfc(math.sqrt(8.0)), rel=1e-9)
    assert p < 0.001
    # Over random broken splits, the flag rate is the test's power: P(|Z| > z_0.0005) for
    # Z ~ N(4, (sd / 50)^2) with sd = sqrt(10000 * .52 * .48).
    rng = np.random.default_rng(107)
    runs = 4000
    counts = rng.multinomial(10_000, [0.52, 0.48], size=runs)
    flagged = np.mean([srm_test(row, [0.5, 0.5]) < 0.001 for row in counts])
    z, scale = stats.norm.isf(0.0005), math.sqrt(10_000 * 0.52 * 0.48) / 50
    power = stats.norm.sf(z, loc=4, scale=scale) + stats.norm.cdf(-z, loc=4, scale=scale)
    assert abs(flagged - power) < 4 * math.sqrt(power * (1 - power) / runs)


def test_srm_closed_form_shares_and_zero_arms():
    # Chi-square with 2 dof has survival function exp(-x / 2).
    observed, shares = [520, 260, 220], [2, 1, 1]
    expected = [500, 250, 250]
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    assert srm_test(observed, shares) == pytest.approx(math.exp(-statistic / 2), rel=1e-9)
    assert srm_test(observed, [0.5, 0.25, 0.25]) == pytest.approx(srm_test(observed, shares))
    # A zero-share arm without visitors is dropped; with visitors it is a certain mismatch.
    assert srm_test([500, 500, 0], [1, 1, 0]) == pytest.approx(1.0)
    assert srm_test([500, 500, 3], [1, 1, 0]) == 0.0
    assert srm_test([0, 0], [1, 1]) == 1.0
    with pytest.raises(ValueError):
        srm_test([1, 2], [1])


# --- 6. verdict -----------------------------------------------------------------------------

RULE = DecisionSettings(chance_to_be_best=0.95, loss_threshold=0.001, rope=0.002,
                        min_exposures=100)
SD = 0.001  # standard deviation of each arm's estimate (a rate near 5% at ~50k visitors)


@pytest.mark.parametrize(
    ("keys", "exposures", "ctb", "loss", "means", "sd", "decision", "winner", "phrases"),
    [
        pytest.param(["control", "benefit"], [80, 5000], [0.01, 0.99], [0.02, 0.00001],
                     [0.05, 0.06], SD, "keep_running", None,
                     ["not enough data", "'control' has 80", "100"], id="guard-first"),
        pytest.param(["control", "a", "b"], [5000, 99, 90], [0.3, 0.3, 0.4], [0.01] * 3,
                     [0.05] * 3, SD, "keep_running", None, ["'a' has 99", "'b' has 90"],
                     id="guard-lists-every-short-arm"),
        pytest.param(["control", "benefit"], [50_000] * 2, [0.0, 1.0], [0.01, 0.0],
                     [0.05, 0.06], SD, "ship", "benefit",
                     ["Ship 'benefit'", "beyond doubt", "100% chance to be best"],
                     id="ship-treatment"),
        pytest.param(["control", "benefit"], [50_000] * 2, [0.03, 0.97], [0.01, 0.001],
                     [0.05, 0.06], SD, "keep_running", None, ["'benefit' leads"],
                     id="surely-better-but-loss-at-threshold-does-not-ship"),
        pytest.param(["control", "benefit"], [50_000] * 2, [0.03, 0.97], [0.01, 0.0001],
                     [0.05, 0.053], SD, "keep_running", None, ["'benefit' leads", "97%"],
                     id="bayes-confident-but-not-beyond-doubt-at-every-look"),
        pytest.param(["control", "a", "b"], [50_000] * 3, [1.0, 0.0, 0.0], [0.0, 0.01, 0.012],
                     [0.06, 0.05, 0.048], SD, "ship", "control",
                     ["Keep the control 'control'", "worse beyond doubt"], id="control-wins"),
        pytest.param(["control", "a", "b"], [10**7] * 3, [0.4, 0.35, 0.25], [0.0005] * 3,
                     [0.05, 0.0501, 0.0499], 0.00005, "no_difference", None,
                     ["No meaningful difference", "0.002"], id="no-difference"),
        pytest.param(["control", "a"], [5000, 5000], [0.3, 0.7], [0.004, 0.002],
                     [0.05, 0.052], 0.003, "keep_running", None, ["70%", "more visitors"],
                     id="undecided-says-how-many-more"),
    ],
)
def test_decide_verdict(keys, exposures, ctb, loss, means, sd, decision, winner, phrases):
    variances = [sd**2] * len(keys)
    verdict = decide_verdict(keys, "control", exposures, ctb, loss, means, variances, RULE)
    assert (verdict.decision, verdict.winner) == (decision, winner), verdict.text
    for phrase in phrases:
        assert phrase in verdict.text
    assert verdict.to_dict()["text"] == verdict.text
    if decision == "keep_running" and "more visitors" in phrases:
        assert verdict.visitors_needed and verdict.visitors_needed > 0


def test_the_always_valid_boundary_is_where_the_mixture_ratio_reaches_one_over_alpha():
    # Independent of the inverted formula: the mSPRT statistic itself at the boundary.
    for variance, tau2, alpha in ((1e-6, 1e-5, 0.05), (4e-4, 1e-6, 0.01), (1.0, 1.0, 0.2)):
        h = always_valid_half_width(variance, tau2, alpha)
        ratio = math.sqrt(variance / (variance + tau2)) * math.exp(
            tau2 * h * h / (2 * variance * (variance + tau2)))
        assert ratio == pytest.approx(1 / alpha, rel=1e-9)


def test_reading_the_verdict_at_every_look_keeps_false_ships_under_alpha():
    # A/A experiments read 30 times each; 2 and 3 arms, conversion; the verdict's own inputs
    # (Beta posterior means and variances) from simulated counts with known, equal truth.
    rng = np.random.default_rng(2024)
    rate, per_look, looks, runs = 0.05, 700, 30, 600
    for arms in (2, 3):
        keys = ["control"] + [f"t{i}" for i in range(1, arms)]
        wrong = 0
        for _ in range(runs):
            conv = np.zeros(arms)
            ever = False
            for look in range(1, looks + 1):
                conv += rng.binomial(per_look, rate, size=arms)
                n = look * per_look
                a, b = 1 + conv, 1 + n - conv
                means = a / (a + b)
                variances = a * b / ((a + b) ** 2 * (a + b + 1))
                v = decide_verdict(keys, "control", [n] * arms, [1.0 / arms] * arms,
                                   [0.0] * arms, list(means), list(variances), RULE)
                if v.decision == "ship":
                    ever = True
                    break
            wrong += ever
        # At most 5% promised; 600 runs put 3 standard errors at about 2.7 points.
        assert wrong / runs <= 0.05 + 0.027, (arms, wrong / runs)


def test_the_rule_still_finds_a_real_uplift():
    rng = np.random.default_rng(7)
    found = 0
    for _ in range(200):
        conv = np.zeros(2)
        for look in range(1, 31):
            conv += rng.binomial(700, [0.05, 0.06])
            n = look * 700
            a, b = 1 + conv, 1 + n - conv
            means, variances = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
            # The Bayesian figures the report would give, from the Normal limit.
            p = float(stats.norm.cdf((means[1] - means[0]) / math.sqrt(variances.sum())))
            v = decide_verdict(["control", "b"], "control", [n, n], [1 - p, p], [0.0, 0.0],
                               list(means), list(variances), RULE)
            if v.decision == "ship" and v.winner == "b":
                found += 1
                break
    assert found / 200 >= 0.8  # +20% at up to 21,000 visitors per arm (about 0.95 measured)


def test_decide_verdict_rejects_inconsistent_input():
    with pytest.raises(ValueError):
        decide_verdict(["control", "a"], "control", [1, 2], [0.5], [0.0, 0.0], [0.1, 0.1],
                       [0.01, 0.01], RULE)
    with pytest.raises(ValueError):
        decide_verdict(["a", "b"], "control", [1, 2], [0.5, 0.5], [0.0, 0.0], [0.1, 0.1],
                       [0.01, 0.01], RULE)
    with pytest.raises(ValueError):
        DecisionSettings(chance_to_be_best=1.5)



def test_beat_best_and_loss_agree_with_the_separate_exact_functions():
    from experiments.stats import beat_best_and_loss, expected_loss, prob_best

    posts = [BetaPosterior(31.0, 970.0), BetaPosterior(45.0, 956.0), BetaPosterior(38.5, 900.2)]
    beat, best, loss = beat_best_and_loss(posts, control=0)
    assert np.isnan(beat[0])
    # Independent check of the chance to beat control: 1,000,000 Monte Carlo draws.
    rng = np.random.default_rng(99)
    draws = np.vstack([rng.beta(p.alpha, p.beta, 1_000_000) for p in posts])
    for i in (1, 2):
        assert abs(beat[i] - np.mean(draws[i] > draws[0])) < 0.003
    assert np.allclose(best, prob_best(posts), atol=1e-9)
    assert np.allclose(loss, expected_loss(posts), atol=1e-12)


@pytest.mark.parametrize("visitors", [1e9, 1e11, 1e13])
def test_chance_to_beat_stays_exact_at_huge_counts(visitors):
    # At these counts a Beta is a Normal to within ~1e-6 (its skewness), so the Normal's
    # closed form is the independent reference.
    a = BetaPosterior(0.05 * visitors + 0.5, 0.95 * visitors + 0.5)
    b = BetaPosterior(a.alpha + 0.5 * math.sqrt(0.05 * visitors), a.beta)

    def var(p):
        n = p.alpha + p.beta
        return p.alpha * p.beta / (n * n * (n + 1))

    reference = float(stats.norm.cdf((b.mean - a.mean) / math.sqrt(var(a) + var(b))))
    assert prob_greater(a, a) == pytest.approx(0.5, abs=1e-9)
    assert prob_greater(a, b) == pytest.approx(reference, abs=1e-5)
    beat, best, _ = beat_best_and_loss([a, b], 0)
    assert beat[1] == pytest.approx(reference, abs=1e-5)
    assert best[1] == pytest.approx(beat[1], abs=1e-6)  # two arms: best is beating the other
