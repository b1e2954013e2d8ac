"""Customer lifetime value: BG/NBD purchase counts and Gamma-Gamma spend, by maximum likelihood.

Pure numpy/scipy. Each customer is summarised by ``x`` (repeat purchases: purchases after the
first), ``t_x`` (time from the first purchase to the last) and ``T`` (time from the first
purchase to the end of observation), in any one time unit, and optionally by the mean value of
the repeat purchases.

- BG/NBD (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way"): while alive a
  customer buys at Poisson rate ``lambda ~ Gamma(r, alpha)``; after each purchase they drop out
  with probability ``p ~ Beta(a, b)``.
- Gamma-Gamma (Fader & Hardie 2013, "The Gamma-Gamma Model of Monetary Value"): a purchase's
  value is ``Gamma(p, nu)`` with ``nu ~ Gamma(q, gamma)`` per customer, independent of the
  purchase process; ``gamma`` is called ``v`` here, as ``lifetimes`` does.

Likelihoods are written in log space (gammaln, betaln, logaddexp), so customers with a million
purchases neither overflow nor lose the others' precision. Times and spends are rescaled to a
unit mean before fitting: the models are scale invariant (alpha and v carry the unit), and
scaled data keep the optimiser's log-parameters within a few units of zero whatever the unit.

Conditional expected purchases (FHL 2005, eq. 10) use scipy.special.hyp2f1 after Euler's
transformation, whose series stays tame for huge x (the paper's form overflows there). Short
horizons use a power series instead (no cancellation in 1 - G); entries where hyp2f1 returns
NaN, inf or a value outside the expectation's elementary bounds (large a and b with z near 1)
fall back to the paper's form, then to quadrature. Every regime is checked against
quadrature in tests/test_customer_value.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from scipy import integrate, optimize
from scipy.special import betaincinv, betaln, digamma, expit, gammaln, hyp2f1

FloatArray = npt.NDArray[np.float64]

# Log-parameters are kept within exp(+-23) ~ 1e-10 .. 1e10 of the scaled data: wide enough for
# any real population, narrow enough that gammaln and friends stay finite when a degenerate
# sample (a handful of customers) pushes an estimate towards 0 or infinity.
_LOG_BOUND = 23.0
# Within this distance of a = 1 the conditional expectation's (1 - G) / (a - 1) is a 0/0 that
# doubles resolve badly; it is smooth in a, so it is interpolated from a = 1 -+ _A_ONE_GAP.
_A_ONE_GAP = 1e-4
# Where max(r + x, 1) t / (alpha + T) is below this, eq. 10 is summed as a power series in
# t / (alpha + T): its terms shrink at least 50-fold each, so 12 of them reach rounding.
_SERIES_BELOW = 0.02
_SERIES_TERMS = 12


class FitError(ValueError):
    """The data cannot determine the model (too few customers, no repeat purchases...)."""


def _positive_finite(name: str, value: Any) -> float:
    """Return value as a float if it is a positive finite real number, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    result = float(value)
    if not (math.isfinite(result) and result > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return result


class _Params:
    """JSON round trip and validation shared by the parameter dataclasses."""

    __slots__ = ()

    def __post_init__(self) -> None:
        # Validated once here, so every function taking params can trust them.
        for field in fields(self):  # type: ignore[arg-type]
            name = field.name
            object.__setattr__(self, name, _positive_finite(name, getattr(self, name)))

    def to_json(self) -> dict[str, float]:
        """Return the parameters as a JSON-ready dict of floats."""
        return {field.name: getattr(self, field.name) for field in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Build from a dict with exactly the parameters' names (positive finite) or raise."""
        return cls(**cls._from_mapping(data))

    @classmethod
    def _from_mapping(cls, data: Any) -> dict[str, float]:
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__} JSON must be an object, got {type(data).__name__}")
        names = [field.name for field in fields(cls)]  # type: ignore[arg-type]
        missing = [name for name in names if name not in data]
        unknown = sorted(str(key) for key in data if key not in names)
        if missing or unknown:
            raise ValueError(f"{cls.__name__} JSON needs exactly the keys {names}; "
                             f"missing {missing}, unknown {unknown}")
        return {name: _positive_finite(name, data[name]) for name in names}


@dataclass(frozen=True, slots=True)
class BgNbdParams(_Params):
    """BG/NBD parameters: purchase rate ~ Gamma(r, alpha), dropout probability ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class GammaGammaParams(_Params):
    """Gamma-Gamma parameters: value of a purchase ~ Gamma(p, nu), nu ~ Gamma(q, v)."""

    p: float
    q: float
    v: float


@dataclass(frozen=True, slots=True)
class CustomerValueModel:
    """A fitted BG/NBD model, the Gamma-Gamma model if spend was known, and what they saw."""

    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams | None
    customers: int
    fitted_at_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict; gamma_gamma and fitted_at_ms may be null."""
        return {"bgnbd": self.bgnbd.to_json(),
                "gamma_gamma": self.gamma_gamma.to_json() if self.gamma_gamma else None,
                "customers": self.customers, "fitted_at_ms": self.fitted_at_ms}

    @classmethod
    def from_json(cls, data: Any) -> CustomerValueModel:
        """Build from the dict to_json returns; ValueError on anything else."""
        if not isinstance(data, Mapping) or "bgnbd" not in data or "customers" not in data:
            raise ValueError("CustomerValueModel JSON must be an object with bgnbd and customers")
        customers = data["customers"]
        fitted_at = data.get("fitted_at_ms")
        if isinstance(customers, bool) or not isinstance(customers, int) or customers < 0:
            raise ValueError(f"customers must be a non-negative integer, got {customers!r}")
        if fitted_at is not None and (isinstance(fitted_at, bool)
                                      or not isinstance(fitted_at, int)):
            raise ValueError(f"fitted_at_ms must be an integer or null, got {fitted_at!r}")
        spend = data.get("gamma_gamma")
        return cls(BgNbdParams.from_json(data["bgnbd"]),
                   None if spend is None else GammaGammaParams.from_json(spend),
                   customers, fitted_at)


# --- input validation ---------------------------------------------------------------------


def _as_floats(name: str, values: npt.ArrayLike) -> FloatArray:
    """Convert to a float array, or raise ValueError naming the column and first bad entry."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} must be finite; {_first(array, bad)}")
    return array


def _first(array: FloatArray, bad: npt.NDArray[np.bool_]) -> str:
    """Describe the first offending entry, for error messages."""
    if array.ndim == 0:
        return f"got {array.item()!r}"
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    where = index[0] if len(index) == 1 else index
    return f"got {array[index].item()!r} at index {where}"


def _counts(name: str, values: npt.ArrayLike) -> FloatArray:
    """Validate a purchase count column: finite, non-negative whole numbers."""
    x = _as_floats(name, values)
    if (x < 0).any():
        raise ValueError(f"{name} must be >= 0; {_first(x, x < 0)}")
    # A count model: B(a + 1, b + x - 1) needs x = 0 or x >= 1, and fractions mean a unit slip.
    fractional = x != np.floor(x)
    if fractional.any():
        raise ValueError(f"{name} must be whole numbers of purchases; {_first(x, fractional)}")
    return x


def _history(x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike,
             names: tuple[str, str, str]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate and broadcast (x, t_x, T); t_x of customers without repeat purchases is zeroed."""
    x_name, t_name, age_name = names
    xs = _counts(x_name, x)
    tx = _as_floats(t_name, t_x)
    age = _as_floats(age_name, T)
    try:
        xs, tx, age = np.broadcast_arrays(xs, tx, age)
    except ValueError:
        raise ValueError(f"{x_name}, {t_name} and {age_name} must have the same length "
                         f"(shapes {np.shape(xs)}, {np.shape(tx)}, {np.shape(age)})") from None
    if (tx < 0).any():
        raise ValueError(f"{t_name} must be >= 0; {_first(tx, tx < 0)}")
    late = tx > age
    if late.any():
        first = tuple(np.argwhere(late)[0])
        raise ValueError(f"{t_name} must be <= {age_name}; {_first(tx, late)} where "
                         f"{age_name} is {age[first].item()!r}")
    # Without repeat purchases the likelihood does not involve t_x; a stray non-zero value (a
    # summary that stored the first purchase's time) is tolerated and ignored.
    tx = np.where(xs == 0, 0.0, tx)
    return xs, tx, age


def _weights(weights: npt.ArrayLike | None, shape: tuple[int, ...]) -> FloatArray:
    """Validate optional per-customer weights (counts of identical customers)."""
    if weights is None:
        return np.ones(shape)
    w = _as_floats("weights", weights)
    if (w < 0).any():
        raise ValueError(f"weights must be >= 0; {_first(w, w < 0)}")
    try:
        return np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(f"weights must have the customers' shape {shape}, "
                         f"got {w.shape}") from None


def _aggregate(columns: list[FloatArray], weights: FloatArray) -> tuple[list[FloatArray],
                                                                         FloatArray]:
    """Merge identical customers into one row each, summing their weights."""
    # Real summaries repeat a lot, and the fit costs per row: CDNOW's 2,357 customers have
    # 1,016 distinct histories (its 1,411 non-repeat customers only 84: one per first day).
    stacked = np.column_stack([c.ravel() for c in columns])
    keep = weights.ravel() > 0
    unique, inverse = np.unique(stacked[keep], axis=0, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=weights.ravel()[keep], minlength=len(unique))
    return [unique[:, i] for i in range(len(columns))], summed.astype(np.float64)


def _minimise(objective: Any, start: FloatArray, model: str) -> FloatArray:
    """Minimise a (value, gradient) objective over bounded log-parameters."""
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(start)
    result = optimize.minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                               options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10})
    if result.success:
        return np.asarray(result.x, dtype=np.float64)
    # L-BFGS-B gives up on a line search where the likelihood is flat to rounding: at the
    # optimum, or along a ridge towards a limit of the model (r, alpha -> inf is one purchase
    # rate for everyone) that a handful of customers can favour. A derivative-free search from
    # there settles both; only if it fails too is the fit reported as failed.
    polish = optimize.minimize(lambda theta: objective(theta)[0], result.x, method="Powell",
                               bounds=bounds,
                               options={"xtol": 1e-10, "ftol": 1e-15, "maxfev": 20000})
    if not (polish.success and math.isfinite(polish.fun)):
        raise FitError(f"{model} fit did not converge: {result.message}; {polish.message}")
    best = polish.x if polish.fun <= result.fun else result.x
    return np.asarray(best, dtype=np.float64)


