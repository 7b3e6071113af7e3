"""Counters the processor keeps and their Prometheus text exposition (``/metrics``).

Plain integers updated on the event loop: no locks, no client library. Lag is computed at
scrape time from the consumer's positions and high-water marks (passed in as a mapping).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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

    def render(self, lag: Mapping[tuple[str, int], int] | None = None) -> str:
        """Prometheus text format 0.0.4."""
        lines = [
            "# HELP metering_processor_events_processed_total Input records applied.",
            "# TYPE metering_processor_events_processed_total counter",
            f"metering_processor_events_processed_total {self.processed}",
            "# HELP metering_processor_ledger_entries_total Ledger entries produced.",
            "# TYPE metering_processor_ledger_entries_total counter",
            f"metering_processor_ledger_entries_total {self.entries}",
            "# TYPE metering_processor_alerts_total counter",
            f"metering_processor_alerts_total {self.alerts}",
            "# TYPE metering_processor_alerts_suppressed_total counter",
            f"metering_processor_alerts_suppressed_total {self.alerts_suppressed}",
            "# TYPE metering_processor_sweep_entries_total counter",
            f"metering_processor_sweep_entries_total {self.swept_entries}",
            "# TYPE metering_processor_transactions_total counter",
            f"metering_processor_transactions_total {self.transactions}",
            "# HELP metering_processor_dropped_fetched_total Fetched records a rebalance"
            " overtook (re-read, not lost).",
            "# TYPE metering_processor_dropped_fetched_total counter",
            f"metering_processor_dropped_fetched_total {self.dropped_fetched}",
            "# HELP metering_processor_refetched_skipped_total Re-fetched records skipped as"
            " already processed.",
            "# TYPE metering_processor_refetched_skipped_total counter",
            f"metering_processor_refetched_skipped_total {self.refetched_skipped}",
            "# HELP metering_processor_restore_mismatches_total Restored partitions whose"
            " state disagreed with the ledger.",
            "# TYPE metering_processor_restore_mismatches_total counter",
            f"metering_processor_restore_mismatches_total {self.restore_mismatches}",
            "# HELP metering_processor_restore_rebuilt_accounts_total Accounts rebuilt from"
            " the changelog topic or the ledger after a restore disagreed with the ledger.",
            "# TYPE metering_processor_restore_rebuilt_accounts_total counter",
            f"metering_processor_restore_rebuilt_accounts_total {self.restore_rebuilt}",
            "# HELP metering_processor_restore_repaired_records_total Committed changelog"
            " records a restore left out, applied before processing.",
            "# TYPE metering_processor_restore_repaired_records_total counter",
            f"metering_processor_restore_repaired_records_total {self.restore_repaired}",
            "# HELP metering_processor_verified_partitions Owned partitions whose restored"
            " state agrees with the ledger.",
            "# TYPE metering_processor_verified_partitions gauge",
            f"metering_processor_verified_partitions {self.verified_partitions}",
            "# HELP metering_processor_dlq_total Records sent to a dead-letter topic.",
            "# TYPE metering_processor_dlq_total counter",
        ]
        for topic, n in sorted(self.dead_lettered.items()):
            lines.append(f'metering_processor_dlq_total{{source="{topic}"}} {n}')
        lines += [
            "# HELP metering_processor_batch_size Records per processed batch.",
            "# TYPE metering_processor_batch_size histogram",
        ]
        for bound, n in zip(BATCH_BUCKETS, self.batch_buckets, strict=True):
            lines.append(f'metering_processor_batch_size_bucket{{le="{bound}"}} {n}')
        lines += [
            f'metering_processor_batch_size_bucket{{le="+Inf"}} {self.batch_count}',
            f"metering_processor_batch_size_sum {self.batch_sum}",
            f"metering_processor_batch_size_count {self.batch_count}",
            "# TYPE metering_processor_config_reloads_total counter",
            f"metering_processor_config_reloads_total {self.config_reloads}",
            "# TYPE metering_processor_config_info gauge",
            f'metering_processor_config_info{{version="{self.config_version}"}} 1',
            "# HELP metering_processor_consumer_lag Records behind the high-water mark.",
            "# TYPE metering_processor_consumer_lag gauge",
        ]
        for (topic, partition), n in sorted((lag or {}).items()):
            lines.append(
                f'metering_processor_consumer_lag{{topic="{topic}",partition="{partition}"}} {n}'
            )
        return "\n".join(lines) + "\n"
