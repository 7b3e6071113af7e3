"""``metering projection rebuild|verify``: operate on the Redis projection."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

import redis

from metering.topics import TopicNames
from projections.keys import REBUILD_PREFIX, check_prefix, prefix_from_env


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="metering projection")
    sub = parser.add_subparsers(dest="action", required=True)
    rb = sub.add_parser(
        "rebuild",
        help="replay credit-ledger from offset 0 into an empty keyspace",
        description="Default target is a separate prefix (compare with --verify); "
        "--live rebuilds the live keyspace in place (repairs a gap or a lost Redis; "
        "holds are kept and 'reserved' recomputed from them).",
    )
    rb.add_argument("--account", default=None, help="only this account")
    target = rb.add_mutually_exclusive_group()
    target.add_argument("--prefix", default=None, help=f"target key prefix ({REBUILD_PREFIX})")
    target.add_argument("--live", action="store_true", help="rebuild the live prefix in place")
    rb.add_argument("--verify", action="store_true", help="then compare with the live prefix")
    rb.add_argument("--topic-prefix", default="", help="TopicNames prefix")
    rb.add_argument("--timeout", type=float, default=600.0)
    vf = sub.add_parser("verify", help="compare a rebuilt prefix with the live one")
    vf.add_argument("--prefix", default=REBUILD_PREFIX)
    vf.add_argument("--account", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(name)s %(message)s")

    from metering.config import load_settings

    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=30)
    live = prefix_from_env()
    try:
        if args.action == "verify":
            return _verify(client, live, check_prefix(args.prefix), args.account)
        from projections.consumer import codec_decoder
        from projections.rebuild import rebuild

        prefix = live if args.live else check_prefix(args.prefix or REBUILD_PREFIX)
        if prefix == live and not args.live:
            print(
                "metering projection rebuild: use --live to rebuild the live prefix",
                file=sys.stderr,
            )
            return 2
        report = rebuild(
            bootstrap=settings.kafka_bootstrap,
            topics=TopicNames(args.topic_prefix),
            client=client,
            prefix=prefix,
            decode=codec_decoder(),
            account=args.account,
            keep_holds=args.live,
            timeout_s=args.timeout,
        )
        print(json.dumps(asdict(report)))
        status = 1 if report.gaps else 0
        if args.verify and not args.live:
            status = max(status, _verify(client, live, prefix, args.account))
        return status
    finally:
        client.close()


def _verify(client: redis.Redis, live: str, other: str, account: str | None) -> int:
    from projections.rebuild import compare

    diffs = compare(client, live, other, account)
    for line in diffs[:50]:
        print(line)
    print(json.dumps({"live": live, "rebuilt": other, "differences": len(diffs)}))
    return 1 if diffs else 0
