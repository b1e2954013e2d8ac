"""Bayesian statistics of experiments/stats.py checked against independent computations.

References are closed forms written out again here, scipy quadrature, Monte Carlo with at
least a million draws and simulations with known truth; nothing is compared with numbers taken
from the module itself. Seeds are fixed, so every run sees the same data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats
from scipy.special import expit

from experiments.model import DecisionSettings
from experiments.stats import (
    BetaPosterior,
    GammaSpend,
    Interval,
    LognormalSpend,
    RevenuePosterior,
    SpendPosterior,
    SpendStats,
    always_valid_half_width,
    beat_best_and_loss,
    best_and_loss_of_draws,
    beta_matching,
    beta_posterior,
    decide_verdict,
    gamma_shape,
    lognormal_weight,
    prob_best_and_expected_loss,
    prob_greater_of_draws,
    revenue_posterior,
    signed_normal,
    spend_posterior,
    spend_stats_from_moments,
    srm_test,
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


def _b_beats_a(a: BetaPosterior, b: BetaPosterior) -> float:
    """The module's P(X_b > X_a): chance to beat control with a as the control."""
    beat, _, _ = beat_best_and_loss([a, b], control=0)
    assert np.isnan(beat[0])
    return float(beat[1])


def _mc_draws(posteriors: list[BetaPosterior], seed: int, draws: int = MC_DRAWS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.beta(p.alpha, p.beta, size=draws) for p in posteriors])


# --- posteriors -----------------------------------------------------------------------------


def test_beta_posterior_matches_conjugate_update_and_scipy():
    post = beta_posterior(37, 420, prior_alpha=2.0, prior_beta=3.0)
    assert (post.alpha, post.beta) == (39.0, 386.0)
    ref = stats.beta(39, 386)
    assert post.mean == pytest.approx(39 / 425, rel=1e-12)
    x = ref.ppf([1e-6, 0.05, 0.5, 0.95, 1 - 1e-6])
    assert post.cdf(x) == pytest.approx(ref.cdf(x), rel=1e-9)
    assert post.pdf(x) == pytest.approx(ref.pdf(x), rel=1e-9)
    draws = post.sample(np.random.default_rng(0), 400_000)
    assert draws.mean() == pytest.approx(ref.mean(), abs=5 * ref.std() / math.sqrt(400_000))
    assert draws.std() == pytest.approx(ref.std(), rel=0.01)


def test_beta_posterior_rejects_bad_priors_and_clips_inconsistent_counts():
    with pytest.raises(ValueError):
        beta_posterior(1, 10, prior_alpha=0.0)
    with pytest.raises(ValueError):
        BetaPosterior(1.0, -2.0)
    with pytest.raises(ValueError):
        BetaPosterior(math.inf, 2.0)
    # A snapshot where a conversion arrived before its exposure still gives a proper posterior.
    assert beta_posterior(12, 10) == BetaPosterior(11.0, 1.0)
    assert beta_posterior(-3, -1) == BetaPosterior(1.0, 1.0)


@pytest.mark.parametrize(("mean", "sd"), [(0.05, 0.002), (0.5, 0.1), (0.9, 0.05)])
def test_beta_matching_has_the_requested_moments(mean, sd):
    post = beta_matching(mean, sd**2)
    ref = stats.beta(post.alpha, post.beta)
    assert ref.mean() == pytest.approx(mean, rel=1e-12)
    assert ref.std() == pytest.approx(sd, rel=1e-9)


# --- 1. chance to beat control --------------------------------------------------------------

PAIRS = [
    pytest.param(beta_posterior(10, 100), beta_posterior(15, 100), id="small-integer"),
    pytest.param(BetaPosterior(10.5, 90.3), BetaPosterior(14.7, 88.2), id="non-integer"),
    pytest.param(beta_posterior(2500, 50_000), beta_posterior(2560, 50_000), id="50k-exposures"),
    pytest.param(beta_posterior(2500, 50_000, 0.5, 0.5), beta_posterior(2540, 50_000, 0.5, 0.5),
                 id="50k-jeffreys"),
    pytest.param(beta_posterior(100_000, 1_000_000), beta_posterior(100_400, 1_000_000),
                 id="1M-exposures"),
    pytest.param(beta_posterior(0, 800, 0.5, 0.5), beta_posterior(3, 900, 0.5, 0.5),
                 id="zero-conversions-singular-density"),
    pytest.param(beta_posterior(3, 40), beta_posterior(2, 500), id="lopsided"),
]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_chance_to_beat_matches_a_million_monte_carlo_draws(a, b):
    x = _mc_draws([a, b], seed=11)
    mc = float(np.mean(x[1] > x[0]))
    # The Monte Carlo standard error is at most 0.5 / sqrt(1e6) = 0.0005, so 0.003 is 6 of them.
    assert abs(_b_beats_a(a, b) - mc) < 0.003


INTEGER_PAIRS = [
    pytest.param(beta_posterior(10, 100), beta_posterior(15, 100), id="small"),
    pytest.param(beta_posterior(3, 98), beta_posterior(55_000, 1_000_000),
                 id="lopsided-widths"),
    pytest.param(beta_posterior(99_990, 100_000), beta_posterior(99_985, 100_000),
                 id="rates-near-1"),
    pytest.param(beta_posterior(99_990, 100_000), beta_posterior(89_995, 90_000),
                 id="rates-near-1-unequal-n"),
    pytest.param(beta_posterior(2500, 50_000), beta_posterior(2560, 50_000), id="50k-exposures"),
    pytest.param(beta_posterior(100_000, 1_000_000), beta_posterior(100_400, 1_000_000),
                 id="1M-exposures"),
    pytest.param(BetaPosterior(5, 1), BetaPosterior(1, 5), id="far-apart"),
    pytest.param(beta_posterior(0, 40), beta_posterior(1, 3), id="few-visitors"),
]


@pytest.mark.parametrize(("a", "b"), INTEGER_PAIRS)
def test_chance_to_beat_matches_closed_form_sum(a, b):
    # The closed form itself carries ~1e-9 of rounding at a million visitors (lgamma of 1e6).
    assert _b_beats_a(a, b) == pytest.approx(_closed_form_b_beats_a(a, b), abs=1e-8)


@pytest.mark.parametrize(("a", "b"), [
    (BetaPosterior(10.5, 90.3), BetaPosterior(14.7, 88.2)),
    (BetaPosterior(2500.5, 47500.5), BetaPosterior(2540.5, 47460.5)),
    (BetaPosterior(100_000.5, 900_000.5), BetaPosterior(100_300.5, 899_700.5)),
    (BetaPosterior(1.5, 30.2), BetaPosterior(40.5, 30.5)),
])
def test_chance_to_beat_non_integer_matches_scipy_quad(a, b):
    assert _b_beats_a(a, b) == pytest.approx(_quad_b_beats_a(a, b), abs=1e-8)


