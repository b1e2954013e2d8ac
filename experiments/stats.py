"""Bayesian statistics for reports: exact Beta comparisons, revenue per visitor, verdicts, SRM.

Pure numpy/scipy and deterministic given the injected ``numpy.random.Generator``.

- Conversion rates are Beta-Binomial: ``Beta(prior_alpha + conversions, prior_beta + failures)``.
- Chance to beat control, chance to be best and expected loss of Beta posteriors integrate
  over one grid built from every arm's own high-density region, so they agree with each
  other and stay accurate for posteriors from 10^13 visitors.
- Revenue per visitor is P(buy) x mean spend per buyer, a hurdle model whose spend averages
  a lognormal and a Gamma model (see ``SpendPosterior``); quantities without a closed form
  use posterior draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as sps
from scipy.special import betainc, betaincinv, betaln, digamma, expit, polygamma, xlog1py, xlogy

from experiments.model import DecisionSettings

FloatArray = npt.NDArray[np.float64]

# Every arm contributes panel edges at these quantiles of its own posterior. Quantile spacing
# puts short panels where the mass is; mass outside 1e-10 .. 1 - 1e-10 is negligible.
_EDGE_PROBS = np.array(
    [1e-10, 1e-7, 1e-4, 0.003, 0.03, 0.1, 0.25, 0.5, 0.75, 0.9, 0.97, 0.997, 1 - 1e-4, 1 - 1e-7,
     1 - 1e-10]
)
# A parameter below 1 (a prior below 1 and no data on that side) makes the density singular
# at 0 or 1; half-decade tail quantiles grade the panels geometrically towards the singularity.
# Doubles cannot resolve 1 - x below ~1e-16, so a posterior with beta < 1 loses the mass it
# puts there: ~(1e-16)^beta, under 1e-7 for the Jeffreys prior's 0.5.
_SINGULAR_TAIL = np.logspace(-10.0, -0.5, 20)
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
# Above this many pseudo-observations a density is evaluated around its mode (see _pdfs).
_CENTERED_ABOVE = 1e6


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with an equal-tailed credible interval."""

    estimate: float
    lower: float
    upper: float

    def to_dict(self) -> dict[str, float]:
        """Return the report shape {"estimate", "lower", "upper"}."""
        return {"estimate": self.estimate, "lower": self.lower, "upper": self.upper}


@dataclass(frozen=True, slots=True)
class BetaPosterior:
    """Beta(alpha, beta) posterior of a conversion rate."""

    alpha: float
    beta: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and math.isfinite(self.beta)):
            raise ValueError("Beta parameters must be finite")
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError(f"Beta parameters must be positive, got {self.alpha}, {self.beta}")

    @property
    def mean(self) -> float:
        """Posterior mean alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """Draw n rates."""
        return rng.beta(self.alpha, self.beta, size=n)

    def cdf(self, x: FloatArray) -> FloatArray:
        """P(rate <= x)."""
        return np.asarray(betainc(self.alpha, self.beta, x), dtype=np.float64)

    def pdf(self, x: FloatArray) -> FloatArray:
        """Density at x (0 < x < 1)."""
        log_pdf = xlogy(self.alpha - 1.0, x) + xlog1py(self.beta - 1.0, -x)
        log_pdf = log_pdf - betaln(self.alpha, self.beta)
        return np.asarray(np.exp(log_pdf), dtype=np.float64)


def beta_posterior(
    conversions: int, exposures: int, prior_alpha: float = 1.0, prior_beta: float = 1.0
) -> BetaPosterior:
    """Beta posterior of a rate after `conversions` successes in `exposures` trials."""
    if prior_alpha <= 0 or prior_beta <= 0:
        raise ValueError("prior_alpha and prior_beta must be positive")
    # Counters read from a live store need not be mutually consistent at the instant they are
    # read (a conversion may land before its exposure); clipping keeps the posterior proper
    # instead of failing the whole report.
    n = max(float(exposures), 0.0)
    c = min(max(float(conversions), 0.0), n)
    return BetaPosterior(prior_alpha + c, prior_beta + (n - c))


# --- exact comparisons of Beta posteriors -------------------------------------------------


def _grid(posteriors: Sequence[BetaPosterior]) -> tuple[FloatArray, FloatArray]:
    """Composite Gauss-Legendre nodes and weights on the union of the arms' quantile panels."""
    probs = []
    for p in posteriors:
        extra = [_EDGE_PROBS]
        if p.alpha < 1.0:
            extra.append(_SINGULAR_TAIL)
        if p.beta < 1.0:
            extra.append(1.0 - _SINGULAR_TAIL)
        probs.append(np.concatenate(extra))
    edges = np.concatenate(
        [betaincinv(p.alpha, p.beta, q) for p, q in zip(posteriors, probs, strict=True)]
    )
    edges = np.unique(np.clip(edges[np.isfinite(edges)], 0.0, 1.0))
    half = (edges[1:] - edges[:-1]) / 2.0
    mid = (edges[1:] + edges[:-1]) / 2.0
    nodes = (mid[:, None] + half[:, None] * _GL_NODES[None, :]).ravel()
    weights = (half[:, None] * _GL_WEIGHTS[None, :]).ravel()
    # Nodes inside a panel of zero width (identical edges) would sit on 0 or 1 exactly.
    keep = (weights > 0) & (nodes > 0.0) & (nodes < 1.0)
    return nodes[keep], weights[keep]


