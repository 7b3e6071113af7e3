"""Counters the processor keeps and their Prometheus exposition (``/metrics``).

Plain integers updated on the event loop (no lock per increment), described at scrape time
through ``prometheus_client`` (``metering.metrics``). Lag is computed at scrape time from the
consumer's positions and high-water marks (passed in as a mapping).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from metering.metrics import Metric, counter, exposition, gauge, histogram

BATCH_BUCKETS: tuple[int, ...] = (1, 10, 50, 100, 500, 1000, 2000, 5000)


@dataclass
class Metrics:
    processed: int = 0
    entries: int = 0
    alerts: int = 0
    alerts_suppressed: int = 0
    """Alerts of dead-lettered inputs not sent again (a copy of an input alerted recently)."""
    swept_entries: int = 0
    transactions: int = 0
    dropped_fetched: int = 0
    """Fetched records left unprocessed because a rebalance overtook them (re-read later)."""
    refetched_skipped: int = 0
    """Re-fetched records skipped because they were already processed."""
    rerouted: int = 0
    """Input records that arrived off their account's partition, forwarded to it (routing.py)."""
    restore_mismatches: int = 0
    """Restored partitions whose account table disagreed with the ledger (then repaired)."""
    restore_rebuilt: int = 0
    """Accounts rebuilt (or removed) because their restored state disagreed with the ledger."""
    restore_repaired: int = 0
    """Committed changelog records a restore left out, applied by the completion check."""
    verified_partitions: int = 0
    """Partitions owned now whose restored state agreed with the ledger (processed)."""
    dead_lettered: dict[str, int] = field(default_factory=dict)
    batch_count: int = 0
    batch_sum: int = 0
    batch_buckets: list[int] = field(default_factory=lambda: [0] * len(BATCH_BUCKETS))
    config_reloads: int = 0
    config_version: str = ""

    def observe_batch(self, size: int) -> None:
        self.batch_count += 1
        self.batch_sum += size
        for i, bound in enumerate(BATCH_BUCKETS):
            if size <= bound:
                self.batch_buckets[i] += 1

    def render(self, lag: Mapping[tuple[str, int], int] | None = None) -> bytes:
        """Prometheus text (``prometheus_client``), lag as of now."""
        return exposition(lambda: self.families(lag or {}))

    def families(self, lag: Mapping[tuple[str, int], int]) -> list[Metric]:
        p = "metering_processor_"
        return [
            counter(p + "events_processed_total", "Input records applied.", self.processed),
            counter(p + "ledger_entries_total", "Ledger entries produced.", self.entries),
            counter(p + "alerts_total", "Credit alerts produced.", self.alerts),
            counter(
                p + "alerts_suppressed_total",
                "Alerts of dead-lettered inputs not sent again.",
                self.alerts_suppressed,
            ),
            counter(p + "sweep_entries_total", "Ledger entries of sweeps.", self.swept_entries),
            counter(p + "transactions_total", "Kafka transactions committed.", self.transactions),
            counter(
                p + "dropped_fetched_total",
                "Fetched records a rebalance overtook (re-read, not lost).",
                self.dropped_fetched,
            ),
            counter(
                p + "rerouted_total",
                "Input records forwarded to their account's partition (another partitioner).",
                self.rerouted,
            ),
            counter(
                p + "refetched_skipped_total",
                "Re-fetched records skipped as already processed.",
                self.refetched_skipped,
            ),
            counter(
                p + "restore_mismatches_total",
                "Restored partitions whose state disagreed with the ledger.",
                self.restore_mismatches,
            ),
            counter(
                p + "restore_rebuilt_accounts_total",
                "Accounts rebuilt from the changelog topic or the ledger after a restore "
                "disagreed with the ledger.",
                self.restore_rebuilt,
            ),
            counter(
                p + "restore_repaired_records_total",
                "Committed changelog records a restore left out, applied before processing.",
                self.restore_repaired,
            ),
            gauge(
                p + "verified_partitions",
                "Owned partitions whose restored state agrees with the ledger.",
                self.verified_partitions,
            ),
            counter(
                p + "dlq_total",
                "Records sent to a dead-letter topic, by source topic.",
                {(topic,): n for topic, n in self.dead_lettered.items()},
                ["source"],
            ),
            histogram(
                p + "batch_size",
                "Records per processed batch.",
                BATCH_BUCKETS,
                self.batch_buckets,
                self.batch_count,
                self.batch_sum,
            ),
            counter(
                p + "config_reloads_total", "Price book or plans reloads.", self.config_reloads
            ),
            gauge(
                p + "config_info",
                "The loaded price book and plans.",
                {(self.config_version,): 1},
                ["version"],
            ),
            gauge(
                p + "consumer_lag",
                "Records behind the high-water mark.",
                {(topic, str(part)): n for (topic, part), n in lag.items()},
                ["topic", "partition"],
            ),
        ]
