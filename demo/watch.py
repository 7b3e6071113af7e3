"""Follows the ledger topic (read_committed, from the beginning) so the demo knows the truth.

The demo waits on facts, not sleeps: a phase is done when every published cause id has a
ledger entry; Redis and ClickHouse are caught up when their last seq (and ClickHouse's entry
count) equal what this watcher read from the topic.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from metering.avro import LEDGER_ENTRY, AvroCodec, load_registry
from metering.config import Settings


@dataclass
class AccountLedger:
    entries: int = 0
    max_seq: int = 0
    causes: set[str] = field(default_factory=set)
    types: dict[str, int] = field(default_factory=dict)
    last: dict[str, Any] | None = None


class LedgerWatcher:
    """A background consumer of ``credit-ledger`` that tallies entries per account."""

    def __init__(self, settings: Settings, topic: str, partitions: int, group: str) -> None:
        self.codec = AvroCodec(load_registry(settings), LEDGER_ENTRY)
        self.topic = topic
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.accounts: dict[str, AccountLedger] = {}
        self.lock = threading.Lock()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-watch", daemon=True)

    def start(self) -> LedgerWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for msg in self.consumer.consume(num_messages=5000, timeout=0.2):
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            self.error = str(err)
                        continue
                    value = msg.value()
                    if value is None:
                        continue
                    self._add(self.codec.decode(value))
        finally:
            self.consumer.close()

    def _add(self, entry: dict[str, Any]) -> None:
        with self.lock:
            acct = self.accounts.setdefault(entry["account_id"], AccountLedger())
            acct.entries += 1
            acct.max_seq = max(acct.max_seq, int(entry["seq"]))
            acct.causes.add(entry["cause_id"])
            acct.types[entry["type"]] = acct.types.get(entry["type"], 0) + 1
            if acct.last is None or int(entry["seq"]) >= int(acct.last["seq"]):
                acct.last = entry

    def missing(self, wanted: dict[str, set[str]]) -> int:
        """How many of ``wanted`` cause ids (per account) have no ledger entry yet."""
        with self.lock:
            return sum(
                len(ids - self.accounts.get(account, AccountLedger()).causes)
                for account, ids in wanted.items()
            )

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """account -> (entries, max_seq)."""
        with self.lock:
            return {a: (v.entries, v.max_seq) for a, v in self.accounts.items()}

    def types(self, account: str) -> dict[str, int]:
        with self.lock:
            return dict(self.accounts.get(account, AccountLedger()).types)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
