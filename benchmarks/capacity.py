"""``metering bench capacity --json``: the sizes a capacity plan multiplies (docs/scale.md).

Each figure is measured here, next to a baseline of the same data in its plainest form:

- **Redis**: bytes per account (the projection of an account with a plan and 0-3 more grants,
  applied by the real apply script) next to one plain hash of the same balance fields; bytes
  per hold (held by the real reserve script) next to one plain hash field and zset member.
  Measured as ``used_memory`` growth of a throwaway ``redis-server``.
- **Ledger**: bytes per ledger entry on the broker's disk (the realistic mix of usage through
  the engine, encoded as the processor does, produced as the processor produces) next to the
  encoded Avro value alone. Needs a local broker (``metering stack up``) to read its log size;
  else only the encoded size is reported.
- **ClickHouse**: rows and compressed bytes per usage event across every table the migrations
  create (usage events, ledger entries and the rollups their materialized views fill), next to
  the uncompressed bytes; from a fresh chDB with generated history merged (``OPTIMIZE FINAL``).
- **Idempotency store**: bytes per remembered event id on disk (RocksDB) and in the changelog
  (``benchmarks.engine.id_store_bytes``), next to the 12-byte hash each id is reduced to.

Throughput per worker and per partition come from ``metering bench processor`` (with
``--partitions 6`` and ``--partitions 1``); docs/scale.md puts them together.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from benchmarks.engine import START, id_store_bytes, setup_accounts, usage_event

CREDIT = 1_000_000
DAY_MS = 86_400_000


def _ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 2) if baseline else 0.0


def redis_figures(accounts: int, seed: int = 7) -> dict[str, Any]:
    """Bytes per account and per hold in a throwaway redis-server (no persistence)."""
    from devstack.redis import LocalRedis
    from metering.domain import CreditEngine, load_plans, load_price_book
    from projections.apply import Projector
    from projections.enforcement import Enforcer
    from projections.keys import BALANCE_FIELDS
    from projections.redis_connect import connect

    engine = CreditEngine(load_price_book(), load_plans())
    entries: list[Any] = []
    states = setup_accounts(engine, random.Random(seed), accounts, entries)
    grants = sum(len(s.grants) for s in states.values()) / accounts
    with LocalRedis() as server:
        client = connect(server.url)

        def used() -> int:
            return int(client.info("memory")["used_memory"])

        before = used()
        projector = Projector(client, "cap:")
        records = [e.to_record() for e in entries]
        for start in range(0, len(records), 5000):
            projector.apply_batch(records[start : start + 5000])
        per_account = (used() - before) / accounts
        before = used()
        pipe = client.pipeline(transaction=False)
        for n in range(accounts):
            pipe.hset(f"raw:{{acct-{n:06d}}}:bal", mapping=dict.fromkeys(BALANCE_FIELDS, "0"))
        pipe.execute()
        raw_account = (used() - before) / accounts
        enforcer = Enforcer(client, "cap:")
        names = list(states)
        # Redis CPU per call, from its own command statistics.
        usage = []
        rng = random.Random(seed)
        for i in range(accounts * 5):
            account = names[rng.randrange(accounts)]
            event = usage_event(rng, i, account, START + DAY_MS + i * 7)
            usage += engine.apply_usage(states[account], event, event.occurred_at).entries
        apply_us = _server_us(
            client,
            lambda: [
                projector.apply_batch([e.to_record() for e in usage[k : k + 2000]])
                for k in range(0, len(usage), 2000)
            ],
        ) / len(usage)
        check_us = _server_us(
            client, lambda: [enforcer.check(a, "text_generation", 1000) for a in names]
        ) / len(names)
        hget_us = _server_us(
            client, lambda: [client.hget(f"cap:{{{a}}}:bal", "available") for a in names]
        ) / len(names)
        before = used()
        holds: list[str | None] = []
        reserve_us = _server_us(
            client,
            lambda: holds.extend(enforcer.try_reserve(a, 1, ttl_s=3600).hold_id for a in names),
        ) / len(names)
        per_hold = (used() - before) / accounts
        commit_us = _server_us(
            client, lambda: [enforcer.commit(h, 1) for h in holds if h is not None]
        ) / len(names)
        before = used()
        pipe = client.pipeline(transaction=False)
        for n in range(accounts):
            pipe.hset(f"raw:{{acct-{n:06d}}}:holds", f"{n:032x}:acct", "1")
            pipe.zadd(f"raw:{{acct-{n:06d}}}:holdx", {f"{n:032x}:acct": 1.0})
        pipe.execute()
        raw_hold = (used() - before) / accounts
        client.close()
    return {
        "redis_accounts": accounts,
        "redis_grants_per_account": round(grants, 2),
        "redis_bytes_per_account": round(per_account),
        "redis_bytes_per_account_baseline_plain_hash": round(raw_account),
        "redis_bytes_per_account_ratio": _ratio(per_account, raw_account),
        "redis_bytes_per_hold": round(per_hold),
        "redis_bytes_per_hold_baseline_hash_field_and_zset": round(raw_hold),
        "redis_bytes_per_hold_ratio": _ratio(per_hold, raw_hold),
        "redis_server_us_per_entry_applied": round(apply_us, 2),
        "redis_server_us_per_check": round(check_us, 2),
        "redis_server_us_per_reserve": round(reserve_us, 2),
        "redis_server_us_per_commit": round(commit_us, 2),
        "redis_server_us_per_hget_baseline": round(hget_us, 2),
        "redis_check_vs_hget_ratio": _ratio(check_us, hget_us),
    }


def _server_us(client: Any, run: Callable[[], object]) -> float:
    """Microseconds Redis itself spent on the commands ``run`` sent (``INFO commandstats``)."""
    client.config_resetstat()
    run()
    stats = client.info("commandstats")
    return float(sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_")))


def _ledger_records(
    events: int, accounts: int, seed: int, sizes: dict[str, float]
) -> list[tuple[bytes, bytes]]:
    """(key, value) of the ledger entries the engine writes for the realistic mix; the mean
    encoded usage event and account state sizes go to ``sizes``."""
    from metering.avro import LEDGER_ENTRY, USAGE_EVENT, AvroCodec, load_registry
    from metering.domain import CreditEngine, load_plans, load_price_book
    from pipeline.fast_avro import make_ledger_entry_encoder

    engine = CreditEngine(load_price_book(), load_plans())
    rng = random.Random(seed)
    states = setup_accounts(engine, rng, accounts)
    names = list(states)
    encode = make_ledger_entry_encoder(AvroCodec(load_registry(), LEDGER_ENTRY))
    usage_codec = AvroCodec(load_registry(), USAGE_EVENT)
    out = []
    usage_bytes = 0
    for i in range(events):
        account = names[rng.randrange(accounts)]
        event = usage_event(rng, i, account, START + DAY_MS + i * 7)
        usage_bytes += len(usage_codec.encode(event.to_record()))
        for entry in engine.apply_usage(states[account], event, event.occurred_at).entries:
            out.append((account.encode(), encode(entry.to_record())))
    sizes["usage_bytes_per_event_encoded"] = usage_bytes / events
    sizes["state_bytes_per_account"] = sum(len(s.to_bytes()) for s in states.values()) / accounts
    return out


def _log_bytes(topic: str) -> int | None:
    """Bytes of ``topic``'s log segments on the local stack's broker(s), if they are here."""
    from devstack import LocalStack
    from metering.config import load_settings

    root = LocalStack(load_settings().state_dir).state_dir
    logs = [p for p in root.glob(f"kafka*/**/{topic}-*/*.log") if p.is_file()]
    return sum(p.stat().st_size for p in logs) if logs else None


def ledger_figures(events: int, accounts: int, seed: int = 7) -> dict[str, Any]:
    """Ledger bytes per entry on the broker's disk (if local) and as encoded."""
    from confluent_kafka import Producer

    from metering.config import load_settings
    from metering.topics import TopicNames, create_topics, delete_topics

    sizes: dict[str, float] = {}
    records = _ledger_records(events, accounts, seed, sizes)
    encoded = sum(len(v) for _, v in records) / len(records)
    figures: dict[str, Any] = {
        "usage_bytes_per_event_encoded": round(sizes["usage_bytes_per_event_encoded"], 1),
        "state_bytes_per_account_changelog_value": round(sizes["state_bytes_per_account"]),
        "ledger_usage_events": events,
        "ledger_entries_per_event": round(len(records) / events, 3),
        "ledger_bytes_per_entry_encoded": round(encoded, 1),
    }
    bootstrap = load_settings().kafka_bootstrap
    names = TopicNames(prefix=f"bench-cap-{int(time.time())}.")
    try:
        create_topics(bootstrap, names, 6, timeout=10)
    except Exception as exc:  # no broker: the encoded size is all there is
        figures["ledger_on_disk"] = f"skipped: {exc}"
        return figures
    try:
        # As the processor's producer: small linger, 512 KiB batches, no compression.
        producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 512 * 1024}
        )
        for key, value in records:
            producer.produce(names.credit_ledger, key=key, value=value)
            producer.poll(0)
        producer.flush(60)
        time.sleep(1.0)  # the broker's page cache to the segment file
        disk = _log_bytes(names.credit_ledger)
        if disk is None:
            figures["ledger_on_disk"] = "skipped: the broker's log dir is not on this machine"
        else:
            per_entry = disk / len(records)
            figures.update(
                ledger_bytes_per_entry_on_disk=round(per_entry, 1),
                ledger_bytes_per_entry_baseline_value_only=round(encoded, 1),
                ledger_bytes_per_entry_ratio=_ratio(per_entry, encoded),
                ledger_bytes_per_usage_event_on_disk=round(disk / events, 1),
            )
    finally:
        delete_topics(bootstrap, names)
    return figures


