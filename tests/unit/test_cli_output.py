"""What the CLI prints for a human: text a model, tool or rule controls never reaches the
terminal raw (no escape sequence, no bidi override, no Rich markup), and ids are printed so
the same CLI accepts them back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import tether
from tests.integration.hostile_agent import ADDRESS

HOSTILE = "tests.integration.hostile_agent:agent"
RAW = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]"
)


def assert_printable(text: str) -> None:
    found = RAW.search(text)
    assert found is None, (
        f"raw {found.group(0)!r} in: {text[max(0, found.start() - 60) : found.end() + 20]!r}"
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "out.db"


def test_model_tool_and_rule_text_is_shown_escaped(db: Path) -> None:
    live = tether(db, "run", HOSTILE, "--input", "my address changed")
    assert live.returncode == 0, live.stderr
    assert_printable(live.stdout)
    assert "by rule refunds-need-a-human: refund for #1\\x1b[2K" in live.stdout
    run = json.loads(tether(db, "runs", "--json").stdout)[0]
    assert run["status"] == "waiting_approval"
    for args in (["show", run["id"]], ["show", run["id"], "--full"], ["approvals"], ["runs"]):
        out = tether(db, *args)
        assert out.returncode == 0, out.stderr
        assert_printable(out.stdout)
    full = tether(db, "show", run["id"], "--full").stdout
    assert "hidden\\u202e01" in full  # the tool result, escaped visibly, not dropped
    assert "[bold red]checking[/]" in full  # the model's text, not read as Rich markup
    queue = tether(db, "approvals").stdout
    assert "\\x1b[2K" in queue
    # JSON output escapes the same text the JSON way and loses nothing
    shown = tether(db, "show", run["id"], "--json").stdout
    assert_printable(shown)
    events = json.loads(shown)["events"]
    results = [e["payload"]["content"] for e in events if e["type"] == "tool_finished"]
    assert json.loads(results[0])["address"] == ADDRESS


def test_an_error_message_quoting_an_id_is_escaped(db: Path) -> None:
    out = tether(db, "show", "abc\x1b[2Kdefgh")
    assert out.returncode == 2 and "abc\\x1b[2Kdefgh" in out.stderr
    assert_printable(out.stderr)
