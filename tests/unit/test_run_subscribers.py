"""Subscribers hear of every run that ends; the OpenTelemetry exporter is one, found by its
entry point, and a failing subscriber never fails a run."""

from __future__ import annotations

import logging

import pytest

from tether import Agent, ScriptedModel, tool
from tether.engine import Runtime
from tether.engine.subscribers import ENTRY_POINT_GROUP, installed_subscribers
from tether.journal import Store


@tool
def look(x: int) -> int:
    """Look something up."""
    return x


AGENT = Agent(name="subs", instructions="look", tools=[look])


async def test_subscribers_are_told_of_each_ended_run(tmp_path: object) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    heard: list[tuple[str, str]] = []
    runtime = Runtime(store, model=ScriptedModel(["done"]), subscribers=[])
    runtime.subscribe(lambda st, run_id: heard.append((st.get_run(run_id).status, run_id)))
    result = await runtime.run(AGENT, "hi")
    assert heard == [("succeeded", result.run_id)]  # read back from the store: durable by then
    store.close()


async def test_a_failing_subscriber_is_logged_and_the_run_stands(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    heard: list[str] = []

    def broken(_store: Store, _run_id: str) -> None:
        raise RuntimeError("collector down")

    runtime = Runtime(
        store,
        model=ScriptedModel(["done"]),
        subscribers=[broken, lambda _s, run_id: heard.append(run_id)],
    )
    with caplog.at_level(logging.WARNING, logger="tether.subscribers"):
        result = await runtime.run(AGENT, "hi")
    assert result.status == "succeeded" and heard == [result.run_id]
    assert "collector down" in caplog.text
    store.close()


def test_the_otlp_exporter_subscribes_only_when_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib.metadata import entry_points

    names = {e.name for e in entry_points(group=ENTRY_POINT_GROUP)}
    assert "otlp" in names  # declared in pyproject.toml, installed with the package
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert installed_subscribers() == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    (exporter,) = installed_subscribers()
    assert exporter.__module__ == "tether.telemetry.otel"
