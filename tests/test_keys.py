"""The keyspace is a contract with running deployments: these strings must not drift."""

from __future__ import annotations

from server.identities import node, parse
from server.keys import SHARDS, Keyspace, shard_of


def test_key_strings_are_pinned():
    ks = Keyspace("centric")
    assert ks.experiments_index == "{centric:cfg}:exps"
    assert ks.experiment("hero") == "{centric:cfg}:exp:hero"
    assert ks.epoch_counters("hero", "abcd", 2) == "{centric:s02}:ce:hero:abcd"
    assert ks.log("hero", "abcd", 15) == "{centric:s15}:lg:hero:abcd"
    assert len(ks.experiment_keys("hero", "abcd")) == 48
    assert ks.config_version == "{centric:cfg}:ver"
    assert ks.api_key("ab12") == "{centric:auth}:key:ab12"
    assert ks.audit_log == "{centric:cfg}:audit"  # with the definitions its scripts change
    v = ks.visitor("visitor-1")
    assert v.shard == shard_of("visitor-1") == 4
    assert v.profile == "{centric:s04}:pr:visitor-1"
    assert ks.counters("hero", "abcd", 1) == "{centric:s01}:ct:hero:abcd"
    assert len(ks.all_counters("hero", "abcd")) == SHARDS == 16
    assert ks.segments("hero", "abcd") == "{centric:cfg}:sg:hero:abcd"
    assert ks.buyers(3) == "{centric:s03}:by"  # with the visitors whose purchases it lists
    assert ks.customer_value_model == "{centric:cfg}:clv"
    assert ks.moments == "{centric:cfg}:moments"
    assert ks.moment_members("second") == "{centric:cfg}:mm:second"
    assert ks.moment_entries("second") == "{centric:cfg}:ms:second"
    assert ks.moment_sequence("second") == "{centric:cfg}:mq:second"
    assert ks.moment_generations == "{centric:cfg}:mg"
    assert ks.job_lock("clv") == "{centric:cfg}:job:clv"
    assert ks.job_ran("clv") == "{centric:cfg}:job:clv:at"


def test_typed_ids_are_node_names_of_their_own():
    ks = Keyspace("centric")
    assert node("visitor_id", "x") == "visitor_id:x"
    assert node("customer_id", "x") == "customer_id:x"
    assert parse("device_id:a:b") == ("device_id", "a:b")  # values may hold colons
    assert ks.visitor(node("customer_id", "42")).profile == "{centric:s15}:pr:customer_id:42"
    device, customer = ks.visitor(node("device_id", "42")), ks.visitor(node("customer_id", "42"))
    assert device.profile != customer.profile


def test_shards_are_stable_and_spread():
    assert [shard_of(f"v{i}") for i in range(5)] == [shard_of(f"v{i}") for i in range(5)]
    counts = [0] * SHARDS
    for i in range(16000):
        counts[shard_of(f"visitor-{i}")] += 1
    assert min(counts) > 800 and max(counts) < 1200


def test_visitor_keys_share_the_counters_slot_tag():
    ks = Keyspace("p")
    v = ks.visitor("someone@example")
    tag = ks.shard_tag(v.shard)
    for key in (v.profile, v.linked, v.lock,
                ks.counters("e", "s", v.shard), ks.epoch_counters("e", "s", v.shard),
                ks.log("e", "s", v.shard)):
        assert key.startswith(tag)