def test_chance_to_beat_does_not_depend_on_the_other_arms_on_the_grid():
    # The grid is the union of every arm's panels; a narrow arm far away, or a wide one,
    # adds panels but must not disturb the comparison of the other two.
    a, b = beta_posterior(40, 400), beta_posterior(52, 410)
    exact = _closed_form_b_beats_a(a, b)
    for extra in (beta_posterior(300_000, 1_000_000), beta_posterior(1, 3),
                  BetaPosterior(0.5, 0.5)):
        beat, _, _ = beat_best_and_loss([a, extra, b], control=0)
        assert beat[2] == pytest.approx(exact, abs=1e-8)
        beat, _, _ = beat_best_and_loss([extra, b, a], control=2)
        assert beat[1] == pytest.approx(exact, abs=1e-8)


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
    # Expected loss int (F_i - prod_j F_j) dx has no density in it either.
    losses = [integrate.quad(lambda x, d=d: d.cdf(x) - np.prod([o.cdf(x) for o in dists]),
                             0, 1, limit=500, epsabs=1e-13)[0] for d in dists]
    # P(X_0 > X_1) = integral over u of F_1(F_0^-1(u)).
    beat_0 = integrate.quad(lambda u: dists[1].cdf(dists[0].ppf(u)), 0, 1, limit=500,
                            epsabs=1e-12)[0]

    best, loss = prob_best_and_expected_loss(posteriors)
    assert best == pytest.approx(reference, abs=1e-6)
    assert loss == pytest.approx(losses, abs=1e-7)
    beat, best_too, _ = beat_best_and_loss(posteriors, control=1)
    assert beat[0] == pytest.approx(beat_0, abs=1e-6)
    assert best_too == pytest.approx(reference, abs=1e-6)


def test_chance_to_beat_is_symmetric():
    rng = np.random.default_rng(2)
    for _ in range(40):
        n = int(10 ** rng.uniform(1, 6.2))
        priors = [(1.0, 1.0), (0.5, 0.5)]
        pa, pb = priors[rng.integers(2)], priors[rng.integers(2)]
        a = beta_posterior(rng.binomial(n, 0.1), n, *pa)
        b = beta_posterior(rng.binomial(n, 0.102), n, *pb)
        assert _b_beats_a(a, b) + _b_beats_a(b, a) == pytest.approx(1.0, abs=1e-8)
        # Either arm as the control of one call: the two chances still add up to one.
        beat_vs_a, _, _ = beat_best_and_loss([a, b], control=0)
        beat_vs_b, _, _ = beat_best_and_loss([a, b], control=1)
        assert beat_vs_a[1] + beat_vs_b[0] == pytest.approx(1.0, abs=1e-8)
    same = beta_posterior(40, 1000)
    assert _b_beats_a(same, same) == pytest.approx(0.5, abs=1e-9)


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
    assert _b_beats_a(a, a) == pytest.approx(0.5, abs=1e-9)
    assert _b_beats_a(a, b) == pytest.approx(reference, abs=1e-5)
    beat, best, loss = beat_best_and_loss([a, b], 0)
    assert beat[1] == pytest.approx(reference, abs=1e-5)
    assert best[1] == pytest.approx(beat[1], abs=1e-9)  # two arms: best is beating the other
    # Expected loss of the control: E[D+] for D = X_b - X_a ~ N(m, s^2).
    m, s = b.mean - a.mean, math.sqrt(var(a) + var(b))
    assert loss[0] == pytest.approx(m * stats.norm.cdf(m / s) + s * stats.norm.pdf(m / s),
                                    rel=1e-4)


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

    p, loss = prob_best_and_expected_loss(posteriors)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.abs(p - best).max() < 0.003

    rtol = 0.02
    # The tolerance is only meaningful if Monte Carlo resolves it: at least 5 standard errors.
    assert np.all(mc_se <= rtol * mc_loss / 5)
    assert np.allclose(loss, mc_loss, rtol=rtol, atol=0)

    # With a control, the same grid gives the same figures and the chance to beat it.
    beat, best_too, loss_too = beat_best_and_loss(posteriors, control=0)
    assert np.allclose(best_too, p, rtol=0, atol=1e-12)
    assert np.allclose(loss_too, loss, rtol=1e-12, atol=0)
    assert np.isnan(beat[0])
    assert np.abs(beat[1:] - np.mean(x[1:] > x[0], axis=1)).max() < 0.003


@pytest.mark.parametrize(("a", "b"), [
    pytest.param(beta_posterior(40, 400), beta_posterior(52, 410), id="400-visitors"),
    pytest.param(beta_posterior(2500, 50_000), beta_posterior(2560, 50_000), id="50k"),
    pytest.param(beta_posterior(100_000, 1_000_000), beta_posterior(100_400, 1_000_000),
                 id="1M"),
    pytest.param(beta_posterior(0, 40), beta_posterior(1, 3), id="few-visitors"),
])
def test_two_arms_chance_to_be_best_is_chance_to_beat_control(a, b):
    exact = _closed_form_b_beats_a(a, b)
    best, _ = prob_best_and_expected_loss([a, b])
    assert best == pytest.approx([1 - exact, exact], abs=1e-8)
    # Both figures of the report come from one grid, so they agree far beyond that.
    beat, best, _ = beat_best_and_loss([a, b], control=0)
    assert best[1] == pytest.approx(beat[1], abs=1e-9)


def test_narrow_far_apart_arms_are_resolved():
    # Rates 0.05 and 0.30 from a million visitors each do not overlap at all: the better arm is
    # best with certainty and choosing the worse one loses exactly the difference of means.
    # A fixed uniform grid on [0, 1] would miss both peaks.
    low, high = beta_posterior(50_000, 1_000_000), beta_posterior(300_000, 1_000_000)
    best, loss = prob_best_and_expected_loss([low, high])
    assert best == pytest.approx([0.0, 1.0], abs=1e-12)
    assert loss[0] == pytest.approx(high.mean - low.mean, rel=1e-9)
    assert loss[1] == pytest.approx(0.0, abs=1e-12)
    beat, _, _ = beat_best_and_loss([low, high], control=0)
    assert beat[1] == pytest.approx(1.0, abs=1e-12)
    beat, _, _ = beat_best_and_loss([low, high], control=1)
    assert beat[0] == pytest.approx(0.0, abs=1e-12)


