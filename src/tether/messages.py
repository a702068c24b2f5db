"""Conversation data shared by agents, models and the runtime.

Plain, slotted dataclasses: they are created on every step, so they stay cheap. Everything here
round-trips through :func:`to_dict` / ``from_dict`` so the journal can store it as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class ToolCall:
    """A tool call proposed by a model.

    ``arguments`` is whatever the model produced: normally a JSON object as a string or a dict.
    Malformed JSON is kept as-is so the runtime can report it back to the model.
    """

    id: str
    name: str
    arguments: str | dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCall:
        return cls(id=str(data["id"]), name=str(data["name"]), arguments=data["arguments"])

    def arguments_text(self) -> str:
        """The arguments as JSON text (as sent to providers)."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, sort_keys=True, separators=(",", ":"))


@dataclass(slots=True)
class Message:
    """One message of a conversation."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        return cls(
            role=data["role"],
            content=data.get("content") or "",
            tool_calls=[ToolCall.from_dict(c) for c in data.get("tool_calls", [])],
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name"),
        )


@dataclass(slots=True)
class Usage:
    """Token usage of one model call."""

    input_tokens: int = 0
    output_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(int(data.get("input_tokens", 0)), int(data.get("output_tokens", 0)))


@dataclass(slots=True)
class ModelRequest:
    """What the runtime asks of a model: messages, tool schemas and an optional output schema."""

    messages: list[Message]
    tools: list[dict[str, Any]] = field(default_factory=list)
    response_schema: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ModelResponse:
    """A model's answer: text and/or tool calls, with token usage."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    cost_usd: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "text": self.text,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "usage": self.usage.to_dict(),
            "model": self.model,
        }
        if self.cost_usd is not None:
            data["cost_usd"] = self.cost_usd
        if self.meta:
            data["meta"] = self.meta
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResponse:
        return cls(
            text=data.get("text") or "",
            tool_calls=[ToolCall.from_dict(c) for c in data.get("tool_calls", [])],
            usage=Usage.from_dict(data.get("usage", {})),
            model=data.get("model", ""),
            cost_usd=data.get("cost_usd"),
            meta=data.get("meta", {}),
        )

    def as_message(self) -> Message:
        """The assistant message this response adds to the conversation."""
        return Message(role="assistant", content=self.text, tool_calls=list(self.tool_calls))
