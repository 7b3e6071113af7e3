"""The real credit engine (``metering.domain``) behind the processor's :class:`EnginePort`.

Converts Avro dicts to domain records, domain records back to Avro dicts, and the engine's
raised errors (input unusable) to :class:`InputError` so the record goes to the DLQ.
Recorded refusals (``Rejection``) are ordinary outcomes: their ledger entries are published.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metering.data import SHIPPED_PLANS, SHIPPED_PRICE_BOOK
from metering.domain import (
    CreditCommand,
    CreditEngine,
    DomainError,
    LedgerEntry,
    LedgerError,
    Outcome,
    UsageEvent,
    catch_up,
    load_plans,
    load_price_book,
)
from metering.domain.charges import ChargeWindow, encode_charge
from metering.domain.config import DEFAULT_CONFIG, EngineConfig
from metering.domain.state import AccountState
from pipeline.config_reload import FileEngineSource
from pipeline.ports import InputError, Step, ToRemember
from pipeline.settings import ProcessorConfig


class DomainEngine:
    """Adapts :class:`metering.domain.CreditEngine` (which mutates states in place)."""

    def __init__(self, engine: CreditEngine, version: str) -> None:
        self.engine = engine
        self._version = version

    @classmethod
    def from_files(
        cls,
        pricebook: Path | None = None,
        plans: Path | None = None,
        config: EngineConfig = DEFAULT_CONFIG,
    ) -> DomainEngine:
        engine = CreditEngine(load_price_book(pricebook), load_plans(plans), config)
        digest = hashlib.sha256()
        for path in (pricebook or SHIPPED_PRICE_BOOK, plans or SHIPPED_PLANS):
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(str(path).encode())
        versions = "+".join(v.version for v in engine.price_book.versions)
        return cls(engine, f"{versions}@{digest.hexdigest()[:12]}")

    @property
    def version(self) -> str:
        return self._version

    def new_state(self, account_id: str) -> Any:
        return self.engine.new_state(account_id)

    def load_state(self, data: bytes) -> Any:
        return self.engine.load_state(data)

    def dump_state(self, state: Any) -> bytes:
        data: bytes = state.to_bytes()
        return data

    def attach_ids(self, state: Any, ids: Any) -> None:
        if len(state.window):
            ids.legacy = state.window  # ids a state carried before the store keep counting
        state.attach_ids(ids)
        state.attach_charges(ids)  # the id store keeps each event's charge with its id

    def state_seq(self, data: bytes) -> int:
        return AccountState.seq_of(data)

    def catch_up(
        self, account_id: str, snapshot: bytes | None, entries: Sequence[Mapping[str, Any]]
    ) -> tuple[bytes, list[ToRemember]]:
        engine = self.engine
        state = engine.new_state(account_id) if snapshot is None else engine.load_state(snapshot)
        charges = ChargeWindow()  # collects the charges the entries made, for the id store
        state.attach_charges(charges)
        try:
            done = catch_up(
                state,
                [LedgerEntry.from_record(r) for r in entries],
                engine.config,
                engine.plans,
            )
        except LedgerError as exc:
            raise ValueError(f"account {account_id}: the ledger cannot be folded: {exc}") from exc
        remember = []
        for event_id, at in done.event_ids:
            record = charges.get(event_id)
            charge = None if record is None else encode_charge(record)
            remember.append(ToRemember(event_id, at, charge))
        remember += [ToRemember(event_id, at, void=True) for event_id, at in done.voided]
        for event_id, at in done.amended:
            record = charges.get(event_id)
            if record is not None:
                remember.append(ToRemember(event_id, at, encode_charge(record), amended=True))
        remember += [ToRemember(cid, at, correction=True) for cid, at in done.corrections]
        return state.to_bytes(), remember

    def apply_usage(self, state: Any, record: Mapping[str, Any], recorded_at: int) -> Step:
        try:
            event = UsageEvent.from_record(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError("ValidationError", f"invalid usage event: {exc!r}") from exc
        try:
            outcome = self.engine.apply_usage(state, event, recorded_at)
        except DomainError as exc:
            # The domain decides which failures are worth an alert (an unknown feature: usage
            # that can never be charged); it goes out with the DLQ record, in its transaction.
            alert = self.engine.dead_letter_alert(state, event, exc)
            alerts = () if alert is None else (alert.to_record(),)
            raise InputError(type(exc).__name__, str(exc), alerts) from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError("ValidationError", f"invalid usage event: {exc!r}") from exc
        return _step(state, outcome)

    def apply_command(self, state: Any, record: Mapping[str, Any], recorded_at: int) -> Step:
        try:
            command = CreditCommand.from_record(record)
            outcome = self.engine.apply_command(state, command, recorded_at)
        except DomainError as exc:
            raise InputError(type(exc).__name__, str(exc)) from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError("ValidationError", f"invalid credit command: {exc!r}") from exc
        return _step(state, outcome)

    def sweep(self, state: Any, now: int) -> Step:
        return _step(state, self.engine.sweep(state, now))


def _step(state: Any, outcome: Outcome) -> Step:
    return Step(
        state,
        [entry.to_record() for entry in outcome.entries],
        [alert.to_record() for alert in outcome.alerts],
    )


def file_source(config: ProcessorConfig) -> FileEngineSource:
    """The worker's default: the configured (or shipped) price book and plans, watched."""
    paths = [
        config.pricebook_path or SHIPPED_PRICE_BOOK,
        config.plans_path or SHIPPED_PLANS,
    ]
    return FileEngineSource(
        paths, lambda: DomainEngine.from_files(config.pricebook_path, config.plans_path)
    )
