"""Notice that watched data files changed: one ``stat`` per file, no reading.

Shared by the processor's live engine (``pipeline.config_reload``) and the enforcement side's
feature catalog (``projections.features``), so both react to the same price book edit the
same way. A file's print is its ``(st_mtime_ns, st_size)``, or ``None`` while it cannot be
stat'ed (missing, unreadable directory): a file that disappears or comes back is a change too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

FilePrint = tuple[int, int] | None
"""``(mtime_ns, size)`` of one file, ``None`` when it cannot be stat'ed."""


def file_print(path: Path) -> FilePrint:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def fingerprint(paths: Iterable[Path]) -> tuple[FilePrint, ...]:
    """The prints of ``paths``, in order: differs whenever any of the files changes."""
    return tuple(file_print(path) for path in paths)
