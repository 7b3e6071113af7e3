"""The domain records' ``to_record()`` keys are the .avsc fields, in the .avsc order.

``metering.domain`` may not read schemas (it imports nothing outside itself), so its
``to_record``/``from_record`` are written out; this test is what ties them to the schemas,
nested records included, and checks that ``from_record`` inverts ``to_record``.
"""

from __future__ import annotations

from typing import Any

import pytest

from metering.avro import (
    CREDIT_ALERT,
    CREDIT_COMMAND,
    LEDGER_ENTRY,
    USAGE_EVENT,
    AvroCodec,
    load_registry,
)
from metering.avro.fields import Field, field_names, nested_fields, record_fields
from metering.domain.records import (
    AccountOverride,
    AccountTerms,
    AlertKind,
    Allocation,
    AutoTopupConfig,
    CommandKind,
    CreditAlert,
    CreditCommand,
    EntryType,
    GrantInfo,
    LedgerEntry,
    UsageEvent,
)

T0 = 1_767_225_600_000
GRANT = GrantInfo("g-1", "purchase", 5_000_000, 2, T0, T0 + 9, 1_250)
TERMS = AccountTerms("pro", "allow", 7_000_000, 50_000_000, ("text_generation", "image"))
OVERRIDE = AccountOverride(10, "deny", 20, ("beta",), T0 + 5)
AUTO_TOPUP = AutoTopupConfig(True, 1_000_000, 5_000_000, 4, 3_600_000)

FULL: list[tuple[str, Any]] = [
    (
        USAGE_EVENT,
        UsageEvent(
            "e-1",
            "acct-1",
            "text_generation",
            {"input_tokens": 1200},
            T0,
            subject="design",
            model="gpt-large",
            source="svc",
            attributes={"region": "eu"},
            reservation_id="r-1",
        ),
    ),
    (USAGE_EVENT, UsageEvent("e-2", "acct-1", "text_generation", {"requests": 1}, T0)),
    (
        CREDIT_COMMAND,
        CreditCommand(
            "c-1",
            "acct-1",
            CommandKind.SET_OVERRIDE,
            T0,
            amount=5,
            grant_id="g-1",
            grant_source="purchase",
            priority=1,
            effective_at=T0,
            expires_at=T0 + 1,
            plan_id="pro",
            reason="why",
            cost_basis_micros=100,
            currency="EUR",
            override=OVERRIDE,
            auto_topup=AUTO_TOPUP,
        ),
    ),
    (CREDIT_COMMAND, CreditCommand("c-2", "acct-1", CommandKind.PROMOTION, T0, amount=1)),
    (
        LEDGER_ENTRY,
        LedgerEntry(
            "x:GRANT_CREATED",
            "acct-1",
            3,
            EntryType.ROLLOVER,
            -5,
            (Allocation("g-1", -3), Allocation("g-2", -2)),
            10,
            1,
            "x",
            T0,
            T0 + 1,
            T0 - 10,
            T0 + 10,
            subject="design",
            feature="text_generation",
            model="gpt-large",
            price_version="v3",
            reason="r",
            reservation_id="res-1",
            grant=GRANT,
            terms=TERMS,
        ),
    ),
    (
        LEDGER_ENTRY,
        LedgerEntry(
            "y:USAGE_DEBIT", "acct-1", 4, EntryType.USAGE_DEBIT, 0, (), 0, 0, "y", 1, 2, 0, 9
        ),
    ),
    (
        CREDIT_ALERT,
        CreditAlert(
            "a-1",
            "acct-1",
            AlertKind.GRANT_EXPIRING,
            7,
            "cause",
            T0,
            T0 - 1,
            T0 + 1,
            threshold_pct=80,
            grant_id="g-1",
            amount=3,
            message="m",
        ),
    ),
    (CREDIT_ALERT, CreditAlert("a-2", "acct-1", AlertKind.UNKNOWN_FEATURE, 0, "e", T0, 0, 9)),
]
NESTED: list[tuple[str, Any]] = [
    ("io.metering.GrantInfo", GRANT),
    ("io.metering.GrantInfo", GrantInfo("g-2", "plan", 1, 0, T0)),
    ("io.metering.AccountTerms", TERMS),
    ("io.metering.AccountTerms", AccountTerms("free", "deny", 0, 0)),
    ("io.metering.AccountOverride", OVERRIDE),
    ("io.metering.AccountOverride", AccountOverride()),
    ("io.metering.AutoTopupConfig", AUTO_TOPUP),
    ("io.metering.AutoTopupConfig", AutoTopupConfig(False, 0, 0)),
]


def _assert_schema_order(record: dict[str, Any], fields: tuple[Field, ...], path: str) -> int:
    """Keys equal the fields in order, at every nesting level; returns how many records it saw."""
    assert list(record) == [f.name for f in fields], path
    seen = 1
    for field in fields:
        inner, value = nested_fields(field.type), record[field.name]
        if inner is None or value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            seen += _assert_schema_order(item, inner, f"{path}.{field.name}")
    return seen


@pytest.mark.parametrize(("subject", "record"), FULL, ids=lambda v: type(v).__name__)
def test_to_record_has_the_schema_fields_in_schema_order(subject: str, record: Any) -> None:
    _assert_schema_order(record.to_record(), record_fields(subject), subject)


@pytest.mark.parametrize(("name", "record"), NESTED, ids=lambda v: type(v).__name__)
def test_nested_to_record_has_the_schema_fields_in_schema_order(name: str, record: Any) -> None:
    assert tuple(record.to_record()) == field_names(name)


def test_the_full_records_reach_every_nested_record() -> None:
    """The fixtures above fill each optional nested record, so the test walks all of them."""
    ledger = FULL[4][1].to_record()
    assert _assert_schema_order(ledger, record_fields(LEDGER_ENTRY), "ledger") == 5
    command = FULL[2][1].to_record()
    assert _assert_schema_order(command, record_fields(CREDIT_COMMAND), "command") == 3


@pytest.mark.parametrize(("subject", "record"), FULL, ids=lambda v: type(v).__name__)
def test_from_record_inverts_to_record_also_through_the_codec(subject: str, record: Any) -> None:
    cls = type(record)
    assert cls.from_record(record.to_record()) == record
    codec = AvroCodec(load_registry(), subject)
    assert cls.from_record(codec.decode(codec.encode(record.to_record()))) == record


@pytest.mark.parametrize(("name", "record"), NESTED, ids=lambda v: type(v).__name__)
def test_nested_from_record_inverts_to_record(name: str, record: Any) -> None:
    assert type(record).from_record(record.to_record()) == record
