"""FeatureCatalog: the price book's features for enforcement, reloaded when the file changes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from metering.data import SHIPPED_PRICE_BOOK
from metering.domain import ValidationError, load_price_book
from projections.features import FeatureCatalog

BOOK = """
versions:
  - version: v1
    effective_from: "2025-01-01T00:00:00Z"
    features:
      text: {"*": {requests: 1}}
      legacy_search: {"*": {requests: 1}}
  - version: v2
    effective_from: "2025-06-01T00:00:00Z"
    features:
      text: {"*": {requests: 2}}
      images: {"*": {images: 25}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, text: str) -> None:
    """Write and move the mtime forward, so a same-size rewrite is a change too."""
    stat = path.stat() if path.exists() else None
    path.write_text(text)
    if stat is not None:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_an_explicit_set_knows_exactly_its_features() -> None:
    catalog = FeatureCatalog({"text", "images"})
    assert catalog.known("text") and "images" in catalog
    assert not catalog.known("teleport") and not catalog.known("")
    assert catalog.features == frozenset({"text", "images"}) and len(catalog) == 2
    assert catalog.path is None and not catalog.maybe_reload()


def test_the_union_of_every_version_is_known(tmp_path: Path) -> None:
    book = tmp_path / "pricebook.yaml"
    book.write_text(BOOK)
    catalog = FeatureCatalog.from_file(book)
    # legacy_search is only in v1: a back-dated event is still priced by v1.
    assert catalog.features == {"text", "legacy_search", "images"}
    assert not catalog.known("teleport")


def test_the_shipped_price_book_is_the_default() -> None:
    shipped = {f for v in load_price_book().versions for f in v.features}
    catalog = FeatureCatalog.from_file()
    assert catalog.path == SHIPPED_PRICE_BOOK
    assert catalog.features == shipped and catalog.known("text_generation")
    assert not catalog.known("teleport")
    assert FeatureCatalog.from_price_book(load_price_book()).features == shipped


def test_settings_and_env_find_the_processor_price_book(tmp_path: Path) -> None:
    book = tmp_path / "book.yaml"
    book.write_text(BOOK)
    env = {"METERING_STATE_DIR": str(tmp_path), "METERING_PRICEBOOK": str(book)}
    catalog = FeatureCatalog.from_env(env)
    assert catalog.path == book and catalog.known("legacy_search")
    shipped = FeatureCatalog.from_env({"METERING_STATE_DIR": str(tmp_path)})
    assert shipped.path == SHIPPED_PRICE_BOOK and not shipped.known("legacy_search")


def test_reloads_on_change_at_most_every_interval(tmp_path: Path) -> None:
    book = tmp_path / "pricebook.yaml"
    book.write_text(BOOK)
    clock = Clock()
    catalog = FeatureCatalog.from_file(book, check_interval_s=2.0, clock=clock)
    assert not catalog.known("teleport")
    _write(book, BOOK + '      teleport: {"*": {requests: 5}}\n')
    clock.now += 1.9
    assert not catalog.known("teleport")  # not checked yet: within the interval
    clock.now += 0.2
    assert catalog.known("teleport")  # checked on this call, reloaded
    assert catalog.reloads == 1
    clock.now += 5
    assert catalog.known("teleport") and catalog.reloads == 1  # unchanged file: no re-read


def test_a_bad_or_missing_file_keeps_the_previous_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    book = tmp_path / "pricebook.yaml"
    book.write_text(BOOK)
    clock = Clock()
    catalog = FeatureCatalog.from_file(book, clock=clock)
    before = catalog.features
    caplog.set_level(logging.WARNING, logger="projections.features")
    for bad in (
        "versions: [",
        "versions: []",
        "just text",
        "versions: [{version: x, features: {a: 1}}]",
    ):
        _write(book, bad)
        clock.now += 3
        assert catalog.known("text") and catalog.features == before
    assert catalog.reloads == 0
    assert len(caplog.records) == 4
    assert all("keeping 3 known features" in r.getMessage() for r in caplog.records)
    book.unlink()
    clock.now += 3
    assert catalog.known("images") and catalog.features == before
    assert len(caplog.records) == 5
    _write(book, BOOK.replace("legacy_search", "search"))  # fixed: picked up again
    clock.now += 3
    assert catalog.known("search") and not catalog.known("legacy_search")
    assert catalog.reloads == 1


def test_without_an_interval_only_maybe_reload_reloads(tmp_path: Path) -> None:
    book = tmp_path / "pricebook.yaml"
    book.write_text(BOOK)
    clock = Clock()
    catalog = FeatureCatalog.from_file(book, check_interval_s=None, clock=clock)
    _write(book, BOOK.replace("images", "video"))
    clock.now += 3600
    assert catalog.known("images")
    assert catalog.maybe_reload() and catalog.known("video") and not catalog.known("images")
    assert not catalog.maybe_reload()


def test_a_missing_or_invalid_file_at_start_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        FeatureCatalog.from_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("versions: []")
    with pytest.raises(ValidationError, match="non-empty"):
        FeatureCatalog.from_file(bad)


def test_the_sidecar_reloads_its_catalog_off_the_event_loop(tmp_path: Path) -> None:
    import asyncio

    from projections.sidecar import Sidecar

    book = tmp_path / "pricebook.yaml"
    book.write_text(BOOK)
    catalog = FeatureCatalog.from_file(book, check_interval_s=None)

    async def run() -> None:
        watcher = asyncio.create_task(Sidecar._watch_features(catalog, interval_s=0.01))
        _write(book, BOOK.replace("images", "video"))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if catalog.known("video"):
                break
        watcher.cancel()

    asyncio.run(run())
    assert catalog.known("video") and not catalog.known("images")
