"""The one rule for identifiers that become storage keys (account ids, feature names).

Why one place: an account id travels from the SDK through Kafka, the engine, the Redis
projection (where it is the ``{account}`` hash tag of every key), the sidecar and the account
page. A rule enforced in only some of them lets an id in that the next one cannot store or
serve: braces would move the Redis Cluster hash tag off the account (``mt:{x}:bal}:bal``), and
an unbounded length lets one caller grow every per-account cache without limit.

The rule: a string of 1 to :data:`MAX_ID_BYTES` UTF-8 bytes containing neither ``{`` nor ``}``.
"""

from __future__ import annotations

MAX_ID_BYTES = 256
FORBIDDEN_ID_CHARS = "{}"


class InvalidIdentifier(ValueError):
    """An identifier breaks the rule; ``field`` names which one."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def identifier_problem(value: object) -> str | None:
    """Why ``value`` is not a valid identifier, or None when it is one."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_BYTES or len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return f"longer than {MAX_ID_BYTES} UTF-8 bytes"
    if "{" in value or "}" in value:
        return "must not contain '{' or '}'"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 text (lone surrogate)"
    return None


def is_identifier(value: object) -> bool:
    """Fast yes/no form of :func:`identifier_problem` (hot paths call this first)."""
    return (
        type(value) is str
        and 0 < len(value) <= MAX_ID_BYTES
        and (value.isascii() or identifier_problem(value) is None)
        and "{" not in value
        and "}" not in value
    )


def check_identifier(field: str, value: object) -> str:
    """``value`` when it is a valid identifier, else raise :class:`InvalidIdentifier`."""
    if is_identifier(value):
        assert isinstance(value, str)
        return value
    problem = identifier_problem(value)
    raise InvalidIdentifier(field, problem or "is not a valid identifier")
