"""BG/NBD and Gamma-Gamma (experiments/customer_value.py) against the literature and references.

- Fits on the CDNOW sample reproduce the published estimates (Fader, Hardie & Lee 2005;
  Fader & Hardie 2013), read from the data files that ship with ``lifetimes``.
- Predictions agree with ``lifetimes``' own formulas evaluated at the same parameters, and
  with a quadrature of the defining expectation written out again here.
- Simulations from the generative processes with known parameters are recovered within their
  standard errors, computed from a log-likelihood written out again here (another form).
"""

from __future__ import annotations

import csv
import importlib.util
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import betaln, gammaln, hyp2f1

from experiments.customer_value import (
    BgNbdParams,
    CustomerValueModel,
    FitError,
    GammaGammaParams,
    expected_purchases,
    expected_spend,
    fit_bgnbd,
    fit_customer_value,
    fit_gamma_gamma,
    p_alive,
    predicted_value,
)

# Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way", CDNOW cohort, weeks.
FHL_2005 = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
# Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary Value", same customers, dollars.
FH_2013 = {"p": 6.25, "q": 3.74, "v": 15.44}
CDNOW_CUSTOMERS = 2357
CDNOW_REPEAT_CUSTOMERS = 946


def lifetimes_dataset(name: str) -> Path:
    """Path of a data file shipped with the lifetimes package (a test dependency: it must be)."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("lifetimes is not installed (pip install -e '.[test]'); its CDNOW files "
                    "are the published data")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / name
    if not path.exists():
        pytest.fail(f"lifetimes has no {path.name}")
    return path


def read_columns(name: str) -> dict[str, np.ndarray]:
    """Every column of a lifetimes CSV as a float array, keyed by its header name."""
    with lifetimes_dataset(name).open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    return {col: np.array([float(row[i]) for row in body]) for i, col in enumerate(header)}


@pytest.fixture(scope="module")
def cdnow() -> dict[str, np.ndarray]:
    """The CDNOW summary: ID, frequency, recency, T (weeks)."""
    data = read_columns("cdnow_customers_summary.csv")
    assert list(data) == ["ID", "frequency", "recency", "T"]
    assert len(data["ID"]) == CDNOW_CUSTOMERS
    return data


@pytest.fixture(scope="module")
def cdnow_spend() -> dict[str, np.ndarray]:
    """The CDNOW summary with spend: ID, x, t_x, T, zbar (mean repeat purchase, dollars)."""
    data = read_columns("cdnow_customers_summary_with_transactions.csv")
    assert list(data) == ["ID", "x", "t_x", "T", "zbar"]
    assert len(data["ID"]) == CDNOW_CUSTOMERS
    assert np.count_nonzero(data["x"] > 0) == CDNOW_REPEAT_CUSTOMERS
    return data


@pytest.fixture(scope="module")
def cdnow_fit(cdnow: dict[str, np.ndarray]) -> BgNbdParams:
    return fit_bgnbd(cdnow["frequency"], cdnow["recency"], cdnow["T"])


@pytest.fixture(scope="module")
def cdnow_spend_fit(cdnow_spend: dict[str, np.ndarray]) -> GammaGammaParams:
    repeat = cdnow_spend["x"] > 0
    return fit_gamma_gamma(cdnow_spend["x"][repeat], cdnow_spend["zbar"][repeat])


# --- references written out again here ----------------------------------------------------


def bgnbd_loglik(theta: np.ndarray, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> float:
    """Total BG/NBD log-likelihood at log-parameters, as FHL 2005 eq. 6 rearranged."""
    r, alpha, a, b = np.exp(theta)
    # L = Gamma(r+x) alpha^r B(a, b+x) / (Gamma(r) (alpha+T)^(r+x) B(a, b))
    #     * (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))
    base = (gammaln(r + x) - gammaln(r) + r * np.log(alpha) - (r + x) * np.log(alpha + T)
            + betaln(a, b + x) - betaln(a, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = np.log(a) - np.log(b + x - 1) + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
    return float(np.sum(base + np.where(x > 0, np.logaddexp(0.0, odds), 0.0)))


def gamma_gamma_loglik(theta: np.ndarray, x: np.ndarray, m: np.ndarray) -> float:
    """Total Gamma-Gamma log-likelihood: the mean of x Gamma(p, nu) values, nu ~ Gamma(q, v)."""
    p, q, v = np.exp(theta)
    # The mean of x values is Gamma(p x, rate nu x); integrating nu out gives this density.
    log_density = (gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v)
                   + (p * x - 1) * np.log(m) + p * x * np.log(x)
                   - (p * x + q) * np.log(v + m * x))
    return float(np.sum(log_density))


def hessian(f, theta: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central finite-difference Hessian of f at theta."""
    steps = np.eye(len(theta)) * h
    return np.array([[(f(theta + si + sj) - f(theta + si - sj) - f(theta - si + sj)
                       + f(theta - si - sj)) / (4 * h * h) for sj in steps] for si in steps])


