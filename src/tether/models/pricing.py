"""Prices of model calls, in US dollars.

A :class:`PriceTable` maps model names to a :class:`Price` (dollars per million input and output
tokens). Lookup is forgiving about how names are spelled in practice:

1. the full name (``openai:gpt-4o-mini``);
2. the name without its provider prefix (``gpt-4o-mini``);
3. the longest entry that prefixes it up to a ``-`` or ``@``
   (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``);
4. the provider prefix alone (``local:smollm2`` -> ``local``, ``scripted:small`` -> ``scripted``).

The defaults are list prices at the time of writing for a few well-known models, plus ``scripted``
and ``local`` at zero. Prices change: load your own table with :meth:`PriceTable.from_dict`,
:meth:`PriceTable.from_toml`, :meth:`PriceTable.from_yaml` or :meth:`PriceTable.load`. A table file
maps names to ``{input = ..., output = ...}`` (or ``[input, output]``), optionally under a
``models`` key.

:class:`PricedModel` wraps any model and fills in ``response.cost_usd``. It leaves a cost the inner
model already set (a cache hit costs 0), and adds the cost of earlier calls that the response lists
in ``meta["prior_calls"]`` (a cascade's cheap attempt), so one number covers the whole turn.
:func:`estimate_cost` gives a worst-case cost before a call, for budget checks, and
:func:`cost_estimator` binds it to one model as the ``request -> dollars`` function the runtime's
budget guard takes.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tether.messages import ModelRequest, ModelResponse, Usage
from tether.models.base import Model, estimate_request_tokens

_MTOK = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """Dollars per million input tokens and per million output tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, usage: Usage) -> float:
        """The dollar cost of ``usage`` at this price."""
        return (
            usage.input_tokens * self.input_per_mtok + usage.output_tokens * self.output_per_mtok
        ) / _MTOK


DEFAULT_PRICES: dict[str, Price] = {
    "scripted": Price(0.0, 0.0),
    "local": Price(0.0, 0.0),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o3-mini": Price(1.10, 4.40),
    "claude-3-haiku": Price(0.25, 1.25),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-opus-4": Price(15.00, 75.00),
}


def _parse_price(name: str, value: Any) -> Price:
    if isinstance(value, Price):
        return value
    if isinstance(value, Mapping):
        try:
            return Price(float(value["input"]), float(value["output"]))
        except KeyError as exc:
            raise ValueError(f"price of {name!r} needs 'input' and 'output'") from exc
    if isinstance(value, list | tuple) and len(value) == 2:
        return Price(float(value[0]), float(value[1]))
    raise ValueError(f"price of {name!r} must be {{input, output}} or [input, output]")


