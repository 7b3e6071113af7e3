"""Apply batches of decoded LedgerEntry dicts to Redis: one EVALSHA per account, pipelined.

A batch is grouped by account (order within an account kept, sorted by seq); each group
goes to ``apply.lua`` as flat arguments (see :func:`entry_args`): no JSON to build here or
to decode in Lua on the common path, and numbers Lua only stores travel pre-formatted. The
commands are packed as RESP by hand and streamed in chunks on one connection, so packing
chunk n+1 overlaps with Redis executing chunk n. The script is idempotent and
gap-detecting, so a batch can be re-sent whole after any failure (NOSCRIPT, a dropped
connection).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.exceptions import NoScriptError

from projections.keys import check_prefix
from projections.redis_connect import SyncRedis, master_pool, refresh_slot_map

try:  # the sentinel redis-py's hiredis reader returns when a reply is incomplete
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - another redis-py layout: use the public path
    _NOT_ENOUGH_DATA = None
from projections.scripts import load_all, script

MAX_ENTRIES_PER_CALL = 500
"""Bounds one script's run time: Redis serves nothing else while a script runs."""

CHUNK_CALLS = 256
"""Script calls per network write; the next chunk is packed while Redis runs this one."""

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


REPLICA_WAIT_MS = 1000
"""On a cluster, how long a batch waits for a replica to confirm it (``WAIT 1``)."""


_ROLE = b"*1\r\n$4\r\nROLE\r\n"


def _replicas(role: Any) -> int:
    """Replicas connected to a master, from its ``ROLE`` reply (0 for anything else)."""
    if isinstance(role, list) and len(role) >= 3 and role[0] in (b"master", "master"):
        return len(role[2])
    return 0


class ProjectionError(RuntimeError):
    """Redis rejected an apply script for a reason other than NOSCRIPT."""


class ClusterMoved(redis.ConnectionError):
    """A cluster redirected a call or a master was unreachable: the slot map is refreshed and
    the batch is to be re-sent whole (the apply script is idempotent)."""


CLUSTER_CHANGES: tuple[type[BaseException], ...] = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.ConnectionError,
    redis.TimeoutError,
)
"""What a cluster raises while slots move or a replica takes over (single Redis: re-raised)."""


@dataclass(frozen=True, slots=True)
class Gap:
    """A ledger entry that was not applied because earlier seqs are missing."""

    account: str
    stored_seq: int
    got_seq: int
    index: int
    """Position in the input batch of the first entry not applied for this account."""


@dataclass(slots=True)
class ApplyResult:
    applied: int = 0
    skipped: int = 0
    gaps: list[Gap] = field(default_factory=list)


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


_EMPTY = b"$0\r\n\r\n"
_EMPTY3 = _EMPTY * 3


def _grant_json(grant: Mapping[str, Any]) -> bytes:
    return _dumps(
        [
            grant["grant_id"],
            grant["source"],
            grant["amount"],
            grant["priority"],
            grant["effective_at"],
            grant.get("expires_at") or False,
        ]
    ).encode("utf-8")


def _terms_json(terms: Mapping[str, Any]) -> bytes:
    features = terms.get("features")
    return _dumps(
        [
            terms["plan_id"],
            terms["overage_policy"],
            terms["overage_limit"],
            terms["monthly_credits"],
            "*" if features is None else _dumps(list(features)),
        ]
    ).encode("utf-8")


