"""LocalModel requests and error mapping, without a server (that is an integration test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tether.messages import Message, ModelRequest
from tether.models.local import LocalModel, ServerSettings, map_error, model_home

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
openai = pytest.importorskip("openai")

TOOLS = [
    {
        "name": "lookup",
        "description": "Look an order up.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    }
]


def test_the_grammar_travels_in_the_body(tmp_path: Path) -> None:
    model = LocalModel(home=tmp_path, max_tokens=64)
    request = ModelRequest(
        [Message("system", "Be brief."), Message("user", "Order #W1?")],
        tools=TOOLS,
        params={"top_k": 5},
    )
    kwargs, _ = model._build(request)
    body = model.body(kwargs)
    assert "response_format" not in body and "tools" not in body
    assert body["max_tokens"] == 64 and body["temperature"] == 0.0
    assert body["extra_body"]["top_k"] == 5
    grammar = body["extra_body"]["grammar"]
    assert '"\\"lookup\\""' in grammar or "lookup" in grammar
    assert r'char ::= [^"\\\x7F\x00-\x1F]' in grammar  # no raw control characters in strings
    assert "lookup(order_id: string)" in body["messages"][0]["content"]


def test_the_client_process_never_loads_llama_cpp() -> None:
    # grammars are compiled from llama-cpp-python's pure-Python file alone: no native library here
    code = (
        "import sys, tether.models.local as local, tether.models.local_prompt as lp\n"
        "lp.json_grammar({'type': 'object', 'properties': {'a': {'type': 'string'}}})\n"
        "print(sorted(m for m in sys.modules if m.startswith('llama_cpp')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout.replace("'", '"')) == []


def test_a_lost_server_is_a_retryable_error() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    error = map_error(openai.APIConnectionError(request=request), openai, "local:m")
    assert error.retryable and "local model server stopped answering" in str(error)
    timeout = map_error(openai.APITimeoutError(request=request), openai, "local:m")
    assert timeout.retryable and type(timeout).__name__ == "ModelTimeout"


def test_home_and_settings_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TETHER_MODEL_DIR", str(tmp_path / "models"))
    assert model_home() == tmp_path / "models" and (tmp_path / "models").is_dir()
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    one, two = ServerSettings(gguf, n_ctx=1024), ServerSettings(gguf, n_ctx=2048)
    assert one.key() == ServerSettings(gguf, n_ctx=1024).key() != two.key()


@pytest.mark.parametrize(("busy", "threads"), [(0.1, 2), (0.4, 2), (0.6, 1), (1.2, 1), (7.5, 1)])
def test_the_server_runs_a_thread_per_idle_core(
    monkeypatch: pytest.MonkeyPatch, busy: float, threads: int
) -> None:
    from tether.models import local_server

    monkeypatch.setattr(local_server.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert local_server.idle_cores(busy) == threads


def test_busy_cores_are_measured_now_not_averaged_over_a_minute() -> None:
    """A process spinning on one core is seen at once (a load average would lag behind it)."""
    from tether.models import local_server

    cores = len(os.sched_getaffinity(0))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = local_server.busy_cores(window=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.7 <= busy <= cores
