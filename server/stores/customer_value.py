"""The fitted customer-value model, the buyers index and the predictions on each profile.

Formats owned here: the model JSON at ``{P:cfg}:clv`` (``ModelRecord``) and the prediction
fields of the visitor hash (``pa``, ``e90``, ``clv``, ``pt``; numbers as ``%.17g`` strings,
read by ``server/lua/decide.lua`` and ``experiments.rule_eval.build_facts``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from experiments.customer_value import BgNbdParams, GammaGammaParams
from server.keys import ATTRIBUTE, SHARDS, Keyspace
from server.scripts import Scripts

# The profile fields a customer's history and predictions are read from.
HISTORY_FIELDS = ("alias", "known", "cid", "eh", "first_seen", "fp", "lp", "pc", "ltv", "fv",
                  "pa", "e90", "clv", "pt")
SCAN_BATCH = 500  # buyers read per round trip: small enough never to hold Redis for long


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A stored fit: the parameters (time unit: days), how many customers, and when."""

    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams | None
    customers: int
    repeat_customers: int
    fitted_at_ms: int

    def to_json(self) -> dict[str, Any]:
        """The record as the API shows it and as it is stored."""
        return {"bgnbd": self.bgnbd.to_json(),
                "gamma_gamma": self.gamma_gamma.to_json() if self.gamma_gamma else None,
                "customers": self.customers, "repeat_customers": self.repeat_customers,
                "fitted_at": self.fitted_at_ms / 1000, "time_unit": "days"}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelRecord:
        """Parse a stored record."""
        gg = d.get("gamma_gamma")
        return cls(BgNbdParams.from_json(d["bgnbd"]),
                   GammaGammaParams.from_json(gg) if gg else None,
                   int(d["customers"]), int(d["repeat_customers"]),
                   round(float(d["fitted_at"]) * 1000))


@dataclass(frozen=True, slots=True)
class Buyer:
    """An indexed buyer: its node, the profile fields read, when its history last changed."""

    node: str
    profile: dict[str, str]
    changed_ms: int


@dataclass(frozen=True, slots=True)
class BuyerBatch:
    """A batch of the buyers index: the buyers, and the nodes that are no buyers any more."""

    buyers: list[Buyer]
    gone: list[str]  # erased, expired or merged into another profile since they were listed


@dataclass(frozen=True, slots=True)
class Prediction:
    """One customer's predictions (value is None without a spend model)."""

    p_alive: float
    expected_purchases_90d: float
    predicted_clv_365d: float | None
    at_ms: int


def _number(x: float) -> str:
    return f"{x:.17g}"


def read_prediction(profile: dict[str, str]) -> Prediction | None:
    """The predictions stored on a profile hash, or None before any fit scored it."""
    try:
        clv = profile.get("clv")
        return Prediction(float(profile["pa"]), float(profile["e90"]),
                          float(clv) if clv is not None else None, int(profile["pt"]))
    except (KeyError, ValueError):
        return None


