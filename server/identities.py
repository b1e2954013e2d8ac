"""Typed first-party ids: every id is a (type, value) pair, stored as one node name.

A cookie id, a customer number and a hashed e-mail live in separate namespaces, so
``device_id "x"`` and ``customer_id "x"`` are different people. The node name
``<type>:<value>`` is what the keyspace and the identity graph work with; id types match
``[a-z][a-z0-9_]{0,31}`` (no colon), so the first colon always ends the type.
"""

from __future__ import annotations

VISITOR = "visitor_id"  # the default type: a cookie or app-install id the caller made up
KNOWN_TYPES = ("customer_id", "email_sha256")  # holding one makes a profile a known customer
# Profile fields that record which customer a known profile is.
KNOWN_FIELDS = {"customer_id": "cid", "email_sha256": "eh"}
# Links a lookup may follow before it gives up; merges keep chains at one hop.
MAX_LINK_HOPS = 8


def node(id_type: str, value: str) -> str:
    """The node name of a typed id."""
    return f"{id_type}:{value}"


def parse(node_name: str) -> tuple[str, str]:
    """(type, value) of a node name."""
    id_type, _, value = node_name.partition(":")
    return id_type, value


def known_fact(id_type: str, value: str) -> tuple[str, str]:
    """(profile field, value) that marks a known customer's own id, or ("", "") if anonymous."""
    field = KNOWN_FIELDS.get(id_type, "")
    return (field, value) if field else ("", "")
