"""Pure parts of the sidecar's hardening: the breaker, the byte-bounded caches, hold owners."""

from __future__ import annotations

import asyncio

import pytest

from projections.breaker import BreakerState, CircuitBreaker
from projections.failmode import PolicyCache, parse_unseen
from projections.hold_owners import HoldOwners
from projections.requests import MAX_BODY_BYTES, BadRequest, parse_object, read_limited


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_within_the_window_then_probes_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, window_s=1.0, min_span_s=0.02, cooldown_s=0.5, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
        clock.now += 0.015
    assert breaker.state is BreakerState.CLOSED
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and breaker.opened_total == 1
    assert not breaker.allow()  # answered by the fail mode at once
    clock.now += 0.5
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # one probe at a time
    breaker.failure()  # probe failed: another cool-down
    assert breaker.state is BreakerState.OPEN and breaker.opened_total == 1
    clock.now += 0.5
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_breaker_ignores_failures_spread_wider_than_its_window() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, window_s=1.0, clock=clock)
    for _ in range(10):
        breaker.failure()
        clock.now += 0.6
    assert breaker.state is BreakerState.CLOSED


def test_one_stall_that_fails_every_call_in_flight_at_once_does_not_open_the_breaker() -> None:
    """A 150 ms stall of the process: every call in flight misses its deadline at once (their
    timers fire within a few ms when the loop runs again), and the next calls succeed. Redis is
    healthy; the breaker stays closed."""
    clock = Clock()
    breaker = CircuitBreaker(failures=3, window_s=1.0, min_span_s=0.02, clock=clock)
    for _ in range(300):
        breaker.failure()
        clock.now += 0.00001
    assert breaker.state is BreakerState.CLOSED and breaker.opened_total == 0


def test_a_hung_redis_opens_the_breaker_once_its_failures_span_min_span() -> None:
    """Call after call times out (2,000 a second): open once they span 20 ms, not before."""
    clock = Clock()
    breaker = CircuitBreaker(failures=3, window_s=1.0, min_span_s=0.02, clock=clock)
    start = clock.now
    while breaker.state is BreakerState.CLOSED:
        breaker.failure()
        clock.now += 0.0005
        assert clock.now - start < 0.05, "never opened"
    assert 0.02 <= clock.now - start < 0.03


def test_the_breaker_remembers_a_flood_of_failures_in_bounded_memory() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=10**9, window_s=1.0, clock=clock)  # never opens
    for _ in range(100_000):  # 100,000 failures a second
        breaker.failure()
        clock.now += 0.00001
    assert len(breaker._recent) <= 1.0 / 0.005 + 1


def test_an_abandoned_probe_lets_another_request_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, min_span_s=0, cooldown_s=0.1, clock=clock)
    breaker.failure()
    clock.now += 0.2
    assert breaker.allow()
    breaker.abandon()  # bad input or a cancelled request: Redis never asked
    assert breaker.allow()


def test_policy_cache_is_bounded_by_bytes_whatever_the_id_length() -> None:
    cache = PolicyCache(max_bytes=100_000)
    for i in range(2_000):
        cache.remember(f"{i:06d}" + "x" * 250, "allow")
    assert cache.bytes <= 100_000
    assert len(cache) < 2_000
    assert cache.get(f"{1999:06d}" + "x" * 250) == "allow"  # the newest stay


def test_unseen_mode_is_open_or_closed_only() -> None:
    assert parse_unseen("open").value == "open"
    with pytest.raises(ValueError):
        parse_unseen("auto")


def test_holds_belong_to_the_service_that_made_them() -> None:
    owners = HoldOwners([("svcA", b"key-a"), ("svcB", b"key-b")])
    token = owners.token("svcA")
    hold = f"{token}:acct-1"
    assert len(token) == 32 and owners.owns("svcA", hold)
    assert not owners.owns("svcB", hold)
    assert not owners.owns("svcA", "0" * 32 + ":acct-1")
    assert not owners.owns("svcA", "short:acct-1")


def test_bodies_over_the_limit_are_refused_before_they_are_read() -> None:
    read: list[int] = []

    async def chunks() -> object:
        for _ in range(1_000):
            read.append(1)
            yield b"x" * 16_384

    async def body(declared: str | None) -> bytes:
        return await read_limited(chunks(), declared)  # type: ignore[arg-type]

    with pytest.raises(BadRequest) as declared:
        asyncio.run(body(str(300 << 20)))
    assert declared.value.status == 413 and not read
    with pytest.raises(BadRequest) as streamed:
        asyncio.run(body(None))
    assert streamed.value.status == 413 and len(read) == MAX_BODY_BYTES // 16_384 + 1


@pytest.mark.parametrize("raw", [b"", b"[]", b"{", b"\xff", b"[" * 5000 + b"]" * 5000])
def test_anything_but_a_json_object_is_a_400(raw: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_object(raw)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"amount": 1, "ttl_s": 5}, "missing field 'account_id'"),
        ({"account_id": "a", "amount": 0, "ttl_s": 5}, "amount out of range"),
        ({"account_id": "a", "amount": 1, "ttl_s": 0}, "ttl_s must be in"),
        ({"account_id": "a", "amount": 1, "ttl_s": True}, "field 'ttl_s' has the wrong type"),
        ({"account_id": "a{b}", "amount": 1, "ttl_s": 5}, "account_id must not contain"),
        ({"account_id": "a", "amount": 1, "ttl_s": 5, "feature": ""}, "feature must not be"),
    ],
)
def test_requests_are_refused_before_redis_with_the_field_named(
    data: dict[str, object], problem: str
) -> None:
    from projections.requests import ReserveRequest

    with pytest.raises(BadRequest, match=problem) as info:
        ReserveRequest.parse(data)
    assert info.value.status == 422


def test_each_request_model_declares_its_body_once_for_the_parser_and_the_openapi() -> None:
    from projections.openapi import SPEC
    from projections.requests import CheckRequest, CommitRequest, ReserveRequest, declared_in_order

    routes = {
        "/v1/check": CheckRequest,
        "/v1/reservations": ReserveRequest,
        "/v1/reservations/{hold_id}/commit": CommitRequest,
    }
    for path, model in routes.items():
        assert declared_in_order(model), f"{model.__name__}.FIELDS drifted from its fields"
        body = SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == model.json_schema()
    assert CheckRequest.parse({"account_id": "a", "estimated_credits": 5}) == CheckRequest(
        "a", None, 5
    )
