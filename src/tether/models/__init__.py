"""Models: the protocol, the scripted model, providers and wrappers."""

from tether.models.base import Model, estimate_request_tokens, estimate_tokens
from tether.models.scripted import ScriptedModel, call, raw_call

__all__ = [
    "Model",
    "ScriptedModel",
    "call",
    "estimate_request_tokens",
    "estimate_tokens",
    "raw_call",
]
