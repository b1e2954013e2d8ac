"""Win the second purchase: a moment, a bandit that picks the message, and the uplift it made.

Run against a running centric (the admin key sets things up; the server key is the shop's
back end and its daily mailing job):

    python examples/second_purchase.py http://127.0.0.1:8000 cak_... cbk_... [--days 30]

The simulated shop has three kinds of new customers. Each kind spends differently and is
moved by a different message: bargain hunters by a voucher, brand fans by a personal thank
you, browsers by product picks. The shop cannot see the kind; it knows where the first order
came from (a sale, the brand's own site, a search ad), which matches the kind four times in
five. That attribute defines centric's personas, so the bandit can learn per persona.

Every simulated day:

1. New customers place their first order (tracked with the time it happened: 10 days ago, so
   that they are in the moment today). Half of them, cohort "same", are the comparison:
   they all get the voucher, the best single message, as a shop without centric would send.
2. The daily job brings the moment up to date (``POST /v1/moments/sweep``; a server does this
   by itself every hour) and pages through the members that entered since its last cursor.
   Each member comes with the message the bandit chose for them (or none: the holdout).
3. The job "sends" it; whoever the message moves buys again, and the shop tracks the order.

At the end it refits the customer-value model and prints, per policy, the second-purchase
rate and the mean predicted 365-day value, next to centric's own report of the uplift over
the holdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections import defaultdict
from typing import Any

import numpy as np
from centric_sdk import Client

EXPERIMENT = "second-nudge"
MOMENT = "second-purchase"
DAY = 86400.0
KINDS = ("bargain", "brand_fan", "browser")
MIX = (0.4, 0.3, 0.3)
SOURCE = {"bargain": "sale", "brand_fan": "brand", "browser": "search"}  # what the shop sees
SPEND = {"bargain": 25.0, "brand_fan": 70.0, "browser": 45.0}  # mean order value
MESSAGES = ("none", "thanks", "voucher", "picks")
# Chance of a second order within 30 days after each message (the truth centric must find).
MOVED = {"bargain": {"none": 0.06, "thanks": 0.07, "voucher": 0.24, "picks": 0.07},
         "brand_fan": {"none": 0.10, "thanks": 0.22, "voucher": 0.12, "picks": 0.12},
         "browser": {"none": 0.05, "thanks": 0.06, "voucher": 0.08, "picks": 0.20}}
SAME_FOR_EVERYONE = "voucher"  # the best single message for this mix


class Admin:
    """The few admin calls the set-up needs (the SDK covers the request path only)."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.headers = base.rstrip("/"), {"Authorization": f"Bearer {key}",
                                                      "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON call; raises on anything but 2xx."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=self.headers,
                                         method=method)
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"null")


def set_up(admin: Admin) -> None:
    """Personas from the first order's source, the message experiment and the moment."""
    admin.call("PUT", "/v1/personas", [
        {"name": source, "when": {"fact": "attributes.first_order_source", "op": "eq",
                                  "value": source}} for source in ("sale", "brand", "search")])
    admin.call("POST", "/v1/experiments", {
        "key": EXPERIMENT, "name": "Second-purchase message", "mode": "bandit",
        "hypothesis": "The message that moves a new customer depends on who they are",
        "variants": [{"key": m, "payload": {"message": m}} for m in MESSAGES],
        "control": "none", "holdout": 0.2, "audience": {"channels": ["email"]},
        "metric": {"name": "purchase", "kind": "repeat", "within_days": 30}})
    admin.call("POST", f"/v1/experiments/{EXPERIMENT}/start")
    admin.call("PUT", "/v1/moments", [{
        "name": MOMENT, "experiment": EXPERIMENT, "channel": "email",
        "description": "One order so far, placed 10 or more days ago, in the 'centric' cohort",
        "when": {"all": [{"fact": "days_since_first_purchase", "op": "gte", "value": 10},
                         {"fact": "purchase_count", "op": "eq", "value": 1},
                         {"fact": "attributes.cohort", "op": "eq", "value": "centric"}]}}])


