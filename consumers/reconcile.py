"""``metering reconcile``: per-account totals must agree across the ledger topic (the event store),
ClickHouse (raw ``ledger_entries`` and the ``usage_daily`` rollup) and Redis balances, and the
ledger itself must be sound.

Checks, per account:
- the ledger topic on its own (``consumers.ledger_audit``, in the same pass over the topic):
  gap-free ``seq`` from 1, unique ``entry_id``, the ``balance_after`` / ``overage_after``
  chains and each grant's remaining within ``[0, amount]``; stores that agree with each other
  cannot vouch for a ledger that is wrong everywhere;
- ClickHouse raw ledger vs the topic: entry count, net amount, usage credits, last seq and the
  balance after it (a duplicate, missing or altered row shows up here);
- rollup vs raw: usage credits per (subject, day) (invariant 4);
- Redis ``available`` vs the topic's last ``balance_after`` (skipped with ``--no-redis``).

``--ledger-only`` runs the ledger audit alone (no ClickHouse, no Redis).
Exit status 1 and one line per violation or mismatch when anything is wrong; 0 when all agree.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consumers.clickhouse import add_database_argument
from consumers.ledger_audit import LedgerAudit, Violation
from consumers.query_relay import READ_ERRORS, Reader, open_reader, read_problem
from metering.domain.records import LedgerEntry
from metering.topic_reader import read_to_end

if TYPE_CHECKING:
    from metering.avro.registry import SchemaRegistry

SPEND_TYPES = frozenset({"USAGE_DEBIT", "OVERAGE", "USAGE_REVERSED"})
"""Entries whose amount is usage spent (a reversal's, positive, nets it back)."""
BalanceReader = Callable[[Iterable[str]], Mapping[str, int | None]]


@dataclass(slots=True)
class AccountTotals:
    entries: int = 0
    net_amount: int = 0
    usage_credits: int = 0
    last_seq: int = 0
    balance_after: int = 0

    def add(self, entry: Mapping[str, Any]) -> None:
        self.entries += 1
        amount = int(entry["amount"])
        self.net_amount += amount
        if entry["type"] in SPEND_TYPES:
            self.usage_credits -= amount
        if int(entry["seq"]) >= self.last_seq:
            self.last_seq = int(entry["seq"])
            self.balance_after = int(entry["balance_after"])


@dataclass(frozen=True, slots=True)
class Mismatch:
    account: str
    check: str
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return f"{self.account}: {self.check}: expected {self.expected!r}, got {self.actual!r}"


@dataclass(slots=True)
class Report:
    accounts: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    """Broken invariants of the ledger itself (``consumers.ledger_audit``)."""
    ledger_entries: int = 0

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.violations


def totals_from_entries(entries: Iterable[Mapping[str, Any]]) -> dict[str, AccountTotals]:
    totals: dict[str, AccountTotals] = defaultdict(AccountTotals)
    for entry in entries:
        totals[str(entry["account_id"])].add(entry)
    return dict(totals)


def read_ledger_topic(
    bootstrap: str, topic: str, decode: Callable[[bytes], Mapping[str, Any]]
) -> Iterable[Mapping[str, Any]]:
    """Every committed record of ``topic`` from the beginning to its end, decoded."""
    for batch in read_to_end(bootstrap, topic, timeout_s=None):
        for msg in batch:
            yield decode(msg.value())


def audited(
    records: Iterable[Mapping[str, Any]], audit: LedgerAudit
) -> Iterator[Mapping[str, Any]]:
    """Pass decoded ledger records through unchanged, feeding each to ``audit`` on the way."""
    for record in records:
        audit.add(LedgerEntry.from_record(record))
        yield record


def audit_ledger_topic(
    bootstrap: str, topic: str, registry: SchemaRegistry | None = None
) -> list[Violation]:
    """Every violation of the ledger's own invariants in ``topic`` (empty: the ledger is sound).

    Reads every partition to its end (read_committed). For tests, after a pipeline run::

        violations = audit_ledger_topic(kafka_bootstrap, topics.credit_ledger)
        assert not violations, "\\n".join(map(str, violations))

    ``registry`` defaults to the configured one (``load_registry(load_settings())``).
    """
    from metering.avro import LEDGER_ENTRY, AvroCodec, load_registry
    from metering.config import load_settings

    codec = AvroCodec(registry or load_registry(load_settings()), LEDGER_ENTRY)
    audit = LedgerAudit()
    for _ in audited(read_ledger_topic(bootstrap, topic, codec.decode), audit):
        pass
    return audit.violations


def clickhouse_totals(
    client: Reader, cut: Mapping[str, int] | None = None
) -> dict[str, AccountTotals]:
    """Per-account totals of ``ledger_entries``; with ``cut`` (account -> last seq read from the
    ledger topic), only up to that seq, so entries the sink wrote after the topic was read do
    not count as a difference. Accounts outside ``cut`` count whole."""
    result = client.query(
        """
        SELECT account_id, count(), sum(amount),
               -sumIf(amount, type IN ('USAGE_DEBIT', 'OVERAGE', 'USAGE_REVERSED')),
               max(seq), argMax(balance_after, seq)
        FROM ledger_entries
        WHERE NOT has({accounts:Array(String)}, account_id)
           OR seq <= {seqs:Array(UInt64)}[indexOf({accounts:Array(String)}, account_id)]
        GROUP BY account_id
        """,
        parameters={"accounts": list(cut or {}), "seqs": list((cut or {}).values())},
    )
    return {
        row[0]: AccountTotals(int(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5]))
        for row in result.result_rows
    }


