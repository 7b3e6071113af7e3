"""The ledger audit (``consumers.ledger_audit``): pure, no I/O.

Sound ledgers come from the real credit engine; broken ones are those ledgers altered the way
a buggy writer would (a restarted seq, a replayed or dropped record, a wrong balance). The
audit must report every violation, and agree with ``metering.domain.fold`` on where an
account's ledger first goes wrong.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.ledger_audit import (
    AMOUNT,
    BALANCE_AFTER,
    DUPLICATE_ENTRY_ID,
    FOLD_KINDS,
    GRANT_BOUNDS,
    GRANT_RECREATED,
    OVERAGE_AFTER,
    OVERAGE_NEGATIVE,
    SEQ_GAP,
    SEQ_RESTART,
    UNKNOWN_GRANT,
    LedgerAudit,
    Violation,
    audit_ledger,
)
from metering.domain import (
    MICROS_PER_CREDIT,
    Allocation,
    CommandKind,
    CreditCommand,
    CreditEngine,
    DomainError,
    EntryType,
    GrantInfo,
    LedgerEntry,
    LedgerError,
    UsageEvent,
    fold,
    load_plans,
    load_price_book,
)
from metering.domain.periods import parse_instant

CREDIT = MICROS_PER_CREDIT
DAY = 86_400_000
T0 = parse_instant("2025-03-10T00:00:00Z")
ENGINE = CreditEngine(load_price_book(), load_plans())
ACCOUNTS = ("a", "b")

Op = tuple[Any, ...]


def engine_ledger(ops: list[Op]) -> list[LedgerEntry]:
    """Run ``ops`` through the engine; the ledger of all accounts, interleaved as emitted."""
    states = {a: ENGINE.new_state(a) for a in ACCOUNTS}
    ledger: list[LedgerEntry] = []
    clock = T0
    grants: dict[str, list[str]] = {a: [] for a in ACCOUNTS}
    for n, (kind, account, *args, step) in enumerate(ops):
        clock += step
        state = states[account]
        try:
            if kind == "usage":
                feature, units = args[0]
                event = UsageEvent(f"{account}-e{n}", account, feature, units, clock)
                out = ENGINE.apply_usage(state, event, clock)
            elif kind == "sweep":
                out = ENGINE.sweep(state, clock)
            else:
                cmd = _command(n, account, kind, args, clock, grants)
                out = ENGINE.apply_command(state, cmd, clock)
        except DomainError:
            continue
        grants[account] += [e.grant.grant_id for e in out.entries if e.grant is not None]
        ledger.extend(out.entries)
    return ledger


def _command(
    n: int, account: str, kind: str, args: list[Any], at: int, grants: dict[str, list[str]]
) -> CreditCommand:
    fields: dict[str, Any] = {}
    if kind == "assign_plan":
        fields = {"plan_id": args[0]}
    elif kind in ("promotion", "purchase"):
        fields = {
            "amount": args[0] * CREDIT,
            "expires_at": None if args[1] is None else at + args[1],
        }
    elif kind == "adjustment":
        fields = {"amount": args[0] * CREDIT or CREDIT}
    elif kind == "void_grant":
        ids = grants[account]
        fields = {"grant_id": ids[args[0] % len(ids)] if ids else "missing"}
    return CreditCommand(f"{account}-c{n}", account, CommandKind(kind), at, **fields)


steps = st.sampled_from([0, 1, 60_000, 3_600_000, DAY, 9 * DAY, 25 * DAY])
accounts = st.sampled_from(ACCOUNTS)
usage_ops = st.tuples(
    st.just("usage"),
    accounts,
    st.sampled_from(
        [
            ("text_generation", {"requests": 1}),
            ("image_generation", {"images": 1}),
            ("image_generation", {"images": 40}),
            ("document_analysis", {"pages": 30}),
        ]
    ),
    steps,
)
command_ops = st.one_of(
    st.tuples(
        st.just("assign_plan"), accounts, st.sampled_from(["free", "starter", "growth"]), steps
    ),
    st.tuples(
        st.sampled_from(["promotion", "purchase"]),
        accounts,
        st.integers(1, 3000),
        st.sampled_from([None, 2 * DAY, 40 * DAY]),
        steps,
    ),
    st.tuples(st.just("adjustment"), accounts, st.integers(-500, 500), steps),
    st.tuples(st.just("void_grant"), accounts, st.integers(0, 20), steps),
    st.tuples(st.just("sweep"), accounts, steps),
)
PREFIX: list[Op] = [
    ("assign_plan", "a", "growth", 0),  # overage allowed
    ("assign_plan", "b", "starter", 0),  # blocks
    ("promotion", "a", 300, 5 * DAY, 1),
]
ledgers = st.lists(st.one_of(usage_ops, usage_ops, command_ops), min_size=3, max_size=40).map(
    lambda ops: engine_ledger(PREFIX + ops)
)


def scenario() -> list[LedgerEntry]:
    """A fixed sound ledger: plans, a promotion, debits, overage, a period reset, two accounts."""
    image = ("image_generation", {"images": 100})
    ops: list[Op] = [*PREFIX, ("promotion", "b", 300, None, 1)]
    ops += [("usage", acct, image, 1) for _ in range(5) for acct in ACCOUNTS]
    ops += [("sweep", "a", 25 * DAY), ("sweep", "b", 0), ("usage", "a", image, DAY)]
    return engine_ledger(ops)


def by_account(ledger: list[LedgerEntry]) -> dict[str, list[LedgerEntry]]:
    out: dict[str, list[LedgerEntry]] = {}
    for e in ledger:
        out.setdefault(e.account_id, []).append(e)
    return out


def kinds(violations: list[Violation]) -> list[tuple[str, int, str]]:
    return [(v.account, v.seq, v.kind) for v in violations]


def find(ledger: list[LedgerEntry], account: str, entry_type: EntryType) -> int:
    return next(i for i, e in enumerate(ledger) if e.account_id == account and e.type is entry_type)


def next_of(ledger: list[LedgerEntry], i: int) -> int:
    """Index of the next entry of the same account as ``ledger[i]``."""
    account = ledger[i].account_id
    return next(j for j in range(i + 1, len(ledger)) if ledger[j].account_id == account)


# -- sound ledgers --------------------------------------------------------------------------------


def test_scenario_is_sound_and_covers_the_rules() -> None:
    ledger = scenario()
    types = {e.type for e in ledger}
    assert {EntryType.GRANT_CREATED, EntryType.USAGE_DEBIT, EntryType.OVERAGE} <= types
    assert {EntryType.PERIOD_RESET, EntryType.USAGE_REJECTED} <= types
    assert audit_ledger(ledger) == []
    assert audit_ledger([]) == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ledger=ledgers)
def test_engine_ledgers_have_no_violations(ledger: list[LedgerEntry]) -> None:
    for entries in by_account(ledger).values():
        fold(entries)  # the engine's ledger is sound by the domain's own definition
    audit = LedgerAudit()
    audit.extend(ledger)
    assert audit.violations == []
    assert audit.entries == len(ledger)


# -- agreement with fold --------------------------------------------------------------------------

mutations = st.lists(
    st.tuples(
        st.sampled_from(
            ["drop", "dup", "swap", "seq", "balance", "overage", "amount", "alloc", "entry_id"]
        ),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
        st.sampled_from([-3, -1, 1, 2, 7 * CREDIT, -7 * CREDIT]),
    ),
    min_size=1,
    max_size=3,
)


def mutate(ledger: list[LedgerEntry], ops: list[tuple[str, int, int, int]]) -> list[LedgerEntry]:
    ledger = list(ledger)
    for op, i, j, d in ops:
        i, j = i % len(ledger), j % len(ledger)
        e = ledger[i]
        if op == "drop" and len(ledger) > 1:
            del ledger[i]
        elif op == "dup":
            ledger.insert(i + 1, e)
        elif op == "swap" and i + 1 < len(ledger):
            ledger[i], ledger[i + 1] = ledger[i + 1], e
        elif op == "seq":
            ledger[i] = e._replace(seq=e.seq + d)
        elif op == "balance":
            ledger[i] = e._replace(balance_after=e.balance_after + d)
        elif op == "overage":
            ledger[i] = e._replace(overage_after=e.overage_after + d)
        elif op == "amount":
            ledger[i] = e._replace(amount=e.amount + d)
        elif op == "alloc" and e.allocations:
            first = e.allocations[0]
            allocs = (Allocation(first.grant_id, first.amount + d), *e.allocations[1:])
            ledger[i] = e._replace(allocations=allocs)
        elif op == "entry_id":
            ledger[i] = e._replace(entry_id=ledger[j].entry_id)
    return ledger


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ledger=ledgers, ops=mutations)
def test_audit_agrees_with_fold(ledger: list[LedgerEntry], ops: list[Any]) -> None:
    """fold raises on an account's entries exactly when the audit reports a fold kind, and
    the audit's first such violation is at the entry fold names."""
    broken = mutate(ledger, ops)
    violations = audit_ledger(broken)
    for account, entries in by_account(broken).items():
        first = next((v for v in violations if v.account == account and v.kind in FOLD_KINDS), None)
        try:
            fold(entries)
        except LedgerError as exc:
            assert first is not None, f"fold: {exc}; audit: {violations}"
            assert str(exc).startswith(f"{first.entry_id}: "), (str(exc), first)
        else:
            assert first is None, first


