"""Built-in tools the runtime understands specially."""

from __future__ import annotations

from tether.tools import Tool, tool


def _ask_human(question: str) -> str:
    """Ask a human a question and wait for the answer. Use it when you are unsure or stuck."""
    raise RuntimeError("ask_human is handled by the runtime and never called directly")


ask_human: Tool = tool(effect="read", name="ask_human")(_ask_human)
"""Add to an agent's tools to let it stop and ask a human; the run waits for ``tether answer``."""
