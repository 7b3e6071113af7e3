"""``metering demo``: the whole pipeline on one machine, playing a realistic story.

May import: every package (a composition root); no other package imports it.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Entry point named in ``cli.main.COMMANDS`` (imports the heavy parts lazily)."""
    from demo.cli import main as run

    return run(argv)