# --- BG/NBD -------------------------------------------------------------------------------


def _bgnbd_objective(theta: FloatArray, x: FloatArray, tx: FloatArray, age: FloatArray,
                     w: FloatArray) -> tuple[float, FloatArray]:
    """Negative mean log-likelihood of BG/NBD at log-parameters theta, and its gradient."""
    r, alpha, a, b = np.exp(theta)
    repeat = x > 0
    # Alive at T: B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+T)^(r+x)).
    common = gammaln(r + x) - gammaln(r) + r * math.log(alpha) - betaln(a, b)
    alive = betaln(a, b + x) - (r + x) * np.log(alpha + age)
    # Dropped out right after the last purchase (x > 0 only; b + x - 1 >= b > 0 there). The
    # placeholder x = 1 keeps betaln finite on the rows where the term is masked out.
    x_dead = np.where(repeat, x, 1.0)
    dead = np.where(repeat, betaln(a + 1, b + x_dead - 1) - (r + x) * np.log(alpha + tx),
                    -np.inf)
    total = np.logaddexp(alive, dead)
    ll = common + total
    # Posterior weights of the two branches, for the gradient.
    w_alive = np.exp(alive - total)
    w_dead = np.exp(dead - total)
    psi_abx = digamma(a + b + x)
    d_r = (digamma(r + x) - digamma(r) + math.log(alpha)
           - w_alive * np.log(alpha + age) - w_dead * np.log(alpha + tx))
    d_alpha = r / alpha - (r + x) * (w_alive / (alpha + age) + w_dead / (alpha + tx))
    d_a = (w_alive * (digamma(a) - psi_abx) + w_dead * (digamma(a + 1) - psi_abx)
           - (digamma(a) - digamma(a + b)))
    d_b = (w_alive * (digamma(b + x) - psi_abx)
           + w_dead * (np.where(repeat, digamma(b + x_dead - 1), 0.0) - psi_abx)
           - (digamma(b) - digamma(a + b)))
    total_w = w.sum()
    grad = np.array([r * (w @ d_r), alpha * (w @ d_alpha), a * (w @ d_a), b * (w @ d_b)])
    return float(-(w @ ll) / total_w), -grad / total_w


