"""The local stack: a single-node KRaft Kafka and a Redis, run as plain processes, plus a
throwaway Redis for benches and tests (``redis.LocalRedis``).

Used by ``metering stack up|status|down``, the test fixtures, the demo and the benchmarks.
ClickHouse needs no process here: the default URL is an embedded chDB directory in the state
dir. May import: ``metering``; no product package imports it.
"""

from __future__ import annotations

from devstack.local import ComponentStatus, LocalStack, StackError

__all__ = ["ComponentStatus", "LocalStack", "StackError"]
