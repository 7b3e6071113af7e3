"""The identifier rule (metering.domain.identifiers) and where the engine applies it."""

from __future__ import annotations

import pytest
from engine_testkit import T0, command, make_engine, text
from hypothesis import given
from hypothesis import strategies as st

from metering.domain import AccountState
from metering.domain.errors import InvalidAccountId, ValidationError
from metering.domain.identifiers import (
    MAX_ID_BYTES,
    InvalidIdentifier,
    check_identifier,
    identifier_problem,
    is_identifier,
)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "must not be empty"),
        (None, "must be a string, got NoneType"),
        ("x" * (MAX_ID_BYTES + 1), "longer than 256 UTF-8 bytes"),
        ("\u00e9" * 129, "longer than 256 UTF-8 bytes"),  # 129 chars, 258 bytes
        ("a{b", "must not contain '{' or '}'"),
        ("x}", "must not contain '{' or '}'"),
        ("a\ud800", "is not valid UTF-8 text (lone surrogate)"),
    ],
)
def test_bad_identifiers_say_why(value: object, problem: str) -> None:
    assert identifier_problem(value) == problem
    assert not is_identifier(value)
    with pytest.raises(InvalidIdentifier, match="account_id"):
        check_identifier("account_id", value)


@given(st.text(max_size=300))
def test_the_fast_check_agrees_with_the_explanation(value: str) -> None:
    assert is_identifier(value) == (identifier_problem(value) is None)


def test_longest_identifier_is_accepted() -> None:
    assert is_identifier("x" * MAX_ID_BYTES)
    assert is_identifier("\u00e9" * (MAX_ID_BYTES // 2))


@pytest.mark.parametrize("account", ["a{b}", "x" * 300])
def test_engine_refuses_an_account_id_the_key_layout_cannot_hold(account: str) -> None:
    engine = make_engine()
    state = AccountState.new(account)
    with pytest.raises(InvalidAccountId) as info:
        engine.apply_usage(state, text("e1", T0, account=account), T0)
    assert info.value.code == "invalid_account_id"
    assert isinstance(info.value, ValidationError)  # the processor's DLQ family
    assert state.seq == 0 and not state.started
    with pytest.raises(InvalidAccountId):
        engine.apply_command(state, command("purchase", "c1", T0, account=account, amount=1), T0)