def fit_bgnbd(frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike,
              weights: npt.ArrayLike | None = None) -> BgNbdParams:
    """Fit BG/NBD by maximum likelihood to repeat purchases, recency and age of customers."""
    x, tx, age = _history(frequency, recency, T, ("frequency", "recency", "T"))
    w = _weights(weights, x.shape)
    if w.sum() < 2:
        raise FitError(f"BG/NBD needs at least 2 customers, got {w.sum():g}")
    if (w * x).sum() == 0:
        raise FitError("BG/NBD needs repeat purchases: every frequency is 0")
    (x, tx, age), w = _aggregate([x, tx, age], w)
    # Time in units of the mean age, so alpha's start and bounds do not depend on the unit.
    scale = float((w @ age) / w.sum())
    if scale <= 0:
        raise FitError("BG/NBD needs customers observed for some time: every T is 0")
    tx, age = tx / scale, age / scale
    # Start: r = 1 and the pooled purchase rate (alpha = r / rate); one purchase in four ends
    # a customer (a = 1, b = 3), the order of magnitude of published fits.
    rate = (w @ x) / (w @ age)
    start = np.log(np.array([1.0, 1.0 / rate, 1.0, 3.0]))
    start = np.clip(start, -_LOG_BOUND + 1, _LOG_BOUND - 1)
    theta = _minimise(lambda th: _bgnbd_objective(th, x, tx, age, w), start, "BG/NBD")
    r, alpha, a, b = np.exp(theta)
    return BgNbdParams(r=float(r), alpha=float(alpha * scale), a=float(a), b=float(b))


