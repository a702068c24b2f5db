"""Redaction end to end: a tool hands back an API key and an email address; neither reaches the
SQLite files (database and WAL), the model's next prompt, or the exported spans."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.otlp_receiver import OTLPReceiver
from tether import Agent, ScriptedModel, call, tool
from tether.engine import Runtime
from tether.journal import Store
from tether.telemetry import Redactor, export_run, otlp_tracer_provider

API_KEY = "sk-proj-Qm7Wn2Xc9Vb4Lk8Jh3Gf6Ds1Az5Po0Iu_Yt7Re2Wq9Ea4Sd-Zx6Cv3Bn8Mk1"
EMAIL = "amelia.ito8974@example.com"


@tool
def get_integration(name: str) -> dict[str, Any]:
    """Read an integration's settings."""
    return {
        "name": name,
        "endpoint": "https://payments.example.net/v2",
        "api_key": API_KEY,
        "notes": f"rotated by {EMAIL}; the key {API_KEY} expires in 30 days",
        "owner": {"email": EMAIL, "team": "billing"},
    }


def make_agent() -> Agent:
    return Agent(name="ops", instructions="Answer questions about integrations.",
                 tools=[get_integration])  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TETHER_REDACT", "TETHER_REDACT_PATTERNS", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def db_bytes(path: Path) -> bytes:
    """The database file and its write-ahead log, as written so far."""
    data = b""
    for suffix in ("", "-wal", "-journal"):
        f = Path(str(path) + suffix)
        if f.exists():
            data += f.read_bytes()
    return data


async def run_once(store: Store, redactor: Redactor | None) -> tuple[str, Runtime]:
    script: list[Any] = [
        call("get_integration", name="payments"),
        f"The payments integration is owned by {EMAIL} and its key expires in 30 days.",
    ]
    runtime = Runtime(store, model=ScriptedModel(script), redactor=redactor)
    result = await runtime.run(make_agent(), "When does the payments key expire?")
    assert result.status == "succeeded", result.reason
    return result.run_id, runtime


async def test_key_and_email_never_reach_the_disk_the_model_or_the_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tether.db"
    store = Store(str(path))
    run_id, runtime = await run_once(store, Redactor(emails=True))

    on_disk = db_bytes(path)
    assert b"get_integration" in on_disk and b"payments.example.net" in on_disk  # it was written
    assert API_KEY.encode() not in on_disk
    assert EMAIL.encode() not in on_disk
    assert b"[REDACTED:openai_key]" in on_disk and b"[REDACTED:email]" in on_disk

    finished = next(e for e in store.events(run_id) if e.type == "tool_finished").payload
    result = json.loads(finished["content"])  # the result, journaled once as the model saw it
    assert "result" not in finished and finished["result_form"] == "json"
    assert result["api_key"] == "[REDACTED:secret]"  # a credential key: masked whole
    assert result["owner"]["email"] == "[REDACTED:email]"
    assert result["notes"] == (
        "rotated by [REDACTED:email]; the key [REDACTED:openai_key] expires in 30 days"
    )
    record = store.get_run(run_id)
    assert record.output == (
        "The payments integration is owned by [REDACTED:email] and its key expires in 30 days."
    )

    # the model's next prompt came from the redacted journal
    last_prompt = runtime.model.requests[-1].messages  # type: ignore[attr-defined]
    prompt_text = json.dumps([m.to_dict() for m in last_prompt])
    assert API_KEY not in prompt_text and EMAIL not in prompt_text
    assert "[REDACTED:openai_key]" in prompt_text

    # spans with content capture on, exported with a redactor that masks nothing: the journal
    # itself is clean
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        provider = otlp_tracer_provider()
        count = export_run(store, run_id, tracer_provider=provider, capture_content=True,
                           redactor=Redactor(secrets=False))  # fmt: skip
        provider.force_flush(10_000)
        provider.shutdown()
        spans = receiver.wait_for_spans(count)
    assert len(spans) == count == 4
    exported = json.dumps([[s.attributes, [e[2] for e in s.events]] for s in spans])
    assert "gen_ai.tool.call.result" in exported and "payments.example.net" in exported
    assert API_KEY not in exported and EMAIL not in exported

    store.close()
    after = db_bytes(path)  # after the WAL is checkpointed into the database
    assert API_KEY.encode() not in after and EMAIL.encode() not in after


async def test_secrets_are_masked_by_default_and_pii_on_request(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    store = Store(str(path))
    await run_once(store, None)  # the runtime's default: Redactor.from_env(), secrets only
    on_disk = db_bytes(path)
    assert API_KEY.encode() not in on_disk
    assert EMAIL.encode() in on_disk  # emails are masked only when asked for
    store.close()


async def test_the_check_would_see_an_unmasked_key(tmp_path: Path) -> None:
    """Control: with a redactor that masks nothing, the same bytes search finds both."""
    path = tmp_path / "tether.db"
    store = Store(str(path))
    await run_once(store, Redactor(secrets=False))
    on_disk = db_bytes(path)
    assert API_KEY.encode() in on_disk and EMAIL.encode() in on_disk
    store.close()
