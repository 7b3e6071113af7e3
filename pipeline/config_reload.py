"""Live price book and plans: a watched file pair, reloaded without a restart.

Why files and not a compacted config topic: the price book is versioned *inside* the data
(each version has ``effective_from``), and the engine picks the version by event time, so the
moment a worker notices a new file does not change what an event costs as long as versions are
published ahead of their ``effective_from``. A file (a mounted ConfigMap, or the repo's shipped
data) is reviewable, diffable and needs no extra topic or producer tooling. A bad file is
rejected and the previous engine stays live.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from metering.filewatch import fingerprint as files_fingerprint
from pipeline.metrics import Metrics
from pipeline.ports import EnginePort

log = logging.getLogger("pipeline.config")


class EngineSource(Protocol):
    def fingerprint(self) -> object:
        """Changes whenever the underlying data changes (cheap: called every few seconds)."""
        ...

    def build(self) -> EnginePort: ...


class FileEngineSource:
    """Builds the engine from files; the fingerprint is each file's (mtime_ns, size).

    (``metering.filewatch``: the enforcement side's feature catalog watches the same way.)
    """

    def __init__(self, paths: Sequence[Path], build: Callable[[], EnginePort]) -> None:
        self.paths = list(paths)
        self._build = build

    def fingerprint(self) -> object:
        return files_fingerprint(self.paths)

    def build(self) -> EnginePort:
        return self._build()


class LiveEngine:
    """Holds the engine in use; swaps it atomically (between batches) when the source changes."""

    def __init__(self, source: EngineSource, metrics: Metrics) -> None:
        self.source = source
        self.metrics = metrics
        self._fingerprint = source.fingerprint()
        self._engine = source.build()
        metrics.config_version = self._engine.version

    def current(self) -> EnginePort:
        return self._engine

    def maybe_reload(self) -> bool:
        """Rebuild if the source changed; keep the old engine if the new data is invalid."""
        fingerprint = self.source.fingerprint()
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            engine = self.source.build()
        except Exception as exc:
            log.error("config reload rejected, keeping %s: %s", self._engine.version, exc)
            return False
        log.info("config reloaded: %s -> %s", self._engine.version, engine.version)
        self._engine = engine
        self.metrics.config_reloads += 1
        self.metrics.config_version = engine.version
        return True