# -- one kind at a time -----------------------------------------------------------------------


def test_seq_restart_is_one_line() -> None:
    ledger = scenario()
    a = by_account(ledger)["a"]
    # A processor that lost its state starts the account over: seq 1 again, a new entry id.
    restart = a[0]._replace(entry_id="a-again:PLAN_ASSIGNED", balance_after=a[-1].balance_after)
    restart = restart._replace(overage_after=a[-1].overage_after)
    violations = audit_ledger([*ledger, restart])
    assert [str(v) for v in violations] == [
        f"ledger: a seq 1: seq restarts (expected {len(a) + 1})"
    ]
    assert violations[0] == Violation(
        "a", 1, "a-again:PLAN_ASSIGNED", SEQ_RESTART, f"seq restarts (expected {len(a) + 1})"
    )


def test_seq_gap_and_step_back() -> None:
    ledger = scenario()
    i = find(ledger, "b", EntryType.USAGE_REJECTED)
    seq = ledger[i].seq
    dropped = ledger[:i] + ledger[i + 1 :]
    gap = [v for v in audit_ledger(dropped) if v.kind in (SEQ_GAP, SEQ_RESTART)]
    assert [str(v) for v in gap] == [f"ledger: b seq {seq + 1}: seq gap (expected {seq})"]

    swapped = [*ledger]
    k = next_of(ledger, i)
    swapped[i], swapped[k] = swapped[k], swapped[i]
    seqs = [str(v) for v in audit_ledger(swapped) if v.kind in (SEQ_GAP, SEQ_RESTART)]
    assert seqs == [
        f"ledger: b seq {seq + 1}: seq gap (expected {seq})",
        f"ledger: b seq {seq}: seq goes back (expected {seq + 2})",
        f"ledger: b seq {seq + 2}: seq gap (expected {seq + 1})",
    ]