_GENERATE_USAGE = """
INSERT INTO usage_events (event_id, account_id, subject, feature, model, units, occurred_at,
                          source, attributes, reservation_id, kafka_partition, kafka_offset)
SELECT lower(hex(MD5(toString(number)))), concat('acct-', toString(number % {accounts:UInt64})),
       ['design', 'research', 'marketing', 'default'][number % 4 + 1],
       ['text_generation', 'image_generation', 'document_analysis', 'compute'][
           intDiv(number, 4) % 4 + 1],
       ['gpt-4o-mini', 'claude-3-haiku', 'gpt-4o', ''][intDiv(number, 16) % 4 + 1],
       map('requests', 1, 'input_tokens', toInt64(cityHash64(number) % 4000),
           'output_tokens', toInt64(cityHash64(number, 1) % 1500)),
       fromUnixTimestamp64Milli(toInt64({t0:Int64} + intDiv(number * {span:UInt64}, {n:UInt64})),
                                'UTC'),
       'sdk', map(), NULL, toUInt32(number % 6), number
FROM numbers({n:UInt64})
"""

_GENERATE_LEDGER = """
INSERT INTO ledger_entries (entry_id, account_id, seq, type, amount, balance_after,
                            overage_after, cause_id, subject, feature, model, price_version,
                            occurred_at, recorded_at, period_start, period_end,
                            kafka_partition, kafka_offset)
SELECT concat(lower(hex(MD5(toString(number)))), ':USAGE_DEBIT'),
       concat('acct-', toString(number % {accounts:UInt64})), intDiv(number, {accounts:UInt64}) + 2,
       'USAGE_DEBIT', -toInt64(1000 + cityHash64(number) % 200000),
       toInt64(cityHash64(number, 2) % 100000000000), 0, lower(hex(MD5(toString(number)))),
       ['design', 'research', 'marketing', 'default'][number % 4 + 1],
       ['text_generation', 'image_generation', 'document_analysis', 'compute'][
           intDiv(number, 4) % 4 + 1],
       ['gpt-4o-mini', 'claude-3-haiku', 'gpt-4o', ''][intDiv(number, 16) % 4 + 1], 'v1',
       fromUnixTimestamp64Milli(toInt64({t0:Int64} + intDiv(number * {span:UInt64}, {n:UInt64})),
                                'UTC') AS at,
       at + toIntervalMillisecond(40), toStartOfMonth(at), toStartOfMonth(at) + toIntervalMonth(1),
       toUInt32(number % 6), number
FROM numbers({n:UInt64})
"""