class PriceTable(Mapping[str, Price]):
    """Model name -> :class:`Price`, with forgiving lookup (see the module docstring).

    ``default`` prices any model the table does not know; without it, unknown models have no
    price (:meth:`lookup` returns ``None``, :meth:`cost` raises ``KeyError``).
    """

    def __init__(
        self,
        prices: Mapping[str, Price | Mapping[str, float] | tuple[float, float]] | None = None,
        *,
        include_defaults: bool = True,
        default: Price | None = None,
    ) -> None:
        self._prices: dict[str, Price] = dict(DEFAULT_PRICES) if include_defaults else {}
        for name, value in (prices or {}).items():
            self._prices[name] = _parse_price(name, value)
        self.default = default

    # Mapping protocol
    def __getitem__(self, name: str) -> Price:
        return self._prices[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, include_defaults: bool = True) -> PriceTable:
        """Build a table from ``{name: {input, output}}``, optionally nested under ``models``."""
        models = data.get("models", data)
        if not isinstance(models, Mapping):
            raise ValueError("price table must map model names to prices")
        return cls(
            {str(k): _parse_price(str(k), v) for k, v in models.items()},
            include_defaults=include_defaults,
        )

    @classmethod
    def from_toml(cls, text: str, *, include_defaults: bool = True) -> PriceTable:
        """Build a table from TOML text."""
        return cls.from_dict(tomllib.loads(text), include_defaults=include_defaults)

    @classmethod
    def from_yaml(cls, text: str, *, include_defaults: bool = True) -> PriceTable:
        """Build a table from YAML text."""
        data = yaml.safe_load(text) or {}
        if not isinstance(data, Mapping):
            raise ValueError("price table must be a YAML mapping")
        return cls.from_dict(data, include_defaults=include_defaults)

    @classmethod
    def load(cls, path: str | Path, *, include_defaults: bool = True) -> PriceTable:
        """Load a ``.toml``, ``.yaml``/``.yml`` or ``.json`` price file."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == ".toml":
            return cls.from_toml(p.read_text(encoding="utf-8"), include_defaults=include_defaults)
        if suffix in (".yaml", ".yml", ".json"):  # JSON is a subset of YAML
            return cls.from_yaml(p.read_text(encoding="utf-8"), include_defaults=include_defaults)
        raise ValueError(f"unsupported price file type: {p.name}")

    def lookup(self, model_name: str) -> Price | None:
        """The price of ``model_name``, or the table default (which may be ``None``)."""
        if model_name in self._prices:
            return self._prices[model_name]
        provider, sep, bare = model_name.partition(":")
        if not sep:
            provider, bare = "", model_name
        if bare in self._prices:
            return self._prices[bare]
        best = max((n for n in self._prices if _is_prefix(n, bare)), key=len, default=None)
        if best is not None:
            return self._prices[best]
        if provider and provider in self._prices:
            return self._prices[provider]
        return self.default

    def cost(self, model_name: str, usage: Usage) -> float:
        """Dollar cost of ``usage`` on ``model_name``; ``KeyError`` if the model has no price."""
        price = self.lookup(model_name)
        if price is None:
            raise KeyError(f"no price for model {model_name!r}")
        return price.cost(usage)


def _is_prefix(entry: str, name: str) -> bool:
    """``entry`` names a family ``name`` belongs to: ``gpt-4o`` for ``gpt-4o-2024-08-06``."""
    return name.startswith(entry) and name[len(entry) : len(entry) + 1] in ("", "-", "@")


def estimate_cost(
    model_name: str,
    request: ModelRequest,
    max_output_tokens: int,
    table: PriceTable | None = None,
) -> float:
    """Worst-case cost of sending ``request``: estimated input plus ``max_output_tokens`` output.

    For budget checks before a call. Raises ``KeyError`` if the model has no price.
    """
    usage = Usage(estimate_request_tokens(request), max_output_tokens)
    return (table or PriceTable()).cost(model_name, usage)


def cost_estimator(
    model_name: str, max_output_tokens: int, table: PriceTable | None = None
) -> Callable[[ModelRequest], float]:
    """A ``request -> dollars`` function for budget guards, bound to one model and output cap.

    Unknown models estimate at 0 rather than blocking every call.
    """
    resolved = table or PriceTable()

    def estimate(request: ModelRequest) -> float:
        price = resolved.lookup(model_name)
        if price is None:
            return 0.0
        return price.cost(Usage(estimate_request_tokens(request), max_output_tokens))

    return estimate


class PricedModel:
    """Wraps a model and sets ``response.cost_usd`` from a :class:`PriceTable`.

    A cost the inner model already set is kept. A model without a price leaves ``cost_usd`` at
    ``None`` and marks ``meta["price_unknown"] = True`` rather than failing the call.
    """

    def __init__(self, inner: Model, table: PriceTable | None = None) -> None:
        self.inner = inner
        self.table = table if table is not None else PriceTable()

    @property
    def name(self) -> str:
        return self.inner.name

    async def request(self, request: ModelRequest) -> ModelResponse:
        response = await self.inner.request(request)
        if response.cost_usd is not None:
            return response
        price = self.table.lookup(response.model or self.inner.name)
        if price is None:
            response.meta["price_unknown"] = True
            return response
        total = price.cost(response.usage)
        for prior in response.meta.get("prior_calls", []):
            total += self._prior_cost(prior)
        response.cost_usd = total
        return response

    def _prior_cost(self, prior: Mapping[str, Any]) -> float:
        if prior.get("cost_usd") is not None:
            return float(prior["cost_usd"])
        price = self.table.lookup(str(prior.get("model", "")))
        if price is None:
            return 0.0
        return price.cost(Usage.from_dict(prior.get("usage", {})))