def gradient(f, theta: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central finite-difference gradient of f at theta."""
    steps = np.eye(len(theta)) * h
    return np.array([(f(theta + s) - f(theta - s)) / (2 * h) for s in steps])


def quadrature_purchases(params: BgNbdParams, t: float, x: float, tx: float, T: float) -> float:
    """E[purchases in (T, T+t] | x, t_x, T] by integrating over the dropout probability."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    # Alive at T the posterior is lambda ~ Gamma(r+x, alpha+T), q ~ Beta(a, b+x); a customer
    # who drops out with probability q after each purchase buys (1 - e^(-lambda q t))/q in t.
    s, k, beta = r + x, t / (alpha + T), b + x
    log_b = betaln(a, beta)

    def g(q: float) -> float:
        return -math.expm1(-s * math.log1p(q * k)) / q if q > 0 else s * k

    def density(q: float) -> float:
        if q <= 0 or q >= 1:
            return 0.0
        return math.exp((a - 1) * math.log(q) + (beta - 1) * math.log1p(-q) - log_b)

    def quad(f, lo: float, hi: float, points: list[float] | None = None) -> float:
        return integrate.quad(f, lo, hi, points=points or None, epsabs=0, epsrel=1e-12,
                              limit=500)[0]

    cuts = [float(c) for c in stats.beta.ppf(
        [1e-8, 1e-4, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1 - 1e-4, 1 - 1e-8], a, beta)]
    # Each half by itself: a density singular at 0 (a < 1) or at 1 (b + x < 1) is integrated
    # in u = q^a or v = (1-q)^(b+x), where it is bounded.
    if a < 1:
        left = quad(lambda u: g(u ** (1 / a)) * math.exp(
            (beta - 1) * math.log1p(-u ** (1 / a)) - log_b) / a, 0, 0.5 ** a,
            [c ** a for c in cuts if 0 < c < 0.5])
    else:
        left = quad(lambda q: g(q) * density(q), 0, 0.5, [c for c in cuts if 0 < c < 0.5])
    if beta < 1:
        right = quad(lambda v: g(1 - v ** (1 / beta)) * math.exp(
            (a - 1) * math.log1p(-v ** (1 / beta)) - log_b) / beta, 0, 0.5 ** beta,
            [(1 - c) ** beta for c in cuts if 0.5 < c < 1])
    else:
        right = quad(lambda q: g(q) * density(q), 0.5, 1, [c for c in cuts if 0.5 < c < 1])
    alive = 1.0
    if x > 0:
        odds = a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x)
        alive = 1 / (1 + odds)
    return alive * (left + right)


def series_purchases(params: BgNbdParams, t: float, x: float, tx: float, T: float) -> float:
    """The same expectation as a power series: for b + x so large that q is tiny."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    # (1 - (1+qk)^-s)/q = sum_n (-1)^(n+1) (s)_n/n! k^n q^(n-1) and, under Beta(a, b+x),
    # E[q^(n-1)] = (a)_(n-1) / (a+b+x)_(n-1); the terms shrink ~ s k a / (b+x) each step.
    s, k = r + x, t / (alpha + T)
    terms, term = [], s * k
    for n in range(1, 200):
        terms.append(term)
        term *= -(s + n) * k / (n + 1) * (a + n - 1) / (a + b + x + n - 1)
        if abs(term) < 1e-18 * abs(terms[0]):
            break
    odds = a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x) if x > 0 else 0.0
    return math.fsum(terms) / (1 + odds)


def simulate_bgnbd(rng: np.random.Generator, n: int, params: BgNbdParams,
                   T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw (x, t_x) of n customers observed for T from the BG/NBD process."""
    lam = rng.gamma(params.r, 1 / params.alpha, n)
    drop = rng.beta(params.a, params.b, n)
    x, tx, clock = np.zeros(n), np.zeros(n), np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        arrival = clock[idx] + rng.exponential(1 / lam[idx])
        late = arrival > T[idx]
        active[idx[late]] = False
        buyers = idx[~late]
        clock[buyers] = tx[buyers] = arrival[~late]
        x[buyers] += 1
        # After every repeat purchase the customer drops out with their probability.
        active[buyers[rng.random(buyers.size) < drop[buyers]]] = False
    return x, tx