def test_identical_arms_split_evenly():
    arm = beta_posterior(30, 700)
    best, loss = prob_best_and_expected_loss([arm] * 4)
    assert best == pytest.approx([0.25] * 4, abs=1e-10)
    # E[max of 4 iid] - E[X] = int (F - F^4) dx.
    d = stats.beta(arm.alpha, arm.beta)
    reference = integrate.quad(lambda x: d.cdf(x) - d.cdf(x) ** 4, 0, 0.2, points=[0.044],
                               limit=200, epsabs=1e-13)[0]
    assert loss == pytest.approx([reference] * 4, rel=1e-7)
    beat, _, _ = beat_best_and_loss([arm] * 3, control=1)
    assert beat[[0, 2]] == pytest.approx([0.5, 0.5], abs=1e-9)


def test_a_single_arm_is_best_without_loss_and_no_arm_is_an_error():
    best, loss = prob_best_and_expected_loss([beta_posterior(3, 10)])
    assert best == pytest.approx([1.0]) and loss == pytest.approx([0.0], abs=1e-12)
    with pytest.raises(ValueError):
        prob_best_and_expected_loss([])
    with pytest.raises(ValueError):
        beat_best_and_loss([], control=0)


# --- 3. comparisons from posterior draws ----------------------------------------------------


def test_draw_comparisons_match_normal_closed_forms():
    # For D = Y - X ~ N(m, s^2): P(Y > X) = Phi(m / s), E[max(X, Y) - X] = E[D+]
    # = m Phi(m/s) + s phi(m/s), and E[max(X, Y) - Y] = E[D+] - m.
    rng = np.random.default_rng(4)
    x = np.vstack([rng.normal(1.0, 0.3, MC_DRAWS), rng.normal(1.2, 0.4, MC_DRAWS)])
    m, s = 0.2, 0.5
    p_y = stats.norm.cdf(m / s)
    loss_x = m * stats.norm.cdf(m / s) + s * stats.norm.pdf(m / s)
    best, loss = best_and_loss_of_draws(x)
    assert best == pytest.approx([1 - p_y, p_y], abs=0.003)
    assert loss == pytest.approx([loss_x, loss_x - m], rel=0.01)
    assert prob_greater_of_draws(x[0], x[1]) == pytest.approx(p_y, abs=0.003)
    # From the same draws, the chance to be best is the chance to beat the other, exactly.
    assert best[1] == prob_greater_of_draws(x[0], x[1])
    assert best[0] == prob_greater_of_draws(x[1], x[0])


def test_draw_comparisons_of_three_arms_match_quadrature():
    a, b, c = beta_posterior(30, 400), beta_posterior(42, 410), beta_posterior(36, 380)
    dists = [stats.beta(p.alpha, p.beta) for p in (a, b, c)]
    reference = []
    for i, d in enumerate(dists):
        others = [o for j, o in enumerate(dists) if j != i]
        value, _ = integrate.quad(lambda x, d=d, others=others: d.pdf(x) * np.prod(
            [o.cdf(x) for o in others]), 0, 0.3, points=[0.075, 0.1], limit=200)
        reference.append(value)
    losses = [integrate.quad(lambda x, d=d: d.cdf(x) - np.prod([o.cdf(x) for o in dists]),
                             0, 0.3, points=[0.075, 0.1], limit=200)[0] for d in dists]
    best, loss = best_and_loss_of_draws(_mc_draws([a, b, c], seed=8))
    assert np.abs(best - reference).max() < 0.003
    assert loss == pytest.approx(losses, rel=0.02)


def test_draw_comparisons_split_exact_ties():
    assert best_and_loss_of_draws(np.zeros((2, 1000)))[0] == pytest.approx([0.5, 0.5])
    best, loss = best_and_loss_of_draws(np.full((3, 10), 7.0))
    assert best == pytest.approx([1 / 3] * 3) and loss == pytest.approx([0.0] * 3)
    assert prob_greater_of_draws(np.zeros(1000), np.zeros(1000)) == pytest.approx(0.5)
    # Coarse draws with many ties: each tie counts one half, written out by counting.
    rng = np.random.default_rng(12)
    x = np.round(rng.normal(size=(2, 20_001)))
    wins, ties = np.sum(x[1] > x[0]), np.sum(x[1] == x[0])
    assert ties > 2000
    best, _ = best_and_loss_of_draws(x)
    # Rounding of the two means may differ in the last bit, not more.
    assert best[1] == pytest.approx((wins + ties / 2) / x.shape[1], rel=0, abs=1e-15)
    assert prob_greater_of_draws(x[0], x[1]) == pytest.approx(best[1], rel=0, abs=1e-15)


# --- 4. interval coverage with known truth --------------------------------------------------
#
# Each check counts how often a 95% interval contains the truth over R independent simulated
# experiments. Ideal coverage is 0.95 with binomial standard error sqrt(.95 * .05 / R): 0.0034
# for R = 4000, 0.0049 for R = 2000. Bayesian intervals under a weak prior are only
# approximately calibrated in the frequentist sense (discreteness, finite samples), so the
# accepted band 93%-97% leaves about 1 point for that and still over 2 standard errors
# for the noise; a badly calibrated interval (e.g. a 90% or 99% one) falls well outside.
# Intervals are equal-tailed, from the posterior's cdf or, as the report makes them, from
# quantiles of 4,000 posterior draws.

COVERAGE_BAND = (0.93, 0.97)
REPORT_DRAWS = 4000


def _covers(draws: np.ndarray, truth: float) -> bool:
    lower, upper = np.quantile(draws, [0.025, 0.975])
    return bool(lower <= truth <= upper)


def test_rate_interval_coverage():
    rng = np.random.default_rng(101)
    truth, n, runs = 0.08, 1000, 4000
    conversions = rng.binomial(n, truth, size=runs)
    # The equal-tailed interval contains the truth exactly when its cdf there is in
    # [0.025, 0.975].
    cdfs = np.array([float(beta_posterior(int(c), n).cdf(np.array(truth))) for c in conversions])
    coverage = float(np.mean((cdfs >= 0.025) & (cdfs <= 0.975)))
    assert COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1], coverage


def test_uplift_interval_coverage():
    rng = np.random.default_rng(102)
    p_control, p_treatment, n, runs = 0.10, 0.12, 2000, 2000
    cc = rng.binomial(n, p_control, size=runs)
    ct = rng.binomial(n, p_treatment, size=runs)
    abs_hits, rel_hits = [], []
    for a, b in zip(cc, ct, strict=True):
        control = beta_posterior(int(a), n).sample(rng, REPORT_DRAWS)
        treatment = beta_posterior(int(b), n).sample(rng, REPORT_DRAWS)
        abs_hits.append(_covers(treatment - control, p_treatment - p_control))
        rel_hits.append(_covers(treatment / control - 1, p_treatment / p_control - 1))
    for hits in (abs_hits, rel_hits):
        coverage = float(np.mean(hits))
        assert COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1], coverage


