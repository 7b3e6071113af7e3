"""The console command routes to components and fails clearly on unknown words."""

from __future__ import annotations

import pytest

from cli import main as cli


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for words in cli.COMMANDS:
        assert " ".join(words) in out


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_help_shows_each_command_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for words, command in cli.COMMANDS.items():
        assert command.summary
        assert any(line.split() == [*words, *command.summary.split()] for line in lines), (
            f"{' '.join(words)} is not listed with its summary"
        )


def test_every_entry_point_names_a_module_and_function() -> None:
    for command in cli.COMMANDS.values():
        module, sep, func = command.target.partition(":")
        assert sep and module and func.isidentifier()