class Shop:
    """The simulated customers, and what happened to each."""

    def __init__(self, client: Client, rng: np.random.Generator) -> None:
        self.client, self.rng = client, rng
        self.kind: dict[str, str] = {}
        self.policy: dict[str, str] = {}  # customer -> 'centric', 'holdout' or 'same'
        self.bought_again: set[str] = set()
        self.orders = 0

    def order(self, customer: str, when: float) -> None:
        """One order of a customer's kind's spend, placed at `when`."""
        value = round(float(self.rng.gamma(4.0, SPEND[self.kind[customer]] / 4.0)), 2)
        self.orders += 1
        self.client.track(customer, "purchase", value, event_id=f"order-{self.orders}",
                          timestamp=when, id_type="customer_id")

    def new_customers(self, day: int, count: int) -> list[str]:
        """Customers whose first order was 10 days ago; half of them in each cohort."""
        made = []
        for i in range(count):
            customer = f"d{day:03d}-{i:04d}"
            kind = str(self.rng.choice(KINDS, p=MIX))
            seen = SOURCE[kind] if self.rng.random() < 0.8 else str(
                self.rng.choice(list(SOURCE.values())))
            cohort = "centric" if i % 2 == 0 else "same"
            self.kind[customer] = kind
            # The attributes the personas and the moment read, set by the shop's back end.
            self.client.decide(customer, channel="web", id_type="customer_id", experiments=[],
                               attributes={"first_order_source": seen, "cohort": cohort})
            self.order(customer, time.time() - 10.5 * DAY)
            if cohort == "same":
                self.policy[customer] = "same"
                self.react(customer, SAME_FOR_EVERYONE)
            made.append(customer)
        return made

    def react(self, customer: str, message: str) -> None:
        """The customer reads the message and buys again, or not."""
        if self.rng.random() < MOVED[self.kind[customer]][message]:
            self.bought_again.add(customer)
            self.order(customer, time.time())


def daily_job(client: Client, shop: Shop, cursor: str) -> tuple[str, int]:
    """Send every member who entered the moment since `cursor` their message, once."""
    sent = 0
    while True:
        page = client.moment_members(MOMENT, cursor=cursor, limit=200, timeout=30)
        for member in page.members:
            decision = member["decision"]
            holdout = decision["reason"] == "holdout"
            shop.policy[member["customer_id"]] = "holdout" if holdout else "centric"
            message = "none" if holdout else decision["payload"]["message"]
            shop.react(member["customer_id"], message)  # ... the mail goes out here ...
            sent += 1
        cursor = page.next_cursor  # kept by the job: tomorrow starts from here
        if not page.has_more:
            return cursor, sent


def summary(admin: Admin, shop: Shop) -> dict[str, dict[str, float]]:
    """Per policy: customers, second-purchase rate and mean predicted 365-day value."""
    admin.call("POST", "/v1/models/clv/fit")
    values: dict[str, list[float]] = defaultdict(list)
    for customer, policy in shop.policy.items():
        profile = admin.call("GET", f"/v1/visitors/{customer}?id_type=customer_id")
        values[policy].append(profile["predictions"]["predicted_clv_365d"])
    out = {}
    for policy in ("holdout", "same", "centric"):
        members = [c for c, p in shop.policy.items() if p == policy]
        out[policy] = {
            "customers": len(members),
            "second_purchase": sum(c in shop.bought_again for c in members) / max(len(members), 1),
            "predicted_clv": float(np.mean(values[policy])) if values[policy] else 0.0}
    return out


# How often each kind buys once it is a customer: a Gamma-distributed rate (shape, mean days
# between orders), as the BG/NBD model assumes, so that its fit has something real to find.
BUYING = {"bargain": (0.6, 60.0), "brand_fan": (0.9, 25.0), "browser": (0.6, 45.0)}


