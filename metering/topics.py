"""Topic names of the pipeline. Creation (``metering topics create``) lives here too.

Every keyed topic is keyed by ``account_id`` and has the same partition count, so one
account's usage and commands reach the same processor task in order. ``TopicNames``
takes a prefix so tests and benchmarks can run side by side on one broker.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metering.config import env_value


def add_topic_prefix_argument(
    parser: argparse.ArgumentParser, what: str = "prefix of the Kafka topic names"
) -> None:
    """``--topic-prefix``, one name for the concept in every command that names topics, with
    one default: ``METERING_TOPIC_PREFIX`` (what ``metering env`` exports for a demo run)."""
    parser.add_argument(
        "--topic-prefix",
        default=env_value("METERING_TOPIC_PREFIX"),
        metavar="PREFIX",
        help=f"{what} (default: METERING_TOPIC_PREFIX, else none)",
    )


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The pipeline's topics, optionally namespaced by a prefix (e.g. ``"t123."``)."""

    prefix: str = ""

    @property
    def usage_events(self) -> str:
        return f"{self.prefix}usage-events"

    @property
    def credit_commands(self) -> str:
        return f"{self.prefix}credit-commands"

    @property
    def credit_ledger(self) -> str:
        return f"{self.prefix}credit-ledger"

    @property
    def credit_alerts(self) -> str:
        return f"{self.prefix}credit-alerts"

    @property
    def usage_events_dlq(self) -> str:
        return f"{self.prefix}usage-events.dlq"

    @property
    def credit_commands_dlq(self) -> str:
        return f"{self.prefix}credit-commands.dlq"

    @property
    def credit_ledger_dlq(self) -> str:
        """Ledger records the sink or projection could not decode (should stay empty)."""
        return f"{self.prefix}credit-ledger.dlq"

    def keyed(self) -> list[str]:
        """Topics keyed by account_id: all get the same partition count."""
        return [self.usage_events, self.credit_commands, self.credit_ledger, self.credit_alerts]

    def dead_letter(self) -> list[str]:
        return [self.usage_events_dlq, self.credit_commands_dlq, self.credit_ledger_dlq]

    def all(self) -> list[str]:
        return self.keyed() + self.dead_letter()


def configured_topics() -> TopicNames:
    """The topic names under ``METERING_TOPIC_PREFIX`` (read when called, like the SDK's
    other settings)."""
    return TopicNames(env_value("METERING_TOPIC_PREFIX"))


LEDGER_CONFIG: dict[str, str] = {"retention.ms": "-1"}
"""``credit-ledger`` is the event store: kept forever."""


class TopicError(RuntimeError):
    """A topic could not be created, or exists with a shape the pipeline cannot use."""


UNPROCESSED_INPUT_CONFIG: dict[str, str] = {"retention.ms": "-1"}
"""Input and dead-letter topics are not deleted by time. Kafka's time retention goes by each
record's own timestamp, which a producer may set to the event time: a backfill, a late
re-send or a test input dated weeks ago would be deleted (the whole segment, the active one
included) before the processor read it, and lost without a trace. Bound these topics with
``retention.bytes`` instead when disk matters."""


REPLICATED_BROKERS = 3
"""From this many brokers on, topics get 3 replicas and ``min.insync.replicas`` 2: an acked
write is on two brokers, and one broker can die without stopping a transaction."""


def replication_for(brokers: int) -> tuple[int, dict[str, str]]:
    """(replication factor, extra topic configs) for a cluster of ``brokers`` brokers; -1 is
    the broker's default (a single broker, or a cluster of two)."""
    if brokers >= REPLICATED_BROKERS:
        return 3, {"min.insync.replicas": "2"}
    return -1, {}