class CustomerValueStore:
    """Reads purchase histories, keeps the fitted model, writes predictions."""

    def __init__(self, client: redis.Redis, keys: Keyspace, scripts: Scripts) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts

    def load_model(self) -> ModelRecord | None:
        """The last fit, or None."""
        raw = self.client.get(self.keys.customer_value_model)
        return ModelRecord.from_json(json.loads(raw)) if raw else None

    def save_model(self, record: ModelRecord) -> None:
        """Keep a new fit."""
        self.client.set(self.keys.customer_value_model,
                        json.dumps(record.to_json(), separators=(",", ":")))

    def buyer_batches(self, now_ms: int, attributes: Sequence[str] = ()) -> Iterator[
            BuyerBatch]:
        """Every indexed buyer's profile fields (and the named attributes), a batch at a time.

        ZSCAN walks the index in small steps, so a sweep of millions of buyers never blocks
        Redis; a buyer added meanwhile may be missed until the next sweep, never seen twice
        in a way that matters (every step is idempotent).
        """
        fields = list(HISTORY_FIELDS) + [ATTRIBUTE + a for a in attributes]
        for shard in range(SHARDS):
            cursor = 0
            while True:
                cursor, found = self.client.zscan(self.keys.buyers(shard), cursor,
                                                  count=SCAN_BATCH)
                if found:
                    yield self._batch(found, fields, now_ms)
                if cursor == 0:
                    break

    def _batch(self, found: list[Any], fields: list[str],
               now_ms: int) -> BuyerBatch:
        nodes = [str(member) for member, _ in found]
        pipe = self.client.pipeline(transaction=False)
        for node in nodes:
            pipe.hmget(self.keys.visitor(node).profile, fields)
        buyers, doubtful = [], []
        for (node, score), values in zip(zip(nodes, (s for _, s in found), strict=True),
                                         pipe.execute(), strict=True):
            profile = {f: str(v) for f, v in zip(fields, values, strict=True) if v is not None}
            if "fp" in profile and "alias" not in profile and profile.get("known") == "1":
                buyers.append(Buyer(node, profile, int(score)))
            else:
                doubtful.append((node, profile.get("alias")))
        return BuyerBatch(buyers, self._repair(doubtful, now_ms))

    def _repair(self, doubtful: list[tuple[str, str | None]], now_ms: int) -> list[str]:
        """Unlist nodes that are no buyer's profile any more; list the one a link points to.

        A merge moves purchases into the surviving profile, which may never have bought in
        its own name: the loser's entry hands its place over here instead of in the merge.
        Each change re-checks the profile in Redis (a node may have come back meanwhile).
        Returns the nodes that are gone.
        """
        if not doubtful:
            return []
        calls = [([self.keys.visitor(node).profile, self.keys.buyers(
            self.keys.visitor(node).shard)], [node, now_ms, "0"]) for node, _ in doubtful]
        calls += [([self.keys.visitor(alias).profile, self.keys.buyers(
            self.keys.visitor(alias).shard)], [alias, now_ms, "1"])
            for _, alias in doubtful if alias]
        listed = self.scripts.run_many(self.scripts.sync_buyer, calls)
        return [node for (node, _), still in zip(doubtful, listed, strict=False)
                if not int(still)]

    def fields(self, nodes: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, str]]:
        """Some fields of some profiles, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for node in nodes:
            pipe.hmget(self.keys.visitor(node).profile, list(names))
        return {node: {f: str(v) for f, v in zip(names, values, strict=True) if v is not None}
                for node, values in zip(nodes, pipe.execute(), strict=True)}

    def write_predictions(self, predictions: Sequence[tuple[str, Prediction]]) -> int:
        """Store predictions on their profiles; return how many profiles took them."""
        calls = []
        for node, p in predictions:
            value = "" if p.predicted_clv_365d is None else _number(p.predicted_clv_365d)
            calls.append(([self.keys.visitor(node).profile],
                          [_number(p.p_alive), _number(p.expected_purchases_90d), value,
                           p.at_ms]))
        if not calls:
            return 0
        return sum(int(r) for r in self.scripts.run_many(self.scripts.set_predictions, calls))

    def sync_buyer(self, node: str, now_ms: int) -> bool:
        """List a profile whose history just changed (identify, a merge) if it is a buyer's."""
        vk = self.keys.visitor(node)
        return bool(self.scripts.sync_buyer(keys=[vk.profile, self.keys.buyers(vk.shard)],
                                            args=[node, now_ms, "1"]))

    def forget(self, nodes: Sequence[str]) -> None:
        """Remove erased people from the buyers index."""
        pipe = self.client.pipeline(transaction=False)
        for node in nodes:
            pipe.zrem(self.keys.buyers(self.keys.visitor(node).shard), node)
        pipe.execute()