# Revenue per visitor with a lognormal spend of sigma 2 (a long tail: the top 1% of buyers
# spend 37% of the money) gets a wider band, 92%-98%, as a few buyers leave the posterior far
# from its large-sample shape; the old Inverse-Gamma model covered only 86%-90% per arm here.
REVENUE_BAND = (0.92, 0.98)
MEAN_SPEND = 40.0


def _spend_stats(values: np.ndarray) -> SpendStats:
    """The counters of a set of buyers' totals: count, sum, sum of ln and of ln^2."""
    logs = np.log(values)
    return SpendStats(float(len(values)), float(values.sum()), float(logs.sum()),
                      float(np.sum(logs**2)))


def _lognormal_buyers(rng: np.random.Generator, n: int, p: float, sigma: float
                      ) -> tuple[int, SpendStats]:
    """Bernoulli(p) buying for n visitors, then a lognormal total with mean MEAN_SPEND each."""
    buyers = int(rng.binomial(n, p))
    mu = math.log(MEAN_SPEND) - sigma**2 / 2
    return buyers, _spend_stats(rng.lognormal(mu, sigma, size=buyers))


@pytest.mark.parametrize(("n", "p"), [pytest.param(500, 0.02, id="500-visitors-2%"),
                                      pytest.param(20_000, 0.05, id="20k-visitors-5%")])
def test_revenue_interval_coverage_with_a_heavy_tail(n, p):
    # A/B tests whose treatment buys 10% more often; as in a report, each arm's spend prior
    # is the pooled buyers of both arms. Truth: P(buy) x E[total] = p x MEAN_SPEND.
    rng = np.random.default_rng(103)
    experiments, sigma = 1000, 2.0
    rates = (p, 1.1 * p)
    arm_hits, uplift_hits = [], []
    for _ in range(experiments):
        arms = [_lognormal_buyers(rng, n, q, sigma) for q in rates]
        pooled = arms[0][1] + arms[1][1]
        draws = [revenue_posterior(n, buyers, spend, pooled=pooled).sample(
            rng, REPORT_DRAWS) for buyers, spend in arms]
        arm_hits += [_covers(d, q * MEAN_SPEND) for d, q in zip(draws, rates, strict=True)]
        uplift_hits.append(_covers(draws[1] - draws[0], (rates[1] - rates[0]) * MEAN_SPEND))
    # 2,000 arms and 1,000 uplifts: standard errors 0.005 and 0.007, the band is 6 and 4 of
    # them either side of 0.95.
    arm = float(np.mean(arm_hits))
    assert REVENUE_BAND[0] <= arm <= REVENUE_BAND[1], arm
    uplift = float(np.mean(uplift_hits))
    # Ten buyers per arm included, where a level prior borrowed from the other arm at one
    # buyer's weight covered 98-99%.
    assert REVENUE_BAND[0] <= uplift <= REVENUE_BAND[1], uplift


def test_signed_revenue_interval_coverage():
    # Net refunds make per-visitor totals signed; the report then uses the CLT posterior.
    rng = np.random.default_rng(104)
    n, runs = 3000, 2000
    # 5% buy Exponential(40), 1% get a refund of Exponential(20): mean 0.05*40 - 0.01*20.
    truth = 0.05 * 40.0 - 0.01 * 20.0
    hits = []
    for _ in range(runs):
        u = rng.random(n)
        y = np.where(u < 0.05, rng.exponential(40.0, n), 0.0)
        y -= np.where(u > 0.99, rng.exponential(20.0, n), 0.0)
        hits.append(_covers(signed_normal(n, float(y.sum()), float(y @ y)).sample(
            rng, REPORT_DRAWS), truth))
    coverage = float(np.mean(hits))
    assert COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1], coverage


# --- 5. revenue per visitor -----------------------------------------------------------------


def _textbook_normal_inverse_chi2(prior_logs: np.ndarray, data_logs: np.ndarray,
                                  kappa0: float, nu0: float) -> tuple[float, float, float, float]:
    """(location, weight, df, scale) of the Normal-scaled-inverse-chi-square posterior.

    Gelman et al., Bayesian Data Analysis (3rd ed.), section 3.3, with mu_0 and sigma_0^2 the
    mean and variance (ddof 1) of the prior buyers' ln totals (a variance of 1 when there is
    only one of them, as the module documents).
    """
    mu0 = float(prior_logs.mean())
    s0 = float(prior_logs.var(ddof=1)) if len(prior_logs) > 1 else 1.0
    n = len(data_logs)
    ybar = float(data_logs.mean()) if n else 0.0
    ss = float(np.sum((data_logs - ybar) ** 2))
    kappa_n, nu_n = kappa0 + n, nu0 + n
    mu_n = (kappa0 * mu0 + n * ybar) / kappa_n
    s2_n = (nu0 * s0 + ss + kappa0 * n / kappa_n * (ybar - mu0) ** 2) / nu_n
    return mu_n, kappa_n, nu_n, s2_n


def _gamma_mle_shape(values: np.ndarray) -> float:
    """Gamma shape maximising the profile likelihood (scale = mean / shape) numerically."""
    mean = float(values.mean())

    def nll(log_k: float) -> float:
        k = math.exp(log_k)
        return -float(np.sum(stats.gamma.logpdf(values, k, scale=mean / k)))

    fit = optimize.minimize_scalar(nll, bounds=(-6.0, 13.0), method="bounded",
                                   options={"xatol": 1e-10})
    return math.exp(fit.x)


def _reference_lognormal_weight(values: np.ndarray) -> float:
    """Logistic of the maximised lognormal minus Gamma log-likelihood, from scipy's densities."""
    logs = np.log(values)
    lognormal = np.sum(stats.lognorm.logpdf(values, logs.std(), scale=math.exp(logs.mean())))
    k = _gamma_mle_shape(values)
    gamma = np.sum(stats.gamma.logpdf(values, k, scale=values.mean() / k))
    return float(expit(lognormal - gamma + math.log(4.0)))  # prior odds 4 : 1, documented


def _buyers(seed: int, size: int, sigma: float = 1.3) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(3.0, sigma, size=size)