def history(shop: Shop, customers: int) -> None:
    """A year of earlier customers, so that the value model has repeat buyers to learn from."""
    now = time.time()
    for i in range(customers):
        customer = f"old-{i:04d}"
        kind = shop.kind[customer] = str(shop.rng.choice(KINDS, p=MIX))
        shape, mean_days = BUYING[kind]
        rate = shop.rng.gamma(shape, 1.0 / (shape * mean_days))  # orders per day
        quit_after_order = shop.rng.beta(1.0, 3.0)
        when = now - float(shop.rng.uniform(30, 365)) * DAY
        while when < now:
            shop.order(customer, when)
            if shop.rng.random() < quit_after_order:
                break
            when += float(shop.rng.exponential(1.0 / rate)) * DAY


def main(argv: list[str] | None = None) -> int:
    """Run the simulated shop against a server and print what the moment won."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("admin_key")
    parser.add_argument("server_key")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--customers-per-day", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pause", type=float, default=6.0,
                        help="seconds between simulated days, so that the server's bandit "
                             "refreshes its posteriors in between (every 5 s by default), as "
                             "it would many times in a real day")
    args = parser.parse_args(argv)
    admin = Admin(args.base_url, args.admin_key)
    set_up(admin)
    rng = np.random.default_rng(args.seed)
    cursor, sent = "0", 0
    with Client(args.base_url, args.server_key, timeout=5.0, raise_errors=True) as client:
        shop = Shop(client, rng)
        history(shop, 600)
        client.flush(timeout=60)
        admin.call("POST", "/v1/models/clv/fit")
        for day in range(args.days):
            shop.new_customers(day, args.customers_per_day)
            client.flush(timeout=60)
            admin.call("POST", "/v1/moments/sweep")
            cursor, today = daily_job(client, shop, cursor)
            sent += today
            client.flush(timeout=60)
            time.sleep(args.pause)
        if client.dropped:
            print(f"{client.dropped} events were dropped", file=sys.stderr)
            return 1
    report = admin.call("GET", f"/v1/experiments/{EXPERIMENT}/report")
    rows = summary(admin, shop)
    print(f"{args.days} days, {len(shop.policy)} new customers, {sent} messages sent by the "
          "daily job")
    print(f"{'policy':<38}{'customers':>10}{'2nd purchase':>14}{'predicted CLV':>15}")
    names = {"holdout": "holdout (no message)",
             "same": f"same message for everyone ({SAME_FOR_EVERYONE})",
             "centric": "centric (bandit per persona)"}
    for policy, row in rows.items():
        print(f"{names[policy]:<38}{row['customers']:>10}{row['second_purchase']:>14.1%}"
              f"{row['predicted_clv']:>15.2f}")
    base = rows["holdout"]["second_purchase"]
    for policy in ("same", "centric"):
        lift = rows[policy]["second_purchase"] - base
        value = rows[policy]["predicted_clv"] / max(rows["holdout"]["predicted_clv"], 1e-9) - 1
        print(f"{names[policy]}: {100 * lift:+.1f} points of second purchases over the "
              f"holdout, {value:+.1%} predicted CLV")
    uplift = report.get("policy_uplift")
    if uplift:
        rel = uplift["relative"]
        print(f"centric's report, policy vs holdout: {uplift['policy']['mean']:.1%} vs "
              f"{uplift['holdout']['mean']:.1%} second purchases, relative uplift "
              f"{rel['estimate']:+.0%} (95% interval {rel['lower']:+.0%} to "
              f"{rel['upper']:+.0%}), chance the policy is better "
              f"{uplift['chance_policy_better']:.1%}")
    served: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for cell in admin.call("GET", f"/v1/experiments/{EXPERIMENT}/counters")["rows"]:
        if cell["group"] == "policy":
            served[cell["persona"]][cell["variant"]] += cell["exposures"]
    for persona, counts in sorted(served.items()):
        total = sum(counts.values())
        share = ", ".join(f"{v} {counts[v] / total:.0%}" for v in MESSAGES if counts[v])
        print(f"messages the bandit sent to persona {persona}: {share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
