"""Models: the protocol, the scripted model, providers and wrappers.

Providers import their SDK only when used; a missing SDK raises an ImportError naming the extra.
"""

from tether.errors import CircuitOpen
from tether.models.base import Model, estimate_request_tokens, estimate_tokens
from tether.models.cache import CacheBackend, CacheModel, MemoryCache, cache_key
from tether.models.circuit import CircuitBreakerModel
from tether.models.fallback import FallbackModel
from tether.models.faults import FaultKind, FaultModel, Rewindable
from tether.models.pricing import Price, PricedModel, PriceTable, cost_estimator, estimate_cost
from tether.models.resolve import resolve_model
from tether.models.retry import RetryModel
from tether.models.router import CascadeModel, RouterModel
from tether.models.scripted import ScriptedModel, call, raw_call

__all__ = [
    "CacheBackend",
    "CacheModel",
    "CascadeModel",
    "CircuitBreakerModel",
    "CircuitOpen",
    "FallbackModel",
    "FaultKind",
    "FaultModel",
    "MemoryCache",
    "Model",
    "Price",
    "PriceTable",
    "PricedModel",
    "RetryModel",
    "Rewindable",
    "RouterModel",
    "ScriptedModel",
    "cache_key",
    "call",
    "cost_estimator",
    "estimate_cost",
    "estimate_request_tokens",
    "estimate_tokens",
    "raw_call",
    "resolve_model",
]
