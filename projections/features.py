"""Which features the price book prices: the enforcement side's answer to "unknown feature".

A usage event whose feature the price book does not know cannot be priced: the processor
dead-letters it (``UnknownFeatureError``) and nothing is charged. Enforcement must therefore
deny such a feature up front, even on a plan that allows every feature. :class:`FeatureCatalog`
holds the set of priced features for that check, read with the same loader and from the same
file as the processor (``--pricebook`` / ``METERING_PRICEBOOK``, else the shipped
``metering/data/pricebook.yaml``), and re-reads it when the file changes, watched the same way
as the processor's live engine (:mod:`metering.filewatch`: mtime and size).

Usage on the hot path::

    catalog = FeatureCatalog.from_env()  # or from_settings, from_file, FeatureCatalog({...})
    if not catalog.known(feature):
        deny("unknown_feature")
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from metering.config import Settings, load_settings
from metering.data import SHIPPED_PRICE_BOOK
from metering.domain.loading import load_price_book
from metering.domain.pricing import PriceBook
from metering.filewatch import FilePrint, fingerprint

log = logging.getLogger("projections.features")

DEFAULT_CHECK_INTERVAL_S = 2.0
"""How often (monotonic seconds) :meth:`FeatureCatalog.known` looks at the file at most."""


def price_book_features(book: PriceBook) -> frozenset[str]:
    """Every feature any version of ``book`` has a rate for."""
    return frozenset(feature for version in book.versions for feature in version.features)


class FeatureCatalog:
    """The features the price book prices, for an O(1) ``known(feature)`` per request.

    **A feature is known if any version of the price book prices it** (the union over versions),
    not just the version in force now, because:

    * the processor prices an event with the version in force at the event's ``occurred_at``,
      which the client sets and enforcement does not see: a late or back-dated event is priced
      by an older version, so a feature an older version still prices can be charged;
    * versions are published ahead of their ``effective_from`` and the sidecar's clock is not
      the event time, so "the version in force now" is not well defined at check time;
    * denying a feature the product sells is an outage for customers, whereas the remaining gap
      (a feature only in a future version, or dropped by the current one, used with a current
      event time) is still caught downstream: the event is dead-lettered and the processor
      raises an ``UNKNOWN_FEATURE`` credit alert, so the leak is visible, not silent.

    What this closes is the case of the issue: a feature *no* version prices (``"teleport"``)
    can never be charged, so it is denied.

    Reloading: a catalog built from a file checks the file's (mtime, size) at most every
    ``check_interval_s`` of monotonic time, inside :meth:`known` (one clock read and a float
    compare otherwise). On a change it re-reads and swaps the set atomically (one reference
    assignment, safe for threads and the event loop). A missing or invalid file keeps the
    previous set and logs a warning; it is read again once it changes again. Building a
    catalog from a file that is missing or invalid *at start* raises, as the processor does.
    A catalog built from an explicit set never reloads.
    """

    __slots__ = ("_clock", "_features", "_interval", "_next_check", "_path", "_print", "reloads")

    def __init__(self, features: Iterable[str]) -> None:
        """A fixed set (tests, library users with their own source of truth): never reloads."""
        self._features: frozenset[str] = frozenset(features)
        self._path: Path | None = None
        self._print: tuple[FilePrint, ...] = ()
        self._clock: Callable[[], float] = time.monotonic
        self._interval = math.inf
        self._next_check = math.inf
        self.reloads = 0
        """Successful reloads since construction (for metrics)."""

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def from_price_book(cls, book: PriceBook) -> FeatureCatalog:
        """The features of an already loaded price book (fixed: never reloads)."""
        return cls(price_book_features(book))

    @classmethod
    def from_file(
        cls,
        path: str | Path | None = None,
        *,
        check_interval_s: float | None = DEFAULT_CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> FeatureCatalog:
        """The price book at ``path`` (None: the shipped one), watched for changes.

        ``check_interval_s=None`` turns the checks inside :meth:`known` off: the caller then
        calls :meth:`maybe_reload` itself (e.g. from a timer). Raises if the file cannot be
        read or is not a valid price book.
        """
        watched = Path(path) if path is not None else SHIPPED_PRICE_BOOK
        prints = fingerprint((watched,))  # before reading: a write meanwhile is seen next time
        catalog = cls(price_book_features(load_price_book(watched)))
        catalog._path = watched
        catalog._print = prints
        catalog._clock = clock
        if check_interval_s is not None:
            catalog._interval = check_interval_s
            catalog._next_check = clock() + check_interval_s
        return catalog

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        check_interval_s: float | None = DEFAULT_CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> FeatureCatalog:
        """The processor's price book: ``settings.pricebook_path`` (``METERING_PRICEBOOK``),
        else the shipped one. A processor started with ``--pricebook X`` instead of the variable
        needs the same ``X`` here (``from_file``)."""
        return cls.from_file(
            settings.pricebook_path, check_interval_s=check_interval_s, clock=clock
        )

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        check_interval_s: float | None = DEFAULT_CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> FeatureCatalog:
        """:meth:`from_settings` with ``load_settings(env)`` (the process environment)."""
        return cls.from_settings(load_settings(env), check_interval_s=check_interval_s, clock=clock)

    # -- the hot path --------------------------------------------------------------------------

    def known(self, feature: str) -> bool:
        """Whether some price book version prices ``feature`` (may first reload, every ~2 s)."""
        if self._clock() >= self._next_check:
            self._check()
        return feature in self._features

    __contains__ = known

    # -- reloading -------------------------------------------------------------------------------

    def maybe_reload(self) -> bool:
        """Check the file now (whatever the interval); True if it changed and was re-read."""
        return self._check()

    def _check(self) -> bool:
        path = self._path
        if path is None:
            return False
        self._next_check = self._clock() + self._interval
        prints = fingerprint((path,))
        if prints == self._print:
            return False
        self._print = prints
        try:
            features = price_book_features(load_price_book(path))
        except Exception as exc:  # unreadable, not YAML, not a price book: keep what we have
            log.warning(
                "price book %s not reloaded, keeping %d known features: %s",
                path,
                len(self._features),
                exc,
            )
            return False
        if features != self._features:
            log.info(
                "price book %s reloaded: features added %s, removed %s",
                path,
                sorted(features - self._features),
                sorted(self._features - features),
            )
        self._features = features
        self.reloads += 1
        return True

    # -- introspection ---------------------------------------------------------------------------

    @property
    def features(self) -> frozenset[str]:
        """The known features now (without a reload check)."""
        return self._features

    @property
    def path(self) -> Path | None:
        """The watched price book file, or None for a fixed set."""
        return self._path

    def __len__(self) -> int:
        return len(self._features)

    def __repr__(self) -> str:
        source = f"path={str(self._path)!r}" if self._path is not None else "fixed"
        return f"FeatureCatalog({source}, {len(self._features)} features)"