def _log_odds_dead(params: BgNbdParams, x: FloatArray, tx: FloatArray,
                   age: FloatArray) -> FloatArray:
    """Log-odds of having dropped out after the last purchase against being alive (x > 0)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x_safe = np.maximum(x, 1.0)
    # log((alpha+T)/(alpha+t_x)) as log1p: exact when T - t_x is small against alpha + t_x.
    gap = np.log1p((age - tx) / (alpha + tx))
    return np.asarray(np.log(a) - np.log(b + x_safe - 1) + (r + x) * gap, dtype=np.float64)


def p_alive(params: BgNbdParams, x: npt.ArrayLike, t_x: npt.ArrayLike,
            T: npt.ArrayLike) -> FloatArray:
    """P(customer still alive at T) given x repeat purchases, the last at t_x (1 when x = 0)."""
    xs, tx, age = _history(x, t_x, T, ("x", "t_x", "T"))
    # expit of minus the log-odds: 0 for a million purchases long ago, never overflow or NaN.
    alive = np.where(xs > 0, expit(-_log_odds_dead(params, xs, tx, age)), 1.0)
    return np.asarray(alive, dtype=np.float64)


def _if_alive_hyp2f1(params: BgNbdParams, a: float, t: FloatArray, x: FloatArray,
                     age: FloatArray, euler: bool) -> FloatArray:
    """Eq. 10 of FHL 2005 without its denominator 1/P(alive): (a+b+x-1)/(a-1) * (1 - G)."""
    r, alpha, b = params.r, params.alpha, params.b
    # Eq. 10 has G = (1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z) with z = t/(alpha+T+t). Euler's
    # transformation 2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z) makes it
    # G = (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z): only C grows with x, so the series
    # converges faster for big customers, where the direct form's 2F1 overflows (x ~ 1e6).
    log_1mz = -np.log1p(t / (alpha + age))
    z = -np.expm1(log_1mz)
    c = a + b + x - 1
    with np.errstate(all="ignore"):
        if euler:
            hyp = hyp2f1(a + b - 1 - r, a - 1, c, z)
            exponent = (a - 1) * log_1mz
            # 1 - G = -expm1(exponent) - (hyp - 1) e^exponent: accurate when G is near 1.
            one_minus_g = -np.expm1(exponent) - (hyp - 1) * np.exp(exponent)
        else:
            # The direct form: a huge 2F1 times a vanishing power, multiplied in log space.
            hyp = hyp2f1(r + x, b + x, c, z)
            one_minus_g = -np.expm1(np.log(hyp) + (r + x) * log_1mz)
        return np.asarray(c / (a - 1) * one_minus_g, dtype=np.float64)


def _if_alive_series(params: BgNbdParams, t: FloatArray, x: FloatArray,
                     age: FloatArray) -> FloatArray:
    """The same expectation as a power series in t/(alpha+T), for short horizons."""
    # With k = t/(alpha+T), s = r+x and the dropout probability q ~ Beta(a, b+x) (see
    # _if_alive_quadrature): (1 - (1+qk)^-s)/q = sum_n (-1)^(n+1) (s)_n/n! k^n q^(n-1), and
    # E[q^(n-1)] = (a)_(n-1)/(a+b+x)_(n-1). The ratio of successive terms is at most
    # max(s, 1) k, so 12 terms reach rounding where that is <= _SERIES_BELOW; and 1 - G's
    # cancellation (relative error ~1e-16 / ((a-1) k)) is avoided exactly where it is worst.
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    shape, step = r + x, t / (alpha + age)
    term = shape * step
    total = term.copy()
    for n in range(1, _SERIES_TERMS):
        term = term * (-(shape + n) * step / (n + 1)) * ((a + n - 1) / (a + b + x + n - 1))
        total += term
    return np.asarray(total, dtype=np.float64)


def _if_alive_quadrature(params: BgNbdParams, t: float, x: float, age: float) -> float:
    """The same expectation by quadrature over the dropout probability's posterior."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    # Alive at T, a customer with dropout probability q and rate lambda buys on average
    # (1 - exp(-lambda q t)) / q more times in t (the BG/NBD's E[X(t) | lambda, q]). The
    # posterior lambda ~ Gamma(r+x, alpha+T) turns the exponential into (1 + q t/(alpha+T))^
    # -(r+x), and q's is Beta(a, b+x). Integrating over q's quantiles u keeps the integrand
    # bounded (by its value at q = 0) even where the Beta density is singular.
    shape, step = r + x, t / (alpha + age)

    def integrand(u: float) -> float:
        q = float(betaincinv(a, b + x, u))
        if q * step == 0:
            return shape * step
        return float(-math.expm1(-shape * math.log1p(q * step)) / q)

    value, _ = integrate.quad(integrand, 0.0, 1.0, epsabs=0.0, epsrel=1e-10, limit=200)
    return float(value)


