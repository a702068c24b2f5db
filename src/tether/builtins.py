"""Built-in tools."""

from __future__ import annotations

from tether.tools import Tool, tool


def _ask_human(question: str) -> str:
    """Ask a human a question and wait for the answer. Use it when you are unsure or stuck."""
    return question


ask_human: Tool = tool(effect="read", name="ask_human", awaits_input=True)(_ask_human)
"""Add to an agent's tools to let it stop and ask a human; the run waits for ``tether answer``.

Nothing special to the engine: a tool declared with ``awaits_input=True`` (any tool can be),
whose function returns the question."""
