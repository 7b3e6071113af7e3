"""``metering bench produce``: SDK throughput vs a raw confluent-kafka loop, same run.

Both sides send the same events to fresh 6-partition topics with the same producer config
(idempotence, acks=all, tuned batching), and both stop the clock only after ``flush()``
returns, i.e. after the broker acknowledged every record. The raw loop produces bytes
encoded before its clock starts; the SDK validates and encodes each event on the way.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from metering.avro import USAGE_EVENT, AvroCodec, load_registry
from metering.config import load_settings
from metering.sdk import UsageReporter, producer_config
from metering.topics import TopicNames, create_topics, delete_topics

FEATURES = [
    ("text_generation", "gpt-large", ("input_tokens", "output_tokens")),
    ("text_generation", "gpt-small", ("input_tokens", "output_tokens", "requests")),
    ("image_generation", "imagen-2", ("images",)),
    ("document_analysis", None, ("compute_ms", "requests")),
]
SUBJECTS = ["default", "design", "research", "marketing"]
TEMPLATES = 4096


def make_templates(accounts: int, seed: int = 7) -> list[dict[str, Any]]:
    """A pool of realistic events; the bench stamps each send with a fresh ``event_id``."""
    rng = random.Random(seed)
    base_ts = 1_767_225_600_000  # 2026-01-01
    out = []
    for i in range(TEMPLATES):
        feature, model, unit_names = rng.choice(FEATURES)
        out.append(
            {
                "event_id": "",
                "account_id": f"acct-{rng.randrange(accounts):05d}",
                "subject": rng.choice(SUBJECTS),
                "feature": feature,
                "model": model,
                "units": {name: rng.randrange(1, 4000) for name in unit_names},
                "occurred_at": base_ts + i * 37,
                "source": "bench",
                "attributes": {"region": rng.choice(["eu-west-1", "us-east-1"])},
                "reservation_id": None,
            }
        )
    return out


def _count(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    try:
        total = 0
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def run_raw(bootstrap: str, topic: str, keys: list[bytes], values: list[bytes]) -> float:
    """Events/s of a bare produce loop over pre-encoded values (flush included)."""
    producer = Producer(producer_config(bootstrap))
    producer.produce(topic, b"warm-up", b"warm-up")
    producer.flush(30)
    produce, poll = producer.produce, producer.poll
    start = time.perf_counter()
    for i, value in enumerate(values):
        while True:
            try:
                produce(topic, value, keys[i])
                break
            except BufferError:
                poll(0.01)
        if not i & 2047:
            poll(0)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - start
    if remaining:
        raise RuntimeError(f"raw producer left {remaining} records undelivered")
    return len(values) / elapsed


def run_sdk(
    bootstrap: str,
    topic: str,
    templates: list[dict[str, Any]],
    event_ids: list[str],
    batch: int = 0,
) -> float:
    """Events/s through the SDK (validation + encoding + produce + flush).

    ``batch`` > 0: what a high-volume service would use: ``report_many`` on batches of that
    many events, with ``success_reports=False`` (it needs failures only; they still reach
    ``close()``). 0: the default reporter, ``report`` per event (this bench's figure before
    ``report_many`` existed).
    """
    registry = load_registry()
    with UsageReporter(
        bootstrap, topic=topic, registry=registry, success_reports=not batch
    ) as reporter:
        warm = dict(templates[0], event_id="warm-up")
        reporter.report(warm)
        reporter.flush(30)
        n = len(templates)
        if batch > n:
            raise ValueError(f"batch must be at most {n} (the templates are reused in place)")
        start = time.perf_counter()
        if batch:
            report_many = reporter.report_many
            for first in range(0, len(event_ids), batch):
                chunk = []
                for i in range(first, min(first + batch, len(event_ids))):
                    event = templates[i % n]
                    event["event_id"] = event_ids[i]
                    chunk.append(event)
                report_many(chunk)
        else:
            report = reporter.report
            for i, event_id in enumerate(event_ids):
                event = templates[i % n]
                event["event_id"] = event_id
                report(event)
        remaining = reporter.flush(120)
        elapsed = time.perf_counter() - start
        if remaining:
            raise RuntimeError(f"SDK left {remaining} records undelivered")
    return len(event_ids) / elapsed


def _round(
    bootstrap: str,
    partitions: int,
    templates: list[dict[str, Any]],
    event_ids: list[str],
    keys: list[bytes],
    values: list[bytes],
    batch: int,
    keep_topics: bool = False,
) -> dict[str, Any]:
    """One raw run and the two SDK runs right after it, each on fresh topics."""
    tag = uuid.uuid4().hex[:8]
    names = {side: TopicNames(prefix=f"bench-{side}-{tag}.") for side in ("raw", "many", "one")}
    for topic_names in names.values():
        create_topics(bootstrap, topic_names, partitions)
    try:
        raw = run_raw(bootstrap, names["raw"].usage_events, keys, values)
        many = run_sdk(bootstrap, names["many"].usage_events, templates, event_ids, batch)
        one = run_sdk(bootstrap, names["one"].usage_events, templates, event_ids, 0)
        counts = {
            side: _count(bootstrap, topic_names.usage_events, partitions) - 1  # - warm-up
            for side, topic_names in names.items()
        }
    finally:
        if not keep_topics:
            for topic_names in names.values():
                delete_topics(bootstrap, topic_names)
    return {"raw": raw, "many": many, "one": one, "counts": counts}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="metering bench produce",
        description="Produce throughput of the SDK next to a raw confluent-kafka loop, in the "
        "same run, to fresh topics with the same producer config. Both clocks stop after the "
        "broker acknowledged every record. The last line of output is JSON.",
    )
    parser.add_argument(
        "--events", type=int, default=500_000, metavar="N", help="events per run (default: 500000)"
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=10_000,
        metavar="N",
        help="accounts the events are spread over (default: 10000)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=6,
        metavar="N",
        help="partitions of the fresh topics (default: 6)",
    )
    parser.add_argument(
        "--bootstrap",
        default=None,
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: METERING_KAFKA_BOOTSTRAP, else the local stack)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=1000,
        metavar="N",
        help="events per SDK report_many call (default: 1000)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        metavar="N",
        help="raw and SDK rounds, interleaved; medians are reported (default: 3)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result line")
    parser.add_argument(
        "--keep-topics", action="store_true", help="keep the benchmark topics afterwards"
    )
    args = parser.parse_args(argv)
    bootstrap = args.bootstrap or load_settings().kafka_bootstrap

    templates = make_templates(args.accounts)
    event_ids = [str(uuid.uuid4()) for _ in range(args.events)]
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    keys, values = [], []
    for i, event_id in enumerate(event_ids):
        event = templates[i % len(templates)]
        event["event_id"] = event_id
        keys.append(event["account_id"].encode())
        values.append(codec.encode(event))

    rounds = [
        _round(
            *(bootstrap, args.partitions, templates, event_ids, keys, values),
            *(args.batch, args.keep_topics),
        )
        for _ in range(args.rounds)
    ]
    raw = statistics.median(r["raw"] for r in rounds)
    sdk = statistics.median(r["many"] for r in rounds)
    one = statistics.median(r["one"] for r in rounds)
    ratio = statistics.median(r["many"] / r["raw"] for r in rounds)
    ratio_one = statistics.median(r["one"] / r["raw"] for r in rounds)
    delivered = all(set(r["counts"].values()) == {args.events} for r in rounds)
    result = {
        "bench": "produce",
        "events": args.events,
        "partitions": args.partitions,
        "rounds": args.rounds,
        "value_bytes": len(codec.encode(dict(templates[0], event_id=event_ids[0]))),
        "sdk_api": f"report_many (batches of {args.batch})",
        "sdk_events_per_s": round(sdk),
        "raw_events_per_s": round(raw),
        "ratio": round(ratio, 3),
        "sdk_report_events_per_s": round(one),
        "ratio_report": round(ratio_one, 3),
        "per_round": [
            {
                "raw": round(r["raw"]),
                "sdk": round(r["many"]),
                "sdk_report": round(r["one"]),
                "ratio": round(r["many"] / r["raw"], 3),
                "ratio_report": round(r["one"] / r["raw"], 3),
            }
            for r in rounds
        ],
        "all_delivered": delivered,
        "records_on_topics": [r["counts"] for r in rounds],
        "targets": {"sdk_events_per_s": 100_000, "ratio": 0.3},
    }
    if not args.json:
        print(
            f"SDK report_many {sdk:,.0f} ev/s, report {one:,.0f} ev/s vs raw {raw:,.0f} ev/s: "
            f"ratios {ratio:.2f} / {ratio_one:.2f} (median of {args.rounds} rounds)"
        )
    print(json.dumps(result))
    return 0