SPEND_CASES = [
    # (the other arms' buyers, this arm's buyers, prior weight); the report passes the pool
    # of every arm's buyers, this arm's among them, and the prior is made of the others.
    pytest.param(_buyers(1, 40), _buyers(2, 25), 1.0, id="others-and-own"),
    pytest.param(_buyers(3, 12, sigma=0.4), _buyers(4, 7, sigma=2.0), 3.5,
                 id="heavier-own-tail"),
    pytest.param(_buyers(5, 1), _buyers(6, 2), 10.0, id="one-other-buyer"),
    pytest.param(_buyers(7, 30), _buyers(8, 0), 10.0, id="no-own-buyers"),
    pytest.param(_buyers(9, 0), _buyers(10, 6), 10.0, id="only-this-arm-bought"),
]


@pytest.mark.parametrize(("others", "data", "weight"), SPEND_CASES)
def test_spend_posterior_is_the_textbook_conjugate_update(others, data, weight):
    pooled = np.concatenate([others, data])
    post = spend_posterior(_spend_stats(data), _spend_stats(pooled), prior_weight=weight)
    assert isinstance(post, SpendPosterior)
    # The prior is the other arms' buyers (the arm's own, when nobody else bought): for the
    # level 1 / (1 + own buyers) buyers' worth, for the spread weight / (1 + own buyers) (at
    # least 1, at most the prior's buyers).
    prior = others if len(others) else data
    strength = weight if len(others) else 1.0
    nu0 = min(max(1.0, strength / (1 + len(data))), len(prior))
    kappa0 = 1 / (1 + len(data))
    location, kappa, df, scale = _textbook_normal_inverse_chi2(np.log(prior), np.log(data),
                                                               kappa0, nu0)
    ln = post.lognormal
    assert (ln.location, ln.weight, ln.df, ln.scale) == pytest.approx(
        (location, kappa, df, scale), rel=1e-10, abs=1e-12)
    assert ln.estimate == pytest.approx(math.exp(location + scale / 2), rel=1e-10)
    # Gamma(k, rate lambda) totals with k the pooled buyers' MLE shape; the conjugate prior on
    # lambda is Gamma(1 + kappa0 k, rate kappa0 m0) (kappa0 buyers spending the prior mean m0
    # on top of a flat prior), so the mean spend k / lambda is a posteriori
    # Inverse-Gamma(1 + (kappa0 + n) k, k (kappa0 m0 + sum of totals)).
    k = _gamma_mle_shape(pooled)
    assert gamma_shape(_spend_stats(pooled)) == pytest.approx(k, rel=1e-6)
    shape, gscale = 1 + (kappa0 + len(data)) * k, k * (kappa0 * prior.mean() + data.sum())
    assert (post.gamma.shape, post.gamma.scale) == pytest.approx((shape, gscale), rel=1e-6)
    assert post.lognormal_weight == pytest.approx(_reference_lognormal_weight(pooled),
                                                  abs=1e-6)
    w = post.lognormal_weight
    assert post.estimate == pytest.approx(
        w * math.exp(location + scale / 2) + (1 - w) * gscale / (shape - 1), rel=1e-6)


def test_spend_posterior_rejects_a_bad_prior_weight_and_needs_prior_buyers():
    prior = _spend_stats(_buyers(9, 20))
    for weight in (0.0, -1.0):
        with pytest.raises(ValueError):
            spend_posterior(prior, prior, prior_weight=weight)
    assert spend_posterior(prior, SpendStats()) is None
    # Net refunds: buyers whose totals sum to nothing positive have no spend to model.
    assert spend_posterior(prior, SpendStats(3.0, -20.0, 0.0, 0.0)) is None


def test_lognormal_spend_draws_follow_the_normal_inverse_chi_square_posterior():
    rng = np.random.default_rng(31)
    probs = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
    # A location known exactly (weight 1e12): 2 (ln draw - location) is s^2, which is
    # df * scale / chi2(df), i.e. Inverse-Gamma(df / 2, df * scale / 2).
    df, scale = 7.0, 0.8
    s2 = 2 * (np.log(LognormalSpend(3.0, 1e12, df, scale).sample(rng, MC_DRAWS)) - 3.0)
    reference = stats.invgamma(df / 2, scale=df * scale / 2)
    assert np.quantile(s2, probs) == pytest.approx(reference.ppf(probs), rel=0.01)
    # A spread known exactly (df 1e12): ln draw ~ Normal(location + scale / 2, scale / weight).
    logs = np.log(LognormalSpend(3.0, 20.0, 1e12, 0.8).sample(rng, MC_DRAWS))
    assert logs.mean() == pytest.approx(3.4, abs=5 * math.sqrt(0.04 / MC_DRAWS))
    assert logs.std() == pytest.approx(math.sqrt(0.8 / 20), rel=0.005)
    # Both uncertain: P(ln draw <= t) = E over s^2 of Phi((t - location - s^2/2) / (s / sqrt
    # weight)), by quadrature over scipy's Inverse-Gamma.
    spend = LognormalSpend(3.0, 12.0, 12.0, 1.5)
    logs = np.log(spend.sample(rng, MC_DRAWS))
    s2_dist = stats.invgamma(6.0, scale=12.0 * 1.5 / 2)

    def cdf(t: float) -> float:
        return integrate.quad(lambda v: s2_dist.pdf(v) * stats.norm.cdf(
            (t - 3.0 - v / 2) / math.sqrt(v / 12.0)), 0, np.inf, limit=200)[0]

    # A million draws put the empirical cdf within 0.0005 (one standard error) of the truth.
    for q, p in zip(np.quantile(logs, probs), probs, strict=True):
        assert cdf(float(q)) == pytest.approx(p, abs=0.002)
    assert spend.estimate == pytest.approx(math.exp(3.0 + 1.5 / 2), rel=1e-12)


def test_gamma_spend_draws_are_inverse_gamma():
    rng = np.random.default_rng(32)
    spend = GammaSpend(6.5, 210.0)
    draws = spend.sample(rng, MC_DRAWS)
    reference = stats.invgamma(6.5, scale=210.0)
    probs = np.array([0.05, 0.5, 0.95])
    assert np.quantile(draws, probs) == pytest.approx(reference.ppf(probs), rel=0.01)
    assert spend.estimate == pytest.approx(reference.mean(), rel=1e-12)


