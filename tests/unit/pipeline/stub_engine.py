"""A trivial stand-in for the credit engine, to test the Kafka/faust machinery in isolation."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.ports import InputError, Step, ToRemember


def _entry(state: dict[str, Any], type_: str, amount: int, cause: str, at: int) -> dict[str, Any]:
    state["seq"] += 1
    state["balance"] += amount
    return {
        "entry_id": f"{cause}:{type_}",
        "account_id": state["account_id"],
        "seq": state["seq"],
        "type": type_,
        "amount": amount,
        "allocations": [],
        "balance_after": state["balance"],
        "overage_after": 0,
        "cause_id": cause,
        "subject": None,
        "feature": None,
        "model": None,
        "price_version": "stub-1",
        "occurred_at": at,
        "recorded_at": at,
        "period_start": 0,
        "period_end": 0,
        "reason": None,
        "reservation_id": None,
        "grant": None,
        "terms": None,
    }


class StubEngine:
    version = "stub-1"

    def new_state(self, account_id: str) -> dict[str, Any]:
        return {"account_id": account_id, "seq": 0, "balance": 0, "seen": []}

    def load_state(self, data: bytes) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(data)
        return state

    def dump_state(self, state: dict[str, Any]) -> bytes:
        return json.dumps(state).encode()

    def attach_ids(self, state: dict[str, Any], ids: Any) -> None:
        pass  # the stub keeps its own list of seen ids

    def state_seq(self, data: bytes) -> int:
        seq: int = json.loads(data)["seq"]
        return seq

    def apply_usage(self, state: Any, record: Mapping[str, Any], recorded_at: int) -> Step:
        if record["feature"] == "unpriceable":
            raise InputError("unknown_feature", f"no rate for {record['feature']}")
        if record["event_id"] in state["seen"]:
            return Step(state)
        state = dict(state, seen=[*state["seen"], record["event_id"]])
        cost = sum(record["units"].values()) * 1000
        return Step(state, [_entry(state, "USAGE_DEBIT", -cost, record["event_id"], recorded_at)])

    def apply_command(self, state: Any, record: Mapping[str, Any], recorded_at: int) -> Step:
        if record["command_id"] in state["seen"]:
            return Step(state)
        state = dict(state, seen=[*state["seen"], record["command_id"]])
        amount = int(record.get("amount") or 0)
        return Step(
            state, [_entry(state, "GRANT_CREATED", amount, record["command_id"], recorded_at)]
        )

    def sweep(self, state: Any, now: int) -> Step:
        return Step(state)

    def catch_up(
        self, account_id: str, snapshot: bytes | None, entries: Sequence[Mapping[str, Any]]
    ) -> tuple[bytes, list[ToRemember]]:
        state = self.new_state(account_id) if snapshot is None else self.load_state(snapshot)
        for entry in entries:
            if entry["seq"] > state["seq"]:
                state.update(seq=entry["seq"], balance=entry["balance_after"])
                state["seen"].append(entry["cause_id"])
        return self.dump_state(state), []


class StubSource:
    def fingerprint(self) -> object:
        return 1

    def build(self) -> StubEngine:
        return StubEngine()


def source(config: Any = None) -> StubSource:
    return StubSource()
