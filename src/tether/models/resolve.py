"""Turn a model spec string (from code, config or the CLI) into a :class:`Model`.

Accepted forms::

    openai:<model>                          OpenAI (key from OPENAI_API_KEY)
    openai_compat:<base_url>#<model>        any OpenAI-compatible server (key from OPENAI_API_KEY,
                                            or "none")
    anthropic:<model>                       Anthropic (key from ANTHROPIC_API_KEY)
    local                                   SmolLM2-135M-Instruct in a supervised llama.cpp server
    local:<path/to/model.gguf>              another GGUF file, the same way

``None`` means the ``TETHER_MODEL`` environment variable, else ``local``. Provider packages are
imported only when their spec is used.
"""

from __future__ import annotations

import os
from typing import Any

from tether.errors import UsageError
from tether.models.base import Model

ACCEPTED_FORMS = (
    "openai:<model> (e.g. openai:gpt-4o-mini)",
    "openai_compat:<base_url>#<model> (e.g. openai_compat:http://127.0.0.1:8000/v1#smollm2)",
    "anthropic:<model> (e.g. anthropic:claude-sonnet-4-6)",
    "local",
    "local:<path/to/model.gguf>",
)

ENV_VAR = "TETHER_MODEL"
# A crashed local server costs one attempt; the next starts a new server.
LOCAL_ATTEMPTS = 3


def _usage(message: str) -> UsageError:
    forms = "\n  ".join(ACCEPTED_FORMS)
    return UsageError(f"{message}\nAccepted model specs:\n  {forms}")


def _build(factory: Any, spec: str, **kwargs: Any) -> Model:
    try:
        model: Model = factory(**kwargs)
    except ImportError as exc:
        raise UsageError(f"model {spec!r} is not available: {exc}") from exc
    except UsageError:
        raise
    except Exception as exc:  # the SDKs raise their own errors for missing keys
        raise UsageError(f"model {spec!r} cannot be created: {exc}") from exc
    return model


def _local(spec: str, model_path: str | None) -> Model:
    """The out-of-process local model, retried: a crashed server is restarted by the next call."""
    from tether.models.local import LocalModel
    from tether.models.retry import RetryModel

    local = _build(LocalModel, spec, model_path=model_path)
    return RetryModel(local, max_attempts=LOCAL_ATTEMPTS, base_delay=0.2, max_delay=2.0)


def resolve_model(spec: str | Model | None) -> Model:
    """The :class:`Model` for ``spec``: a model (returned as is), a spec string, or ``None``.

    Raises :class:`~tether.errors.UsageError` for an unknown or incomplete spec, a missing API key
    or a missing provider package.
    """
    if spec is None:
        spec = os.environ.get(ENV_VAR, "").strip() or "local"
    if not isinstance(spec, str):
        if isinstance(spec, Model):
            return spec
        raise _usage(f"not a model or model spec: {spec!r}")

    text = spec.strip()
    provider, sep, rest = text.partition(":")
    provider = provider.strip().lower()
    rest = rest.strip()

    if provider == "local":
        return _local(text, rest if sep and rest else None)

    if provider == "scripted":
        raise _usage(
            "a scripted model cannot be resolved from a string: build it in code, "
            "e.g. ScriptedModel([...]) from tether.models"
        )

    if provider == "openai":
        if not rest:
            raise _usage(f"missing model name in {text!r}")
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise UsageError(f"model {text!r} needs the OPENAI_API_KEY environment variable")
        from tether.models.openai_compat import OpenAICompatModel

        return _build(OpenAICompatModel, text, model=rest, api_key=key)

    if provider == "openai_compat":
        base_url, _, model_name = rest.partition("#")
        base_url, model_name = base_url.strip(), model_name.strip()
        if not base_url.startswith(("http://", "https://")):
            raise _usage(f"missing or invalid base URL in {text!r}")
        if not model_name:
            raise _usage(f"missing '#<model>' after the base URL in {text!r}")
        from tether.models.openai_compat import OpenAICompatModel

        key = os.environ.get("OPENAI_API_KEY") or "none"
        return _build(OpenAICompatModel, text, model=model_name, base_url=base_url, api_key=key)

    if provider == "anthropic":
        if not rest:
            raise _usage(f"missing model name in {text!r}")
        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise UsageError(f"model {text!r} needs the ANTHROPIC_API_KEY environment variable")
        from tether.models.anthropic import AnthropicModel

        return _build(AnthropicModel, text, model=rest, api_key=key)

    raise _usage(f"unknown model spec {text!r}")
