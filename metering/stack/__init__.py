"""The local stack: a single-node KRaft Kafka and a Redis, run as plain processes.

Used by ``metering stack up|status|down``, the test fixtures and the demo. ClickHouse
needs no process here: the default URL is an embedded chDB directory in the state dir.
"""

from __future__ import annotations

from metering.stack.local import ComponentStatus, LocalStack, StackError

__all__ = ["ComponentStatus", "LocalStack", "StackError"]