def test_replayed_record_repeats_seq_and_entry_id() -> None:
    ledger = scenario()
    i = find(ledger, "a", EntryType.USAGE_DEBIT)
    e = ledger[i]
    violations = audit_ledger([*ledger[: i + 1], e, *ledger[i + 1 :]])
    at_replay = [v for v in violations if v.seq == e.seq]
    lines = [str(v) for v in at_replay]
    assert f"ledger: a seq {e.seq}: seq repeats (expected {e.seq + 1})" in lines
    assert (
        f"ledger: a seq {e.seq}: entry_id {e.entry_id!r} duplicates the entry at a seq {e.seq}"
    ) in lines
    # The replay draws its grants twice, so they run dry (at the replay or later).
    assert {v.kind for v in at_replay} == {
        SEQ_RESTART,
        DUPLICATE_ENTRY_ID,
        BALANCE_AFTER,
        GRANT_BOUNDS,
    }
    assert {v.kind for v in violations} - {v.kind for v in at_replay} <= {GRANT_BOUNDS}


def test_duplicate_entry_id_across_accounts() -> None:
    ledger = scenario()
    i, j = find(ledger, "a", EntryType.USAGE_DEBIT), find(ledger, "b", EntryType.USAGE_DEBIT)
    ledger[j] = ledger[j]._replace(entry_id=ledger[i].entry_id)
    violations = audit_ledger(ledger)
    assert [str(v) for v in violations] == [
        f"ledger: b seq {ledger[j].seq}: entry_id {ledger[i].entry_id!r} duplicates the entry "
        f"at a seq {ledger[i].seq}"
    ]
    assert violations[0].kind == DUPLICATE_ENTRY_ID


