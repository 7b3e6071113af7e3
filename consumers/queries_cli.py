"""``metering usage``: the query API as a command (rich table, JSON or CSV).

Examples::

    metering usage --account acme --by subject --from 2026-11-01 --to 2026-12-01
    metering usage --account acme --daily --format csv
    metering usage --top 10            # top accounts by credits
    metering usage --subjects          # credits by subject across all accounts

Amounts stay integer micro-credits in JSON/CSV; the table shows them as credits.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

from consumers import queries
from consumers.clickhouse import add_database_argument
from consumers.query_relay import READ_ERRORS, Reader, open_reader, read_problem

MICROS = 1_000_000
NUMERIC_COLUMNS = frozenset({"credits", "overage_credits", "events", "accounts"})


def format_credits(micros: int) -> str:
    """Integer micro-credits as a credits string without floats (e.g. -1.5 -> '-1.500000')."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS)
    return f"{sign}{whole:,}.{frac:06d}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def render(rows: list[dict[str, Any]], fmt: str, title: str) -> str:
    if fmt == "json":
        return json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            for r in rows:
                writer.writerow(
                    {
                        k: json.dumps(_jsonable(v)) if isinstance(v, dict) else _jsonable(v)
                        for k, v in r.items()
                    }
                )
        return buf.getvalue().rstrip("\n")
    from rich.console import Console
    from rich.table import Table

    table = Table()
    names = list(rows[0]) if rows else ["key", "credits"]
    for name in names:
        # Numbers never wrap; the long text columns (key, units) fold to fit the terminal.
        numeric = name in NUMERIC_COLUMNS
        table.add_column(
            name, justify="right" if numeric else "left", no_wrap=numeric, overflow="fold"
        )
    for r in rows:
        cells = []
        for name in names:
            v = r[name]
            if name in {"credits", "overage_credits"}:
                cells.append(format_credits(int(v)))
            elif isinstance(v, dict):
                cells.append(", ".join(f"{k}={n:,}" for k, n in sorted(v.items())))
            else:
                cells.append(str(_jsonable(v)))
        table.add_row(*cells)
    out = io.StringIO()
    width = shutil.get_terminal_size((80, 24)).columns
    console = Console(file=out, width=width, force_terminal=False)
    console.print(title, highlight=False)
    console.print(table)
    return out.getvalue().rstrip("\n")


USAGE_DESCRIPTION = """\
Credit usage from ClickHouse (METERING_CLICKHOUSE_URL): one account's credits by
subject, feature or model, or day by day; the top accounts; or credits by
subject across all accounts."""

USAGE_EXAMPLES = """\
examples:
  metering usage --account acme --by subject --from 2026-11-01 --to 2026-12-01
  metering usage --account acme --daily --format csv
  metering usage --top 10            # top accounts by credits
  metering usage --subjects          # credits by subject across all accounts"""


def main(argv: list[str]) -> int:
    from metering.config import load_settings

    today = datetime.now(UTC).date()
    parser = argparse.ArgumentParser(
        prog="metering usage",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=USAGE_DESCRIPTION,
        epilog=USAGE_EXAMPLES,
    )
    parser.add_argument(
        "--account", metavar="ID", help="account id (needed unless --top or --subjects)"
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--by",
        choices=queries.DIMENSIONS,
        default="subject",
        metavar="DIMENSION",
        help="the account's credits by subject, feature or model (default: subject)",
    )
    what.add_argument("--daily", action="store_true", help="daily series for the account")
    what.add_argument("--top", type=int, metavar="N", help="top N accounts by credits")
    what.add_argument("--subjects", action="store_true", help="credits by subject, all accounts")
    parser.add_argument("--subject", help="with --daily: only this subject")
    parser.add_argument(
        "--from",
        dest="start",
        type=date.fromisoformat,
        default=today.replace(day=1),
        metavar="YYYY-MM-DD",
        help="first day, included (default: the first of this month, UTC)",
    )
    parser.add_argument(
        "--to",
        dest="end",
        type=date.fromisoformat,
        default=today + timedelta(days=1),
        metavar="YYYY-MM-DD",
        help="last day, excluded (default: tomorrow, UTC)",
    )
    parser.add_argument("--raw", action="store_true", help="answer from raw tables, not rollups")
    parser.add_argument(
        "--format",
        choices=["table", "json", "csv"],
        default="table",
        help="table shows credits; json and csv keep integer micro-credits (default: table)",
    )
    add_database_argument(parser)
    args = parser.parse_args(argv)

    if args.top is None and not args.subjects and not args.account:
        parser.error("--account is required")
    period = queries.Period(args.start, args.end)
    try:
        rows, title = _ask(open_reader(load_settings().clickhouse_url, args.database), args, period)
    except READ_ERRORS as exc:  # one line, never a traceback
        print(f"metering usage: {read_problem(exc, args.database)}", file=sys.stderr)
        return 2
    print(render(rows, args.format, title))
    return 0


def _ask(
    client: Reader, args: argparse.Namespace, period: queries.Period
) -> tuple[list[dict[str, Any]], str]:
    span = f"{period.start} .. {period.end} (exclusive)"
    if args.top is not None:
        rows = queries.top_accounts(client, period, args.top)
        title = f"top {args.top} accounts, {span}"
    elif args.subjects:
        rows = queries.credits_by_subject(client, period)
        title = f"credits by subject, all accounts, {span}"
    elif args.daily:
        rows = queries.daily_series(client, args.account, period, args.subject)
        title = f"{args.account} daily, {span}"
    else:
        rows = queries.usage_by(client, args.account, period, args.by, raw=args.raw)
        title = f"{args.account} by {args.by}, {span}"
    return rows, title


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
