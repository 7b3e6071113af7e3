"""Every ``metering`` command explains itself: a description per parser, help per option, one
name per concept (``--topic-prefix``, ``--redis-prefix``, ``--log-level``; the old spellings
still parse but are hidden), and ``metering --help`` fits 80 columns."""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from cli import main as cli
from pipeline.worker import drop_faust_web_env, parse_config

WIDTH = 80
DEVELOPER_MARKUP = re.compile(r":(class|func|meth|mod|data|attr|exc):|``")
RENAMED = {"--prefix", "--loglevel"}  # old names: hidden aliases at most
RENAMED_IN_TEXT = re.compile(r"(?<![\w-])(--prefix|--loglevel)(?![\w-])")


class _Built(Exception):
    """Raised with the parser a command built, instead of parsing."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def build_parser(
    words: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> argparse.ArgumentParser:
    """The parser the command's entry point builds, caught when it starts parsing."""

    def caught(self: argparse.ArgumentParser, *_: Any, **__: Any) -> NoReturn:
        raise _Built(self)

    found = cli.resolve(list(words))
    assert found is not None, words
    func, rest = found
    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", caught)
        patch.setattr(argparse.ArgumentParser, "parse_known_args", caught)
        with pytest.raises(_Built) as built:
            func(rest)
    return built.value.parser


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and all its sub-parsers."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from walk(sub)


def visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if action.help != argparse.SUPPRESS]


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METERING_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", str(WIDTH))


COMMAND_IDS = [" ".join(words) for words in cli.COMMANDS]


@pytest.mark.parametrize("words", list(cli.COMMANDS), ids=COMMAND_IDS)
def test_every_parser_has_a_user_facing_description(
    words: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    parsers = list(walk(build_parser(words, monkeypatch)))
    assert parsers[0].prog == f"metering {' '.join(words)}"
    for parser in parsers:
        assert parser.description and parser.description.strip(), parser.prog
        assert not DEVELOPER_MARKUP.search(parser.description), parser.prog
        assert parser.prog.startswith("metering "), parser.prog


@pytest.mark.parametrize("words", list(cli.COMMANDS), ids=COMMAND_IDS)
def test_every_visible_option_has_help(
    words: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    for parser in walk(build_parser(words, monkeypatch)):
        for action in visible(parser):
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{parser.prog} {choice.dest}: no help"
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help and action.help.strip(), f"{parser.prog} {name}: no help"
            assert not DEVELOPER_MARKUP.search(action.help), f"{parser.prog} {name}"


@pytest.mark.parametrize("words", list(cli.COMMANDS), ids=COMMAND_IDS)
def test_old_option_names_are_hidden(
    words: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    for parser in walk(build_parser(words, monkeypatch)):
        shown = {option for action in visible(parser) for option in action.option_strings}
        assert not shown & RENAMED, f"{parser.prog} shows {sorted(shown & RENAMED)}"
        assert not RENAMED_IN_TEXT.search(parser.format_help()), parser.prog


@pytest.mark.parametrize("words", list(cli.COMMANDS), ids=COMMAND_IDS)
def test_command_help_fits_the_terminal(
    words: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    for parser in walk(build_parser(words, monkeypatch)):
        for line in parser.format_help().splitlines():
            assert len(line) <= WIDTH, f"{parser.prog}: {line!r}"


def test_metering_help_fits_80_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines
    too_long = [line for line in lines if len(line) > WIDTH]
    assert not too_long


def test_the_topic_prefix_keeps_its_old_name() -> None:
    new, _ = parse_config(["--topic-prefix", "x."])
    old, _ = parse_config(["--prefix", "x."])
    assert new.prefix == old.prefix == "x."
    assert new.app_id == old.app_id == "x.metering-processor"


def test_the_log_level_keeps_its_old_name() -> None:
    assert parse_config(["--log-level", "warning"])[1] == "warning"
    assert parse_config(["--loglevel", "warning"])[1] == "warning"
    assert parse_config([])[1] == "info"


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    return parser.parse_args(argv)


def test_topics_and_projection_accept_the_old_prefix_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    topics = build_parser(("topics",), monkeypatch)
    assert _parse(topics, ["create", "--topic-prefix", "t."]).topic_prefix == "t."
    assert _parse(topics, ["create", "--prefix", "t."]).topic_prefix == "t."
    assert _parse(topics, ["create"]).topic_prefix == ""

    projection = build_parser(("projection",), monkeypatch)
    for action in ("rebuild", "verify"):
        new = _parse(projection, [action, "--redis-prefix", "r:"])
        old = _parse(projection, [action, "--prefix", "r:"])
        assert new.redis_prefix == old.redis_prefix == "r:"
    assert _parse(projection, ["rebuild"]).redis_prefix is None
    assert _parse(projection, ["verify"]).redis_prefix == "mt-rebuild:"
    with pytest.raises(SystemExit):  # still one or the other
        _parse(projection, ["rebuild", "--prefix", "r:", "--live"])


def test_faust_web_variables_do_not_override_the_flags(caplog: pytest.LogCaptureFixture) -> None:
    config, _ = parse_config(["--web-port", "7000", "--web-host", "127.0.0.1"])
    env = {"WEB_PORT": "6066", "WEB_HOST": "127.0.0.1", "WEB_BIND": "0.0.0.0", "OTHER": "1"}
    with caplog.at_level(logging.WARNING, logger="pipeline.worker"):
        drop_faust_web_env(config, env)
    assert env == {"OTHER": "1"}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "WEB_PORT=6066" in warnings[0].getMessage()
    assert "WEB_BIND=0.0.0.0" in warnings[0].getMessage()
    assert "WEB_HOST" not in warnings[0].getMessage()  # same as the flag: removed silently


def test_matching_faust_web_variables_are_removed_quietly(caplog: pytest.LogCaptureFixture) -> None:
    config, _ = parse_config(["--web-port", "7000"])
    env = {"WEB_PORT": "7000"}
    with caplog.at_level(logging.WARNING, logger="pipeline.worker"):
        drop_faust_web_env(config, env)
        drop_faust_web_env(config, {})
    assert env == {}
    assert not caplog.records