def test_altered_balance_after_breaks_both_links() -> None:
    ledger = scenario()
    i = find(ledger, "a", EntryType.USAGE_DEBIT)
    e, after = ledger[i], ledger[next_of(ledger, i)]
    ledger[i] = e._replace(balance_after=e.balance_after + 5)
    prev = e.balance_after - e.amount
    next_delta = sum(x.amount for x in after.allocations)
    assert [str(v) for v in audit_ledger(ledger)] == [
        f"ledger: a seq {e.seq}: balance_after {e.balance_after + 5} != previous balance_after "
        f"{prev} + allocations {e.amount:+d} = {e.balance_after}",
        f"ledger: a seq {after.seq}: balance_after {after.balance_after} != previous "
        f"balance_after {e.balance_after + 5} + allocations {next_delta:+d} = "
        f"{e.balance_after + 5 + next_delta}",
    ]


def test_diverged_balance_is_reported_once() -> None:
    """From one entry on, every balance is off by the same amount: one broken link."""
    ledger = scenario()
    i = find(ledger, "b", EntryType.USAGE_DEBIT)
    ledger = [
        e._replace(balance_after=e.balance_after - 1) if e.account_id == "b" and n >= i else e
        for n, e in enumerate(ledger)
    ]
    assert kinds(audit_ledger(ledger)) == [("b", ledger[i].seq, BALANCE_AFTER)]


def test_amount_that_disagrees_with_allocations() -> None:
    ledger = scenario()
    i = find(ledger, "a", EntryType.USAGE_DEBIT)
    e = ledger[i]
    ledger[i] = e._replace(amount=e.amount - 1)
    assert [str(v) for v in audit_ledger(ledger)] == [
        f"ledger: a seq {e.seq}: USAGE_DEBIT amount {e.amount - 1} != sum of allocations {e.amount}"
    ]


def test_overage_chain_and_sign() -> None:
    ledger = scenario()
    i = find(ledger, "a", EntryType.OVERAGE)
    e = ledger[i]
    ledger[i] = e._replace(overage_after=e.overage_after + 1)
    # The next entry of "a" is PERIOD_RESET, which clears overage: one broken link.
    assert [str(v) for v in audit_ledger(ledger)] == [
        f"ledger: a seq {e.seq}: overage_after {e.overage_after + 1} != previous overage_after 0 "
        f"- OVERAGE amount {e.amount} = {e.overage_after}"
    ]
    assert audit_ledger(ledger)[0].kind == OVERAGE_AFTER
    ledger = scenario()
    k = next_of(ledger, i)
    ledger[k] = ledger[k]._replace(overage_after=1)
    assert [str(v) for v in audit_ledger(ledger)] == [
        f"ledger: a seq {e.seq + 1}: overage_after 1 != previous overage_after {e.overage_after} "
        "(PERIOD_RESET clears it) = 0",
        f"ledger: a seq {e.seq + 2}: overage_after 0 != previous overage_after 1 (unchanged) = 1",
    ]

    # An OVERAGE with the wrong sign drives overage_after below 0 while the chain holds.
    ledger = scenario()[: i + 1]
    ledger[i] = e._replace(amount=-e.amount, overage_after=e.amount)
    assert e.overage_after == -e.amount > 0
    assert [str(v) for v in audit_ledger(ledger)] == [
        f"ledger: a seq {e.seq}: overage_after {e.amount} is negative"
    ]
    assert audit_ledger(ledger)[0].kind == OVERAGE_NEGATIVE