def _if_alive(params: BgNbdParams, t: FloatArray, x: FloatArray, age: FloatArray) -> FloatArray:
    """Expected purchases in (T, T+t] of a customer known to be alive at T."""
    a, r, alpha = params.a, params.r, params.alpha
    short = np.maximum(r + x, 1.0) * (t / (alpha + age)) <= _SERIES_BELOW
    if short.all():
        return _if_alive_series(params, t, x, age)
    if abs(a - 1) < _A_ONE_GAP:
        # a = 1 is a removable singularity (1 - G and a - 1 both vanish): interpolate linearly
        # between a = 1 -+ gap, where rounding costs ~1e-12 and the curvature ~gap^2 = 1e-8.
        low = _if_alive_hyp2f1(params, 1 - _A_ONE_GAP, t, x, age, euler=True)
        high = _if_alive_hyp2f1(params, 1 + _A_ONE_GAP, t, x, age, euler=True)
        value = low + (a - (1 - _A_ONE_GAP)) / (2 * _A_ONE_GAP) * (high - low)
    else:
        value = _if_alive_hyp2f1(params, a, t, x, age, euler=True)
    # The answer lies between what a customer who never drops out would buy, (r+x) t/(alpha+T),
    # and what one certain to drop out at the next purchase would, 1 - (1+t/(alpha+T))^-(r+x).
    # scipy's hyp2f1 can return NaN, inf or a wrong finite value when a and b are large and z
    # is near 1 (about 2 in 10,000 random cases with r, a, b up to 150); such entries are
    # retried with the direct form, then by quadrature, which is slow but always converges.
    step = t / (alpha + age)
    upper = (r + x) * step
    lower = -np.expm1(-(r + x) * np.log1p(step))
    slack = 1e-9 * upper
    value = np.array(value, dtype=np.float64).ravel()
    flat_t, flat_x, flat_age = t.ravel(), x.ravel(), age.ravel()
    low_ok, high_ok = (lower - slack).ravel(), (upper + slack).ravel()
    if short.any():
        value[short.ravel()] = _if_alive_series(params, t[short], x[short], age[short])
    bad = np.flatnonzero(~np.isfinite(value) | (value < low_ok) | (value > high_ok))
    if bad.size:
        direct = _if_alive_hyp2f1(params, a, flat_t[bad], flat_x[bad], flat_age[bad],
                                  euler=False)
        value[bad] = direct
        bad = bad[~np.isfinite(direct) | (direct < low_ok[bad]) | (direct > high_ok[bad])]
    # Same-history customers share one integral; the set is small in practice.
    cache: dict[tuple[float, float, float], float] = {}
    for i in bad:
        key = (float(flat_t[i]), float(flat_x[i]), float(flat_age[i]))
        if key not in cache:
            cache[key] = _if_alive_quadrature(params, *key)
        value[i] = cache[key]
    # Clipping removes rounding past the bounds; + 0.0 turns t = 0's -0.0 into 0.0.
    return np.clip(value.reshape(np.shape(t)), lower, upper) + 0.0


