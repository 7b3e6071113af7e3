"""The demo's story as data: which commands and usage events are published, and when.

Pure and deterministic (a seeded RNG, times derived from ``now``), so a test can check the
story's shape without Kafka. The timeline straddles the current month's reset anchor (the
1st, UTC): plans are assigned last month, usage runs through last month, then usage of this
month crosses the anchor, which resets the period with a (capped) rollover.

Phases are published one after another, and the demo waits for each to reach the ledger
before the next: usage and commands travel on different topics, and the processor gives no
order between two topics, so "plan first, then usage" must be waited for, not assumed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from metering.domain.money import MICROS_PER_CREDIT
from metering.domain.records import CommandKind, CreditCommand

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

DEMO_GROWTH_ROLLOVER_CAP = 2_500
"""Credits. The demo's plans file caps growth's rollover here (shipped: one month's worth),
so the reset visibly caps what rolls over."""


@dataclass(frozen=True, slots=True)
class AccountStory:
    account_id: str
    plan: str
    story: str


@dataclass(slots=True)
class Phase:
    title: str
    commands: list[CreditCommand] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.commands) + len(self.events)


@dataclass(frozen=True, slots=True)
class Scenario:
    accounts: list[AccountStory]
    phases: list[Phase]
    last_month_start: int
    anchor: int
    """The reset anchor the story crosses: the 1st of this month, 00:00 UTC (epoch ms)."""
    dry_account: str
    overage_account: str

    def ids_by_account(self) -> dict[str, set[str]]:
        """Every cause id the ledger must show per account once everything is processed."""
        ids: dict[str, set[str]] = {a.account_id: set() for a in self.accounts}
        for phase in self.phases:
            for c in phase.commands:
                ids[c.account_id].add(c.command_id)
            for e in phase.events:
                ids[e["account_id"]].add(e["event_id"])
        return ids

    def usage_counts(self) -> dict[str, int]:
        counts = {a.account_id: 0 for a in self.accounts}
        for phase in self.phases:
            for e in phase.events:
                counts[e["account_id"]] += 1
        return counts


ACCOUNTS = [
    AccountStory("acme", "growth", "rollover capped at 2,500; buys a 5,000-credit top-up"),
    AccountStory("globex", "enterprise", "heavy mixed usage; gets a 2,000-credit promotion"),
    AccountStory("umbrella", "growth", "burns past its credits into billable overage"),
    AccountStory("initech", "free", "runs dry; the sidecar then denies it"),
    AccountStory("hooli", "free", "light text usage"),
]


def month_start(ms: int, months_back: int = 0) -> int:
    """00:00 UTC on the 1st of the month of ``ms``, ``months_back`` months earlier."""
    d = datetime.fromtimestamp(ms / 1000, tz=UTC)
    year, month = d.year, d.month - months_back
    while month < 1:
        month += 12
        year -= 1
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def command(
    command_id: str, account: str, kind: str, issued_at: int, **fields: Any
) -> CreditCommand:
    """A CreditCommand (``kind`` by its schema name, e.g. ``"purchase"``)."""
    return CreditCommand(command_id, account, CommandKind(kind), issued_at, **fields)


class _Usage:
    """Draws realistic usage events for one account over a time span."""

    def __init__(self, rng: random.Random, account: str, tag: str) -> None:
        self.rng = rng
        self.account = account
        self.tag = tag
        self.n = 0

    def _event(
        self, at: int, subject: str, feature: str, model: str | None, units: dict[str, int]
    ) -> dict[str, Any]:
        self.n += 1
        return {
            "event_id": f"{self.account}-{self.tag}-{self.n:04d}",
            "account_id": self.account,
            "subject": subject,
            "feature": feature,
            "model": model,
            "units": units,
            "occurred_at": at,
            "source": "demo",
            "attributes": {"app": "studio" if subject == "design" else "assistant"},
            "reservation_id": None,
        }

    def text(self, at: int, subject: str, model: str) -> dict[str, Any]:
        units = {
            "requests": 1,
            "input_tokens": self.rng.randint(600, 4000),
            "output_tokens": self.rng.randint(200, 1500),
        }
        return self._event(at, subject, "text_generation", model, units)

    def image(self, at: int, subject: str, images: int) -> dict[str, Any]:
        return self._event(at, subject, "image_generation", "flux-1", {"images": images})

    def document(self, at: int, subject: str, pages: int) -> dict[str, Any]:
        units = {"pages": pages, "input_tokens": self.rng.randint(1000, 6000)}
        return self._event(at, subject, "document_analysis", None, units)


def _times(rng: random.Random, start: int, end: int, n: int) -> list[int]:
    """``n`` sorted event times in ``[start, end]`` (all ``start`` if the span is empty)."""
    if end <= start:
        return [start] * n
    return sorted(rng.randint(start, end) for _ in range(n))


def _mix(
    u: _Usage, times: list[int], kinds: list[tuple[int, str, str, Any]]
) -> list[dict[str, Any]]:
    """Events at ``times``; each drawn from ``kinds`` = (weight, kind, subject, arg)."""
    weights = [k[0] for k in kinds]
    out = []
    for at in times:
        _, kind, subject, arg = u.rng.choices(kinds, weights)[0]
        if kind == "text":
            out.append(u.text(at, subject, arg))
        elif kind == "image":
            out.append(u.image(at, subject, arg))
        else:
            out.append(u.document(at, subject, arg))
    return out


def build_scenario(now_ms: int, seed: int = 7) -> Scenario:
    """The whole story for a run at wall-clock ``now_ms``."""
    rng = random.Random(seed)
    last = month_start(now_ms, 1)
    anchor = month_start(now_ms)
    span = max(0, now_ms - 30_000 - anchor)
    cur1 = (anchor + 60_000, anchor + span * 4 // 10)
    cmd_at = anchor + span * 45 // 100
    cur2 = (anchor + span // 2, anchor + span)
    prev = (last + 2 * DAY_MS, anchor - HOUR_MS)

    setup = Phase("assign plans (last month)")
    for a in ACCOUNTS:
        setup.commands.append(
            command(
                f"{a.account_id}:assign-plan",
                a.account_id,
                "assign_plan",
                last + DAY_MS,
                plan_id=a.plan,
                reason="demo signup",
            )
        )

    def usage(tag: str, span_: tuple[int, int], plan: dict[str, tuple[int, list[Any]]]) -> Phase:
        phase = Phase(tag)
        for account, (count, kinds) in plan.items():
            u = _Usage(rng, account, tag.split()[0])
            phase.events += _mix(u, _times(rng, *span_, count), kinds)
        phase.events.sort(key=lambda e: e["occurred_at"])
        return phase

    acme = [
        (5, "image", "design", 2),
        (3, "document", "research", 10),
        (4, "text", "marketing", "gpt-4o"),
    ]
    globex = [
        (3, "image", "design", 20),
        (3, "document", "research", 50),
        (4, "text", "research", "o1"),
        (3, "text", "marketing", "gpt-4o"),
    ]
    umbrella = [
        (8, "image", "marketing", 10),
        (2, "text", "marketing", "gpt-4o"),
        (1, "image", "design", 10),
    ]
    initech_prev = [(4, "text", "research", "gpt-4o-mini"), (1, "document", "research", 3)]
    initech_cur = [(1, "document", "research", 5)]
    hooli = [(1, "text", "marketing", "gpt-4o-mini")]

    previous = usage(
        "prev usage last month",
        prev,
        {
            "acme": (120, acme),
            "globex": (110, globex),
            "umbrella": (40, umbrella),
            "initech": (25, initech_prev),
            "hooli": (10, hooli),
        },
    )
    crossing = usage(
        "cur1 usage across the reset anchor",
        cur1,
        {
            "acme": (40, acme),
            "globex": (60, globex),
            "umbrella": (40, umbrella),
            "initech": (6, initech_cur),
            "hooli": (8, hooli),
        },
    )
    grants = Phase("top-up purchase and promotion")
    grants.commands.append(
        command(
            "acme:topup-1",
            "acme",
            "purchase",
            cmd_at,
            amount=5_000 * MICROS_PER_CREDIT,
            cost_basis_micros=10_000,
            currency="USD",
            reason="top-up pack 5k",
        )
    )
    grants.commands.append(
        command(
            "globex:promo-spring",
            "globex",
            "promotion",
            cmd_at,
            amount=2_000 * MICROS_PER_CREDIT,
            expires_at=cmd_at + 30 * DAY_MS,
            reason="spring promotion",
        )
    )
    late = usage(
        "cur2 usage this month",
        cur2,
        {
            "acme": (60, acme),
            "globex": (60, globex),
            "umbrella": (36, umbrella),
            "initech": (6, initech_cur),
            "hooli": (7, hooli),
        },
    )
    # initech also tries a feature its free plan lacks: recorded, never charged.
    u = _Usage(rng, "initech", "cur2x")
    late.events.append(u.image(cur2[1], "design", 1))
    return Scenario(
        accounts=list(ACCOUNTS),
        phases=[setup, previous, crossing, grants, late],
        last_month_start=last,
        anchor=anchor,
        dry_account="initech",
        overage_account="umbrella",
    )


def demo_plans_yaml(shipped: str) -> str:
    """The shipped plans with growth's rollover capped at :data:`DEMO_GROWTH_ROLLOVER_CAP`."""
    import yaml

    data = yaml.safe_load(shipped)
    data["plans"]["growth"]["rollover"] = {"cap": DEMO_GROWTH_ROLLOVER_CAP}
    return "# Demo copy of metering/data/plans.yaml (growth rollover capped)\n" + yaml.safe_dump(
        data, sort_keys=False
    )
