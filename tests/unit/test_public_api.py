"""The curated public API, and the rule that authors never import the runtime."""

from __future__ import annotations

import subprocess
import sys

import tether


def test_exported_names() -> None:
    assert sorted(tether.__all__) == sorted(
        [
            "Agent", "Autonomy", "Effect", "JournalCorrupted", "JournalError", "Limits",
            "Message", "Model", "ModelError", "ModelRequest", "ModelResponse", "NotFound",
            "RunError", "ScriptedModel", "TetherError", "Tool", "ToolCall", "ToolContext",
            "ToolError", "Usage", "UsageError", "__version__", "call", "tool",
        ]
    )  # fmt: skip
    for name in tether.__all__:
        assert getattr(tether, name) is not None


def test_author_api_does_not_import_the_runtime() -> None:
    code = (
        "import sys; import tether, tether.agent, tether.tools, tether.policy, tether.builtins;"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('tether.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.strip().split(","))
    for forbidden in ("tether.engine", "tether.journal", "tether.cli", "tether.replay",
                      "tether.telemetry"):  # fmt: skip
        assert not any(m == forbidden or m.startswith(forbidden + ".") for m in loaded), loaded
    assert "tether.agent" in loaded and "tether.tools" in loaded