def cluster_replication(bootstrap: str, timeout: float = 10.0) -> int:
    """The replication factor topics get on the cluster at ``bootstrap`` (3 from three brokers
    on, else 1), for topics created by others than ``create_topics`` (the processor's
    changelogs). Raises :class:`TopicError` when no broker answers."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    deadline = time.monotonic() + timeout
    while True:  # a broker restarting refuses connections at once: ask until the deadline
        try:
            brokers = len(admin.list_topics(timeout=max(0.5, deadline - time.monotonic())).brokers)
            break
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise TopicError(f"no broker at {bootstrap} answered: {exc}") from exc
            time.sleep(0.5)
    replicas, _ = replication_for(brokers)
    return max(1, replicas)


def topic_configs(names: TopicNames, brokers: int = 1) -> dict[str, dict[str, str]]:
    """Per-topic configs beyond the broker defaults."""
    _, replicated = replication_for(brokers)
    configs = {names.credit_ledger: {**LEDGER_CONFIG, **replicated}}
    for name in (names.usage_events, names.credit_commands, *names.dead_letter()):
        configs[name] = {**UNPROCESSED_INPUT_CONFIG, **replicated}
    for name in names.all():
        configs.setdefault(name, dict(replicated))
    return {name: config for name, config in configs.items() if config}


def create_topics(
    bootstrap: str, names: TopicNames, partitions: int, timeout: float = 30.0
) -> None:
    """Create every topic of ``names`` with ``partitions`` partitions; idempotent.

    Topics that already exist are left alone if their partition count matches, and their
    required configs (``retention.ms=-1`` on the ledger) are re-applied. A keyed topic with
    a different partition count is an error: account order per partition would break.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewTopic,
    )

    if partitions < 1:
        raise TopicError(f"partitions must be >= 1, got {partitions}")
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    cluster = admin.list_topics(timeout=timeout)
    replicas, _ = replication_for(len(cluster.brokers))
    configs = topic_configs(names, len(cluster.brokers))
    existing = cluster.topics
    wanted = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replicas,
            config=configs.get(name, {}),
        )
        for name in names.all()
        if name not in existing
    ]
    _create(admin, wanted, timeout)
    metadata = _wait_for_metadata(admin, names.all(), timeout)
    for name in names.keyed():
        count = len(metadata[name].partitions)
        if count != partitions:
            raise TopicError(
                f"topic {name} has {count} partitions, expected {partitions}: "
                "keyed topics must all have the same count"
            )
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                for key, value in config.items()
            ],
        )
        for name, config in configs.items()
        if name not in {topic.topic for topic in wanted}
    ]
    if resources:
        for resource, future in admin.incremental_alter_configs(resources).items():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                raise TopicError(f"cannot set configs on {resource.name}: {exc}") from exc


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, tuple[int, Mapping[str, str]]],
    replicas: int,
    timeout: float = 30.0,
) -> None:
    """Create each of ``topics`` (name -> (partitions, configs)) that does not exist yet, and
    wait until the broker's metadata lists them all. For topics others would create lazily
    (the processor's changelogs): see ``ProcessorApp.group_topics``."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    existing = admin.list_topics(timeout=timeout).topics
    wanted = [
        NewTopic(name, num_partitions=partitions, replication_factor=replicas, config=dict(cfg))
        for name, (partitions, cfg) in topics.items()
        if name not in existing
    ]
    _create(admin, wanted, timeout)
    _wait_for_metadata(admin, list(topics), timeout)


def _create(admin: Any, wanted: list[Any], timeout: float) -> None:
    """Create the ``NewTopic``s ``wanted``; one that another process created meanwhile is fine."""
    from confluent_kafka import KafkaException

    if not wanted:
        return
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise TopicError(f"cannot create topic {name}: {exc}") from exc


def _wait_for_metadata(admin: Any, topics: list[str], timeout: float) -> dict[str, Any]:
    """Wait until the broker's metadata lists every topic with leaders for all partitions;
    that metadata (another broker of a cluster, asked next, may not list them yet)."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout).topics
        ready = all(
            name in metadata
            and metadata[name].error is None
            and metadata[name].partitions
            and all(p.leader >= 0 for p in metadata[name].partitions.values())
            for name in topics
        )
        if ready:
            return dict(metadata)
        if time.monotonic() > deadline:
            missing = [name for name in topics if name not in metadata]
            raise TopicError(f"topics not ready after {timeout}s: {missing or topics}")
        time.sleep(0.05)


def delete_topics(bootstrap: str, names: TopicNames, timeout: float = 10.0) -> None:
    """Delete every topic of ``names`` (missing ones are fine). For tests and benchmarks."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    for name, future in admin.delete_topics(names.all(), request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                raise TopicError(f"cannot delete topic {name}: {exc}") from exc


def main(argv: list[str]) -> int:
    """``metering topics create [--partitions N] [--topic-prefix P]``."""

    from metering.config import load_settings

    parser = argparse.ArgumentParser(
        prog="metering topics",
        description="Manage the pipeline's Kafka topics on the broker METERING_KAFKA_BOOTSTRAP "
        "names (else the local stack's).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser(
        "create",
        help="create the pipeline's topics (idempotent)",
        description="Create every topic of the pipeline; topics that exist are kept. All keyed "
        "topics get the same partition count; an existing topic with another count is an "
        "error.",
    )
    create.add_argument(
        "--partitions",
        type=int,
        default=None,
        metavar="N",
        help="partitions of each keyed topic (default: METERING_PARTITIONS, else 6)",
    )
    add_topic_prefix_argument(
        create, "prefix of the topic names, for runs side by side on one broker"
    )
    create.add_argument(  # the old name
        "--prefix", dest="topic_prefix", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    partitions = args.partitions if args.partitions is not None else settings.partitions
    names = TopicNames(args.topic_prefix)
    try:
        create_topics(settings.kafka_bootstrap, names, partitions)
    except TopicError as exc:
        print(f"metering topics create: {exc}", file=sys.stderr)
        return 1
    for name in names.all():
        print(f"  {name}")
    print(
        f"topics: {len(names.all())} ready on {settings.kafka_bootstrap} ({partitions} partitions)"
    )
    return 0
