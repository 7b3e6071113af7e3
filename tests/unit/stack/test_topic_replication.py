"""Topics on three brokers or more: 3 replicas and min ISR 2; below that, the broker's default."""

from __future__ import annotations

from metering.topics import TopicNames, replication_for, topic_configs


def test_three_brokers_or_more_replicate_every_topic_with_min_isr_two() -> None:
    assert replication_for(1) == (-1, {})
    assert replication_for(2) == (-1, {})
    assert replication_for(3) == (3, {"min.insync.replicas": "2"})
    assert replication_for(5) == (3, {"min.insync.replicas": "2"})
    names = TopicNames("p.")
    replicated = topic_configs(names, brokers=3)
    assert set(replicated) == set(names.all())
    assert all(config["min.insync.replicas"] == "2" for config in replicated.values())
    assert replicated[names.credit_ledger]["retention.ms"] == "-1"  # its own configs kept
    assert all("min.insync.replicas" not in c for c in topic_configs(names).values())
