"""Versioned ClickHouse schema: ``NNNN_name.sql`` files here, applied in order, recorded in
``schema_migrations``. Every statement can run again (``CREATE ... IF NOT EXISTS``, ``DROP ... IF
EXISTS``, and backfills into tables the same migration truncates first), so a migration
interrupted halfway is simply re-run; the record only says it completed. The SQL is plain
ClickHouse (no chDB-only features) and unqualified, so it lands in the client's database.

CLI: ``metering clickhouse migrate [--database DB]`` and ``metering clickhouse status``.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from consumers.clickhouse import DEFAULT_DATABASE, add_database_argument, connect, ensure_database

MIGRATIONS_DIR = Path(__file__).resolve().parent
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_LEDGER_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self) -> list[str]:
        """Split on ``;`` at a line end; chunks holding only comments are dropped."""
        out = []
        for chunk in re.split(r";\s*(?:\n|$)", self.sql):
            code = "\n".join(
                line for line in chunk.splitlines() if not line.strip().startswith("--")
            )
            if code.strip():
                out.append(chunk.strip())
        return out


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name!r} must be named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return found


def applied_versions(client: Client) -> set[int]:
    client.command(_LEDGER_TABLE)
    return {
        int(row[0]) for row in client.query("SELECT version FROM schema_migrations").result_rows
    }


def migrate(url: str, database: str = DEFAULT_DATABASE) -> list[Migration]:
    """Apply the migrations not yet recorded; return the ones applied now (idempotent)."""
    ensure_database(url, database)
    client = connect(url, database)
    done = applied_versions(client)
    applied = []
    for migration in load_migrations():
        if migration.version in done:
            continue
        for statement in migration.statements():
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        applied.append(migration)
    return applied


def main(argv: list[str]) -> int:
    from metering.config import load_settings

    parser = argparse.ArgumentParser(
        prog="metering clickhouse",
        description="Apply the ClickHouse schema migrations not applied yet, in order, or list "
        "each one with its state. Safe to run again, also after an interrupted run.",
    )
    parser.add_argument(
        "action",
        choices=["migrate", "status", "cluster-schema"],
        help="migrate: create the database and apply pending migrations; "
        "status: list each migration, applied or pending; cluster-schema: print the schema "
        "for a cluster (Replicated and Distributed tables), derived from the migrations",
    )
    add_database_argument(parser)
    parser.add_argument(
        "--url",
        metavar="URL",
        help="ClickHouse server (http://...) or chdb://PATH (default: METERING_CLICKHOUSE_URL)",
    )
    args = parser.parse_args(argv)
    if args.action == "cluster-schema":
        from consumers.cluster_schema import cluster_profile

        print(cluster_profile(), end="")
        return 0
    url = args.url or load_settings().clickhouse_url
    if args.action == "migrate":
        applied = migrate(url, args.database)
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
        print(f"schema up to date in {args.database} ({len(applied)} applied now)")
        return 0
    ensure_database(url, args.database)
    done = applied_versions(connect(url, args.database))
    for m in load_migrations():
        print(f"{m.version:04d}_{m.name}: {'applied' if m.version in done else 'pending'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
