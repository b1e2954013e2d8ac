"""Bayesian statistics for reports: exact Beta comparisons, revenue per visitor, verdicts, SRM.

Pure numpy/scipy and deterministic given the injected ``numpy.random.Generator``.

- Conversion rates are Beta-Binomial: ``Beta(prior_alpha + conversions, prior_beta + failures)``.
- ``prob_greater`` is exact: the closed-form sum of Evan Miller / Chris Stucchio whenever one
  of the four Beta parameters is an integer small enough, otherwise quadrature.
- ``prob_best`` and ``expected_loss`` integrate over a grid built from every arm's own
  high-density region, so they stay accurate for posteriors from millions of visitors.
- Revenue per visitor is P(convert) x mean value per converting visitor (see
  ``RevenuePosterior``); quantities without a closed form use posterior draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy import stats as sps
from scipy.special import betainc, betaincinv, betaln, logsumexp, xlog1py, xlogy

from experiments.model import DecisionSettings

FloatArray = npt.NDArray[np.float64]

# The closed form for P(X_b > X_a) is a sum with one term per unit of an integer parameter;
# beyond this many terms quadrature is as accurate and cheaper.
MAX_CLOSED_FORM_TERMS = 50_000

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

# Smallest mean value per converting visitor the revenue model accepts: net refunds can make
# the observed mean zero or negative, and the Inverse-Gamma needs a positive scale.
MIN_VALUE = 1e-9

# Pseudo-converters of Exponential dispersion (CV^2 = 1) that the dispersion estimate of the
# revenue model is shrunk towards, so two or three converters cannot claim a near-zero spread.
_DISPERSION_PSEUDO = 2.0
# Keeps kappa (and with it the Inverse-Gamma shape) finite for degenerate inputs.
_SHAPE_BOUNDS = (1e-3, 1e6)


class Sampler(Protocol):
    """A posterior that can be summarised by its mean and sampled."""

    @property
    def mean(self) -> float:
        """Posterior mean."""
        ...

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """Draw n values from the posterior."""
        ...


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with an equal-tailed credible interval."""

    estimate: float
    lower: float
    upper: float

    def to_dict(self) -> dict[str, float]:
        """Return the report shape {"estimate", "lower", "upper"}."""
        return {"estimate": self.estimate, "lower": self.lower, "upper": self.upper}


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def _equal_tailed(draws: FloatArray, estimate: float, level: float) -> Interval:
    tail = (1.0 - level) / 2.0
    lower, upper = np.quantile(draws, [tail, 1.0 - tail])
    return Interval(float(estimate), float(lower), float(upper))


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

    def interval(self, level: float = 0.95) -> Interval:
        """Equal-tailed credible interval from the exact quantiles; the estimate is the mean."""
        _check_level(level)
        tail = (1.0 - level) / 2.0
        lower, upper = betaincinv(self.alpha, self.beta, [tail, 1.0 - tail])
        return Interval(self.mean, float(lower), float(upper))

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


def _is_count(value: float) -> bool:
    return value >= 1.0 and float(value).is_integer()


def _miller_sum(ax: float, bx: float, ay: float, by: float) -> float:
    """P(Y > X) for X ~ Beta(ax, bx), Y ~ Beta(ay, by) with integer ay (closed form)."""
    i = np.arange(int(ay), dtype=np.float64)
    log_terms = (
        betaln(ax + i, bx + by) - np.log(by + i) - betaln(1.0 + i, by) - betaln(ax, bx)
    )
    return float(np.exp(logsumexp(log_terms)))


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


def _prob_greater_quadrature(a: BetaPosterior, b: BetaPosterior) -> float:
    x, w = _grid([a, b])
    return float(np.sum(w * _pdfs([b], x, w)[0] * a.cdf(x)))


def prob_greater(a: BetaPosterior, b: BetaPosterior) -> float:
    """P(X_b > X_a), exactly: closed-form sum when a parameter is a small integer, else quadrature.

    The sum (Evan Miller, Chris Stucchio) needs an integer ``b.alpha`` and has ``b.alpha`` terms;
    three symmetric forms need an integer ``a.alpha``, ``a.beta`` or ``b.beta`` instead (via
    X -> 1 - X and P(X_b > X_a) = 1 - P(X_a > X_b)). The shortest admissible one is used; when
    none has at most ``MAX_CLOSED_FORM_TERMS`` terms, the integral of pdf_b * cdf_a is taken by
    composite Gauss-Legendre quadrature over both posteriors' high-density regions.
    """
    forms = []
    if _is_count(b.alpha):
        forms.append((b.alpha, lambda: _miller_sum(a.alpha, a.beta, b.alpha, b.beta)))
    if _is_count(a.alpha):
        forms.append((a.alpha, lambda: 1.0 - _miller_sum(b.alpha, b.beta, a.alpha, a.beta)))
    if _is_count(a.beta):
        forms.append((a.beta, lambda: _miller_sum(b.beta, b.alpha, a.beta, a.alpha)))
    if _is_count(b.beta):
        forms.append((b.beta, lambda: 1.0 - _miller_sum(a.beta, a.alpha, b.beta, b.alpha)))
    forms = [form for form in forms if form[0] <= MAX_CLOSED_FORM_TERMS]
    if forms:
        value = min(forms, key=lambda form: form[0])[1]()
    else:
        value = _prob_greater_quadrature(a, b)
    return min(max(value, 0.0), 1.0)


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


