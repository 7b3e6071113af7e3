"""The cluster profile (consumers/migrations/cluster/schema.sql): in step with the migrations,
parsed by ClickHouse's own parser (chDB), every table replicated and distributed by account,
with its deduplication window kept. Running it needs ClickHouse Keeper, which is not here."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from consumers.clickhouse import close_all, connect
from consumers.cluster_schema import CLUSTER_PROFILE, SHARDING_KEY, cluster_profile
from consumers.migrations import load_migrations

SHIPPED = CLUSTER_PROFILE.read_text()
LOCAL = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)_local ON CLUSTER")


def statements(profile: str) -> list[str]:
    code = "\n".join(line for line in profile.splitlines() if not line.startswith("--"))
    return [s.strip() for s in code.split(";\n") if s.strip()]


STATEMENTS = statements(SHIPPED)


@pytest.fixture(scope="module")
def generated() -> list[str]:
    """The profile from the migrations now (before ``parse``: chDB is one per process)."""
    return statements(cluster_profile())


@pytest.fixture(scope="module")
def parse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """ClickHouse's parser (chDB): a statement as ClickHouse formats it, or an error."""
    close_all()  # chDB opens one path per process
    client = connect(f"chdb://{tmp_path_factory.mktemp('chdb')}", "default")

    def formatted(statement: str) -> str:
        rows = client.query("SELECT formatQuery({q:String})", parameters={"q": statement})
        return str(rows.result_rows[0][0])

    yield formatted
    close_all()


def test_the_shipped_profile_is_what_the_migrations_generate(
    generated: list[str], parse: Callable[[str], str]
) -> None:
    # Compared as this ClickHouse formats both: another chDB version may format differently.
    assert [parse(s) for s in STATEMENTS] == [parse(s) for s in generated], (
        "consumers/migrations/cluster/schema.sql is stale: "
        "metering clickhouse cluster-schema > consumers/migrations/cluster/schema.sql"
    )


def test_every_statement_parses_and_runs_on_the_cluster(parse: Callable[[str], str]) -> None:
    for statement in STATEMENTS:
        assert parse(statement).strip(), statement[:200]
        assert "ON CLUSTER `{cluster}`" in statement.split("\n", 1)[0], statement[:200]


def test_every_table_is_replicated_keeps_its_dedup_window_and_is_distributed_by_account() -> None:
    sources = "\n".join(m.sql for m in load_migrations())
    single_node = set(re.findall(r"ENGINE = (\w*MergeTree)", sources))
    assert single_node and "MergeTree" in single_node
    locals_ = [s for s in STATEMENTS if LOCAL.match(s)]
    names = [LOCAL.match(s).group(1) for s in locals_]  # type: ignore[union-attr]
    assert {"usage_events", "ledger_entries", "usage_daily_totals"} <= set(names)
    for name, statement in zip(names, locals_, strict=True):
        assert re.search(rf"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/{{shard}}/"
                         rf"{{database}}/{name}', '{{replica}}'", statement), name  # fmt: skip
        assert "replicated_deduplication_window = 1000" in statement, name
        assert "non_replicated" not in statement, name
        assert (
            f"ENGINE = Distributed('{{cluster}}', currentDatabase(), {name}_local, {SHARDING_KEY})"
            in SHIPPED
        ), name
    for statement in STATEMENTS:
        if statement.startswith("CREATE MATERIALIZED VIEW"):
            for name in names:  # a view's work stays on its shard
                assert not re.search(rf"\b(FROM|JOIN|TO) {name}\b", statement), (name, statement)