def entry_args(entry: Mapping[str, Any]) -> tuple[int, bytes]:
    """One entry as ``apply.lua`` reads it: (argument count, the arguments RESP-encoded).

    ``head`` is 'seq,type,balance_after,overage_after,recorded_at,occurred_at,period_start,
    period_end,n' (numbers and an enum name: no commas inside; ``occurred_at`` is the event
    time that prunes spent grants), then reservation id, grant JSON and terms
    JSON (each '' when absent: rare, so JSON there costs nothing in the hot path), then n
    (grant_id, signed amount) allocation pairs.
    """
    allocations = entry.get("allocations") or ()
    head = b"%d,%s,%d,%d,%d,%d,%d,%d,%d" % (
        entry["seq"],
        entry["type"].encode("utf-8"),
        entry["balance_after"],
        entry["overage_after"],
        entry["recorded_at"],
        entry["occurred_at"],
        entry["period_start"],
        entry["period_end"],
        len(allocations),
    )
    reservation = entry.get("reservation_id")
    grant = entry.get("grant")
    terms = entry.get("terms")
    if reservation or grant or terms:
        packed = b"".join(
            (
                _bulk(head),
                _bulk(reservation.encode("utf-8")) if reservation else _EMPTY,
                _bulk(_grant_json(grant)) if grant else _EMPTY,
                _bulk(_terms_json(terms)) if terms else _EMPTY,
            )
        )
    else:  # the common usage debit: one formatting call
        packed = b"$%d\r\n%s\r\n%s" % (len(head), head, _EMPTY3)
    for allocation in allocations:
        grant_id = allocation["grant_id"].encode("utf-8")
        amount = b"%d" % allocation["amount"]
        packed += b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(grant_id), grant_id, len(amount), amount)
    return 4 + 2 * len(allocations), packed


def _read_replies(conn: Any, n: int) -> list[Any]:
    """``n`` replies; straight from redis-py's hiredis reader when there is one.

    ``conn.read_response()`` costs a few microseconds of Python per reply, as much as
    packing the entry. The private-attribute path is guarded: anything unexpected falls
    back to the public call.
    """
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    read_more = getattr(parser, "read_from_socket", None)
    if (
        reader is None
        or read_more is None
        or _NOT_ENOUGH_DATA is None
        or type(reader).__module__ != "hiredis"
    ):
        return [conn.read_response() for _ in range(n)]
    replies: list[Any] = []
    gets = reader.gets
    while len(replies) < n:
        reply = gets()
        if reply is _NOT_ENOUGH_DATA:
            read_more()
        elif isinstance(reply, Exception):
            raise reply
        else:
            replies.append(reply)
    return replies


@dataclass(frozen=True, slots=True)
class _Call:
    account: str
    indexes: list[int]


def _plan(entries: Sequence[Mapping[str, Any]]) -> list[_Call]:
    """Group by account, seq order inside; payloads are built later, while Redis works."""
    groups: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        groups.setdefault(entry["account_id"], []).append(i)
    calls: list[_Call] = []
    for account, indexes in groups.items():
        if len(indexes) > 1:
            indexes.sort(key=lambda i: entries[i]["seq"])
        for start in range(0, len(indexes), MAX_ENTRIES_PER_CALL):
            calls.append(_Call(account, indexes[start : start + MAX_ENTRIES_PER_CALL]))
    return calls