# --- the literature -----------------------------------------------------------------------


def test_bgnbd_reproduces_fader_hardie_lee_2005(cdnow_fit: BgNbdParams) -> None:
    fitted = cdnow_fit.to_json()
    for name, published in FHL_2005.items():
        assert fitted[name] == pytest.approx(published, rel=0.01), name


def test_gamma_gamma_reproduces_fader_hardie_2013(cdnow_spend_fit: GammaGammaParams) -> None:
    fitted = cdnow_spend_fit.to_json()
    for name, published in FH_2013.items():
        assert fitted[name] == pytest.approx(published, rel=0.01), name


def test_fits_are_maxima_of_an_independent_likelihood(
        cdnow: dict[str, np.ndarray], cdnow_spend: dict[str, np.ndarray],
        cdnow_fit: BgNbdParams, cdnow_spend_fit: GammaGammaParams) -> None:
    x, tx, T = cdnow["frequency"], cdnow["recency"], cdnow["T"]
    theta = np.log(list(cdnow_fit.to_json().values()))
    # Flat at the optimum: ~1e-3 is rounding of the finite differences; one standard error
    # away the slope is ~30 (information ~1/SE^2 times SE).
    assert np.abs(gradient(lambda t: bgnbd_loglik(t, x, tx, T), theta)).max() < 2e-3
    repeat = cdnow_spend["x"] > 0
    xs, m = cdnow_spend["x"][repeat], cdnow_spend["zbar"][repeat]
    theta = np.log(list(cdnow_spend_fit.to_json().values()))
    assert np.abs(gradient(lambda t: gamma_gamma_loglik(t, xs, m), theta)).max() < 2e-3


# --- lifetimes as an independent implementation of the predictions ------------------------


def test_predictions_agree_with_lifetimes(cdnow_spend: dict[str, np.ndarray],
                                          cdnow_fit: BgNbdParams,
                                          cdnow_spend_fit: GammaGammaParams) -> None:
    try:
        with warnings.catch_warnings():  # lifetimes 0.11 sets pandas options pandas 3 deprecates
            warnings.simplefilter("ignore")
            import pandas as pd
            from lifetimes import BetaGeoFitter, GammaGammaFitter
    except Exception as exc:  # e.g. a scipy that lifetimes 0.11 no longer imports against
        # The data files are read without importing it; this comparison needs its code.
        pytest.fail(f"lifetimes does not import here ({type(exc).__name__}: {exc})")
    x, tx, T, m = (cdnow_spend[c] for c in ("x", "t_x", "T", "zbar"))
    bg = BetaGeoFitter()
    bg.params_ = pd.Series(cdnow_fit.to_json())
    gg = GammaGammaFitter()
    gg.params_ = pd.Series(cdnow_spend_fit.to_json())

    ours_alive = p_alive(cdnow_fit, x, tx, T)
    theirs_alive = np.asarray(bg.conditional_probability_alive(x, tx, T))
    np.testing.assert_allclose(ours_alive, theirs_alive, rtol=1e-6)
    for horizon in (1.0, 52.0, 520.0):
        ours = expected_purchases(cdnow_fit, horizon, x, tx, T)
        theirs = np.asarray(bg.conditional_expected_number_of_purchases_up_to_time(
            horizon, x, tx, T))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    ours_spend = expected_spend(cdnow_spend_fit, x, m)
    theirs_spend = np.asarray(gg.conditional_expected_average_profit(x, m))
    np.testing.assert_allclose(ours_spend, theirs_spend, rtol=1e-6)
    np.testing.assert_allclose(
        predicted_value(cdnow_fit, cdnow_spend_fit, 52.0, x, tx, T, m),
        np.asarray(bg.conditional_expected_number_of_purchases_up_to_time(52.0, x, tx, T))
        * theirs_spend, rtol=1e-6)
    # Not a vacuous agreement: the customers differ widely.
    assert ours_alive.min() < 0.05 and ours_alive.max() == 1.0
    assert np.ptp(ours_spend) > 50


