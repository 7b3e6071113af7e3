"""``metering projection rebuild|verify``: operate on the Redis projection."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

from metering.topics import TopicNames, add_topic_prefix_argument
from projections.keys import REBUILD_PREFIX, check_prefix, prefix_from_env
from projections.redis_connect import SyncRedis, connect


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="metering projection",
        description="Rebuild the Redis balances from the credit ledger, or compare a rebuilt "
        "copy with the live one. Redis comes from METERING_REDIS_URL; the live key prefix is "
        "METERING_REDIS_PREFIX.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    rb = sub.add_parser(
        "rebuild",
        help="replay the credit ledger from its start into Redis",
        description="Replay the credit ledger from offset 0 into an empty keyspace. By default "
        f"it writes under a separate key prefix ({REBUILD_PREFIX}) that --verify compares "
        "with the live one; --live rebuilds the live keyspace in place, which repairs a gap "
        "or a lost Redis (holds are kept and 'reserved' is recomputed from them). Prints a "
        "JSON report; exit status 1 when the ledger has gaps or --verify finds differences.",
    )
    rb.add_argument("--account", default=None, metavar="ID", help="only this account")
    target = rb.add_mutually_exclusive_group()
    target.add_argument(
        "--redis-prefix",
        default=None,
        metavar="PREFIX",
        help=f"Redis key prefix to rebuild into (default: {REBUILD_PREFIX})",
    )
    target.add_argument(  # the old name
        "--prefix", dest="redis_prefix", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    target.add_argument("--live", action="store_true", help="rebuild the live key prefix in place")
    rb.add_argument(
        "--verify", action="store_true", help="then compare the result with the live keys"
    )
    add_topic_prefix_argument(rb)
    rb.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="give up after this long (default: 600)",
    )
    vf = sub.add_parser(
        "verify",
        help="compare a rebuilt key prefix with the live one",
        description="Compare the balances under a rebuilt key prefix with the live ones and "
        "print the differences (up to 50) and a JSON summary; exit status 1 when they differ.",
    )
    vf.add_argument(
        "--redis-prefix",
        default=REBUILD_PREFIX,
        metavar="PREFIX",
        help=f"Redis key prefix of the rebuilt copy (default: {REBUILD_PREFIX})",
    )
    vf.add_argument(  # the old name
        "--prefix", dest="redis_prefix", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    vf.add_argument("--account", default=None, metavar="ID", help="only this account")
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(name)s %(message)s")

    from metering.config import load_settings

    settings = load_settings()
    client = connect(settings.redis_url, socket_timeout=30)
    live = prefix_from_env()
    try:
        if args.action == "verify":
            return _verify(client, live, check_prefix(args.redis_prefix), args.account)
        from projections.consumer import codec_decoder
        from projections.rebuild import rebuild

        prefix = live if args.live else check_prefix(args.redis_prefix or REBUILD_PREFIX)
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


def _verify(client: SyncRedis, live: str, other: str, account: str | None) -> int:
    from projections.rebuild import compare

    diffs = compare(client, live, other, account)
    for line in diffs[:50]:
        print(line)
    print(json.dumps({"live": live, "rebuilt": other, "differences": len(diffs)}))
    return 1 if diffs else 0
