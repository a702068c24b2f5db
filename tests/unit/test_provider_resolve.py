"""resolve_model: spec strings to models."""

from __future__ import annotations

from typing import Any

import pytest

import tether.models.local as local
from tether.errors import UsageError
from tether.messages import ModelRequest, ModelResponse
from tether.models import ScriptedModel
from tether.models.resolve import resolve_model
from tether.models.retry import RetryModel


class FakeLocal:
    def __init__(self, model_path: str | None = None, **kwargs: Any) -> None:
        self.model_path = model_path

    @property
    def name(self) -> str:
        return "local:fake"

    async def request(self, request: ModelRequest) -> ModelResponse:
        return ModelResponse(text="ok")


@pytest.fixture
def fake_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "LocalModel", FakeLocal)


def test_model_instances_pass_through() -> None:
    model = ScriptedModel(["hi"])
    assert resolve_model(model) is model


def test_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    model = resolve_model("openai:gpt-4o-mini")
    assert model.name == "openai:gpt-4o-mini"
    assert type(model).__name__ == "OpenAICompatModel"


def test_openai_needs_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        resolve_model("openai:gpt-4o-mini")


def test_openai_compat(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model: Any = resolve_model("openai_compat:http://127.0.0.1:8080/v1#smollm2")
    assert model.name == "openai_compat:smollm2"
    assert model.model == "smollm2"
    assert str(model.client.base_url).startswith("http://127.0.0.1:8080/v1")
    assert model.client.api_key == "none"


@pytest.mark.parametrize(
    "spec", ["openai_compat:http://127.0.0.1:8080/v1", "openai_compat:localhost#m", "openai:"]
)
def test_incomplete_specs(spec: str) -> None:
    with pytest.raises(UsageError, match="Accepted model specs"):
        resolve_model(spec)


def test_anthropic(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("anthropic")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    model = resolve_model("anthropic:claude-sonnet-4-6")
    assert model.name == "anthropic:claude-sonnet-4-6"


def test_anthropic_needs_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY"):
        resolve_model("anthropic:claude-sonnet-4-6")


def test_local_is_the_server_model_retried(fake_local: None) -> None:
    # a crashed server fails one attempt; the retry runs on a restarted server
    model: Any = resolve_model("local")
    assert isinstance(model, RetryModel) and isinstance(model.inner, FakeLocal)
    assert model.inner.model_path is None and model.max_attempts > 1
    model = resolve_model("local:/models/other.gguf")
    assert model.inner.model_path == "/models/other.gguf"


def test_none_uses_env_then_local(fake_local: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_MODEL", raising=False)
    assert isinstance(resolve_model(None).inner, FakeLocal)  # type: ignore[attr-defined]
    monkeypatch.setenv("TETHER_MODEL", "bogus:thing")
    with pytest.raises(UsageError, match="unknown model spec 'bogus:thing'"):
        resolve_model(None)


def test_scripted_is_not_resolvable() -> None:
    with pytest.raises(UsageError, match="ScriptedModel"):
        resolve_model("scripted")


def test_unknown_spec_lists_forms() -> None:
    with pytest.raises(UsageError) as info:
        resolve_model("gpt-4o")
    message = str(info.value)
    for form in ("openai:<model>", "openai_compat:<base_url>#<model>", "anthropic:", "local"):
        assert form in message