def test_spend_posterior_draws_mix_the_models_by_their_weight():
    rng = np.random.default_rng(33)
    # Two narrow models far apart, mean spend 50 and 30: the share of draws near 50 is the
    # lognormal's weight.
    narrow_ln = LognormalSpend(math.log(50.0) - 0.005, 1e8, 1e8, 0.01)
    narrow_gamma = GammaSpend(1e8 + 1, 30.0 * 1e8)
    spend = SpendPosterior(narrow_ln, narrow_gamma, 0.3)
    draws = spend.sample(rng, MC_DRAWS)
    assert np.all((np.abs(draws - 50) < 0.5) | (np.abs(draws - 30) < 0.5))
    assert np.mean(draws > 40) == pytest.approx(0.3, abs=5 * math.sqrt(0.21 / MC_DRAWS))
    assert spend.estimate == pytest.approx(0.3 * 50 + 0.7 * 30, rel=1e-6)


@pytest.mark.parametrize(("buyers", "mean", "sd"), [(40, 35.0, 80.0), (1, 12.0, 0.0),
                                                    (10**6, 0.5, 0.1)])
def test_spend_stats_from_moments_is_the_lognormal_with_those_moments(buyers, mean, sd):
    stand_in = spend_stats_from_moments(buyers, buyers * mean, buyers * (sd**2 + mean**2))
    m, s2 = stand_in.mean_log, stand_in.spread / buyers
    # Lognormal(m, s^2): mean exp(m + s^2 / 2), variance (exp(s^2) - 1) exp(2 m + s^2).
    assert math.exp(m + s2 / 2) == pytest.approx(mean, rel=1e-12)
    assert math.sqrt(math.expm1(s2) * math.exp(2 * m + s2)) == pytest.approx(sd, rel=1e-9,
                                                                             abs=1e-9)
    assert (stand_in.count, stand_in.value_sum) == pytest.approx((buyers, buyers * mean))


def test_spend_stats_from_moments_recovers_a_lognormal_sample():
    values = np.random.default_rng(34).lognormal(2.0, 0.7, size=MC_DRAWS)
    stand_in = spend_stats_from_moments(len(values), float(values.sum()),
                                        float(values @ values))
    # The moment estimators of mu and sigma^2 are consistent; at a million draws they sit
    # within a few thousandths of the truth (their sd is about 0.001 and 0.003).
    assert stand_in.mean_log == pytest.approx(2.0, abs=0.01)
    assert stand_in.spread / len(values) == pytest.approx(0.49, abs=0.02)


def test_spend_stats_from_moments_without_spend():
    assert spend_stats_from_moments(0, 0.0, 0.0) == SpendStats()
    assert spend_stats_from_moments(10, -250.0, 9_000.0) == SpendStats()  # net refunds
    # Refunds mixed into a positive total: a spread far beyond what positive totals allow
    # still gives a finite revenue posterior.
    mixed = spend_stats_from_moments(10, 5.0, 1e6)
    post = revenue_posterior(1000, 10, mixed)
    assert math.isfinite(post.estimate)
    assert np.all(np.isfinite(post.sample(np.random.default_rng(41), 10_000)))
    total = SpendStats(2, 30.0, 5.0, 13.0) + SpendStats(1, 4.0, 1.0, 1.5)
    assert total == SpendStats(3, 34.0, 6.0, 14.5)
    assert total.mean == pytest.approx(34 / 3) and total.mean_log == pytest.approx(2.0)
    assert total.spread == pytest.approx(14.5 - 3 * 4.0)
    assert SpendStats().spread == 0.0 and SpendStats().mean_log == 0.0


@pytest.mark.parametrize(("values", "lognormal"), [
    pytest.param(lambda rng, c: rng.lognormal(3.0, 1.0, size=c), True, id="lognormal"),
    pytest.param(lambda rng, c: rng.exponential(50.0, size=c), False, id="exponential"),
    pytest.param(lambda rng, c: rng.gamma(3.0, 10.0, size=c), False, id="gamma-shape-3"),
])
def test_lognormal_weight_picks_the_model_that_made_the_data(values, lognormal):
    totals = values(np.random.default_rng(35), 500)
    weight = lognormal_weight(_spend_stats(totals))
    assert (weight > 0.99) if lognormal else (weight < 0.01), weight


@pytest.mark.parametrize(("values", "tolerance"), [
    # Exponential totals are the Gamma model with k = 1, whose posterior mean is the sample
    # mean up to the prior's one pseudo-buyer.
    pytest.param(lambda rng, c: rng.exponential(50.0, size=c), 0.05, id="exponential"),
    # For lognormal totals the model's estimate is more efficient than the sample mean; the
    # two differ by about a third of a standard error.
    pytest.param(lambda rng, c: rng.lognormal(math.log(50.0) - 0.5, 1.0, size=c), 1.0,
                 id="lognormal"),
])
def test_revenue_posterior_on_a_large_sample(values, tolerance):
    rng = np.random.default_rng(105)
    n, p = 400_000, 0.04
    c = int(rng.binomial(n, p))
    v = values(rng, c)
    per_visitor = np.concatenate([v, np.zeros(n - c)])
    # Frequentist reference from the raw per-visitor data: the sample mean and its standard
    # error (CLT), both independent of the model.
    sample_mean = per_visitor.mean()
    standard_error = per_visitor.std(ddof=1) / math.sqrt(n)

    post = revenue_posterior(n, c, _spend_stats(v))
    assert abs(post.estimate - 2.0) < 4 * standard_error
    assert post.estimate == pytest.approx(sample_mean, abs=tolerance * standard_error)
    assert post.mean == post.estimate
    draws = post.sample(rng, 400_000)
    assert np.median(draws) == pytest.approx(post.estimate, abs=0.05 * standard_error)
    # The width follows the observed spread: posterior sd ~ the standard error of the mean.
    assert draws.std() == pytest.approx(standard_error, rel=0.1)
    assert _covers(draws, 2.0)


def test_revenue_without_buyers():
    rng = np.random.default_rng(9)
    # Nobody anywhere bought: revenue is exactly zero.
    for empty in (revenue_posterior(5000, 0, SpendStats()),
                  revenue_posterior(5000, 0, SpendStats(), pooled=SpendStats()),
                  revenue_posterior(0, 0, SpendStats())):
        assert empty.estimate == 0.0
        assert np.all(empty.sample(rng, 1000) == 0.0)
    # Others bought: the arm's spend is the prior's, its chance to buy Beta(1, 5001).
    others = _buyers(10, 60)
    arm = revenue_posterior(5000, 0, SpendStats(), pooled=_spend_stats(others))
    logs = np.log(others)
    w = _reference_lognormal_weight(others)
    spend = w * math.exp(logs.mean() + logs.var(ddof=1) / 2) + (1 - w) * others.mean()
    assert arm.estimate == pytest.approx(spend / 5002, rel=1e-6)
    draws = arm.sample(rng, 10_000)
    assert np.all(np.isfinite(draws)) and np.all(draws >= 0)
    # An all-zero arm on its own (no spend prior) against one whose visitors buy: it loses
    # in every draw, by the other's whole revenue.
    busy = revenue_posterior(5000, 60, _spend_stats(others))
    x = np.vstack([revenue_posterior(5000, 0, SpendStats()).sample(rng, 10_000),
                   busy.sample(rng, 10_000)])
    best, loss = best_and_loss_of_draws(x)
    assert best == pytest.approx([0.0, 1.0]) and loss[1] == 0.0
    assert loss[0] == pytest.approx(x[1].mean(), rel=1e-12)


