"""Fixtures for the ClickHouse tests: a fresh migrated database per test.

chDB hosts one engine per process and a second process cannot open the same path while this
one holds it, so the fixture closes its clients (``close_all``) before handing over.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from consumers.clickhouse import close_all
from consumers.migrations import migrate


@pytest.fixture
def ch_database(clickhouse_url: str) -> Iterator[str]:
    """A migrated database of its own; no chDB client is left open for the test body."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    migrate(clickhouse_url, name)
    close_all()
    yield name
    close_all()
