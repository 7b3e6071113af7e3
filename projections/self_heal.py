"""Self-heal: rebuild from the ledger what Redis lost, without waiting for an operator.

The projection is derived state (invariant 3): whatever Redis loses can be replayed from
``credit-ledger``. The consumer (``projections.consumer``) uses this module on two signals:

- **A partition's sentinel is gone.** Each consumer keeps one small key per ledger
  partition it owns (``keys.sentinel_key``), set once the partition is in Redis. FLUSHALL,
  a restart without persistence or a failover to an empty replica deletes it with the
  accounts, including accounts that get no new entry and would otherwise answer
  ``unknown_account`` for good. Checked every second, when partitions are assigned and on
  a seq gap; a missing sentinel makes the consumer replay the partition from its first
  offset up to its committed position. One key per partition (not one per prefix) because
  each consumer of the group must notice the loss for the partitions it owns.
- **A seq gap for one account** while the sentinel is there: the account's keys were
  evicted or deleted (stored seq 0: balance and grants are cleared and replayed,
  ``reserved`` is recomputed from the holds that survived), or they are behind (e.g. a
  restart from an older snapshot: the missing entries are replayed over them; apply skips
  what is already there). A gap the ledger itself cannot fill stays held, as before.

Both replays are ``rebuild.replay``: the reader and apply path of ``metering projection
rebuild``, never a second fold. Holds are not in the ledger: lost holds stay lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from projections.apply import Gap, Projector
from projections.keys import sentinel_key
from projections.rebuild import Decoder, RebuildReport, clear, replay
from projections.redis_connect import SyncRedis

READY = b"ready"
"""Sentinel value: the partition is in Redis up to the consumer's position."""

REBUILDING = b"rebuilding"
"""Sentinel value during a replay; not READY, so a replay cut short is done again."""

NAMES_LOGGED = 10


@dataclass(slots=True)
class Repair:
    """What one self-heal rebuilt: the content of its log line and metrics."""

    topic: str
    reason: str
    partitions: list[int]
    accounts: list[str]
    entries: int = 0
    applied: int = 0
    seconds: float = 0.0
    gaps: list[str] = field(default_factory=list)
    lost_again: list[int] = field(default_factory=list)
    """Partitions whose sentinel vanished during the replay: Redis lost data again."""
    whole_partitions: bool = True

    def describe(self) -> str:
        names = ", ".join(self.accounts[:NAMES_LOGGED])
        if len(self.accounts) > NAMES_LOGGED:
            names += f", ... {len(self.accounts) - NAMES_LOGGED} more"
        what = (
            f"partitions {self.partitions}"
            if self.whole_partitions
            else f"accounts [{names}] on partition {self.partitions[0]}"
        )
        text = (
            f"self-heal ({self.reason}): rebuilt {what} of {self.topic} from the ledger: "
            f"{_count(len(self.accounts), 'account')}, {_count(self.entries, 'entry', 'entries')} "
            f"({self.applied} applied) "
            f"in {self.seconds:.2f}s"
        )
        if self.gaps:
            text += f"; still gapped, held: {'; '.join(self.gaps[:NAMES_LOGGED])}"
        if self.lost_again:
            text += f"; Redis lost data again meanwhile, partitions {self.lost_again} redone next"
        return text


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def gaps_to_repair(
    gaps: Sequence[Gap],
    positions: Sequence[tuple[int, int]],
    tried: Mapping[int, set[tuple[str, int, int]]],
) -> dict[int, list[Gap]]:
    """partition -> the gaps of a batch to repair from the ledger.

    A gap already tried (same account, stored and next seq) is left to the hold and its
    retries: the ledger up to the position was replayed once and could not fill it.
    """
    out: dict[int, list[Gap]] = {}
    for gap in gaps:
        partition = positions[gap.index][0]
        if (gap.account, gap.stored_seq, gap.got_seq) in tried.get(partition, ()):
            continue
        out.setdefault(partition, []).append(gap)
    return out