# --- predictions against closed forms and quadrature ---------------------------------------


def test_expected_purchases_match_quadrature_across_parameters() -> None:
    rng = np.random.default_rng(20050101)
    worst = 0.0
    cases = [(BgNbdParams(0.243, 4.414, 0.793, 2.426), 52.0, 2.0, 30.43, 38.86),
             (BgNbdParams(0.5, 3.0, 1.0, 2.0), 20.0, 3.0, 5.0, 10.0),  # a = 1: 0/0 in eq. 10
             (BgNbdParams(0.5, 3.0, 1 + 3e-5, 2.0), 20.0, 3.0, 5.0, 10.0),
             (BgNbdParams(0.3, 4.0, 50.0, 0.01), 10.0, 0.0, 0.0, 10.0),  # b + x < 1
             (BgNbdParams(0.3, 4.0, 1e4, 3e4), 10.0, 1.0, 5.0, 10.0),  # hyp2f1 NaN (Euler)
             (BgNbdParams(2.1, 1e3, 97.0, 86.0), 1e6, 90.0, 5.0, 50.0)]  # z ~ 0.999: both NaN
    for _ in range(60):
        params = BgNbdParams(*np.exp(rng.uniform([-4, -3, -3, -3], [4, 8, 4, 4])))
        x = float(rng.integers(0, 60))
        T = float(np.exp(rng.uniform(-2, 6)))
        tx = float(rng.uniform(0, T)) if x else 0.0
        cases.append((params, float(np.exp(rng.uniform(-4, 7))), x, tx, T))
    for params, t, x, tx, T in cases:
        ours = float(expected_purchases(params, t, x, tx, T))
        reference = quadrature_purchases(params, t, x, tx, T)
        worst = max(worst, abs(ours - reference) / reference)
    assert worst < 1e-8


def test_expected_purchases_of_new_customers_match_the_direct_formula() -> None:
    # x = 0: eq. 10 with scipy's hyp2f1 in the paper's own (untransformed) form.
    params = BgNbdParams(0.243, 4.414, 0.793, 2.426)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    T = np.array([0.0, 1.0, 10.0, 38.86, 300.0])
    for t in (0.5, 52.0, 1000.0):
        z = t / (alpha + T + t)
        direct = ((a + b - 1) / (a - 1)
                  * (1 - ((alpha + T) / (alpha + T + t)) ** r * hyp2f1(r, b, a + b - 1, z)))
        np.testing.assert_allclose(expected_purchases(params, t, 0, 0, T), direct, rtol=1e-10)
    np.testing.assert_array_equal(p_alive(params, np.zeros(5), np.zeros(5), T), 1.0)


def test_p_alive_in_unit_interval_and_expected_purchases_grow_with_horizon(
        cdnow: dict[str, np.ndarray], cdnow_fit: BgNbdParams) -> None:
    x, tx, T = cdnow["frequency"], cdnow["recency"], cdnow["T"]
    alive = p_alive(cdnow_fit, x, tx, T)
    assert np.all((alive >= 0) & (alive <= 1))
    np.testing.assert_array_equal(alive[x == 0], 1.0)
    # A customer who bought often, long ago, is likely gone; one who just bought is not.
    assert float(p_alive(cdnow_fit, 10, 5, 38)) < 0.01 < 0.9 < float(p_alive(cdnow_fit, 10, 38,
                                                                             38))
    horizons = np.array([0.0, 0.01, 0.1, 1, 5, 13, 26, 52, 104, 520, 5200, 1e5])
    grid = expected_purchases(cdnow_fit, horizons[:, None], x, tx, T)
    assert grid.shape == (len(horizons), len(x))
    np.testing.assert_array_equal(grid[0], 0.0)
    assert np.all(np.diff(grid, axis=0) > 0)


