"""``metering demo``: the whole pipeline on one machine, playing a realistic story."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Entry point named in ``metering.cli.COMMANDS`` (imports the heavy parts lazily)."""
    from metering.demo.cli import main as run

    return run(argv)