def _pdfs(posteriors: Sequence[BetaPosterior], x: FloatArray, w: FloatArray) -> FloatArray:
    """Densities of every arm at the grid nodes, accurate at any count.

    With millions of visitors the log density is a difference of huge terms, and
    ``betaln`` loses the normalising constant to rounding (2% at 10^13 visitors). Narrow
    posteriors are therefore evaluated relative to their mode and normalised on the grid,
    which holds all but 1e-10 of each one's mass.
    """
    rows = []
    for p in posteriors:
        if p.alpha > 1.0 and p.beta > 1.0 and p.alpha + p.beta > _CENTERED_ABOVE:
            mode = (p.alpha - 1.0) / (p.alpha + p.beta - 2.0)
            log_pdf = ((p.alpha - 1.0) * np.log1p((x - mode) / mode)
                       + (p.beta - 1.0) * np.log1p((mode - x) / (1.0 - mode)))
            density = np.exp(log_pdf)
            rows.append(density / np.sum(w * density))
        else:
            rows.append(p.pdf(x))
    return np.vstack(rows)


def _cdfs(posteriors: Sequence[BetaPosterior], x: FloatArray) -> FloatArray:
    a = np.array([p.alpha for p in posteriors], dtype=np.float64)
    b = np.array([p.beta for p in posteriors], dtype=np.float64)
    return np.asarray(betainc(a[:, None], b[:, None], x[None, :]), dtype=np.float64)


def _require_arms(posteriors: Sequence[object]) -> None:
    if len(posteriors) == 0:
        raise ValueError("at least one posterior is required")


def _best_and_loss_on(w: FloatArray, pdf: FloatArray | None,
                      cdf: FloatArray) -> tuple[FloatArray, FloatArray]:
    """P(best) (when `pdf` is given) and expected loss of every arm on one grid."""
    k = cdf.shape[0]
    p_best = np.ones(1)
    if pdf is not None and k > 1:
        raw = np.array([np.sum(w * pdf[i] * np.prod(np.delete(cdf, i, axis=0), axis=0))
                        for i in range(k)])
        total = raw.sum()
        p_best = raw / total if np.isfinite(total) and total > 0 else np.full(k, 1.0 / k)
    # E[max] - E[X_i] = int (1 - prod F_j) - int (1 - F_i) = int (F_i - prod F_j).
    # Integrating the difference directly avoids subtracting two nearly equal means,
    # which would lose the tiny losses of narrow posteriors in rounding.
    joint = np.prod(cdf, axis=0)
    losses = np.maximum(np.sum(w[None, :] * (cdf - joint[None, :]), axis=1), 0.0)
    return np.asarray(p_best, dtype=np.float64), np.asarray(losses, dtype=np.float64)


