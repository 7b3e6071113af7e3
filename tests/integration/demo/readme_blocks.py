"""The README's code blocks, by section, for the test that runs them.

A block is a fenced code block with its language (``bash``/``sh``, ``python``, ``sql``) and the
``##`` section it is in. The README stays plain Markdown: no markers, no hidden setup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"
TESTED_SECTIONS = ("Quick start", "Operations", "Using it from your product")
"""Every shell and Python block in these sections runs in ``test_readme.py``."""

_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True, slots=True)
class Block:
    section: str
    subsection: str
    language: str
    code: str
    line: int

    @property
    def is_shell(self) -> bool:
        return self.language in ("bash", "sh")

    def where(self) -> str:
        return f"README.md:{self.line} ({self.section} / {self.subsection or '-'})"


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced block, in order."""
    lines = (README.read_text() if text is None else text).splitlines()
    found: list[Block] = []
    section = subsection = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section, subsection = line[3:].strip(), ""
        elif line.startswith("### "):
            subsection = line[4:].strip()
        match = _FENCE.match(line)
        if match:
            start = i
            i += 1
            body: list[str] = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            found.append(Block(section, subsection, match.group(1), "\n".join(body), start + 1))
        i += 1
    return found


def blocks_under_test(text: str | None = None) -> list[Block]:
    return [b for b in blocks(text) if b.section in TESTED_SECTIONS]


def sql_statements(code: str) -> list[str]:
    """The statements of a SQL block (comments dropped, split on ``;``)."""
    text = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("--"))
    return [statement.strip() for statement in text.split(";") if statement.strip()]