def expected_purchases(params: BgNbdParams, t: npt.ArrayLike, x: npt.ArrayLike,
                       t_x: npt.ArrayLike, T: npt.ArrayLike) -> FloatArray:
    """Expected purchases in (T, T+t] given the history (eq. 10 of Fader, Hardie & Lee 2005)."""
    horizon = _as_floats("t", t)
    if (horizon < 0).any():
        raise ValueError(f"t must be >= 0; {_first(horizon, horizon < 0)}")
    xs, tx, age = _history(x, t_x, T, ("x", "t_x", "T"))
    horizon, xs, tx, age = (np.array(v) for v in np.broadcast_arrays(horizon, xs, tx, age))
    # Dividing eq. 10 by 1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x) is multiplying by P(alive).
    alive = np.where(xs > 0, expit(-_log_odds_dead(params, xs, tx, age)), 1.0)
    return np.asarray(_if_alive(params, horizon, xs, age) * alive, dtype=np.float64)


# --- Gamma-Gamma --------------------------------------------------------------------------


def _spend_columns(frequency: npt.ArrayLike,
                   monetary_value: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validate and broadcast (frequency, monetary_value)."""
    x = _counts("frequency", frequency)
    m = _as_floats("monetary_value", monetary_value)
    try:
        x, m = np.broadcast_arrays(x, m)
    except ValueError:
        raise ValueError(f"frequency and monetary_value must have the same length "
                         f"(shapes {np.shape(x)}, {np.shape(m)})") from None
    if (m < 0).any():
        raise ValueError(f"monetary_value must be >= 0; {_first(m, m < 0)}")
    return x, m


def _gamma_gamma_objective(theta: FloatArray, x: FloatArray, m: FloatArray,
                           w: FloatArray) -> tuple[float, FloatArray]:
    """Negative mean log-likelihood of Gamma-Gamma at log-parameters theta, and its gradient."""
    p, q, v = np.exp(theta)
    px = p * x
    log_m, log_x, log_vxm = np.log(m), np.log(x), np.log(v + x * m)
    # Density of a customer's mean of x values: Gamma(px + q) / (Gamma(px) Gamma(q))
    #   * v^q m^(px-1) x^(px) / (v + x m)^(px+q).
    ll = (gammaln(px + q) - gammaln(px) - gammaln(q) + q * math.log(v)
          + (px - 1) * log_m + px * log_x - (px + q) * log_vxm)
    psi_pxq = digamma(px + q)
    d_p = x * (psi_pxq - digamma(px) + log_m + log_x - log_vxm)
    d_q = psi_pxq - digamma(q) + math.log(v) - log_vxm
    d_v = q / v - (px + q) / (v + x * m)
    total_w = w.sum()
    grad = np.array([p * (w @ d_p), q * (w @ d_q), v * (w @ d_v)])
    return float(-(w @ ll) / total_w), -grad / total_w


def fit_gamma_gamma(frequency: npt.ArrayLike, monetary_value: npt.ArrayLike,
                    weights: npt.ArrayLike | None = None) -> GammaGammaParams:
    """Fit Gamma-Gamma by maximum likelihood to repeat customers' (x > 0) positive mean spend."""
    x, m = _spend_columns(frequency, monetary_value)
    w = _weights(weights, x.shape)
    # Customers without repeat purchases say nothing about the value of repeat purchases, and
    # a zero mean (refunds, free orders) has no density under a Gamma model: both are left out.
    w = np.where((x > 0) & (m > 0), w, 0.0)
    if w.sum() < 2:
        raise FitError("Gamma-Gamma needs at least 2 customers with frequency > 0 and "
                       f"monetary_value > 0, got {w.sum():g}")
    (x, m), w = _aggregate([x, m], w)
    # Spend in units of the mean, so v's start and bounds do not depend on the currency.
    scale = float((w @ m) / w.sum())
    m = m / scale
    # Start: p = 1, q = 3, and v making the population mean p v / (q - 1) the sample mean.
    start = np.log(np.array([1.0, 3.0, 2.0]))
    theta = _minimise(lambda th: _gamma_gamma_objective(th, x, m, w), start, "Gamma-Gamma")
    p, q, v = np.exp(theta)
    return GammaGammaParams(p=float(p), q=float(q), v=float(v * scale))


def expected_spend(params: GammaGammaParams, x: npt.ArrayLike,
                   monetary_value: npt.ArrayLike) -> FloatArray:
    """E[mean purchase value | x, observed mean]: p (v + x m) / (p x + q - 1); NaN if undefined."""
    xs, m = _spend_columns(x, monetary_value)
    # For x = 0 this is the population mean p v / (q - 1) (monetary_value ignored). The mean
    # is infinite when p x + q - 1 <= 0 (q <= 1 for x = 0): NaN, never the customer's own mean,
    # so that a heavy-tailed fit cannot pass unnoticed into a value estimate.
    denominator = params.p * xs + params.q - 1
    safe = np.where(denominator > 0, denominator, 1.0)
    spend = np.where(denominator > 0, params.p * (params.v + xs * m) / safe, np.nan)
    return np.asarray(spend, dtype=np.float64)


def predicted_value(bgnbd: BgNbdParams, gamma_gamma: GammaGammaParams, horizon: npt.ArrayLike,
                    x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike,
                    monetary_value: npt.ArrayLike) -> FloatArray:
    """Undiscounted value over (T, T+horizon]: expected purchases x expected mean spend."""
    # The models are independent (Gamma-Gamma assumes spend does not depend on the purchase
    # process), so the expectation of the product is the product of the expectations.
    return np.asarray(expected_purchases(bgnbd, horizon, x, t_x, T)
                      * expected_spend(gamma_gamma, x, monetary_value), dtype=np.float64)


def fit_customer_value(frequency: npt.ArrayLike, recency: npt.ArrayLike,
                       T: npt.ArrayLike,
                       monetary_value: npt.ArrayLike | None = None,
                       fitted_at_ms: int | None = None) -> CustomerValueModel:
    """Fit BG/NBD and, when monetary values are given, Gamma-Gamma on the same customers."""
    bgnbd = fit_bgnbd(frequency, recency, T)
    spend = None if monetary_value is None else fit_gamma_gamma(frequency, monetary_value)
    return CustomerValueModel(bgnbd, spend, int(np.size(np.asarray(frequency))), fitted_at_ms)