def test_huge_counts_stay_finite() -> None:
    params = BgNbdParams(0.243, 4.414, 0.793, 2.426)
    x, T = 1e6, 1e6
    # Bought a million times, the last at T: alive, and buying at about x / T per unit.
    assert float(p_alive(params, x, T, T)) == pytest.approx(1.0, abs=1e-5)
    purchases = expected_purchases(params, [1.0, 52.0, 1e4], x, T, T)
    assert np.all(np.isfinite(purchases))
    np.testing.assert_allclose(purchases, [series_purchases(params, t, x, T, T)
                                           for t in (1.0, 52.0, 1e4)], rtol=1e-9)
    assert purchases[1] == pytest.approx(52.0, rel=1e-3)
    # The same customer silent for half the time is certainly gone: 0, not NaN.
    assert float(p_alive(params, x, T / 2, T)) == 0.0
    assert float(expected_purchases(params, 52.0, x, T / 2, T)) == 0.0
    # A fit with such customers among ordinary ones.
    fitted = fit_bgnbd([1e6, 5e5, 0, 3, 1, 0], [1e5, 9e4, 0, 20, 2, 0],
                       [1e5, 1e5, 1e5, 30, 40, 50])
    assert all(math.isfinite(v) and v > 0 for v in fitted.to_json().values())
    spend = fit_gamma_gamma([1e6, 2e6, 3, 1], [20.0, 25.0, 18.0, 40.0])
    assert all(math.isfinite(v) and v > 0 for v in spend.to_json().values())
    assert np.isfinite(expected_spend(spend, 1e6, 20.0))


def test_expected_spend_closed_form_and_undefined_mean() -> None:
    params = GammaGammaParams(p=6.25, q=3.74, v=15.44)
    # x = 0: the population mean p v / (q - 1), whatever the (meaningless) monetary value.
    np.testing.assert_allclose(expected_spend(params, [0, 0], [0.0, 99.0]),
                               6.25 * 15.44 / 2.74)
    # Many purchases: the customer's own mean dominates.
    assert float(expected_spend(params, 1e6, 42.0)) == pytest.approx(42.0, rel=1e-5)
    heavy = GammaGammaParams(p=0.1, q=0.8, v=10.0)
    spend = expected_spend(heavy, [0, 1, 3], [0.0, 20.0, 20.0])
    assert math.isnan(spend[0]) and math.isnan(spend[1])  # p x + q - 1 <= 0: no finite mean
    assert spend[2] == pytest.approx(0.1 * (10 + 60) / (0.3 + 0.8 - 1))


# --- simulations with known parameters ----------------------------------------------------


def test_bgnbd_recovers_simulated_parameters() -> None:
    truth = BgNbdParams(r=0.25, alpha=4.0, a=0.8, b=2.5)
    rng = np.random.default_rng(7)
    T = rng.uniform(26, 78, 5000)
    x, tx = simulate_bgnbd(rng, 5000, truth, T)
    fitted = fit_bgnbd(x, tx, T)
    theta = np.log(list(fitted.to_json().values()))
    true_theta = np.log(list(truth.to_json().values()))

    def loglik(t: np.ndarray) -> float:
        return bgnbd_loglik(t, x, tx, T)

    assert loglik(theta) >= loglik(true_theta)
    se = np.sqrt(np.diag(np.linalg.inv(-hessian(loglik, theta))))
    # 5,000 customers pin r and alpha to a few %, a and b (dropout) only to ~15%.
    assert np.all(se < 0.25)
    assert np.all(np.abs(theta - true_theta) < 4 * se), (fitted, se)


def test_gamma_gamma_recovers_simulated_parameters() -> None:
    truth = GammaGammaParams(p=6.0, q=4.0, v=15.0)
    rng = np.random.default_rng(11)
    n = 5000
    x = 1 + rng.poisson(2.0, n)
    nu = rng.gamma(truth.q, 1 / truth.v, n)
    m = rng.gamma(truth.p * x, 1 / (nu * x))  # the mean of x Gamma(p, nu) values
    fitted = fit_gamma_gamma(x, m)
    theta = np.log(list(fitted.to_json().values()))
    true_theta = np.log(list(truth.to_json().values()))

    def loglik(t: np.ndarray) -> float:
        return gamma_gamma_loglik(t, x, m)

    assert loglik(theta) >= loglik(true_theta)
    se = np.sqrt(np.diag(np.linalg.inv(-hessian(loglik, theta))))
    assert np.all(se < 0.25)
    assert np.all(np.abs(theta - true_theta) < 4 * se), (fitted, se)