class Projector:
    """Writes ledger entries into the projection under ``prefix``.

    On a Redis Cluster the calls go to the master of each account's slot, each master's share
    streamed on its own connection, and each share ends with ``WAIT`` for one replica: a batch
    counts as applied (and its offsets may be committed) only once a replica holds it too, so
    a master that dies after answering loses no entry its replica would not have. A redirect
    or an unreachable master (a failover under way) refreshes the slot map and raises
    :class:`ClusterMoved`, a ``ConnectionError``: the caller re-sends the whole batch.
    """

    def __init__(
        self,
        client: SyncRedis,
        prefix: str,
        *,
        replica_wait_ms: int = REPLICA_WAIT_MS,
    ) -> None:
        self.client = client
        self.prefix = check_prefix(prefix)
        self._prefix = prefix.encode("utf-8")
        self._script = script("apply")
        self._evalsha = b"$7\r\nEVALSHA\r\n" + _bulk(self._script.sha.encode()) + b"$1\r\n4\r\n"
        self._loaded = False
        self._wait = b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n" + _bulk(b"%d" % replica_wait_ms)
        self.unreplicated = 0
        """Cluster batches a master applied that no replica confirmed within the wait."""

    def _pack(self, call: _Call, entries: Sequence[Mapping[str, Any]]) -> bytes:
        base = self._prefix + b"{" + call.account.encode("utf-8") + b"}:"
        count = 7  # EVALSHA sha numkeys + 4 keys
        args = []
        for i in call.indexes:
            n, packed = entry_args(entries[i])
            count += n
            args.append(packed)
        return b"".join(
            (
                b"*%d\r\n" % count,
                self._evalsha,
                _bulk(base + b"bal"),
                _bulk(base + b"grants"),
                _bulk(base + b"holds"),
                _bulk(base + b"holdx"),
                *args,
            )
        )

    def apply_batch(self, entries: Sequence[Mapping[str, Any]]) -> ApplyResult:
        """Apply every entry it can; entries at or after a gap are reported, not applied."""
        if not entries:
            return ApplyResult()
        if not self._loaded:
            load_all(self.client)
            self._loaded = True
        calls = _plan(entries)
        try:
            replies = self._send(calls, entries)
        except NoScriptError:
            load_all(self.client)  # Redis restarted or failed over: reload, resend (idempotent)
            replies = self._send(calls, entries)
        result = ApplyResult()
        gapped: set[str] = set()
        for call, reply in zip(calls, replies, strict=True):
            text = reply.decode() if isinstance(reply, bytes) else str(reply)
            applied, skipped, stored, gap = (int(x) for x in text.split(":"))
            result.applied += applied
            result.skipped += skipped
            if gap and call.account not in gapped:
                gapped.add(call.account)
                index = next(i for i in call.indexes if entries[i]["seq"] == gap)
                result.gaps.append(Gap(call.account, stored, gap, index))
        return result

    def _send(self, calls: list[_Call], entries: Sequence[Mapping[str, Any]]) -> list[Any]:
        client = self.client
        if not isinstance(client, redis.RedisCluster):
            return self._stream(client.connection_pool, calls, entries, wait=False)
        by_node: dict[str, list[int]] = {}
        pools: dict[str, Any] = {}
        try:
            for i, call in enumerate(calls):
                name, pool = master_pool(client, call.account)
                by_node.setdefault(name, []).append(i)
                pools[name] = pool
            replies: list[Any] = [None] * len(calls)
            for name, indexes in by_node.items():
                share = self._stream(pools[name], [calls[i] for i in indexes], entries, wait=True)
                for i, reply in zip(indexes, share, strict=True):
                    replies[i] = reply
        except CLUSTER_CHANGES as exc:
            refresh_slot_map(client)
            raise ClusterMoved(f"cluster topology changed: {exc!r}") from exc
        return replies

    def _stream(
        self, pool: Any, calls: list[_Call], entries: Sequence[Mapping[str, Any]], *, wait: bool
    ) -> list[Any]:
        """Send the calls in chunks on one connection, reading chunk n while n+1 runs.

        ``wait``: ``ROLE`` goes ahead of the first chunk (no extra round trip), and the batch
        ends with ``WAIT 1`` when the master has a replica connected. A master without one
        (its replica was promoted away, or is down) is not waited on for nothing; the batch
        is counted in ``unreplicated``, as one no replica confirmed in time."""
        conn = pool.get_connection()
        replies: list[Any] = []
        pending: deque[int] = deque()
        try:
            for start in range(0, len(calls), CHUNK_CALLS):
                chunk = calls[start : start + CHUNK_CALLS]
                packed = b"".join(self._pack(c, entries) for c in chunk)
                ahead = wait and start == 0
                conn.send_packed_command([_ROLE + packed if ahead else packed])
                pending.append(len(chunk) + ahead)
                if len(pending) > 1:
                    replies += _read_replies(conn, pending.popleft())
            while pending:
                replies += _read_replies(conn, pending.popleft())
            if wait:
                if _replicas(replies.pop(0)) > 0:
                    conn.send_packed_command([self._wait])
                    confirmed = int(_read_replies(conn, 1)[0]) >= 1
                else:
                    confirmed = False
                self.unreplicated += not confirmed
        except BaseException as exc:
            conn.disconnect()  # unread replies would poison the next user of the connection
            if isinstance(exc, CLUSTER_CHANGES):
                raise
            if isinstance(exc, redis.ResponseError) and not isinstance(exc, NoScriptError):
                raise ProjectionError(f"apply script failed: {exc!r}") from exc
            raise
        finally:
            pool.release(conn)
        return replies
