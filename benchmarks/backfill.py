"""``metering bench backfill --events 200000 --json``: ``metering backfill`` into Kafka, beside
a raw confluent-kafka produce loop in the same run.

The backfill side is the command itself on a JSON Lines file of ``--events`` valid events of
the last week: both passes (read, validate, price, refuse; then read again, encode, send) and
the flush, timed from start to the broker's last acknowledgement. The raw side sends the same
events, Avro-encoded before its clock starts (``metering bench produce``'s baseline). Both go
to fresh topics with the same producer settings.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
import time
import uuid
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from benchmarks.produce import SUBJECTS, run_raw
from metering.avro import USAGE_EVENT, AvroCodec, load_registry
from metering.backfill.cli import main as backfill
from metering.config import load_settings
from metering.topics import TopicNames, create_topics, delete_topics

DAY_MS = 86_400_000
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-haiku"]


def _events(n: int, accounts: int) -> list[dict[str, Any]]:
    """``n`` events of the last week that the shipped price book prices (text and images)."""
    now = int(time.time() * 1000)
    rnd = random.Random(3)
    out = []
    for i in range(n):
        event: dict[str, Any] = {
            "event_id": f"bf-{i}-{uuid.uuid4().hex[:8]}",
            "account_id": f"acct-{rnd.randrange(accounts):05d}",
            "subject": rnd.choice(SUBJECTS),
            "occurred_at": now - 7 * DAY_MS + rnd.randrange(6 * DAY_MS),
            "source": "backfill",
        }
        if i % 4:
            event["feature"] = "text_generation"
            event["model"] = rnd.choice(MODELS)
            event["units"] = {
                "requests": 1,
                "input_tokens": rnd.randrange(4000),
                "output_tokens": rnd.randrange(1000),
            }
        else:
            event["feature"], event["units"] = "image_generation", {"images": 1 + i % 3}
        out.append(event)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="metering bench backfill",
        description="metering backfill of a JSON Lines file into Kafka (both passes and the "
        "flush), beside a raw produce loop of the same events. The last line is JSON.",
    )
    p.add_argument("--events", type=int, default=200_000, metavar="N", help="(default: 200000)")
    p.add_argument("--accounts", type=int, default=1000, metavar="N", help="(default: 1000)")
    p.add_argument("--partitions", type=int, default=6, metavar="N", help="(default: 6)")
    p.add_argument("--json", action="store_true", help="print only the JSON result line")
    a = p.parse_args(argv)
    bootstrap = load_settings().kafka_bootstrap
    events = _events(a.events, a.accounts)
    codec = AvroCodec(load_registry(), USAGE_EVENT)
    keys = [e["account_id"].encode() for e in events]
    values = [codec.encode(e) for e in events]
    tag = uuid.uuid4().hex[:8]
    raw_topics, backfill_topics = TopicNames(f"bench-raw-{tag}."), TopicNames(f"bench-bf-{tag}.")
    for names in (raw_topics, backfill_topics):
        create_topics(bootstrap, names, a.partitions)
    try:
        raw = run_raw(bootstrap, raw_topics.usage_events, keys, values)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "usage.jsonl"
            path.write_text("".join(json.dumps(e) + "\n" for e in events))
            out = io.StringIO()
            start = time.perf_counter()
            with redirect_stdout(out):
                code = backfill([str(path), "--json", "--topic-prefix", backfill_topics.prefix])
            seconds = time.perf_counter() - start
        summary = json.loads(out.getvalue().strip().splitlines()[-1])
        if code != 0 or summary["sent"] != a.events:
            raise SystemExit(f"backfill did not send every event: {summary}")
    finally:
        for names in (raw_topics, backfill_topics):
            with contextlib.suppress(Exception):
                delete_topics(bootstrap, names)
    result = {
        "events": a.events,
        "backfill_events_per_s": round(a.events / seconds),
        "backfill_seconds": round(seconds, 3),
        "send_pass_events_per_s": summary["events_per_s"],
        "raw_events_per_s": round(raw),
        "ratio": round(a.events / seconds / raw, 3),
    }
    if not a.json:
        print(
            f"backfill: {result['backfill_events_per_s']:,} events/s end to end "
            f"vs raw produce {result['raw_events_per_s']:,}"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