def rollup_vs_raw(client: Reader) -> list[Mismatch]:
    """Usage credits per (account, subject, day): the rollup must equal the raw ledger."""
    result = client.query(
        """
        SELECT account_id, subject, day, sum(r) AS rollup, sum(w) AS raw
        FROM (
            SELECT account_id, subject, day, sum(credits) AS r, toInt64(0) AS w
            FROM usage_daily GROUP BY account_id, subject, day
            UNION ALL
            SELECT account_id, subject, toDate(occurred_at) AS day, toInt64(0) AS r,
                   toInt64(-sum(amount)) AS w
            FROM ledger_entries WHERE type IN ('USAGE_DEBIT', 'OVERAGE', 'USAGE_REVERSED')
            GROUP BY account_id, subject, day
        )
        GROUP BY account_id, subject, day
        HAVING rollup != raw
        ORDER BY account_id, subject, day
        """
    )
    return [
        Mismatch(str(acct), f"rollup credits {subject or '-'} {day}", int(raw), int(rollup))
        for acct, subject, day, rollup, raw in result.result_rows
    ]


def redis_balances(redis_url: str) -> BalanceReader:
    """Reads ``available`` from the projection's balance hash (layout of ``projections.keys``)."""
    from projections.keys import account_keys, prefix_from_env
    from projections.redis_connect import connect

    conn = connect(redis_url)
    prefix = prefix_from_env()

    def read(accounts: Iterable[str]) -> dict[str, int | None]:
        accounts = list(accounts)
        pipe = conn.pipeline(transaction=False)
        for account in accounts:
            pipe.hget(account_keys(prefix, account).balance, "available")
        values = pipe.execute()
        return {a: None if v is None else int(v) for a, v in zip(accounts, values, strict=True)}

    return read


