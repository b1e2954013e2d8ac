"""Fit the customer-value model to the known customers' purchase histories and score them.

Histories come from the lifecycle facts every profile already holds, in days:

- frequency x = purchases - 1 (the repeat purchases),
- recency t_x = last purchase - first purchase, age T = now - first purchase,
- mean repeat spend = (lifetime value - first purchase's value) / x.

Predictions are written onto each profile (server.stores.customer_value), where the decide
script reads them as facts in the same round trip as the rest of the profile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from experiments import customer_value as cv
from server.errors import Conflict
from server.stores.customer_value import CustomerValueStore, ModelRecord, Prediction

DAY_MS = 86_400_000
SHORT_HORIZON_DAYS = 90.0
VALUE_HORIZON_DAYS = 365.0
MIN_CUSTOMERS = 20  # fewer known buyers than this give no meaningful fit
log = logging.getLogger("centric")


@dataclass(frozen=True, slots=True)
class History:
    """One known customer's purchase history, in days, as the models take it."""

    node: str
    frequency: float
    recency: float
    age: float
    monetary: float  # mean repeat spend; 0 without repeat purchases


def history_of(node: str, profile: dict[str, str], now_ms: int) -> History | None:
    """The history of a known buyer's stored profile (None for anyone else)."""
    if profile.get("known") != "1" or "fp" not in profile:
        return None
    try:
        first, count = int(profile["fp"]), int(profile.get("pc", "1"))
        last = int(profile.get("lp", profile["fp"]))
        ltv = float(profile.get("ltv", "0"))
        first_value = float(profile["fv"]) if "fv" in profile else ltv / max(count, 1)
    except ValueError:
        return None
    # A past-dated or future-dated event may put a purchase after 'now': clamp, never fail.
    age = max(now_ms - first, 0) / DAY_MS
    recency = min(max(last - first, 0) / DAY_MS, age)
    x = max(count - 1, 0)
    monetary = max(ltv - first_value, 0.0) / x if x else 0.0
    return History(node, float(x), recency, age, monetary)


def predict(model: ModelRecord, histories: Sequence[History], now_ms: int) -> list[
        tuple[str, Prediction]]:
    """The predictions of each history under a fitted model."""
    if not histories:
        return []
    x = np.array([h.frequency for h in histories])
    tx = np.array([h.recency for h in histories])
    age = np.array([h.age for h in histories])
    alive = cv.p_alive(model.bgnbd, x, tx, age)
    short = cv.expected_purchases(model.bgnbd, SHORT_HORIZON_DAYS, x, tx, age)
    value: np.ndarray | None = None
    if model.gamma_gamma is not None:
        m = np.array([h.monetary for h in histories])
        value = cv.predicted_value(model.bgnbd, model.gamma_gamma, VALUE_HORIZON_DAYS,
                                   x, tx, age, m)
    out = []
    for i, h in enumerate(histories):
        v = None if value is None or not np.isfinite(value[i]) else float(value[i])
        if np.isfinite(alive[i]) and np.isfinite(short[i]):
            out.append((h.node, Prediction(float(alive[i]), float(short[i]), v, now_ms)))
    return out


class CustomerValueService:
    """Fits the models, keeps the last fit and scores the known customers."""

    def __init__(self, store: CustomerValueStore, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    def model(self) -> ModelRecord | None:
        """The last fit, or None."""
        return self.store.load_model()

    def fit(self) -> ModelRecord:
        """Fit BG/NBD and Gamma-Gamma to every known buyer now, store the fit, score them all."""
        now_ms = int(self.clock() * 1000)
        histories = [h for batch in self.store.buyer_batches(now_ms)
                     for b in batch.buyers
                     if (h := history_of(b.node, b.profile, now_ms)) is not None]
        if len(histories) < MIN_CUSTOMERS:
            raise Conflict(f"the fit needs at least {MIN_CUSTOMERS} known customers with a "
                           f"purchase; there are {len(histories)}",
                           {"customers": str(len(histories))})
        x = np.array([h.frequency for h in histories])
        try:
            bgnbd = cv.fit_bgnbd(x, [h.recency for h in histories], [h.age for h in histories])
        except cv.FitError as error:
            raise Conflict(f"the purchase histories allow no fit: {error}",
                           {"customers": "no usable fit"}) from error
        gamma_gamma = None
        repeaters = int(np.count_nonzero(x > 0))
        try:
            gamma_gamma = cv.fit_gamma_gamma(x, [h.monetary for h in histories])
        except cv.FitError as error:
            # Spend needs repeat buyers with positive spend; frequency alone still predicts.
            log.info("no spend model: %s", error)
        record = ModelRecord(bgnbd, gamma_gamma, len(histories), repeaters, now_ms)
        self.store.save_model(record)
        self.store.write_predictions(predict(record, histories, now_ms))
        log.info("customer-value model fitted to %d customers", len(histories))
        return record
