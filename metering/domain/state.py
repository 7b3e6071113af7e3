"""Per-account state of the credit engine, and its compact byte form.

The stream processor keeps one :class:`AccountState` per ``account_id`` in a changelogged
table, so ``to_bytes``/``from_bytes`` must be cheap and self-contained: a small JSON document
for the scalars and grants, followed by the raw idempotency window (16 bytes per id).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from metering.domain.charges import NO_CHARGES, ChargeMemory, ChargeWindow
from metering.domain.config import DEFAULT_CONFIG, EngineConfig
from metering.domain.dedupe import DedupeWindow, IdMemory, id_hash
from metering.domain.errors import ValidationError
from metering.domain.grants import NEVER, Grant
from metering.domain.plans import NO_PLAN_TERMS_PLAN, Terms, resolve_terms
from metering.domain.records import AccountOverride, AutoTopupConfig

_MAGIC = b"AS1"
_HEAD = struct.Struct("<3sIqq")  # magic, json length, dedupe window_ms, dedupe max_ids


def command_key(command_id: str) -> int:
    """How a state remembers a command id (``AccountState.commands``)."""
    return id_hash("cmd:" + command_id)


@dataclass(frozen=True, slots=True)
class AccountView:
    """What the ledger determines about an account: compared by the fold property tests."""

    seq: int
    balance: int
    overage: int
    grants: dict[str, int]
    """grant_id -> remaining, for grants with something left."""


class AccountState:
    """Everything the engine remembers about one account. The engine mutates it in place."""

    __slots__ = (
        "account_id",
        "alerted",
        "balance",
        "charge_window",
        "charges",
        "clock",
        "commands",
        "dedupe",
        "grants",
        "next_threshold",
        "next_wakeup",
        "overage",
        "override",
        "period_end",
        "period_start",
        "period_used",
        "plan_carry",
        "plan_grant_id",
        "prev_period_start",
        "seq",
        "spent",
        "terms",
        "topup",
        "topup_backoff_until",
        "topup_declines",
        "topup_pending_since",
        "topup_requests",
        "window",
    )

    def __init__(self, account_id: str, dedupe: DedupeWindow) -> None:
        self.account_id = account_id
        self.seq = 0
        self.balance = 0
        """Sum of ``remaining`` over live grants."""
        self.overage = 0
        """Overage used in the current period (billable)."""
        self.period_start = 0
        self.period_end = 0
        """0/0 until the account is first touched."""
        self.prev_period_start = 0
        self.clock = -(2**63)
        """Newest event time seen (usage, command or sweep); never goes back."""
        self.terms: Terms = resolve_terms(NO_PLAN_TERMS_PLAN, None)
        self.override: AccountOverride | None = None
        self.grants: list[Grant] = []
        """Live grants in burn order."""
        self.spent: dict[str, Grant] = {}
        """Grants used up but neither expired nor voided (dropped from ``grants``): a voided
        usage event gives its credits back to them."""
        self.period_used = 0
        self.alerted = 0
        """How many of the sorted alert thresholds were crossed this period."""
        self.plan_carry = 0
        """Plan credits used this period by plan grants replaced mid-period."""
        self.plan_grant_id: str | None = None
        self.topup: AutoTopupConfig | None = None
        self.topup_pending_since: int | None = None
        self.topup_requests: list[int] = []
        self.topup_backoff_until = -(2**63)
        self.topup_declines = 0
        self.dedupe: IdMemory = dedupe
        """Remembered usage event ids: the window in this state, or a view of an id store that
        the processor attaches (:meth:`attach_ids`); only the former is serialized."""
        self.window = dedupe
        self.charge_window = ChargeWindow()
        self.charges: ChargeMemory = NO_CHARGES
        """What recent usage events were charged (corrections): ``charge_window`` when the
        engine keeps charges in the state (``EngineConfig.charge_window``), else nothing."""
        self.commands: set[int] = set()
        """Hashes of every command id applied to the account, kept for as long as the ledger
        (a re-sent command must never apply twice, however late). Commands are few per
        account (plans, purchases, grants), so this stays small. Corrections are not: they
        come at a share of the usage rate, so their ids are remembered by ``charges`` (the
        processor's id store), for as long too (older states may hold some here: honoured)."""
        # Derived, recomputed by refresh(): never serialized.
        self.next_wakeup = NEVER
        self.next_threshold = NEVER

    @classmethod
    def new(cls, account_id: str, config: EngineConfig = DEFAULT_CONFIG) -> AccountState:
        state = cls(account_id, DedupeWindow(config.dedupe_window_ms, config.dedupe_max_ids))
        if config.charge_window:
            state.charges = state.charge_window
        return state

    def attach_ids(self, ids: IdMemory) -> None:
        """Remember event ids in ``ids`` from now on, not in this state's own window (which is
        still serialized as it is: ids of states written before keep deduplicating)."""
        self.dedupe = ids

    def attach_charges(self, charges: ChargeMemory) -> None:
        """Remember charges in ``charges`` (a store outside the state) from now on."""
        self.charges = charges

    @property
    def started(self) -> bool:
        return self.period_end != 0

    def grant(self, grant_id: str) -> Grant | None:
        for g in self.grants:
            if g.grant_id == grant_id:
                return g
        return None

    def view(self) -> AccountView:
        return AccountView(
            seq=self.seq,
            balance=self.balance,
            overage=self.overage,
            grants={g.grant_id: g.remaining for g in self.grants if g.remaining},
        )

    def refresh(self, notice_ms: int, notice_sources: frozenset[str]) -> None:
        """Re-sort grants and recompute the cached wake-up time and next threshold."""
        self.grants.sort(key=Grant.burn_key)
        wake = self.period_end if self.started else NEVER
        for g in self.grants:
            if g.expires_at is not None:
                wake = min(wake, g.expires_at)
                if not g.warned and g.remaining and g.source in notice_sources:
                    wake = min(wake, g.expires_at - notice_ms)
        self.next_wakeup = wake
        amount = self.terms.threshold_amount(self.alerted)
        self.next_threshold = NEVER if amount is None else amount

    # -- persistence -----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "a": self.account_id,
            "s": self.seq,
            "b": self.balance,
            "o": self.overage,
            "p": [self.prev_period_start, self.period_start, self.period_end],
            "c": self.clock,
            "t": self.terms.to_json(),
            "ov": None if self.override is None else list(self.override),
            "g": [g.to_json() for g in self.grants],
            "u": [self.period_used, self.alerted, self.plan_carry, self.plan_grant_id],
            "tu": None if self.topup is None else list(self.topup),
            "cm": sorted(self.commands),
            "tp": [
                self.topup_pending_since,
                self.topup_requests,
                self.topup_backoff_until,
                self.topup_declines,
            ],
        }
        if len(self.charge_window):
            doc["ch"] = self.charge_window.to_json()
        if self.charge_window.commands:
            doc["cc"] = sorted(self.charge_window.commands)
        if self.spent:
            doc["sp"] = [g.to_json() for g in self.spent.values()]
        body = json.dumps(doc, separators=(",", ":")).encode()
        window = self.window
        head = _HEAD.pack(_MAGIC, len(body), window.window_ms, window.max_ids or 0)
        return head + body + window.to_bytes()

    @staticmethod
    def _document(data: bytes) -> tuple[dict[str, Any], int]:
        """The JSON document of a :meth:`to_bytes` blob and the offset where its window starts
        (the header's window and cap are not read: the config's apply)."""
        if data[:3] != _MAGIC:
            raise ValidationError("not an AccountState blob")
        _, length, _, _ = _HEAD.unpack_from(data)
        end = _HEAD.size + length
        doc: dict[str, Any] = json.loads(data[_HEAD.size : end])
        return doc, end

    @staticmethod
    def seq_of(data: bytes) -> int:
        """The ``seq`` of a :meth:`to_bytes` blob, without loading the rest (restore checks)."""
        seq: int = AccountState._document(data)[0]["s"]
        return seq

    @classmethod
    def from_bytes(cls, data: bytes, config: EngineConfig = DEFAULT_CONFIG) -> AccountState:
        """Inverse of :meth:`to_bytes`; ``config`` supplies the derived-field rules."""
        doc, end = cls._document(data)
        view = memoryview(data)[end:]
        window = DedupeWindow.from_bytes(view, config.dedupe_window_ms, config.dedupe_max_ids)
        state = cls(doc["a"], window)
        state.seq = doc["s"]
        state.balance = doc["b"]
        state.overage = doc["o"]
        state.prev_period_start, state.period_start, state.period_end = doc["p"]
        state.clock = doc["c"]
        state.terms = Terms.from_json(doc["t"])
        ov = doc["ov"]
        if ov is not None:
            state.override = AccountOverride(ov[0], ov[1], ov[2], tuple(ov[3]), ov[4])
        state.grants = [Grant.from_json(g) for g in doc["g"]]
        state.period_used, state.alerted, state.plan_carry, state.plan_grant_id = doc["u"]
        state.commands = set(doc.get("cm", ()))
        state.charge_window = ChargeWindow.from_json(doc.get("ch", []))
        state.charge_window.commands = set(doc.get("cc", ()))
        if config.charge_window:
            state.charges = state.charge_window
        state.spent = {g.grant_id: g for g in map(Grant.from_json, doc.get("sp", []))}
        tu = doc["tu"]
        state.topup = None if tu is None else AutoTopupConfig(*tu)
        pending, requests, backoff, declines = doc["tp"]
        state.topup_pending_since = pending
        state.topup_requests = list(requests)
        state.topup_backoff_until = backoff
        state.topup_declines = declines
        state.refresh(config.expiring_notice_ms, config.expiring_notice_sources)
        return state
