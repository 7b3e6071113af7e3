"""A transactional producer keeps the metadata of every topic it writes (``runtime/fixes.py``).

In the broker-kill test a worker stopped for good when a broker died: its partition's commit
waited on a changelog batch whose leader its producer no longer knew, because aiokafka had
narrowed that producer's metadata requests to the one topic it had sent to while its metadata
lacked it (docs/processor.md item 15). This reproduces that on the real broker: a batch of one
topic waits in the accumulator while the first send to another topic, missing from the
client's metadata, narrows the requests.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.runtime import fixes

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def ledger_audited_after_each_test() -> None:
    """Replaces the package's ledger audit: this test writes no ledger."""


def _create(bootstrap: str, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, 1, 1) for name in names]).values():
        future.result(30)


async def _commit_after_a_send_to_a_topic_the_metadata_lacks(
    bootstrap: str, written: str, lacking: str
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"metadata-{uuid.uuid4().hex}",
        linger_ms=2000,  # the first batch is still in the accumulator at the second send
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send(written, b"changelog record")
        # As after a full metadata fetch that left the topic out (an error for it): the
        # client's metadata lacks it at its first send.
        producer.client.cluster._partitions.pop(lacking, None)
        await producer.send(lacking, b"ledger entry")
        await asyncio.wait_for(producer.commit_transaction(), 15)
    finally:
        await producer.stop()


def test_a_transaction_commits_after_its_producer_first_sends_to_a_topic_its_metadata_lacks(
    kafka_bootstrap: str,
) -> None:
    fixes.apply()
    suffix = uuid.uuid4().hex[:8]
    written, lacking = f"meta-written-{suffix}", f"meta-lacking-{suffix}"
    _create(kafka_bootstrap, written, lacking)
    scenario = _commit_after_a_send_to_a_topic_the_metadata_lacks(kafka_bootstrap, written, lacking)
    asyncio.run(scenario)