def gap_reason(gaps: Iterable[Gap]) -> str:
    """Why an account repair ran: lost keys (stored seq 0) or keys behind the ledger."""
    kinds = {"account keys gone" if g.stored_seq == 0 else "account behind" for g in gaps}
    return "seq gap, " + " / ".join(sorted(kinds))


class SelfHeal:
    """Sentinels and ledger replays for one consumer's partitions of ``topic``."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        client: SyncRedis,
        projector: Projector,
        decode: Decoder,
        timeout_s: float = 600.0,
        batch_size: int = 5000,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client = client
        self.projector = projector
        self.prefix = projector.prefix
        self.decode = decode
        self.timeout_s = timeout_s
        self.batch_size = batch_size

    def _key(self, partition: int) -> str:
        return sentinel_key(self.prefix, self.topic, partition)

    def missing(self, partitions: Iterable[int]) -> list[int]:
        """The partitions whose sentinel is not READY (one GET each, pipelined)."""
        wanted = sorted(partitions)
        pipe = self.client.pipeline(transaction=False)
        for partition in wanted:
            pipe.get(self._key(partition))
        return [p for p, value in zip(wanted, pipe.execute(), strict=True) if value != READY]

    def mark_ready(self, partitions: Iterable[int]) -> None:
        """Set the sentinels of partitions with nothing to replay (nothing committed yet)."""
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            pipe.set(self._key(partition), READY)
        pipe.execute()

    def rebuild_partitions(self, ends: Mapping[int, int], reason: str) -> Repair:
        """Replay whole partitions up to ``ends`` (committed offsets), then mark them READY.

        The sentinel reads REBUILDING meanwhile and turns READY only if it still exists
        (SET XX): when Redis loses its data again during the replay, the partition stays
        missing and the next check replays it again.
        """
        started = time.monotonic()
        partitions = sorted(ends)
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            pipe.set(self._key(partition), REBUILDING)
        pipe.execute()
        report = RebuildReport(prefix=self.prefix, account=None)
        to_read = {p: end for p, end in ends.items() if end > 0}
        touched = self._replay(report, None, to_read) if to_read else set()
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            pipe.set(self._key(partition), READY, xx=True)
        done = pipe.execute()
        return Repair(
            topic=self.topic,
            reason=reason,
            partitions=partitions,
            accounts=sorted(touched),
            entries=report.entries,
            applied=report.applied,
            seconds=time.monotonic() - started,
            gaps=report.gaps,
            lost_again=[p for p, ok in zip(partitions, done, strict=True) if not ok],
        )

    def rebuild_accounts(
        self, partition: int, end: int, stored: Mapping[str, int], reason: str
    ) -> Repair:
        """Replay some accounts of one partition up to ``end`` (its committed offset).

        Accounts whose keys are gone (stored seq 0) are cleared first, holds kept: the apply
        script's first entry sets ``reserved`` from the surviving holds. Accounts behind are
        replayed in place.
        """
        started = time.monotonic()
        lost = sorted(account for account, seq in stored.items() if seq == 0)
        for account in lost:
            clear(self.client, self.prefix, account, keep_holds=True)
        report = RebuildReport(prefix=self.prefix, account=None)
        if end > 0:
            self._replay(report, set(stored), {partition: end})
        return Repair(
            topic=self.topic,
            reason=reason,
            partitions=[partition],
            accounts=sorted(stored),
            entries=report.entries,
            applied=report.applied,
            seconds=time.monotonic() - started,
            gaps=report.gaps,
            whole_partitions=False,
        )

    def _replay(
        self, report: RebuildReport, accounts: set[str] | None, ends: Mapping[int, int]
    ) -> set[str]:
        return replay(
            bootstrap=self.bootstrap,
            topic=self.topic,
            projector=self.projector,
            decode=self.decode,
            report=report,
            accounts=accounts,
            ends=ends,
            timeout_s=self.timeout_s,
            batch_size=self.batch_size,
        )