def clickhouse_figures(events: int, accounts: int, days: int = 7) -> dict[str, Any]:
    """Rows and bytes per usage event in every table, from ``events`` events over ``days``."""
    from consumers.clickhouse import close_all, connect
    from consumers.migrations import migrate

    with tempfile.TemporaryDirectory(prefix="bench-cap-ch-") as tmp:
        url = f"chdb://{tmp}"
        migrate(url, "capacity")
        client = connect(url, "capacity")
        params = {"accounts": accounts, "t0": START, "span": days * DAY_MS, "n": events}
        client.command(_GENERATE_USAGE, parameters=params)
        client.command(_GENERATE_LEDGER, parameters=params)
        tables = [
            row[0]
            for row in client.query(
                "SELECT name FROM system.tables WHERE database = 'capacity' "
                "AND engine LIKE '%MergeTree'"
            ).result_rows
        ]
        for table in tables:
            client.command(f"OPTIMIZE TABLE capacity.{table} FINAL")
        rows = client.query(
            "SELECT table, sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes) "
            "FROM system.parts WHERE database = 'capacity' AND active GROUP BY table "
            "ORDER BY table"
        ).result_rows
        close_all()
    by_table = {
        t: {"rows": int(r), "compressed": int(c), "uncompressed": int(u)} for t, r, c, u in rows
    }
    total_rows = sum(t["rows"] for t in by_table.values())
    compressed = sum(t["compressed"] for t in by_table.values())
    uncompressed = sum(t["uncompressed"] for t in by_table.values())
    return {
        "clickhouse_events": events,
        "clickhouse_accounts": accounts,
        "clickhouse_days": days,
        "clickhouse_rows_per_event": round(total_rows / events, 3),
        "clickhouse_compressed_bytes_per_event": round(compressed / events, 1),
        "clickhouse_uncompressed_bytes_per_event_baseline": round(uncompressed / events, 1),
        "clickhouse_compression_ratio": _ratio(compressed, uncompressed),
        "clickhouse_tables": {
            t: {
                "rows_per_event": round(v["rows"] / events, 3),
                "compressed_bytes_per_event": round(v["compressed"] / events, 1),
            }
            for t, v in by_table.items()
        },
    }


