"""E-mail channel example: subject lines picked at send time, opens and purchases tracked.

Run: python examples/email_subject_lines.py http://127.0.0.1:8000 cbk_...

The mail system is a backend, so it uses a server key (`centric keys create --role server`)
and addresses recipients by what it has: their customer number, as `id_type="customer_id"`.
A customer who logs in on the site is linked to the same customer_id by identify, so
decisions and outcomes from both channels land on one person.

The campaign is an experiment like any other (here key "newsletter-subject", with variant
payloads {"subject": "..."}); the channel is "email", so the bandit learns per persona for
e-mail separately from the website. Deciding at send time counts the exposure at once (the
mail goes out right after); event ids derived from the message and order ids make a second
pixel hit or a resent webhook count once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from centric_sdk import Client

ID_TYPE = "customer_id"  # recipients are addressed by customer number


def send_campaign(client: Client, recipients: Iterable[str],
                  default_subject: str = "Our news this week") -> dict[str, str]:
    """Decide a subject line per recipient (channel 'email'); returns customer -> subject."""
    subjects = {}
    for customer_id in recipients:
        decisions = client.decide(customer_id, channel="email", id_type=ID_TYPE,
                                  experiments=["newsletter-subject"])
        payload = decisions.payload("newsletter-subject", {"subject": default_subject})
        subjects[customer_id] = payload["subject"]
        # ... hand (customer_id, subject) to the mail system here ...
    return subjects


def on_open(client: Client, customer_id: str, message_id: str) -> None:
    """Called by the tracking pixel handler: one 'email_open' per message, however often."""
    client.track(customer_id, "email_open", event_id=f"open-{message_id}", id_type=ID_TYPE)


def on_purchase(client: Client, customer_id: str, order_id: str, amount: float) -> None:
    """Called by the shop when an order is paid."""
    client.track(customer_id, "purchase", amount, event_id=f"order-{order_id}",
                 id_type=ID_TYPE)


if __name__ == "__main__":
    base_url, server_key = sys.argv[1], sys.argv[2]
    with Client(base_url, server_key, timeout=1.0) as centric:
        sent = send_campaign(centric, ["cust-1", "cust-2", "cust-3"])
        for customer, subject in sent.items():
            print(customer, subject)
        on_open(centric, "cust-1", "m-1")
        on_purchase(centric, "cust-1", "o-1", 49.9)