def test_an_arm_without_buyers_does_not_rival_one_whose_visitors_buy():
    # 0 of 50,000 visitors bought in one arm, 600 of 50,000 in the other, and both arms'
    # buyers are pooled, as in a report. Whatever spend the empty arm might have (60x the
    # other's would be needed to catch up), it is not plausibly the better one; a one-buyer
    # prior on its spread gave it a 20-30% chance to be best at any traffic.
    rng = np.random.default_rng(40)
    others = _buyers(11, 600)
    pooled = _spend_stats(others)
    empty = revenue_posterior(50_000, 0, SpendStats(), pooled=pooled)
    busy = revenue_posterior(50_000, 600, pooled, pooled=pooled)
    x = np.vstack([empty.sample(rng, 100_000), busy.sample(rng, 100_000)])
    best, _ = best_and_loss_of_draws(x)
    assert best[1] > 0.99, best
    assert np.quantile(x[0], 0.975) < busy.estimate


def test_revenue_posterior_of_strata_is_the_weighted_sum_of_its_parts():
    # Narrow parts (huge counts) so that draws sit at the closed-form centre.
    rng = np.random.default_rng(36)
    spend_a = SpendPosterior(LognormalSpend(math.log(40.0) - 0.5, 1e9, 1e9, 1.0),
                             GammaSpend(1e9 + 1, 40.0 * 1e9), 0.25)
    spend_b = SpendPosterior(LognormalSpend(math.log(90.0) - 0.5, 1e9, 1e9, 1.0),
                             GammaSpend(1e9 + 1, 90.0 * 1e9), 0.75)
    rate_a, rate_b = BetaPosterior(1e9, 19e9), BetaPosterior(1e9, 9e9)
    post = RevenuePosterior(((0.7, rate_a, spend_a), (0.3, rate_b, spend_b),
                             (0.1, rate_b, None)))
    expected = 0.7 * 0.05 * 40.0 + 0.3 * 0.1 * 90.0
    assert post.estimate == pytest.approx(expected, rel=1e-6)
    assert post.sample(rng, 10_000) == pytest.approx(np.full(10_000, expected), rel=1e-3)


def test_revenue_draws_give_consistent_comparisons():
    rng = np.random.default_rng(37)
    arms = [_lognormal_buyers(rng, 5000, p, 1.2) for p in (0.05, 0.055)]
    pooled = arms[0][1] + arms[1][1]
    x = np.vstack([revenue_posterior(5000, b, s, pooled=pooled).sample(rng, 100_000)
                   for b, s in arms])
    best, loss = best_and_loss_of_draws(x)
    # From one matrix of draws, two arms: chance to be best is chance to beat the other.
    assert best[1] == prob_greater_of_draws(x[0], x[1])
    assert best[0] == prob_greater_of_draws(x[1], x[0])
    assert best.sum() == pytest.approx(1.0, abs=1e-12)
    assert loss == pytest.approx(np.mean(x.max(axis=0) - x, axis=1), rel=1e-12)


def test_signed_normal_is_the_clt_posterior_of_the_mean():
    y = np.random.default_rng(38).normal(0.3, 5.0, size=10_000)
    post = signed_normal(len(y), float(y.sum()), float(y @ y))
    assert post.mean == pytest.approx(y.mean(), rel=1e-12)
    assert post.sd == pytest.approx(y.std() / math.sqrt(len(y)), rel=1e-9)
    draws = post.sample(np.random.default_rng(39), MC_DRAWS)
    assert draws.mean() == pytest.approx(post.mu, abs=5 * post.sd / math.sqrt(MC_DRAWS))
    assert draws.std() == pytest.approx(post.sd, rel=0.005)
    # No spread to measure (one visitor, or identical totals): sd |mean| / sqrt(n).
    assert signed_normal(4, -8.0, 16.0).sd == pytest.approx(2.0 / 2)
    assert signed_normal(0, 0.0, 0.0).mean == 0.0
    assert np.all(np.isfinite(signed_normal(0, 0.0, 0.0).sample(np.random.default_rng(1), 10)))


# --- 6. sample-ratio mismatch ---------------------------------------------------------------


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



# --- 7. verdict -----------------------------------------------------------------------------

# Thresholds are fractions of the control's mean: at a 5% control rate a loss threshold of 2%
# of it is 0.001 and a rope of 4% of it is 0.002.
RULE = DecisionSettings(chance_to_be_best=0.95, loss_threshold=0.02, rope=0.04,
                        min_exposures=100)
SD = 0.001  # standard deviation of each arm's estimate (a rate near 5% at ~50k visitors)
AT_THRESHOLD = RULE.loss_threshold * 0.05  # the loss threshold for a control mean of 0.05