def beat_best_and_loss(
    posteriors: Sequence[BetaPosterior], control: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """P(X_i > X_control), P(best) and expected loss of every arm from one shared grid.

    The chance to beat control is the quadrature of pdf_i * cdf_control over the union of
    all arms' high-density panels (exact to quadrature precision, about 1e-10), so
    a report needs one grid per scope instead of one per comparison.
    """
    _require_arms(posteriors)
    x, w = _grid(posteriors)
    cdf = _cdfs(posteriors, x)
    pdf = _pdfs(posteriors, x, w)
    best, losses = _best_and_loss_on(w, pdf, cdf)
    beat = np.clip(pdf @ (w * cdf[control]), 0.0, 1.0)
    beat[control] = np.nan
    return np.asarray(beat, dtype=np.float64), best, losses


def prob_best_and_expected_loss(
    posteriors: Sequence[BetaPosterior],
) -> tuple[FloatArray, FloatArray]:
    """P(arm i has the highest rate) and E[max_j X_j - X_i] of every arm from one grid.

    P(best) is the quadrature of pdf_i * prod_{j != i} cdf_j, normalised; the loss is the
    quadrature of cdf_i - prod_j cdf_j.
    """
    _require_arms(posteriors)
    x, w = _grid(posteriors)
    return _best_and_loss_on(w, _pdfs(posteriors, x, w), _cdfs(posteriors, x))


# --- comparisons from posterior draws (revenue) ----------------------------------------


def best_and_loss_of_draws(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """P(arm i is best) (exact ties share the win) and E[max_j X_j - X_i] from one matrix.

    Rows are arms, columns joint draws. Figures taken from the same draws agree with each
    other (two arms: chance to be best is chance to beat the other, to the last draw).
    """
    top = x.max(axis=0)
    is_max = x == top
    best = (is_max / is_max.sum(axis=0)).mean(axis=1)
    return (np.asarray(best, dtype=np.float64),
            np.asarray((top - x).mean(axis=1), dtype=np.float64))


def prob_greater_of_draws(xa: FloatArray, xb: FloatArray) -> float:
    """P(X_b > X_a) from paired draws; exact ties count one half."""
    return float(np.mean(xb > xa) + 0.5 * np.mean(xb == xa))


# --- moment-matched summaries (stratified estimates) -----------------------------------


def beta_matching(mean: float, var: float) -> BetaPosterior:
    """The Beta distribution with this mean and variance."""
    mean = min(max(mean, 1e-12), 1 - 1e-12)
    var = min(max(var, 1e-18), mean * (1 - mean) * (1 - 1e-9))
    k = mean * (1 - mean) / var - 1
    return BetaPosterior(mean * k, (1 - mean) * k)


@dataclass(frozen=True, slots=True)
class NormalPosterior:
    """A Normal posterior of a mean (revenue whose net refunds make visitor totals signed)."""

    mu: float
    sd: float

    @property
    def mean(self) -> float:
        """Posterior mean."""
        return self.mu

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """Draw n values."""
        return rng.normal(self.mu, max(self.sd, 1e-300), size=n)


def signed_normal(n: float, s: float, q: float) -> NormalPosterior:
    """Posterior of the mean per-visitor value from its sum and sum of squares (CLT)."""
    n = max(n, 1.0)
    mean = s / n
    var = max(q / n - mean**2, 0.0)
    return NormalPosterior(mean, math.sqrt(var / n) if var > 0 else abs(mean) / math.sqrt(n))


# --- revenue per visitor ------------------------------------------------------------------

# ln(spend) is capped here before exponentiating: a draw from a very uncertain spread can
# otherwise overflow to infinity, which no interval or comparison survives.
_MAX_LOG_SPEND = 700.0
# Scale of ln(spend) assumed when nobody has bought twice yet: a spread of e^1 either way.
_DEFAULT_LOG_VARIANCE = 1.0
# Bounds of the Gamma shape: near-constant totals would drive it to infinity, a few wild
# ones to zero.
_GAMMA_SHAPE_BOUNDS = (1e-3, 1e6)
# Buyers' worth of the other variants' spread in the prior of a variant without buyers of
# its own (see spend_posterior).
SPEND_PRIOR_BUYERS = 10.0
# Prior odds of the lognormal against the Gamma model of the totals. A few dozen buyers from
# a long tail often show none of it, and a Gamma fit then cuts the tail off and under-covers,
# while a lognormal fit of light-tailed totals only widens the interval; from a few hundred
# buyers on the data outweigh these odds.
LOGNORMAL_PRIOR_ODDS = 4.0


@dataclass(frozen=True, slots=True)
class SpendStats:
    """The buyers' per-visitor totals as the counters keep them: count, sum, sum of ln, of ln^2."""

    count: float = 0.0
    value_sum: float = 0.0
    log_sum: float = 0.0
    log_sq_sum: float = 0.0

    def __add__(self, other: SpendStats) -> SpendStats:
        return SpendStats(self.count + other.count, self.value_sum + other.value_sum,
                          self.log_sum + other.log_sum, self.log_sq_sum + other.log_sq_sum)

    @property
    def mean(self) -> float:
        """Mean total per buyer."""
        return self.value_sum / self.count if self.count > 0 else 0.0

    @property
    def mean_log(self) -> float:
        """Sample mean of ln(total)."""
        return self.log_sum / self.count if self.count > 0 else 0.0

    @property
    def spread(self) -> float:
        """Sum of squared deviations of ln(total) from their mean."""
        if self.count <= 0:
            return 0.0
        return max(self.log_sq_sum - self.count * self.mean_log**2, 0.0)


def spend_stats_from_moments(buyers: float, value_sum: float, value_sq_sum: float
                             ) -> SpendStats:
    """SpendStats whose ln sums are the lognormal's with the buyers' mean and variance.

    For counters recorded before ln sums were kept.
    """
    if buyers <= 0 or value_sum <= 0:
        return SpendStats()
    mean = value_sum / buyers
    var = max(value_sq_sum / buyers - mean**2, 0.0)
    s2 = math.log1p(var / mean**2)
    m = math.log(mean) - s2 / 2
    return SpendStats(buyers, value_sum, buyers * m, buyers * (s2 + m * m))


def gamma_shape(stats: SpendStats) -> float:
    """Maximum-likelihood Gamma shape k of the totals: ln k - digamma(k) = ln(mean) - mean ln."""
    if stats.count <= 0 or stats.value_sum <= 0:
        return 1.0
    gap = math.log(stats.mean) - stats.mean_log  # >= 0 by Jensen; 0 for constant totals
    lo, hi = _GAMMA_SHAPE_BOUNDS
    if gap <= 1.0 / (2.0 * hi):
        return hi
    # Minka's closed-form start, then Newton steps on ln k - digamma(k) - gap.
    k = (3.0 - gap + math.sqrt((gap - 3.0) ** 2 + 24.0 * gap)) / (12.0 * gap)
    for _ in range(6):
        f = math.log(k) - float(digamma(k)) - gap
        k = min(max(k - f / (1.0 / k - float(polygamma(1, k))), lo), hi)
    return k


def lognormal_weight(stats: SpendStats) -> float:
    """Posterior weight of the lognormal against the Gamma model of the totals.

    Both models have two parameters, so BIC's penalties cancel and the weight is the logistic
    of the difference of their maximised log-likelihoods plus the log prior odds
    (``LOGNORMAL_PRIOR_ODDS``); below three buyers, the prior odds alone.
    """
    b = stats.count
    if b < 3 or stats.value_sum <= 0:
        return LOGNORMAL_PRIOR_ODDS / (1.0 + LOGNORMAL_PRIOR_ODDS)
    s2 = max(stats.spread / b, 1e-12)
    lognormal = -stats.log_sum - b / 2 * (math.log(2 * math.pi * s2) + 1)
    k = gamma_shape(stats)
    gamma = b * (k * math.log(k / stats.mean) - math.lgamma(k) + (k - 1) * stats.mean_log - k)
    return float(expit(lognormal - gamma + math.log(LOGNORMAL_PRIOR_ODDS)))


@dataclass(frozen=True, slots=True)
class LognormalSpend:
    """Mean total of a buying visitor, exp(m + s^2 / 2), when ln(total) ~ Normal(m, s^2).

    Normal-scaled-inverse-chi-square posterior: s^2 ~ df * scale / chi2(df) and, given s^2,
    m ~ Normal(location, s^2 / weight). The mean spend is heavy-tailed exactly when the data
    are: a few buyers with a wide spread leave a long upper tail.
    """

    location: float
    weight: float
    df: float
    scale: float

    @property
    def estimate(self) -> float:
        """exp(location + scale / 2): the mean spend at the posterior's centre."""
        return math.exp(min(max(self.location + self.scale / 2, -_MAX_LOG_SPEND),
                            _MAX_LOG_SPEND))

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """Draw n values of the mean spend per buyer."""
        s2 = np.minimum(self.df * self.scale / rng.chisquare(self.df, size=n), _MAX_LOG_SPEND)
        m = self.location + np.sqrt(s2 / self.weight) * rng.standard_normal(n)
        return np.exp(np.clip(m + s2 / 2, -_MAX_LOG_SPEND, _MAX_LOG_SPEND))


@dataclass(frozen=True, slots=True)
class GammaSpend:
    """Mean total of a buying visitor when totals are Gamma(k, mean / k) with k known.

    The conjugate posterior of the mean is Inverse-Gamma(shape, scale).
    """

    shape: float
    scale: float

    @property
    def estimate(self) -> float:
        """Posterior mean scale / (shape - 1)."""
        return self.scale / (self.shape - 1.0)

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """Draw n values of the mean spend per buyer."""
        g = np.maximum(rng.gamma(self.shape, 1.0, size=n), np.finfo(np.float64).tiny)
        return np.asarray(self.scale / g, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class SpendPosterior:
    """Mean total of a buying visitor, averaged over a lognormal and a Gamma model.

    Order totals are right-skewed, but how heavy the tail is differs: lognormal totals make
    the plain mean's interval under-cover, while for light tails (an Exponential, a few price
    points) a lognormal fit is biased. Each model's posterior is weighted by how well it fits
    the pooled buyers (``lognormal_weight``); with a few hundred buyers one model dominates.
    """

    lognormal: LognormalSpend
    gamma: GammaSpend
    lognormal_weight: float

    @property
    def estimate(self) -> float:
        """The models' estimates, weighted."""
        w = self.lognormal_weight
        return w * self.lognormal.estimate + (1 - w) * self.gamma.estimate

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """Draw n values of the mean spend per buyer from the model average.

        The first round(weight x n) draws come from the lognormal, the rest from the Gamma:
        variants compared draw by draw share the weight, and so each draw's model (drawing
        the model per variant would compare one variant's lognormal with another's Gamma
        and widen every difference by the gap between the two models).
        """
        k = round(self.lognormal_weight * n)
        return np.concatenate([self.lognormal.sample(rng, k), self.gamma.sample(rng, n - k)])


def spend_posterior(data: SpendStats, pooled: SpendStats,
                    prior_weight: float = SPEND_PRIOR_BUYERS) -> SpendPosterior | None:
    """Posterior of one variant's mean spend per buyer; None when nobody in `pooled` bought.

    `pooled` holds the buyers of every variant compared (this one included). They choose
    the model weight and the Gamma shape, so all variants are compared under one model. The
    conjugate priors are shaped like the *other* variants' buyers (this variant's own are
    left out, so that they are not counted twice): for the level worth 1 / (1 + own buyers)
    buyers, for the spread `prior_weight` / (1 + own buyers), at least one. A variant
    without buyers borrows the spread it cannot estimate instead of drawing from a one-buyer
    prior whose exp(s^2 / 2) has no finite moments, and its own buyers soon take over.
    """
    if prior_weight <= 0:
        raise ValueError("prior_weight must be positive")
    if pooled.count <= 0 or pooled.value_sum <= 0:
        return None
    others = SpendStats(pooled.count - data.count, pooled.value_sum - data.value_sum,
                        pooled.log_sum - data.log_sum, pooled.log_sq_sum - data.log_sq_sum)
    # Only this variant bought anything: its own buyers, at one buyer's weight, are the
    # only hint of a scale there is.
    prior, strength = (others, prior_weight) if others.count >= 1 else (data, 1.0)
    mu0 = prior.mean_log
    s0 = prior.spread / (prior.count - 1) if prior.count > 1 else _DEFAULT_LOG_VARIANCE
    s0 = max(s0, 1e-12)
    # The spread's prior is strong while the variant has (almost) no buyers of its own and
    # fades to one buyer's worth as they arrive: a strong prior would be counted again in
    # every comparison with the variants it came from, and over-cover their differences.
    m = data.count
    nu0 = min(max(1.0, strength / (1.0 + m)), max(prior.count, 1.0))
    # The level's prior fades the same way, from one buyer's worth: one that stayed would
    # pull every variant's spend towards the others' (a bias towards no difference) while
    # the intervals kept their width; the uplift covered 98-99% with ten buyers per arm.
    k0 = 1.0 / (1.0 + m)
    weight = k0 + m
    location = (k0 * mu0 + data.log_sum) / weight
    df = nu0 + m
    scale = (nu0 * s0 + data.spread + k0 * m / weight * (data.mean_log - mu0) ** 2) / df
    k = gamma_shape(pooled)
    gamma = GammaSpend(1.0 + (k0 + m) * k,
                       k * (k0 * max(prior.mean, 0.0) + max(data.value_sum, 0.0)))
    return SpendPosterior(LognormalSpend(location, weight, df, scale), gamma,
                          lognormal_weight(pooled))


@dataclass(frozen=True, slots=True)
class RevenuePosterior:
    """Revenue per visitor: sum over parts of weight x P(buy) x mean spend per buyer.

    A hurdle model for per-visitor totals with many zeros and a long tail: whether a visitor
    buys is Beta-Binomial, what a buyer spends in total is ``SpendPosterior``; the likelihood
    factorises, so the two posteriors are independent. One part for a single scope; one per
    persona x channel segment for stratified estimates.
    """

    parts: tuple[tuple[float, BetaPosterior, SpendPosterior | None], ...]

    @property
    def estimate(self) -> float:
        """The model's revenue per visitor at the posterior's centre (no Monte Carlo noise)."""
        return sum(w * rate.mean * spend.estimate for w, rate, spend in self.parts if spend)

    mean = estimate

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """Draw n values of revenue per visitor."""
        out = np.zeros(n)
        for w, rate, spend in self.parts:
            if spend is not None:
                out += w * rate.sample(rng, n) * spend.sample(rng, n)
        return out


def revenue_posterior(exposures: float, buyers: float, spend: SpendStats,
                      prior_alpha: float = 1.0, prior_beta: float = 1.0,
                      pooled: SpendStats | None = None) -> RevenuePosterior:
    """Revenue per visitor of one scope from visitors, buyers and the buyers' sums.

    `pooled` holds the buyers of every variant compared, this one included (see
    ``spend_posterior``); alone, a scope is its own pool.
    """
    rate = beta_posterior(int(buyers), int(exposures), prior_alpha, prior_beta)
    pool = spend if pooled is None else pooled
    return RevenuePosterior(((1.0, rate, spend_posterior(spend, pool)),))


# --- verdict ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """Plain-language decision: "ship", "keep_running" or "no_difference"."""

    decision: str
    winner: str | None
    text: str
    # Always-valid interval of each treatment's absolute uplift (None for the control).
    always_valid: tuple[Interval | None, ...] = ()
    visitors_needed: int | None = None  # more visitors (all variants) before a decision

    def to_dict(self) -> dict[str, Any]:
        """Return the report shape {"decision", "winner", "text", "visitors_needed"}."""
        return {"decision": self.decision, "winner": self.winner, "text": self.text,
                "visitors_needed": self.visitors_needed}


def _pct(p: float) -> str:
    # Rounded down so that "95%" is never shown for 94.96% against a 95% threshold.
    value = math.floor(p * 1000.0 + 1e-9) / 10.0
    return f"{value:.1f}".removesuffix(".0") + "%"


def _num(x: float) -> str:
    return np.format_float_positional(x, precision=2, unique=True, fractional=False, trim="-")


def always_valid_half_width(variance: float, tau2: float, alpha: float) -> float:
    """Half-width of the normal-mixture confidence sequence of a difference (mSPRT).

    For an estimate with variance V and a N(0, tau^2) mixture over the true difference, the
    mixture likelihood ratio sqrt(V / (V + tau^2)) exp(tau^2 d^2 / (2 V (V + tau^2))) stays
    below 1 / alpha at every look with probability 1 - alpha when the true difference is 0
    (Robbins; Johari et al., "Always valid inference"); inverting it gives this interval,
    valid uniformly over every look however often the report is read.
    """
    if variance <= 0:
        return 0.0
    return math.sqrt(variance * (variance + tau2) / tau2
                     * (2.0 * math.log(1.0 / alpha) + math.log((variance + tau2) / variance)))


def _visitors_needed(exposures: Sequence[int], variances: Sequence[float],
                     treatments: Sequence[int], control: int, target: float, tau2: float,
                     alpha: float) -> int | None:
    """More visitors (all arms together) until every interval is as narrow as `target`."""
    if target <= 0:
        return None
    k = len(exposures)
    worst = 1.0
    for i in treatments:
        variance = variances[i] + variances[control]
        if always_valid_half_width(variance, tau2, alpha) <= target:
            continue
        # Variance falls as 1/n: find the growth factor of the sample by bisection.
        lo, hi = 1.0, 2.0
        while always_valid_half_width(variance / hi, tau2, alpha) > target and hi < 1e9:
            lo, hi = hi, hi * 2
        for _ in range(60):
            mid = (lo + hi) / 2
            if always_valid_half_width(variance / mid, tau2, alpha) > target:
                lo = mid
            else:
                hi = mid
        worst = max(worst, hi)
    if worst >= 1e9:
        return None
    current = sum(int(n) for n in exposures)
    return math.ceil(current * (worst - 1.0)) if k else None


def decide_verdict(
    keys: Sequence[str],
    control: str,
    exposures: Sequence[int],
    chance_to_be_best: Sequence[float],
    expected_loss: Sequence[float],
    means: Sequence[float],
    variances: Sequence[float],
    rule: DecisionSettings,
) -> Verdict:
    """The verdict, calibrated for an analyst who reads the report after every visitor.

    Each treatment is compared with the control by an always-valid confidence sequence
    (``always_valid_half_width``) at level alpha / (treatments): the chance that any of them
    ever excludes its true uplift, at any look, is at most alpha.

    1. Any variant below ``rule.min_exposures``: keep_running.
    2. Treatments whose always-valid interval lies above 0 are surely better: the one with
       the smallest expected loss is shipped when that loss is below ``rule.loss_threshold``
       x the control's mean and its chance to be best reaches ``rule.chance_to_be_best`` (or
       another treatment is surely better too: nearly tied winners never reach it).
    3. Every treatment's interval below 0: ship the control (keep it).
    4. Every treatment's interval inside +-rope (``rule.rope`` x the control's mean):
       no_difference.
    5. Otherwise keep_running, with the visitors still needed for the intervals to get as
       narrow as the larger of the observed difference and the rope.
    """
    k = len(keys)
    if not (len(exposures) == len(chance_to_be_best) == len(expected_loss) == len(means)
            == len(variances) == k):
        raise ValueError("keys, exposures, chance_to_be_best, expected_loss, means and "
                         "variances must have the same length")
    if control not in keys:
        raise ValueError(f"control {control!r} is not one of the keys")
    c = keys.index(control)
    treatments = [i for i in range(k) if i != c]
    if not treatments:
        return Verdict("keep_running", None, "Keep running: there is no variant to compare "
                       f"with the control '{control}'.")
    figures = (*means, *variances, *chance_to_be_best, *expected_loss)
    spread = rule.effect_scale * max(abs(float(means[c])), 1e-12)
    if not all(math.isfinite(float(x)) for x in (*figures, spread * spread)):
        # Only absurd counters (values near the float range) get here: say so, never crash.
        return Verdict("keep_running", None, "Keep running: the figures are too large to "
                       "compare (check the values tracked for this metric).")
    alpha = rule.alpha / len(treatments)
    tau2 = spread * spread
    uplift: dict[int, Interval] = {}
    for i in treatments:
        d = float(means[i] - means[c])
        half = always_valid_half_width(float(variances[i] + variances[c]), tau2, alpha)
        uplift[i] = Interval(d, d - half, d + half)
    valid = tuple(uplift.get(i) for i in range(k))

    short = [i for i in range(k) if exposures[i] < rule.min_exposures]
    if short:
        listed = " and ".join(f"'{keys[i]}' has {int(exposures[i])}" for i in short)
        missing = sum(max(rule.min_exposures - int(exposures[i]), 0) for i in range(k))
        return Verdict("keep_running", None, f"Keep running: not enough data yet ({listed} of "
                       f"the {rule.min_exposures} visitors needed per variant).", valid, missing)

    ivs = list(uplift.values())
    # Thresholds are fractions of the control's mean: the same setting means the same for
    # a 2% conversion rate and for 40 (currency) of revenue per visitor.
    scale = abs(float(means[c]))
    max_loss, rope = rule.loss_threshold * scale, rule.rope * scale
    better = [i for i in treatments if uplift[i].lower > 0]
    unclear = ""
    if better:
        # Of the treatments that surely beat the control, the one cheapest to ship.
        best = min(better, key=lambda i: (expected_loss[i], -chance_to_be_best[i]))
        p_best, loss = float(chance_to_be_best[best]), float(expected_loss[best])
        # Two or more sure winners that are nearly tied never reach the chance to be best;
        # a small expected loss says that shipping either costs almost nothing.
        if loss < max_loss and (p_best >= rule.chance_to_be_best or len(better) > 1):
            return Verdict("ship", keys[best], f"Ship '{keys[best]}': it beats '{control}' "
                           f"beyond doubt, however often this report is read (always-valid "
                           f"interval of the uplift {_num(uplift[best].lower)} to "
                           f"{_num(uplift[best].upper)}), {_pct(p_best)} chance to be best, "
                           f"expected loss {_num(loss)}.", valid, 0)
        unclear = (f"'{keys[best]}' beats '{control}' beyond doubt, but is not yet clearly "
                   f"the best variant ({_pct(p_best)} chance to be best, expected loss "
                   f"{_num(loss)})")
    elif all(iv.upper < 0 for iv in ivs):
        return Verdict("ship", control, f"Keep the control '{control}': every variant is "
                       "worse beyond doubt, however often this report is read.", valid, 0)
    if rope > 0 and all(-rope <= iv.lower and iv.upper <= rope for iv in ivs):
        return Verdict("no_difference", None, "No meaningful difference: the always-valid "
                       f"interval of every variant's uplift over '{control}' lies within "
                       f"±{_num(rope)} (±{_pct(rule.rope)} of its mean).", valid, 0)
    target = max(max(abs(iv.estimate) for iv in ivs), rope)
    needed = _visitors_needed(exposures, variances, treatments, c, target, tau2, alpha)
    lead = max(treatments, key=lambda i: chance_to_be_best[i])
    more = (f" About {needed:,} more visitors may settle it." if needed else "")
    if unclear:
        return Verdict("keep_running", None, f"Keep running: {unclear}.{more}", valid, needed)
    return Verdict("keep_running", None, f"Keep running: no variant differs from "
                   f"'{control}' beyond doubt yet ('{keys[lead]}' leads with "
                   f"{_pct(float(chance_to_be_best[lead]))} chance to be best).{more}",
                   valid, needed)


# --- sample-ratio mismatch ----------------------------------------------------------------


def srm_test(observed: Sequence[float], expected_share: Sequence[float]) -> float:
    """p-value of the chi-square goodness-of-fit test of observed exposures against shares.

    Shares are normalised; arms with zero share and zero observations are dropped. Visitors in
    an arm with zero expected share are a mismatch beyond any test (p = 0). With fewer than two
    arms left or no visitors there is nothing to test (p = 1).
    """
    obs = np.asarray(observed, dtype=np.float64)
    share = np.asarray(expected_share, dtype=np.float64)
    if obs.shape != share.shape or obs.ndim != 1:
        raise ValueError("observed and expected_share must be sequences of the same length")
    if np.any(obs < 0) or np.any(share < 0) or not np.all(np.isfinite(obs) & np.isfinite(share)):
        raise ValueError("observed and expected_share must be finite and non-negative")
    if np.any((share == 0) & (obs > 0)):
        return 0.0
    keep = share > 0
    obs, share = obs[keep], share[keep]
    total = obs.sum()
    if len(obs) < 2 or total <= 0:
        return 1.0
    expected = total * share / share.sum()
    statistic = float(np.sum((obs - expected) ** 2 / expected))
    return float(sps.chi2.sf(statistic, len(obs) - 1))
