"""Replay ``credit-ledger`` from offset 0 into an empty keyspace, and compare keyspaces.

The projection is derived state (invariant 3): replaying the ledger into an empty prefix
must give exactly the live projection. Holds are not in the ledger, so they are not
rebuilt: a comparison ignores the holds keys and the ``reserved`` field.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from metering.topic_reader import TopicReadError, read_to_end
from metering.topics import TopicNames
from projections.apply import Projector
from projections.keys import (
    account_from_key,
    account_keys,
    account_pattern,
    balance_pattern,
    check_account,
    check_prefix,
    sentinel_pattern,
)
from projections.redis_connect import SyncRedis

log = logging.getLogger("metering.projection.rebuild")

Decoder = Callable[[bytes], dict[str, Any]]


class RebuildError(RuntimeError):
    """The ledger could not be read to its end in time."""


@dataclass(slots=True)
class RebuildReport:
    prefix: str
    account: str | None
    records: int = 0
    entries: int = 0
    applied: int = 0
    skipped: int = 0
    gaps: list[str] = field(default_factory=list)
    dead: int = 0
    accounts: int = 0
    seconds: float = 0.0


def _scan(client: SyncRedis, pattern: str) -> Iterator[str]:
    for key in client.scan_iter(match=pattern, count=1000):
        yield key.decode() if isinstance(key, bytes) else str(key)


def clear(client: SyncRedis, prefix: str, account: str | None, *, keep_holds: bool) -> int:
    """Delete the projection keys under ``prefix`` (one account's, or all, with the
    self-heal sentinels); return count."""
    check_prefix(prefix)
    if account is not None:
        keys = account_keys(prefix, check_account(account))
        doomed = [keys.balance, keys.grants]
        if not keep_holds:
            doomed += [keys.holds, keys.hold_expiry]
        return int(client.unlink(*doomed))
    deleted = 0
    batch: list[str] = []
    for key in _scan(client, account_pattern(prefix)):
        if keep_holds and (key.endswith(":holds") or key.endswith(":holdx")):
            continue
        batch.append(key)
        if len(batch) >= 1000:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    # Last, so a live projection on this prefix replays its partitions once (self_heal)
    # instead of repairing account by account as their gaps come.
    for key in _scan(client, sentinel_pattern(prefix)):
        deleted += int(client.unlink(key))
    return deleted


def _read_ledger(
    bootstrap: str,
    topic: str,
    timeout_s: float,
    batch_size: int,
    ends: Mapping[int, int] | None = None,
) -> Iterator[list[tuple[bytes | None, bytes]]]:
    """Committed ledger records from the start to the end, in batches (through the one
    ``read_to_end``). ``ends`` (partition -> stop offset, exclusive) reads only those partitions,
    each up to its stop offset or its end, whichever comes first."""
    partitions = None if ends is None else sorted(ends)
    try:
        for msgs in read_to_end(
            bootstrap, topic, partitions, stop=ends, timeout_s=timeout_s, batch_size=batch_size
        ):
            yield [(msg.key(), msg.value()) for msg in msgs]
    except TopicReadError as exc:
        raise RebuildError(str(exc)) from exc


def replay(
    *,
    bootstrap: str,
    topic: str,
    projector: Projector,
    decode: Decoder,
    report: RebuildReport,
    accounts: Collection[str] | None = None,
    ends: Mapping[int, int] | None = None,
    timeout_s: float = 600.0,
    batch_size: int = 5000,
) -> set[str]:
    """Apply the ledger (``accounts`` only, ``ends`` as in ``_read_ledger``) through the
    projection's own apply script; counts go to ``report``; return the accounts touched.

    Nothing is cleared: entries at or below an account's stored seq are skipped, so a
    replay over intact keys changes nothing and one over missing keys recreates them.
    """
    wanted = None if accounts is None else {a.encode() for a in accounts}
    touched: set[str] = set()
    for records in _read_ledger(bootstrap, topic, timeout_s, batch_size, ends):
        report.records += len(records)
        entries = []
        for key, value in records:
            if wanted is not None and key is not None and key not in wanted:
                continue  # another account's record: not even decoded
            try:
                entry = decode(value)
            except Exception as exc:  # the live consumer dead-letters these too
                report.dead += 1
                log.warning("undecodable ledger record skipped: %s", exc)
                continue
            if accounts is not None and entry.get("account_id") not in accounts:
                continue
            entries.append(entry)
            touched.add(entry["account_id"])
        result = projector.apply_batch(entries)
        report.entries += len(entries)
        report.applied += result.applied
        report.skipped += result.skipped
        report.gaps += [f"{g.account}: stored {g.stored_seq}, got {g.got_seq}" for g in result.gaps]
    return touched


def rebuild(
    *,
    bootstrap: str,
    topics: TopicNames,
    client: SyncRedis,
    prefix: str,
    decode: Decoder,
    account: str | None = None,
    keep_holds: bool = False,
    timeout_s: float = 600.0,
    batch_size: int = 5000,
) -> RebuildReport:
    """Clear ``prefix`` (or one account in it) and replay the ledger into it. With
    ``keep_holds``, the holds stay and the apply script's first entry of each account sets
    ``reserved`` to what they hold."""
    started = time.monotonic()
    report = RebuildReport(prefix=check_prefix(prefix), account=account)
    clear(client, prefix, account, keep_holds=keep_holds)
    touched = replay(
        bootstrap=bootstrap,
        topic=topics.credit_ledger,
        projector=Projector(client, prefix),
        decode=decode,
        report=report,
        accounts=None if account is None else (account,),
        timeout_s=timeout_s,
        batch_size=batch_size,
    )
    report.accounts = len(touched)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def snapshot(client: SyncRedis, prefix: str, account: str | None = None) -> dict[str, Any]:
    """account -> {"bal": {...} without ``reserved``, "grants": {...}} (holds excluded)."""
    if account is not None:
        accounts = [account]
    else:
        accounts = [
            a for k in _scan(client, balance_pattern(prefix)) if (a := account_from_key(prefix, k))
        ]
    out: dict[str, Any] = {}
    for name in sorted(accounts):
        keys = account_keys(prefix, name)
        bal = {_text(k): _text(v) for k, v in client.hgetall(keys.balance).items()}
        if not bal:
            continue
        bal.pop("reserved", None)
        grants = {_text(k): _text(v) for k, v in client.hgetall(keys.grants).items()}
        out[name] = {"bal": bal, "grants": grants}
    return out


def compare(
    client: SyncRedis, live_prefix: str, rebuilt_prefix: str, account: str | None = None
) -> list[str]:
    """Every difference between two projections (empty list = identical)."""
    live = snapshot(client, live_prefix, account)
    rebuilt = snapshot(client, rebuilt_prefix, account)
    diffs: list[str] = []
    for name in sorted(live.keys() | rebuilt.keys()):
        a, b = live.get(name), rebuilt.get(name)
        if a is None or b is None:
            diffs.append(f"{name}: only in {'rebuilt' if a is None else 'live'}")
            continue
        for part in ("bal", "grants"):
            for fld in sorted(a[part].keys() | b[part].keys()):
                if a[part].get(fld) != b[part].get(fld):
                    diffs.append(
                        f"{name} {part}.{fld}: live={a[part].get(fld)!r} "
                        f"rebuilt={b[part].get(fld)!r}"
                    )
    return diffs