def _best_and_loss(
    posteriors: Sequence[BetaPosterior], *, best: bool
) -> tuple[FloatArray, FloatArray]:
    _require_arms(posteriors)
    x, w = _grid(posteriors)
    pdf = _pdfs(posteriors, x, w) if best else None
    return _best_and_loss_on(w, pdf, _cdfs(posteriors, x))


def beat_best_and_loss(
    posteriors: Sequence[BetaPosterior], control: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """P(X_i > X_control), P(best) and expected loss of every arm from one shared grid.

    The chance to beat control is the quadrature of pdf_i * cdf_control over the union of
    all arms' high-density panels (exact to quadrature precision, like ``prob_greater``), so
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


def prob_best(posteriors: Sequence[BetaPosterior]) -> FloatArray:
    """P(arm i has the highest rate): quadrature of pdf_i * prod_{j != i} cdf_j, normalised."""
    return _best_and_loss(posteriors, best=True)[0]


def expected_loss(posteriors: Sequence[BetaPosterior]) -> FloatArray:
    """E[max_j X_j - X_i] for each arm i, by quadrature of cdf_i(x) - prod_j cdf_j(x)."""
    return _best_and_loss(posteriors, best=False)[1]


def prob_best_and_expected_loss(
    posteriors: Sequence[BetaPosterior],
) -> tuple[FloatArray, FloatArray]:
    """``(prob_best, expected_loss)`` from one shared grid, at the cost of one of them."""
    return _best_and_loss(posteriors, best=True)


# --- uplift and Monte Carlo comparisons of any sampler ------------------------------------


def uplift(
    control: Sampler,
    treatment: Sampler,
    rng: np.random.Generator,
    draws: int = 200_000,
    level: float = 0.95,
) -> tuple[Interval, Interval]:
    """(absolute, relative) uplift of treatment over control with equal-tailed intervals.

    Absolute: treatment - control; its estimate is the exact difference of posterior means
    (what the mean of the draws estimates, without Monte Carlo noise). Relative:
    treatment / control - 1; its estimate is the median of the draws, which stays finite and
    stable when the control's rate is near zero and the ratio's mean is dominated by the tail.
    """
    _check_level(level)
    c = control.sample(rng, draws)
    t = treatment.sample(rng, draws)
    absolute = _equal_tailed(t - c, treatment.mean - control.mean, level)
    # A control draw of exactly zero (possible only for degenerate posteriors) would make
    # the ratio infinite; the tiny floor keeps every draw finite and ordered.
    tiny = np.finfo(np.float64).tiny
    with np.errstate(over="ignore"):
        ratio = np.minimum(t / np.maximum(c, tiny), np.finfo(np.float64).max) - 1.0
    relative = _equal_tailed(ratio, float(np.median(ratio)), level)
    return absolute, relative


def _draw_matrix(samplers: Sequence[Sampler], rng: np.random.Generator, draws: int) -> FloatArray:
    _require_arms(samplers)
    return np.stack([np.asarray(s.sample(rng, draws), dtype=np.float64) for s in samplers])


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


def sample_prob_best(
    samplers: Sequence[Sampler], rng: np.random.Generator, draws: int = 200_000
) -> FloatArray:
    """Monte Carlo P(arm i has the highest value); exact ties share the win."""
    return best_and_loss_of_draws(_draw_matrix(samplers, rng, draws))[0]


def sample_expected_loss(
    samplers: Sequence[Sampler], rng: np.random.Generator, draws: int = 200_000
) -> FloatArray:
    """Monte Carlo E[max_j X_j - X_i] for each arm i."""
    return best_and_loss_of_draws(_draw_matrix(samplers, rng, draws))[1]


def sample_prob_greater(
    a: Sampler, b: Sampler, rng: np.random.Generator, draws: int = 200_000
) -> float:
    """Monte Carlo P(X_b > X_a); exact ties count one half."""
    return prob_greater_of_draws(a.sample(rng, draws), b.sample(rng, draws))


# --- moment-matched summaries (stratified estimates) ---------------------------------


@dataclass(frozen=True, slots=True)
class NormalPosterior:
    """A Normal summary of a posterior (stratified revenue: a sum of many strata)."""

    mu: float
    sd: float

    @property
    def mean(self) -> float:
        """Posterior mean."""
        return self.mu

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw n values."""
        return rng.normal(self.mu, max(self.sd, 1e-300), size=n)


@dataclass(frozen=True, slots=True)
class GammaPosterior:
    """A positive, right-skewed summary of a posterior (stratified revenue per visitor)."""

    shape: float
    scale: float

    @property
    def mean(self) -> float:
        """Posterior mean."""
        return self.shape * self.scale

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw n values."""
        return rng.gamma(self.shape, self.scale, size=n)


def beta_matching(mean: float, var: float) -> BetaPosterior:
    """The Beta distribution with this mean and variance."""
    mean = min(max(mean, 1e-12), 1 - 1e-12)
    var = min(max(var, 1e-18), mean * (1 - mean) * (1 - 1e-9))
    k = mean * (1 - mean) / var - 1
    return BetaPosterior(mean * k, (1 - mean) * k)


def gamma_matching(mean: float, var: float) -> GammaPosterior | NormalPosterior:
    """The Gamma distribution with this mean and variance (revenue cannot be negative)."""
    if mean <= 0 or var <= 0:
        return NormalPosterior(max(mean, 0.0), math.sqrt(max(var, 0.0)))
    return GammaPosterior(mean**2 / var, var / mean)


def signed_normal(n: float, s: float, q: float) -> NormalPosterior:
    """Posterior of the mean per-visitor value from its sum and sum of squares (CLT)."""
    n = max(n, 1.0)
    mean = s / n
    var = max(q / n - mean**2, 0.0)
    return NormalPosterior(mean, math.sqrt(var / n) if var > 0 else abs(mean) / math.sqrt(n))


# --- revenue per visitor ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevenuePosterior:
    """Revenue per visitor = P(visitor converts) x mean value per converting visitor.

    Conversion is ``Beta``. The mean value per converter, mu, is ``Inverse-Gamma(value_shape,
    value_scale)``, the conjugate posterior of a Gamma likelihood for the converters' totals
    with its shape kappa held at a moment estimate (see ``revenue_posterior``); kappa = 1 is
    the Exponential likelihood. The two posteriors are independent because the likelihood
    factorises into "who converted" and "how much the converters spent".
    """

    conversion: BetaPosterior
    value_shape: float
    value_scale: float

    def __post_init__(self) -> None:
        if not (self.value_shape > 0 and self.value_scale > 0):
            raise ValueError("value_shape and value_scale must be positive")

    @property
    def value_mean(self) -> float:
        """Posterior mean of the mean value per converting visitor."""
        if self.value_shape <= 1.0:
            return math.inf
        return self.value_scale / (self.value_shape - 1.0)

    @property
    def mean(self) -> float:
        """Posterior mean revenue per visitor, E[p] * E[mu] (independent posteriors)."""
        return self.conversion.mean * self.value_mean

    def interval(
        self, level: float = 0.95, rng: np.random.Generator | None = None, draws: int = 200_000
    ) -> Interval:
        """Equal-tailed interval of revenue per visitor from draws; the estimate is the mean."""
        _check_level(level)
        generator = rng if rng is not None else np.random.default_rng(0)
        return _equal_tailed(self.sample(generator, draws), self.mean, level)

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """Draw n values of revenue per visitor."""
        rate = self.conversion.sample(rng, n)
        # mu = scale / G with G ~ Gamma(shape, 1) is Inverse-Gamma(shape, scale); the floor
        # only matters for a shape so small that G underflows.
        gamma = np.maximum(rng.gamma(self.value_shape, 1.0, size=n), np.finfo(np.float64).tiny)
        return np.asarray(rate * (self.value_scale / gamma), dtype=np.float64)


def value_dispersion_shape(converters: float, value_sum: float, value_sq_sum: float) -> float:
    """Gamma shape kappa = 1 / CV^2 of the converters' totals, shrunk towards 1 (Exponential)."""
    c = max(float(converters), 0.0)
    if c < 2.0:
        cv2_data, weight = 1.0, 0.0
    else:
        m = value_sum / c
        var = max((max(value_sq_sum, 0.0) - c * m * m) / (c - 1.0), 0.0)
        # Non-negative totals cannot have a squared CV above c; refunds mixed into the totals
        # can, and would leave an Inverse-Gamma with no finite mean.
        cv2_data = min(var / max(m * m, MIN_VALUE**2), c)
        weight = c
    cv2 = (weight * cv2_data + _DISPERSION_PSEUDO) / (weight + _DISPERSION_PSEUDO)
    return float(np.clip(1.0 / max(cv2, 1e-300), *_SHAPE_BOUNDS))


def revenue_posterior(
    exposures: int,
    converters: int,
    value_sum: float,
    value_sq_sum: float,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    *,
    value_prior_mean: float | None = None,
    value_prior_weight: float = 1.0,
) -> RevenuePosterior:
    """Posterior of revenue per visitor from exposures n, converters c, sum s and sum of squares q.

    Model: a visitor converts with probability p ~ Beta(prior_alpha + c, prior_beta + n - c);
    each converter's total is Gamma(kappa, rate kappa / mu) with mean mu. kappa = 1 / CV^2 is
    estimated from s and q (the coefficient of variation among converters, shrunk towards the
    Exponential's CV = 1 by two pseudo-converters) and then held fixed, so the width of mu's
    posterior follows the observed spread: heavy-tailed order values (CV > 1) give wider
    intervals than an Exponential would, near-constant prices narrower ones. We store no sums
    of logs, so a log-normal model is not available. Given kappa the Gamma prior on the rate
    is conjugate and mu is Inverse-Gamma(1 + (w + c) kappa, kappa (w m0 + s)), whose mean is
    (w m0 + s) / (w + c): the prior is worth w = ``value_prior_weight`` converters spending
    m0 = ``value_prior_mean`` each. Reports should pass the pooled mean value per converter of
    all arms as m0 (a weak prior centred on the pooled data); without it m0 is the arm's own
    mean s / c, which leaves the posterior mean at s / c. An arm with no converters and no m0
    has nothing to say about value and gets mu ~ MIN_VALUE, i.e. revenue ~ 0.

    Negative totals (refunds) are allowed; a non-positive s is clipped to MIN_VALUE per
    converter (with Exponential dispersion) so the model stays proper. Zero-valued converters
    (an event without a value) simply lower the mean and raise the spread.
    """
    if value_prior_weight <= 0:
        raise ValueError("value_prior_weight must be positive")
    conversion = beta_posterior(converters, exposures, prior_alpha, prior_beta)
    n = max(float(exposures), 0.0)
    c = min(max(float(converters), 0.0), n)
    s = float(value_sum)
    clipped = s <= MIN_VALUE * c
    if clipped:
        # Net refunds: the observed spread says nothing about a mean that is really ~zero, so
        # the dispersion falls back to the Exponential's.
        s = MIN_VALUE * c
    if value_prior_mean is not None and math.isfinite(value_prior_mean):
        m0 = max(float(value_prior_mean), MIN_VALUE)
    elif c > 0:
        m0 = s / c
    else:
        m0 = MIN_VALUE
    kappa = 1.0 if clipped else value_dispersion_shape(c, s, float(value_sq_sum))
    w = float(value_prior_weight)
    return RevenuePosterior(
        conversion=conversion,
        value_shape=1.0 + (w + c) * kappa,
        value_scale=kappa * (w * m0 + s),
    )


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
    2. Treatments whose always-valid interval lies above 0 are surely better: the one most
       likely to be best is shipped when its chance to be best and expected loss also meet
       the thresholds.
    3. Every treatment's interval below 0: ship the control (keep it).
    4. Every treatment's interval inside [-rope, +rope]: no_difference.
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
    alpha = rule.alpha / len(treatments)
    tau2 = (rule.effect_scale * max(abs(means[c]), 1e-12)) ** 2
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
    better = [i for i in treatments if uplift[i].lower > 0]
    if better:
        best = max(better, key=lambda i: (chance_to_be_best[i], means[i]))
        p_best, loss = float(chance_to_be_best[best]), float(expected_loss[best])
        if p_best >= rule.chance_to_be_best and loss < rule.loss_threshold:
            return Verdict("ship", keys[best], f"Ship '{keys[best]}': it beats '{control}' "
                           f"beyond doubt, however often this report is read (always-valid "
                           f"{_pct(1 - rule.alpha)} interval of the uplift "
                           f"{_num(uplift[best].lower)} to {_num(uplift[best].upper)}), "
                           f"{_pct(p_best)} chance to be best, expected loss {_num(loss)}.",
                           valid, 0)
    elif all(iv.upper < 0 for iv in ivs):
        return Verdict("ship", control, f"Keep the control '{control}': every variant is "
                       "worse beyond doubt, however often this report is read.", valid, 0)
    if all(-rule.rope <= iv.lower and iv.upper <= rule.rope for iv in ivs):
        return Verdict("no_difference", None, "No meaningful difference: the always-valid "
                       f"interval of every variant's uplift over '{control}' lies within "
                       f"±{_num(rule.rope)}.", valid, 0)
    target = max(max(abs(iv.estimate) for iv in ivs), rule.rope)
    needed = _visitors_needed(exposures, variances, treatments, c, target, tau2, alpha)
    lead = max(treatments, key=lambda i: chance_to_be_best[i])
    more = (f" About {needed:,} more visitors may settle it." if needed else "")
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