# --- fitting details ----------------------------------------------------------------------


def test_fit_is_invariant_to_the_time_and_currency_units(
        cdnow_spend: dict[str, np.ndarray], cdnow_fit: BgNbdParams,
        cdnow_spend_fit: GammaGammaParams) -> None:
    x, tx, T, m = (cdnow_spend[c] for c in ("x", "t_x", "T", "zbar"))
    days = fit_bgnbd(x, tx * 7, T * 7)
    for name in ("r", "a", "b"):
        assert getattr(days, name) == pytest.approx(getattr(cdnow_fit, name), rel=1e-6)
    assert days.alpha == pytest.approx(7 * cdnow_fit.alpha, rel=1e-6)
    cents = fit_gamma_gamma(x, m * 100)
    assert cents.p == pytest.approx(cdnow_spend_fit.p, rel=1e-6)
    assert cents.q == pytest.approx(cdnow_spend_fit.q, rel=1e-6)
    assert cents.v == pytest.approx(100 * cdnow_spend_fit.v, rel=1e-6)


def test_weights_count_identical_customers(cdnow: dict[str, np.ndarray]) -> None:
    x, tx, T = (cdnow[c][:600] for c in ("frequency", "recency", "T"))
    weights = 1 + np.arange(600) % 4
    weighted = fit_bgnbd(x, tx, T, weights=weights)
    repeated = fit_bgnbd(np.repeat(x, weights), np.repeat(tx, weights), np.repeat(T, weights))
    plain = fit_bgnbd(x, tx, T)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(weighted, name) == pytest.approx(getattr(repeated, name), rel=1e-6)
    assert abs(weighted.b / plain.b - 1) > 1e-3  # the weights did change the fit
    spend_weighted = fit_gamma_gamma([1, 2, 3, 1], [10.0, 30.0, 12.0, 50.0], weights=[3, 1, 2, 1])
    spend_repeated = fit_gamma_gamma([1, 1, 1, 2, 3, 3, 1], [10.0] * 3 + [30.0, 12, 12, 50])
    assert spend_weighted.to_json() == pytest.approx(spend_repeated.to_json(), rel=1e-6)


def test_gamma_gamma_leaves_out_customers_it_cannot_use(
        cdnow_spend: dict[str, np.ndarray], cdnow_spend_fit: GammaGammaParams) -> None:
    # Non-repeat customers (all of CDNOW's zbar = 0 rows) and zero-spend repeat customers.
    x = np.concatenate([cdnow_spend["x"], [4, 1]])
    m = np.concatenate([cdnow_spend["zbar"], [0.0, 0.0]])
    assert fit_gamma_gamma(x, m).to_json() == pytest.approx(cdnow_spend_fit.to_json(),
                                                            rel=1e-9)


def test_few_customers_fit_or_explain() -> None:
    for x, tx, T in [([1, 0], [5, 0], [10, 10]), ([2, 3], [5, 9], [10, 10]),
                     ([1, 1, 1], [5, 5, 5], [10, 10, 10]), ([5, 0, 2], [3, 0, 8], [9, 4, 8])]:
        params = fit_bgnbd(x, tx, T)
        assert all(math.isfinite(v) and v > 0 for v in params.to_json().values())
        assert np.all(np.isfinite(expected_purchases(params, 52, x, tx, T)))
        assert np.all(np.isfinite(p_alive(params, x, tx, T)))
    with pytest.raises(FitError, match="at least 2 customers"):
        fit_bgnbd([3], [2], [5])
    with pytest.raises(FitError, match="repeat purchases"):
        fit_bgnbd([0, 0, 0], [0, 0, 0], [1, 2, 3])
    with pytest.raises(FitError, match="at least 2 customers"):
        fit_gamma_gamma([0, 3, 2], [0, 10.0, 0.0])  # one repeat buyer with positive spend