def id_store_figures(ids: int) -> dict[str, Any]:
    disk, changelog = id_store_bytes(ids)
    return {
        "id_store_ids": ids,
        "id_store_bytes_per_event_disk": round(disk, 1),
        "id_store_bytes_per_event_changelog": round(changelog, 1),
        "id_store_bytes_per_event_baseline_hash": 12,
        "id_store_disk_ratio": _ratio(disk, 12),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="metering bench capacity",
        description="The sizes docs/scale.md multiplies: Redis bytes per account and per hold, "
        "ledger bytes per entry, ClickHouse rows and compressed bytes per event, id-store bytes "
        "per event; each next to a plain baseline. The last line of output is JSON.",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result line")
    for flag, default, what in (
        ("--accounts", 20_000, "accounts in Redis"),
        ("--ledger-events", 100_000, "usage events through the engine for the ledger"),
        ("--clickhouse-events", 2_000_000, "usage events in ClickHouse"),
        ("--ids", 200_000, "event ids in the id store"),
    ):
        parser.add_argument(
            flag, type=int, default=default, metavar="N", help=f"{what} (default: {default})"
        )
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("redis", lambda: redis_figures(args.accounts)),
        ("ledger", lambda: ledger_figures(args.ledger_events, accounts=1000)),
        ("clickhouse", lambda: clickhouse_figures(args.clickhouse_events, accounts=10_000)),
        ("id store", lambda: id_store_figures(args.ids)),
    ]
    for name, measure in steps:
        started = time.perf_counter()
        figures.update(measure())
        if not args.json:
            print(f"{name}: measured in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    figures["python"] = sys.version.split()[0]
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