VERDICT_CASES = [
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
    pytest.param(["control", "benefit"], [50_000] * 2, [0.03, 0.97], [0.01, 0.999 * AT_THRESHOLD],
                 [0.05, 0.06], SD, "ship", "benefit", ["Ship 'benefit'", "97% chance"],
                 id="surely-better-and-loss-just-under-threshold-ships"),
    pytest.param(["control", "benefit"], [50_000] * 2, [0.03, 0.97], [0.01, AT_THRESHOLD],
                 [0.05, 0.06], SD, "keep_running", None,
                 ["'benefit' beats 'control' beyond doubt", "not yet clearly the best"],
                 id="surely-better-but-loss-at-threshold-does-not-ship"),
    pytest.param(["control", "benefit"], [50_000] * 2, [0.06, 0.94], [0.01, 0.0001],
                 [0.05, 0.06], SD, "keep_running", None, ["not yet clearly the best", "94%"],
                 id="surely-better-but-chance-to-be-best-below-threshold"),
    # Two treatments beat the control beyond doubt and tie: neither can reach 95% chance to
    # be best, and shipping the one with the smaller expected loss costs almost nothing.
    pytest.param(["control", "a", "b"], [50_000] * 3, [0.0, 0.52, 0.48],
                 [0.01, 0.5 * AT_THRESHOLD, 0.6 * AT_THRESHOLD], [0.05, 0.06, 0.06], SD,
                 "ship", "a", ["Ship 'a'", "52% chance"], id="tied-sure-winners-ship"),
    pytest.param(["control", "a", "b"], [50_000] * 3, [0.0, 0.52, 0.48],
                 [0.01, 2 * AT_THRESHOLD, 2 * AT_THRESHOLD], [0.05, 0.06, 0.06], SD,
                 "keep_running", None, ["not yet clearly the best"],
                 id="tied-sure-winners-with-a-real-loss-wait"),
    pytest.param(["control", "benefit"], [50_000] * 2, [0.03, 0.97], [0.01, 0.0001],
                 [0.05, 0.053], SD, "keep_running", None, ["'benefit' leads", "97%"],
                 id="bayes-confident-but-not-beyond-doubt-at-every-look"),
    pytest.param(["control", "a", "b"], [50_000] * 3, [1.0, 0.0, 0.0], [0.0, 0.01, 0.012],
                 [0.06, 0.05, 0.048], SD, "ship", "control",
                 ["Keep the control 'control'", "worse beyond doubt"], id="control-wins"),
    pytest.param(["control", "a", "b"], [10**7] * 3, [0.4, 0.35, 0.25], [0.0005] * 3,
                 [0.05, 0.0501, 0.0499], 0.00005, "no_difference", None,
                 ["No meaningful difference", "±0.002", "±4% of its mean"], id="no-difference"),
    pytest.param(["control", "a"], [5000, 5000], [0.3, 0.7], [0.004, 0.002],
                 [0.05, 0.052], 0.003, "keep_running", None, ["70%", "more visitors"],
                 id="undecided-says-how-many-more"),
]


@pytest.mark.parametrize(
    ("keys", "exposures", "ctb", "loss", "means", "sd", "decision", "winner", "phrases"),
    VERDICT_CASES,
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


@pytest.mark.parametrize("factor", [800.0, 1e-3])
@pytest.mark.parametrize(
    ("keys", "exposures", "ctb", "loss", "means", "sd", "decision", "winner", "phrases"),
    [case for case in VERDICT_CASES if "at-threshold" not in str(case.id)],
)
def test_decide_verdict_does_not_depend_on_the_metric_s_unit(
        factor, keys, exposures, ctb, loss, means, sd, decision, winner, phrases):
    # A 5% rate and 40 (currency) of revenue per visitor: with every mean, sd and loss in
    # another unit (x 800: 0.05 -> 40) the verdict and every interval scale with it.
    # (The case exactly at the loss threshold is left out: scaling may round it either way.)
    base = decide_verdict(keys, "control", exposures, ctb, loss, means,
                          [sd**2] * len(keys), RULE)
    scaled = decide_verdict(keys, "control", exposures, ctb, [x * factor for x in loss],
                            [m * factor for m in means], [(sd * factor) ** 2] * len(keys), RULE)
    assert (scaled.decision, scaled.winner) == (decision, winner), scaled.text
    assert scaled.visitors_needed == base.visitors_needed
    for ours, theirs in zip(base.always_valid, scaled.always_valid, strict=True):
        if ours is None:
            assert theirs is None
            continue
        assert isinstance(theirs, Interval)
        assert [theirs.estimate, theirs.lower, theirs.upper] == pytest.approx(
            [factor * ours.estimate, factor * ours.lower, factor * ours.upper], rel=1e-9)


def test_revenue_scale_metric_reaches_every_decision_with_default_settings():
    # Revenue per visitor around 40 with a standard error of 0.3 (about 200,000 visitors per
    # arm). The old absolute defaults (loss below 0.001, rope +-0.002) were out of reach for
    # such a metric: no expected loss is that small, and no interval that narrow.
    rule = DecisionSettings()
    keys, exposures, variances = ["control", "b"], [200_000] * 2, [0.3**2] * 2
    ship = decide_verdict(keys, "control", exposures, [0.0, 1.0], [4.0, 0.01], [40.0, 44.0],
                          variances, rule)
    assert (ship.decision, ship.winner) == ("ship", "b"), ship.text
    assert ship.to_dict()["visitors_needed"] == 0
    # Loss 0.5 is above 1% of 40: surely better, but not shipped.
    costly = decide_verdict(keys, "control", exposures, [0.0, 1.0], [4.0, 0.5], [40.0, 44.0],
                            variances, rule)
    assert costly.decision == "keep_running", costly.text
    # +0.2 with an always-valid half-width of about 1.5: inside the rope of 5% of 40 = 2.
    same = decide_verdict(keys, "control", exposures, [0.4, 0.6], [0.3, 0.2], [40.0, 40.2],
                          variances, rule)
    assert same.decision == "no_difference", same.text
    assert "±2 (±5% of its mean)" in same.text
    interval = same.always_valid[1]
    assert interval is not None and -2.0 <= interval.lower < interval.upper <= 2.0
    assert interval.to_dict() == {"estimate": interval.estimate, "lower": interval.lower,
                                  "upper": interval.upper}


def test_the_always_valid_boundary_is_where_the_mixture_ratio_reaches_one_over_alpha():
    # Independent of the inverted formula: the mSPRT statistic itself at the boundary.
    for variance, tau2, alpha in ((1e-6, 1e-5, 0.05), (4e-4, 1e-6, 0.01), (1.0, 1.0, 0.2)):
        h = always_valid_half_width(variance, tau2, alpha)
        ratio = math.sqrt(variance / (variance + tau2)) * math.exp(
            tau2 * h * h / (2 * variance * (variance + tau2)))
        assert ratio == pytest.approx(1 / alpha, rel=1e-9)


def test_reading_the_verdict_at_every_look_keeps_false_ships_under_alpha():
    # A/A experiments read 30 times each; 2, 3 and 10 arms (the most variants an experiment
    # may have is 20; the promise is checked up to 10), conversion; the verdict's own inputs
    # (Beta posterior means and variances) from simulated counts with known, equal truth.
    rng = np.random.default_rng(2024)
    rate, per_look, looks, runs = 0.05, 700, 30, 600
    for arms in (2, 3, 10):
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
    # Figures beyond the float range (absurd tracked values) give a verdict, not a crash.
    for means, variances in (([1e300, 2e300], [1e300, 1e300]), ([math.inf, 1.0], [1.0, 1.0])):
        verdict = decide_verdict(["control", "a"], "control", [1000, 1000], [0.5, 0.5],
                                 [0.0, 0.0], means, variances, RULE)
        assert verdict.decision == "keep_running" and verdict.winner is None, verdict.text
