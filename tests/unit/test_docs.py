"""The docs are executed or checked: Python examples run, CLI references match the real CLI."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT
from tether.cli.app import app

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def python_blocks() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for i, code in enumerate(BLOCK.findall(path.read_text())):
            if "# not run" not in code:
                out.append((f"{path.name}#{i + 1}", code))
    return out


@pytest.mark.parametrize(("where", "code"), python_blocks(), ids=[w for w, _ in python_blocks()])
def test_python_examples_run(where: str, code: str, tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, where, "exec"), {"__name__": f"docs_{where}"})
    finally:
        os.chdir(cwd)


def commands() -> dict[str, str]:
    runner = CliRunner()
    names = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    return {n: runner.invoke(app, [n, "--help"], env={"COLUMNS": "200"}).output for n in names}


def test_cli_tables_name_real_commands_and_options() -> None:
    helps = commands()
    checked = 0
    for path in DOCS:
        for line in path.read_text().splitlines():
            for snippet in re.findall(r"`tether ([a-z]+)([^`]*)`", line):
                name, rest = snippet
                assert name in helps, f"{path.name}: `tether {name}` is not a command"
                for option in re.findall(r"(--[a-z][a-z-]*)", rest):
                    assert option in helps[name], f"{path.name}: {name} has no {option}"
                checked += 1
    assert checked >= 10


def policy_examples() -> list[tuple[str, str, str]]:
    out = []
    for path in DOCS:
        for lang in ("toml", "yaml"):
            pattern = re.compile(rf"```{lang}\n(.*?)```", re.S)
            for i, text in enumerate(pattern.findall(path.read_text())):
                if "[[limit]]" in text or "[[rule]]" in text or "limit:" in text or "rule:" in text:
                    out.append((f"{path.name}#{lang}{i + 1}", lang, text))
    return out


@pytest.mark.parametrize(("where", "lang", "text"), policy_examples(),
                         ids=[w for w, _, _ in policy_examples()])  # fmt: skip
def test_policy_file_examples_load(where: str, lang: str, text: str, tmp_path: Path) -> None:
    from tether.policy.config import load_policy

    path = tmp_path / f"policy.{lang}"
    path.write_text(text)
    config = load_policy(path)
    assert config.rules or config.limits, where


def test_docs_have_policy_examples() -> None:
    assert len(policy_examples()) >= 2


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub renders it: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # (not comments in code)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_links_between_docs_reach_their_anchors() -> None:
    checked = 0
    for path in DOCS:
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md)?#([\w-]+)\)", path.read_text()):
            linked = (path.parent / target) if target else path
            assert linked.is_file(), f"{path.name}: link to missing {target}"
            assert anchor in _anchors(linked), f"{path.name}: {target}#{anchor} has no such heading"
            checked += 1
    assert checked >= 3
