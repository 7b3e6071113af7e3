"""Property tests: random interleavings of usage, commands and sweeps over a few accounts.

Checked after every run: conservation, grant bounds, at-most-once debits, fold(ledger) == state,
gap-free seq, unique entry ids, account independence, byte round-trips, and that a raised
error leaves the state untouched.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from engine_testkit import CREDIT, DAY, HOUR, T0, make_engine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.domain import (
    AccountOverride,
    AccountState,
    AutoTopupConfig,
    CommandKind,
    CreditCommand,
    CreditEngine,
    DomainError,
    EntryType,
    LedgerEntry,
    UsageEvent,
    conserved_balance,
    fold,
)

ACCOUNTS = ("a", "b", "c")
STEPS = [0, 1, 60_000, HOUR, DAY, 9 * DAY, 25 * DAY]
LATE = [-60_000, -2 * HOUR, -2 * DAY]

Op = tuple[Any, ...]

usage_ops = st.tuples(
    st.just("usage"),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(["text", "image", "doc", "compute", "bad"]),
    st.integers(0, 5000),
    st.sampled_from(STEPS + LATE),
)
redeliver_ops = st.tuples(st.just("redeliver"), st.integers(0, 10_000))
sweep_ops = st.tuples(st.just("sweep"), st.sampled_from(ACCOUNTS), st.sampled_from(STEPS))
command_ops = st.tuples(
    st.just("command"),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(list(CommandKind)),
    st.integers(-300, 3000),
    st.sampled_from([None, 2 * DAY, 20 * DAY, 45 * DAY]),
    st.sampled_from(["free", "starter", "growth", "enterprise", "gold", "none"]),
    st.integers(0, 10_000),
    st.sampled_from(STEPS),
)
# Every account starts on a plan with an extra grant, so usage mostly finds credits to burn.
PREFIX: list[Op] = [
    ("command", "a", CommandKind.ASSIGN_PLAN, 0, None, "starter", 0, 0),
    ("command", "b", CommandKind.ASSIGN_PLAN, 0, None, "growth", 0, 0),
    ("command", "c", CommandKind.ASSIGN_PLAN, 0, None, "free", 0, 0),
    ("command", "c", CommandKind.SET_OVERRIDE, 0, None, "", 7, 0),  # 7 credits, unlimited
    ("command", "a", CommandKind.PROMOTION, 300, 20 * DAY, "", 1, 0),
    ("command", "b", CommandKind.PURCHASE, 500, None, "", 2, 0),
]
ops_strategy = st.lists(
    st.one_of(usage_ops, usage_ops, usage_ops, redeliver_ops, sweep_ops, command_ops),
    min_size=6,
    max_size=45,
).map(lambda ops: PREFIX + ops)
configs = st.sampled_from(
    [
        {},
        {"dedupe_max_ids": 4, "dedupe_window_ms": 3 * DAY},
        {"default_plan": "starter", "late_grace_ms": 3 * HOUR},
    ]
)


def _usage(n: int, account: str, kind: str, qty: int, at: int) -> UsageEvent:
    units: dict[str, int]
    if kind == "text":
        feature, units = "text_generation", {"requests": 1, "input_tokens": qty}
    elif kind == "image":
        feature, units = "image_generation", {"images": qty % 3}
    elif kind == "doc":
        feature, units = "document_analysis", {"pages": qty % 40}
    elif kind == "compute":
        feature, units = "compute", {"compute_ms": qty * 10}
    else:
        feature, units = "text_generation", {"requests": -1}
    return UsageEvent(f"e{n}", account, feature, units, at, reservation_id=f"r{n}")


def _command(
    n: int, op: Op, at: int, grant_ids: list[str], events: list[UsageEvent]
) -> CreditCommand:
    _, account, kind, amount, expiry, plan, pick, _ = op
    micros = amount * CREDIT
    fields: dict[str, Any] = {}
    if kind in (CommandKind.GRANT, CommandKind.PURCHASE, CommandKind.PROMOTION):
        fields = {
            "amount": abs(micros) or CREDIT,
            "expires_at": None if expiry is None else at + expiry,
        }
        if kind is CommandKind.GRANT:
            fields["grant_source"] = ["plan", "promotion", "adjustment", "purchase"][pick % 4]
            fields["priority"] = pick % 50
    elif kind is CommandKind.ADJUSTMENT:
        fields = {"amount": micros or CREDIT}
    elif kind is CommandKind.VOID_GRANT:
        fields = {"grant_id": grant_ids[pick % len(grant_ids)] if grant_ids else "missing"}
    elif kind is CommandKind.VOID_USAGE:  # mostly an event of this account, sometimes none
        known = events[pick % len(events)].event_id if events else "missing"
        fields = {"event_id": known if pick % 5 else f"e{pick}", "reason": "refund"}
    elif kind is CommandKind.AMEND_USAGE:  # more or fewer of the event's units, or a bad unit
        event = events[pick % len(events)] if events else None
        units = {"requests": 1} if event is None else dict(event.units)
        units = {u: max(q, 0) * (pick % 4) // 2 for u, q in units.items()}
        if pick % 7 == 0:
            units["no_such_unit"] = 1
        fields = {"event_id": "missing" if event is None else event.event_id, "units": units}
    elif kind is CommandKind.ASSIGN_PLAN:
        fields = {"plan_id": plan}
    elif kind is CommandKind.SET_OVERRIDE:
        fields = {
            "override": AccountOverride(
                monthly_credits=None if pick % 3 == 0 else (pick % 500) * CREDIT,
                overage_policy=[None, "block", "allow", "unlimited"][pick % 4],
                overage_limit=(pick % 70) * CREDIT,
                trial_features=("image_generation",) if pick % 2 else (),
                trial_until=at + DAY,
            )
        }
    elif kind is CommandKind.CONFIGURE_AUTO_TOPUP:
        cfg = AutoTopupConfig(pick % 5 != 0, (pick % 300) * CREDIT, 200 * CREDIT, 1 + pick % 3)
        fields = {"auto_topup": cfg}
    return CreditCommand(f"c{n}", account, kind, at, **fields)


class Run:
    """Applies an op list; records every entry per account. ``roundtrip`` reloads state from bytes
    before each step, to prove the byte form loses nothing."""

    def __init__(self, engine: CreditEngine, roundtrip: bool = False) -> None:
        self.engine = engine
        self.roundtrip = roundtrip
        self.states = {a: engine.new_state(a) for a in ACCOUNTS}
        self.entries: dict[str, list[LedgerEntry]] = {a: [] for a in ACCOUNTS}
        self.alerts: dict[str, list[Any]] = {a: [] for a in ACCOUNTS}
        self.events: list[UsageEvent] = []
        self.prices: dict[str, int] = {}

    def state(self, account: str) -> AccountState:
        if self.roundtrip:
            self.states[account] = self.engine.load_state(self.states[account].to_bytes())
        return self.states[account]

    def apply(self, ops: list[Op], only: str | None = None) -> None:
        clock = T0
        grant_ids: dict[str, list[str]] = {a: [] for a in ACCOUNTS}  # per account: independent
        for n, op in enumerate(ops):
            kind = op[0]
            if kind == "redeliver":
                if not self.events:
                    continue
                event = self.events[op[1] % len(self.events)]
                if only in (None, event.account_id):
                    self._usage(event)
                continue
            step = op[-1]
            clock += max(step, 0)
            if kind == "usage":  # built even when skipped, so redeliver indexes agree
                self.events.append(_usage(n, op[1], op[2], op[3], clock + min(step, 0)))
            if only not in (None, op[1]):
                continue
            if kind == "usage":
                self._usage(self.events[-1])
            elif kind == "sweep":
                out = self.engine.sweep(self.state(op[1]), clock)
                self._keep(op[1], out.entries, out.alerts)
            else:
                own = [e for e in self.events if e.account_id == op[1]]
                cmd = _command(n, op, clock, grant_ids[op[1]], own)
                state = self.state(cmd.account_id)
                before = state.to_bytes()
                try:
                    out = self.engine.apply_command(state, cmd, clock)
                except DomainError:
                    assert state.to_bytes() == before  # raised: nothing changed
                    continue
                grant_ids[op[1]] += [e.grant.grant_id for e in out.entries if e.grant is not None]
                if cmd.kind is CommandKind.AMEND_USAGE and out.rejection is None:
                    amended = next(e for e in own if e.event_id == cmd.event_id)
                    self.prices[amended.event_id] = self.engine.price(
                        amended._replace(units=cmd.units)
                    )[0]
                self._keep(cmd.account_id, out.entries, out.alerts)

    def _usage(self, event: UsageEvent) -> None:
        state = self.state(event.account_id)
        before = state.to_bytes()
        try:
            out = self.engine.apply_usage(state, event, event.occurred_at)
        except DomainError:
            assert state.to_bytes() == before  # raised: nothing changed
            return
        if out.duplicate:
            assert out.entries == [] and out.alerts == []
            assert state.to_bytes() == before
        self.prices.setdefault(event.event_id, self.engine.price(event)[0])
        self._keep(event.account_id, out.entries, out.alerts)

    def _keep(self, account: str, entries: list[LedgerEntry], alerts: list[Any]) -> None:
        assert all(e.account_id == account for e in entries)
        self.entries[account].extend(entries)
        self.alerts[account].extend(alerts)


def _check_invariants(run: Run) -> None:
    all_ids = [e.entry_id for entries in run.entries.values() for e in entries]
    assert len(all_ids) == len(set(all_ids)), "entry ids are unique"
    alert_ids = [a.alert_id for alerts in run.alerts.values() for a in alerts]
    assert len(alert_ids) == len(set(alert_ids)), "alert ids are unique"
    for account, state in run.states.items():
        entries = run.entries[account]
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        assert fold(entries) == state.view()
        assert conserved_balance(entries) == state.balance
        assert state.balance == sum(g.remaining for g in state.grants)
        assert all(0 <= g.remaining <= g.amount for g in state.grants)
        assert state.overage >= 0
        charged: Counter[str] = Counter()
        kinds: Counter[tuple[str, EntryType]] = Counter()
        holds: Counter[str] = Counter()
        voided: set[str] = set()
        for e in entries:
            if e.type is EntryType.USAGE_REVERSED:
                event_id = e.entry_id.rsplit(":USAGE_REVERSED:", 1)[1]
                charged[event_id] -= e.amount
                voided.add(event_id)
            if e.type in (EntryType.USAGE_DEBIT, EntryType.OVERAGE, EntryType.USAGE_REJECTED):
                if e.reason == "amended":
                    voided.discard(e.cause_id)
                else:
                    kinds[(e.cause_id, e.type)] += 1
                if e.type is not EntryType.USAGE_REJECTED:
                    charged[e.cause_id] -= e.amount
                if e.reservation_id and e.reason != "outside_dedupe_window":
                    holds[e.cause_id] += 1
        assert all(n == 1 for n in holds.values()), "one entry per event settles its hold"
        charging = [n for (_, t), n in kinds.items() if t is not EntryType.USAGE_REJECTED]
        assert all(n == 1 for n in charging), "one debit / overage entry per event at most"
        for event_id, amount in charged.items():
            assert 0 <= amount <= run.prices[event_id], "an event is charged at most once"
            if event_id in voided:
                assert amount == 0, "a voided event is charged nothing"


@settings(
    max_examples=70,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops=ops_strategy, config=configs)
def test_engine_invariants_hold_for_any_sequence(ops: list[Op], config: dict[str, Any]) -> None:
    run = Run(make_engine(**config))
    run.apply(ops)
    _check_invariants(run)

    # Accounts are independent: each account alone (and through bytes) emits the same.
    for account in ACCOUNTS:
        alone = Run(make_engine(**config), roundtrip=True)
        alone.apply(ops, only=account)
        assert alone.entries[account] == run.entries[account]
        assert alone.alerts[account] == run.alerts[account]
        assert alone.states[account].to_bytes() == run.states[account].to_bytes()


@settings(max_examples=40, deadline=None)
@given(ops=ops_strategy)
def test_redelivering_everything_changes_nothing(ops: list[Op]) -> None:
    run = Run(make_engine(dedupe_window_ms=10**12, dedupe_max_ids=10**6))
    run.apply(ops)
    snapshot = {a: s.to_bytes() for a, s in run.states.items()}
    for event in list(run.events):
        state = run.states[event.account_id]
        try:
            out = run.engine.apply_usage(state, event, 0)
        except DomainError:
            continue
        assert out.duplicate and not out.entries
    assert {a: s.to_bytes() for a, s in run.states.items()} == snapshot
