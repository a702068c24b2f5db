"""tether: a runtime for production AI agents."""

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
from tether.tools import AwaitInput, Effect, Tool, ToolContext, ToolError, tool

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "Autonomy",
    "AwaitInput",
    "Effect",
    "JournalCorrupted",
    "JournalError",
    "Limits",
    "Message",
    "Model",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "NotFound",
    "RunError",
    "ScriptedModel",
    "TetherError",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "Usage",
    "UsageError",
    "__version__",
    "call",
    "tool",
]
