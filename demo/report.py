"""The demo's report tables, rendered from the HTTP API's answers, fitting 80 columns.

Numbers and names never wrap or get cut; only the long text (the ledger's entry counts) wraps.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from rich import box
from rich.table import Table

from metering.domain import format_credits


def report_table(title: str) -> Table:
    """Light rules, no side borders and one space between columns."""
    return Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0)
    )


def credits(micro: int | None) -> str:
    return "unlimited" if micro is None else format_credits(micro, thousands=True)


def day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000)) if ms else "-"


def balance_tables(overviews: Mapping[str, Mapping[str, Any]]) -> tuple[Table, Table]:
    """Balances, and the grants behind them, from ``/v1/accounts/{id}/overview`` answers."""
    balances = report_table("Balances (Redis projection)")
    for col in ("account", "plan", "available", "overage / limit", "renews"):
        balances.add_column(col, justify="right" if col == "available" else "left", no_wrap=True)
    grants = report_table("Grants, in the order they are spent")
    for col in ("account", "grant", "remaining", "of"):
        grants.add_column(col, justify="right" if col in ("remaining", "of") else "left")
    for account, o in overviews.items():
        limit = "block" if o["policy"] == "block" else credits(o["overage_limit"])
        balances.add_row(
            account, o["plan"], credits(o["available"]),
            f"{credits(o['overage_used'])} / {limit}", day(o["period_end"]),
        )  # fmt: skip
        for g in o["grants"]:
            grants.add_row(account, g["source"], credits(g["remaining"]), credits(g["amount"]))
    return balances, grants


def usage_table(usages: Mapping[str, Mapping[str, Any]]) -> Table:
    """Usage by subject from ``/v1/accounts/{id}/usage`` answers."""
    usage = report_table("Usage by subject this period (ClickHouse usage_daily)")
    for col in ("account", "subject", "events", "credits", "of which overage"):
        usage.add_column(
            col, justify="left" if col in ("account", "subject") else "right", no_wrap=True
        )
    for account, body in usages.items():
        for row in body["subjects"]:
            usage.add_row(
                account, row["subject"], str(row["events"]), credits(row["credits"]),
                credits(row["overage_credits"]) if row["overage_credits"] else "",
            )  # fmt: skip
    return usage


def history_table(types: Mapping[str, Mapping[str, int]]) -> Table:
    history = report_table("What happened (ledger entry counts)")
    history.add_column("account", no_wrap=True)
    history.add_column("entries by type")
    for account, counts in types.items():
        history.add_row(account, ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return history


def checks_table(answers: Iterable[tuple[str, str, int, Mapping[str, Any]]]) -> Table:
    """``(account, feature, estimate, /v1/check answer)`` rows."""
    checks = report_table("Sidecar POST /v1/check (over HTTP)")
    for col in ("account", "feature", "estimate", "answer", "spendable"):
        numeric = col in ("estimate", "spendable")
        checks.add_column(col, justify="right" if numeric else "left", no_wrap=True)
    for account, feature, micro, d in answers:
        verdict = "[green]ALLOWED[/]" if d["allowed"] else "[bold red]DENIED[/]"
        checks.add_row(
            account, feature, credits(micro), f"{verdict} {d['reason']}", credits(d["spendable"])
        )
    return checks