def test_invalid_inputs_name_the_column() -> None:
    good = ([1, 0], [1, 0], [2, 2])
    cases: list[tuple[tuple[Any, Any, Any], str]] = [
        (([1, -1], [1, 0], [2, 2]), "frequency"),
        (([1.5, 0], [1, 0], [2, 2]), "frequency"),
        (([1, 0], [3, 0], [2, 2]), "recency"),
        (([1, 0], [-1, 0], [2, 2]), "recency"),
        (([1, 0], [np.nan, 0], [2, 2]), "recency"),
        (([1, 0], [1, 0], [2, np.inf]), "T"),
        (([1, 0], [1, 0], ["2", "x"]), "T"),
        (([1, 0], [1, 0], [2, 2, 2]), "same length")]
    for args, column in cases:
        with pytest.raises(ValueError, match=column):
            fit_bgnbd(*args)
    with pytest.raises(ValueError, match="weights"):
        fit_bgnbd(*good, weights=[1, -1])
    with pytest.raises(ValueError, match="t_x"):
        p_alive(BgNbdParams(1, 1, 1, 1), 2, 5, 4)
    with pytest.raises(ValueError, match="t must be"):
        expected_purchases(BgNbdParams(1, 1, 1, 1), -1, 2, 1, 4)
    with pytest.raises(ValueError, match="monetary_value"):
        fit_gamma_gamma([1, 2, 3], [10.0, -1.0, 5.0])
    # Without repeat purchases recency is not used: a stray value is tolerated.
    assert float(p_alive(BgNbdParams(1, 1, 1, 1), 0, 1.5, 2)) == 1.0


def test_scalars_and_arrays_give_the_same_answers(cdnow_fit: BgNbdParams) -> None:
    scalar = p_alive(cdnow_fit, 2, 30.43, 38.86)
    assert isinstance(scalar, np.ndarray) and scalar.shape == ()
    vector = p_alive(cdnow_fit, [2, 2], [30.43, 30.43], [38.86, 38.86])
    assert float(scalar) == vector[0] == vector[1]
    assert float(expected_purchases(cdnow_fit, 52, 2, 30.43, 38.86)) == pytest.approx(
        float(expected_purchases(cdnow_fit, [52], [2], [30.43], [38.86])[0]), rel=1e-15)


def test_params_json_round_trip_and_validation() -> None:
    params = BgNbdParams(0.243, 4.414, 0.793, 2.426)
    assert BgNbdParams.from_json(params.to_json()) == params
    spend = GammaGammaParams.from_json({"p": 6, "q": 3.74, "v": 15.44})
    assert spend.p == 6.0 and isinstance(spend.p, float)
    for bad in [{"r": 1, "alpha": 1, "a": 1}, {"r": 1, "alpha": 1, "a": 1, "b": 1, "c": 1},
                {"r": -1, "alpha": 1, "a": 1, "b": 1}, {"r": 0, "alpha": 1, "a": 1, "b": 1},
                {"r": float("nan"), "alpha": 1, "a": 1, "b": 1},
                {"r": float("inf"), "alpha": 1, "a": 1, "b": 1},
                {"r": "1", "alpha": 1, "a": 1, "b": 1}, {"r": True, "alpha": 1, "a": 1, "b": 1},
                [1, 1, 1, 1]]:
        with pytest.raises(ValueError):
            BgNbdParams.from_json(bad)
    with pytest.raises(ValueError):
        GammaGammaParams(p=1.0, q=-2.0, v=1.0)
    model = CustomerValueModel(params, spend, customers=10, fitted_at_ms=1234)
    assert CustomerValueModel.from_json(model.to_json()) == model
    bare = CustomerValueModel(params, None, customers=3)
    assert CustomerValueModel.from_json(bare.to_json()) == bare


def test_fit_customer_value_fits_both_models(cdnow_spend: dict[str, np.ndarray],
                                             cdnow_fit: BgNbdParams) -> None:
    x, tx, T, m = (cdnow_spend[c] for c in ("x", "t_x", "T", "zbar"))
    model = fit_customer_value(x, tx, T, m, fitted_at_ms=5)
    assert model.customers == CDNOW_CUSTOMERS and model.fitted_at_ms == 5
    assert model.bgnbd.r == pytest.approx(cdnow_fit.r, rel=1e-9)
    assert model.gamma_gamma is not None
    assert model.gamma_gamma.q == pytest.approx(FH_2013["q"], rel=0.01)
    assert fit_customer_value(x, tx, T).gamma_gamma is None