def compare(
    ledger: Mapping[str, AccountTotals],
    clickhouse: Mapping[str, AccountTotals],
    rollup_mismatches: Iterable[Mismatch] = (),
    balances: BalanceReader | None = None,
) -> Report:
    report = Report(accounts=len(set(ledger) | set(clickhouse)))
    for account in sorted(set(ledger) | set(clickhouse)):
        want, got = ledger.get(account), clickhouse.get(account)
        if want is None or got is None:
            report.mismatches.append(
                Mismatch(account, "present in ledger topic / ClickHouse", want is not None, False)
            )
            continue
        for name in ("entries", "net_amount", "usage_credits", "last_seq", "balance_after"):
            if getattr(want, name) != getattr(got, name):
                report.mismatches.append(
                    Mismatch(account, f"clickhouse {name}", getattr(want, name), getattr(got, name))
                )
    report.mismatches.extend(rollup_mismatches)
    if balances is not None and ledger:
        for account, available in balances(sorted(ledger)).items():
            if available != ledger[account].balance_after:
                report.mismatches.append(
                    Mismatch(account, "redis available", ledger[account].balance_after, available)
                )
    return report


def reconcile(
    client: Reader | None,
    ledger_entries: Iterable[Mapping[str, Any]],
    balances: BalanceReader | None = None,
) -> Report:
    """Audit the ledger and compare it with ClickHouse (``client``; None: ledger audit only)
    and Redis (``balances``; None: skipped). The topic is read once for both."""
    audit = LedgerAudit()
    ledger = totals_from_entries(audited(ledger_entries, audit))
    if client is None:
        report = Report(accounts=len(ledger))
    else:
        cut = {account: totals.last_seq for account, totals in ledger.items()}
        report = compare(ledger, clickhouse_totals(client, cut), rollup_vs_raw(client), balances)
    report.violations = audit.violations
    report.ledger_entries = audit.entries
    return report


def main(argv: list[str]) -> int:
    from metering.avro import LEDGER_ENTRY, AvroCodec, load_registry
    from metering.config import load_settings
    from metering.topic_reader import TopicReadError
    from metering.topics import TopicNames, add_topic_prefix_argument

    parser = argparse.ArgumentParser(
        prog="metering reconcile",
        description="Check the credit ledger and the stores built from it. First the ledger "
        "topic itself, per account: gap-free sequence numbers, unique entry ids, a consistent "
        "balance chain, grants within bounds. Then per-account totals of the ledger against "
        "ClickHouse (raw entries and the usage_daily rollup) and the Redis balances. Prints "
        "one line per finding; exit status 1 when anything is wrong, 0 when all agree.",
    )
    add_database_argument(parser)
    add_topic_prefix_argument(parser)
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis balance check")
    parser.add_argument(
        "--ledger-only",
        action="store_true",
        help="only audit the ledger topic itself (no ClickHouse, no Redis)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on a live system the stores trail the ledger by moments: while only store "
        "differences remain, read everything again for up to this long (default: 30)",
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    codec = AvroCodec(load_registry(settings), LEDGER_ENTRY)
    topic = TopicNames(args.topic_prefix).credit_ledger
    try:
        client = None if args.ledger_only else open_reader(settings.clickhouse_url, args.database)
        balances = None if args.no_redis or args.ledger_only else redis_balances(settings.redis_url)
        deadline = time.monotonic() + args.settle
        while True:
            ledger = read_ledger_topic(settings.kafka_bootstrap, topic, codec.decode)
            report = reconcile(client, ledger, balances)
            if report.violations or not report.mismatches or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    except TopicReadError as exc:  # one line, never a traceback
        print(f"metering reconcile: {exc} (is --topic-prefix right?)", file=sys.stderr)
        return 2
    except READ_ERRORS as exc:
        print(f"metering reconcile: {read_problem(exc, args.database)}", file=sys.stderr)
        return 2
    for violation in report.violations:
        print(violation)
    broken = sorted({v.account for v in report.violations})
    print(
        f"ledger audit: {report.ledger_entries} entries, {len(report.violations)} violations"
        + (f" in {len(broken)} accounts: {', '.join(broken)}" if broken else "")
    )
    if not args.ledger_only:
        for mismatch in report.mismatches:
            print(f"MISMATCH {mismatch}")
        bad = sorted({m.account for m in report.mismatches})
        print(
            f"reconcile: {report.accounts} accounts, {len(bad)} mismatched"
            + (f": {', '.join(bad)}" if bad else "")
        )
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
