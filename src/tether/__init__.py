"""tether: a runtime for production AI agents.

What an agent's author needs is imported here: agents, tools, rules and the scripted model.
``Runtime``, ``RunResult`` and ``Store`` are here too, imported on first use, so a module that
only declares an agent never loads the runtime, the store or their dependencies.
"""

from typing import TYPE_CHECKING, Any

from tether.agent import Agent, Autonomy, Limits
from tether.errors import (
    JournalCorrupted,
    JournalError,
    ModelError,
    NotFound,
    RunError,
    TetherError,
    UsageError,
)
from tether.messages import Message, ModelRequest, ModelResponse, ToolCall, Usage
from tether.models import Model, ScriptedModel, call
from tether.policy.rules import Decision, Limit, Proposal, rule
from tether.tools import AwaitInput, Effect, Tool, ToolContext, ToolError, tool

if TYPE_CHECKING:
    from tether.engine.result import RunResult
    from tether.engine.runtime import Runtime
    from tether.journal.store import Store

__version__ = "0.1.0"

_LAZY = {
    "Runtime": "tether.engine.runtime",
    "RunResult": "tether.engine.result",
    "Store": "tether.journal.store",
}


def __getattr__(name: str) -> Any:
    """``Runtime``, ``RunResult`` and ``Store``, imported when first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Agent",
    "Autonomy",
    "AwaitInput",
    "Decision",
    "Effect",
    "JournalCorrupted",
    "JournalError",
    "Limit",
    "Limits",
    "Message",
    "Model",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "NotFound",
    "Proposal",
    "RunError",
    "RunResult",
    "Runtime",
    "ScriptedModel",
    "Store",
    "TetherError",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "Usage",
    "UsageError",
    "__version__",
    "call",
    "rule",
    "tool",
]
