"""``python -m accountpage.server``: the sidecar API + account page, and (for chDB) the sink.

Why the sink may live here: embedded ClickHouse (chDB) runs inside one process, and only
one process may open a given chDB path at a time. The page must read what the sink writes,
so with a ``chdb://`` URL this process also runs the ClickHouse sink, in a thread, on its
own client of the same engine (``--sink auto``, the default). With a ClickHouse server
(``http://``) the sink runs as its own service (``metering run sink``) and this process only
reads (``auto`` means off).

Holding the chDB path also locks out ``metering usage`` and ``metering reconcile``, so this
process then serves them read-only queries (:mod:`accountpage.relay`), advertised in the path's
owner file.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Mapping

from clickhouse_connect.driver.client import Client

from consumers.clickhouse import (
    ClickHouseInUse,
    add_database_argument,
    chdb_path,
    connect,
    is_embedded,
    open_client,
    record_owner,
)
from metering.config import env_value
from metering.topics import TopicNames, add_topic_prefix_argument

log = logging.getLogger("accountpage")


class EmbeddedSink:
    """The exactly-once ClickHouse sink on a background thread of this process."""

    def __init__(
        self,
        *,
        bootstrap: str,
        clickhouse_url: str,
        database: str,
        topics: TopicNames,
        group: str,
        max_wait_s: float = 0.25,
    ) -> None:
        from consumers.sink import ClickHouseSink

        self.sink = ClickHouseSink(
            bootstrap=bootstrap,
            client=connect(clickhouse_url, database),
            topics=topics,
            group=group,
            max_wait_s=max_wait_s,
            instance_id=f"{group}-embedded",
        )
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="clickhouse-sink", daemon=True)

    def _run(self) -> None:
        try:
            self.sink.run()
        except BaseException as exc:  # surfaced by .alive / the log; the page keeps serving
            self.error = exc
            log.exception("embedded ClickHouse sink stopped")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> EmbeddedSink:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Flush what is buffered, commit, close the consumer."""
        self.sink.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)


class ReaderHolder:
    """Opens the page's ClickHouse client on first use (after migrations created the DB)."""

    def __init__(self, clickhouse_url: str, database: str) -> None:
        self.url = clickhouse_url
        self.database = database
        self._client: Client | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Client:
        with self._lock:
            if self._client is None:
                # The page's own client, apart from the sink's cached one: same engine (chDB
                # allows several handles on one path in a process), but its own handle or HTTP
                # session, so page reads never interleave with the sink's inserts.
                self._client = open_client(self.url, self.database, sessions=False)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _parse(argv: list[str], env: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="metering run web",
        description="Serve the account page (/account) together with the sidecar's enforcement "
        "API, so it can stand in for `metering run sidecar`. With embedded ClickHouse "
        "(a chdb:// METERING_CLICKHOUSE_URL) it also runs the ClickHouse sink, since only one "
        "process may open a chDB directory; with a ClickHouse server, run `metering run sink` "
        "on its own.",
    )
    # Falls back to the sidecar's variables: this service is a drop-in for `run sidecar`.
    host = env_value("METERING_WEB_HOST", env) or env_value(
        "METERING_SIDECAR_HOST", env, "127.0.0.1"
    )
    port = env_value("METERING_WEB_PORT", env) or env_value("METERING_SIDECAR_PORT", env, "8088")
    parser.add_argument(
        "--host",
        default=host,
        help="address to listen on (default: METERING_WEB_HOST, else METERING_SIDECAR_HOST, "
        "else 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(port),
        help="port to listen on (default: METERING_WEB_PORT, else METERING_SIDECAR_PORT, "
        "else 8088)",
    )
    add_database_argument(parser)
    add_topic_prefix_argument(parser, "prefix of the Kafka topic names, for the sink")
    parser.add_argument(
        "--sink",
        choices=["auto", "on", "off"],
        default="auto",
        help="run the ClickHouse sink in this process; auto: only for chdb:// (default: auto)",
    )
    parser.add_argument(
        "--sink-group",
        default="metering-clickhouse-sink",
        metavar="ID",
        help="Kafka consumer group of that sink (default: metering-clickhouse-sink)",
    )
    parser.add_argument("--migrate", action="store_true", help="apply ClickHouse migrations first")
    parser.add_argument(
        "--fail-mode",
        default=None,
        metavar="MODE",
        help="answers while Redis is unreachable: open (allow), closed (deny) or auto (deny "
        "only accounts whose overage policy is block) (default: METERING_FAIL_MODE, else auto)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        metavar="LEVEL",
        help="debug, info, warning or error (default: warning)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    import uvicorn

    from accountpage.access import AccessConfigError, AccessControl
    from accountpage.app import build_app
    from metering.config import load_settings
    from metering.logs import service_logging
    from projections.failmode import FailMode
    from projections.keys import prefix_from_env
    from projections.sidecar import parse_api_keys
    from projections.sidecar_cli import sidecar_from_env

    env = dict(os.environ)
    args = _parse(argv, env)
    settings = load_settings(env)
    service_logging(args.log_level, "web", settings.kafka_bootstrap)
    try:
        access = AccessControl.from_env(env)
        api_keys = parse_api_keys(env_value("METERING_API_KEYS", env))
        mode = FailMode.parse(args.fail_mode or env_value("METERING_FAIL_MODE", env, "auto"))
        sidecar = sidecar_from_env({**env, "METERING_FAIL_MODE": mode.value})
    except (AccessConfigError, ValueError) as exc:
        print(f"metering run web: {exc}", flush=True)
        return 2
    relay = None
    if is_embedded(settings.clickhouse_url):
        from accountpage.relay import QueryRelay

        try:
            connect(settings.clickhouse_url)  # hold the path before advertising the relay
        except ClickHouseInUse as exc:
            print(f"metering run web: {exc}; stop it first", flush=True)
            return 2
        relay = QueryRelay(settings.clickhouse_url, access)
        local_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        record_owner(
            chdb_path(settings.clickhouse_url),
            query_url=f"http://{local_host}:{args.port}",
            token=relay.token,
        )
    if args.migrate:
        from consumers.migrations import migrate

        migrate(settings.clickhouse_url, args.database)
    reader = ReaderHolder(settings.clickhouse_url, args.database)
    try:
        app = build_app(
            redis_url=settings.redis_url,
            redis_prefix=prefix_from_env(),
            api_keys=api_keys,
            access=access,
            clickhouse=reader,
            fail_mode=mode,
            sidecar=sidecar,
            relay=relay,
        )
    except ValueError as exc:
        print(f"metering run web: {exc}", flush=True)
        return 2
    run_sink = args.sink == "on" or (args.sink == "auto" and is_embedded(settings.clickhouse_url))
    sink = None
    if run_sink:
        sink = EmbeddedSink(
            bootstrap=settings.kafka_bootstrap,
            clickhouse_url=settings.clickhouse_url,
            database=args.database,
            topics=TopicNames(args.topic_prefix),
            group=args.sink_group,
        ).start()
    try:
        # uvicorn handles SIGINT/SIGTERM: it returns after a graceful shutdown.
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    finally:
        if sink is not None:
            sink.stop()
        if relay is not None:
            relay.close()
        reader.close()
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
