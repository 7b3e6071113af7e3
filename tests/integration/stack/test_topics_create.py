"""``create_topics`` / ``metering topics create`` against the real broker."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from metering.topics import TopicError, TopicNames, create_topics, delete_topics
from metering.topics import main as topics_main

pytestmark = pytest.mark.integration


def _describe(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=10)
    return {name: entry.value for name, entry in entries.items()}


def _eventually(bootstrap: str, topic: str, key: str, value: str) -> str:
    """The config value once it reads ``value`` (or after 10 s): config changes apply async."""
    deadline = time.monotonic() + 10
    while True:
        found = _describe(bootstrap, topic)[key]
        if found == value or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _partition_counts(bootstrap: str, names: TopicNames) -> dict[str, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return {name: len(metadata[name].partitions) for name in names.all()}


def test_create_is_idempotent_with_equal_partitions_and_ledger_kept_forever(
    kafka_bootstrap: str,
) -> None:
    names = TopicNames(f"c{uuid.uuid4().hex[:8]}.")
    try:
        create_topics(kafka_bootstrap, names, 4)
        create_topics(kafka_bootstrap, names, 4)
        counts = _partition_counts(kafka_bootstrap, names)
        assert set(counts) == set(names.all())
        assert {counts[name] for name in names.keyed()} == {4}
        assert _describe(kafka_bootstrap, names.credit_ledger)["retention.ms"] == "-1"
        # Unprocessed input is never deleted by time (a record may carry an old timestamp).
        for name in (names.usage_events, names.credit_commands, *names.dead_letter()):
            assert _describe(kafka_bootstrap, name)["retention.ms"] == "-1", name
        assert _describe(kafka_bootstrap, names.credit_alerts)["retention.ms"] != "-1"

        # A partition count that differs from the existing one is refused, naming the topic.
        with pytest.raises(TopicError, match=names.usage_events):
            create_topics(kafka_bootstrap, names, 5)
    finally:
        delete_topics(kafka_bootstrap, names)


def test_create_restores_ledger_retention_on_an_existing_topic(kafka_bootstrap: str) -> None:
    names = TopicNames(f"r{uuid.uuid4().hex[:8]}.")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        create_topics(kafka_bootstrap, names, 2)
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            names.credit_ledger,
            incremental_configs=[
                ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        admin.incremental_alter_configs([resource])[resource].result(timeout=10)
        assert _eventually(kafka_bootstrap, names.credit_ledger, "retention.ms", "60000") == "60000"
        create_topics(kafka_bootstrap, names, 2)
        assert _eventually(kafka_bootstrap, names.credit_ledger, "retention.ms", "-1") == "-1"
    finally:
        delete_topics(kafka_bootstrap, names)


def test_cli_creates_prefixed_topics(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"cli{uuid.uuid4().hex[:8]}."
    names = TopicNames(prefix)
    try:
        assert topics_main(["create", "--partitions", "3", "--topic-prefix", prefix]) == 0
        assert topics_main(["create", "--partitions", "3", "--topic-prefix", prefix]) == 0
        assert names.credit_ledger_dlq in capsys.readouterr().out
        counts = _partition_counts(kafka_bootstrap, names)
        assert {counts[name] for name in names.keyed()} == {3}
        assert topics_main(["create", "--partitions", "4", "--topic-prefix", prefix]) == 1
    finally:
        delete_topics(kafka_bootstrap, names)