def test_grant_overdrawn_and_overfilled() -> None:
    ledger = scenario()
    i = find(ledger, "a", EntryType.GRANT_CREATED)
    created = ledger[i]
    assert created.grant is not None
    gid, amount = created.grant.grant_id, created.grant.amount
    debit = created._replace(
        entry_id="x:USAGE_DEBIT",
        seq=created.seq + 1,
        type=EntryType.USAGE_DEBIT,
        amount=-(amount + 1),
        allocations=(Allocation(gid, -(amount + 1)),),
        balance_after=created.balance_after - amount - 1,
        grant=None,
    )
    refill = debit._replace(
        entry_id="y:ADJUSTMENT",
        seq=debit.seq + 1,
        type=EntryType.ADJUSTMENT,
        amount=amount + 2,
        allocations=(Allocation(gid, amount + 2),),
        balance_after=created.balance_after + 1,
    )
    found = [v for v in audit_ledger([*ledger[: i + 1], debit, refill]) if v.kind == GRANT_BOUNDS]
    assert [str(v) for v in found] == [
        f"ledger: a seq {debit.seq}: grant {gid} would hold -1, outside [0, {amount}] "
        f"(allocation {-(amount + 1):+d})",
        f"ledger: a seq {refill.seq}: grant {gid} would hold {amount + 1}, outside [0, {amount}] "
        f"(allocation {amount + 2:+d})",
    ]


def test_unknown_and_recreated_grants() -> None:
    grant = GrantInfo("g1", "promotion", 10, 50, T0)
    base = LedgerEntry(
        "c1:GRANT_CREATED",
        "z",
        1,
        EntryType.GRANT_CREATED,
        10,
        (Allocation("g1", 10),),
        10,
        0,
        "c1",
        T0,
        T0,
        T0,
        T0 + DAY,
        grant=grant,
    )
    again = base._replace(entry_id="c2:GRANT_CREATED", seq=2, cause_id="c2", balance_after=20)
    stray = base._replace(
        entry_id="c3:ADJUSTMENT",
        seq=3,
        type=EntryType.ADJUSTMENT,
        amount=5,
        allocations=(Allocation("nope", 5),),
        balance_after=25,
        grant=None,
    )
    assert [str(v) for v in audit_ledger([base, again, stray])] == [
        "ledger: z seq 2: grant g1 created again (it holds 10 of 10)",
        "ledger: z seq 3: allocation to grant nope never created",
    ]
    assert [v.kind for v in audit_ledger([base, again, stray])] == [GRANT_RECREATED, UNKNOWN_GRANT]


def test_every_violation_is_reported_not_only_the_first() -> None:
    ledger = scenario()
    i = find(ledger, "a", EntryType.USAGE_DEBIT)
    j = find(ledger, "b", EntryType.USAGE_DEBIT)
    ledger[i] = ledger[i]._replace(amount=ledger[i].amount + 1)
    ledger[j] = ledger[j]._replace(seq=ledger[j].seq + 10)
    ledger.append(ledger[0])
    found = kinds(audit_ledger(ledger))
    assert ("a", ledger[i].seq, AMOUNT) in found
    assert ("b", ledger[j].seq, SEQ_GAP) in found
    assert ("a", 1, SEQ_RESTART) in found and ("a", 1, DUPLICATE_ENTRY_ID) in found
    with pytest.raises(LedgerError):
        fold(by_account(ledger)["a"])  # fold stops at the first one


def test_reconcile_ledger_only_reports_violations() -> None:
    """``reconcile(None, records)``: the audit alone, over decoded (dict) records."""
    from consumers.reconcile import reconcile

    ledger = scenario()
    report = reconcile(None, [e.to_record() for e in ledger])
    assert report.ok and report.violations == [] and report.mismatches == []
    assert (report.accounts, report.ledger_entries) == (2, len(ledger))

    ledger.append(ledger[0])
    report = reconcile(None, [e.to_record() for e in ledger])
    assert not report.ok and report.mismatches == []
    assert {v.kind for v in report.violations} >= {SEQ_RESTART, DUPLICATE_ENTRY_ID}
