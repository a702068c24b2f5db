"""The curated public API, and the rule that authors never import the runtime."""

from __future__ import annotations

import subprocess
import sys

import tether


def test_exported_names() -> None:
    assert sorted(tether.__all__) == sorted(
        [
            "Agent", "Autonomy", "AwaitInput", "Decision", "Effect", "JournalCorrupted",
            "JournalError", "Limit", "Limits", "Message", "Model", "ModelError", "ModelRequest",
            "ModelResponse", "NotFound", "Proposal", "RunError", "RunResult", "Runtime",
            "ScriptedModel", "Store", "TetherError", "Tool", "ToolCall", "ToolContext",
            "ToolError", "Usage", "UsageError", "__version__", "call", "rule", "tool",
        ]
    )  # fmt: skip
    for name in tether.__all__:
        assert getattr(tether, name) is not None
    from tether.engine import Runtime
    from tether.journal import Store

    assert tether.Runtime is Runtime and tether.Store is Store  # the same, imported lazily


def test_the_error_tree_is_drawn_in_errors_py() -> None:
    """Every exception class tether raises is in ``tether.errors`` and in its docstring tree."""
    import inspect

    from tether import errors

    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]
    assert len(classes) >= 15
    for cls in classes:
        assert issubclass(cls, errors.TetherError) and cls.__name__ in (errors.__doc__ or "")


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


def test_the_engine_imports_no_exporter() -> None:
    """Telemetry subscribes to the engine (``tether.run_ended``), never the other way round."""
    import ast
    from pathlib import Path

    engine = Path(tether.__file__).parent / "engine"
    found = []
    for path in sorted(engine.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )  # fmt: skip
            found += [f"{path.name}: {n}" for n in names if n.startswith("tether.telemetry")]
    assert found == []
    assert len(list(engine.rglob("*.py"))) > 10  # the walk saw the engine's modules
