"""The supervised local model server: real llama.cpp in a child process, killed mid-run.

A native crash (SIGSEGV) or a kill (SIGKILL, as the out-of-memory killer sends) of the server
must not reach the process that holds the runs: the request in flight fails with a retryable
model error, the run journals it, the next attempt starts a new server, and the run completes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Limits, tool
from tether.engine import Runtime
from tether.engine.state import RunStatus
from tether.journal import Store
from tether.messages import Message, ModelRequest, ModelResponse
from tether.models.local import LocalModel, LocalServer, ServerSettings, stop_all
from tether.models.retry import RetryModel

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install 'tether[local]'"
)

# Instruction-set extensions beyond the portable x86-64 baseline (AVX2, FMA, F16C); a build tuned
# to the building CPU reports some of them, and runs only on CPUs that have them.
NATIVE_ONLY = ("AVX512", "AVX_VNNI", "AMX", "AVX512_BF16", "AVX512_VBMI", "AVX512_VNNI")


def test_built_library_stays_at_the_portable_baseline() -> None:
    probe = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    features = {
        name.strip(): value.strip()
        for part in out.split("|")
        if "=" in part
        for name, value in [part.rsplit("=", 1)]
    }
    enabled = {name.split(":")[-1].strip() for name, value in features.items() if value == "1"}
    assert enabled, f"no CPU features reported: {out!r}"
    native = sorted(f for f in enabled if f.startswith(NATIVE_ONLY))
    assert not native, f"llama.cpp was built for this CPU ({native}): rebuild it portable"


class Killer:
    """Sends ``sig`` to the model server once, when the run is in its ``after``-th model call."""

    def __init__(self, model: LocalModel, sig: signal.Signals, after: int) -> None:
        self.model = model
        self.sig = sig
        self.after = after
        self.calls = 0
        self.killed: int | None = None

    @property
    def name(self) -> str:
        return self.model.name

    async def request(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        if self.calls == self.after and self.killed is None:
            state = self.model.server.state
            assert state is not None
            pid = state.pid

            def kill_soon() -> None:
                time.sleep(0.05)  # the request is on its way: the server dies under it
                os.kill(pid, self.sig)

            self.killed = pid
            threading.Thread(target=kill_soon).start()
        request.params = {**request.params, "max_tokens": 48}  # short answers: a quick test
        if self.calls < self.after:  # a tool call first, so the run has more steps to go
            request.params["tool_choice"] = "required"
        return await self.model.request(request)


@tool
def lookup(order_id: str) -> str:
    """Look up an order by id."""
    return json.dumps({"order_id": order_id, "status": "delivered"})


def agent(model: Any) -> Agent:
    return Agent(
        name="desk",
        instructions="You are a support agent. Look the order up, then answer.",
        tools=[lookup],
        model=model,
        limits=Limits(max_steps=3),
    )


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["sigkill", "sigsegv"])
async def test_a_killed_server_is_restarted_and_the_run_goes_on(
    tmp_path: Path, sig: signal.Signals
) -> None:
    local = LocalModel(home=tmp_path, n_ctx=1024)
    killer = Killer(local, sig, after=2)
    model = RetryModel(killer, max_attempts=3, base_delay=0.05)
    store = Store(str(tmp_path / "runs.db"))
    try:
        local.server.ensure()
        first_pid = local.server.state.pid  # type: ignore[union-attr]
        # the first call is answered, the second finds its server killed under it
        ticket = "Where is my order #W2378156?"
        result = await Runtime(store).run(agent(model), ticket)
        events = list(store.events(result.run_id))
    finally:
        store.close()
        local.server.stop()
    assert killer.killed == first_pid and killer.calls >= 2
    retried = [
        e
        for e in events
        if e.type == "model_response" and e.payload["response"]["meta"].get("retry_errors")
    ]
    # the crash is journaled with the call it interrupted, which a new server then answered
    assert len(retried) == 1, [e.type for e in events]
    errors = retried[0].payload["response"]["meta"]["retry_errors"]
    assert "local model server stopped answering" in errors[0]["message"]
    assert local.server.starts == 2  # restarted once, by the retry
    # the run went on after the crash: answered, or out of steps, never failed
    assert result.status in (RunStatus.SUCCEEDED, RunStatus.BUDGET_EXCEEDED)
    assert not [e for e in events if e.type == "model_error"]
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)  # the killed server is gone (reaped)


async def test_processes_share_one_server(tmp_path: Path) -> None:
    settings = ServerSettings(LocalModel(home=tmp_path).model_path, n_ctx=512)
    one, two = LocalServer(settings, home=tmp_path), LocalServer(settings, home=tmp_path)
    try:
        url = one.ensure()
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path\n"
                "from tether.models.local import LocalServer, ServerSettings\n"
                f"s = ServerSettings(Path({str(settings.model_path)!r}), n_ctx=512)\n"
                f"print(LocalServer(s, home=Path({str(tmp_path)!r})).ensure())",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.stdout.strip() == url, child.stderr
        assert two.ensure() == url and two.starts == 0 and one.starts == 1
    finally:
        one.stop()
    assert stop_all(tmp_path) == 0  # stopped: nothing left running


async def test_an_idle_server_exits(tmp_path: Path) -> None:
    path = LocalModel(home=tmp_path).model_path
    server = LocalServer(ServerSettings(path, n_ctx=512), home=tmp_path, idle_timeout=1.0)
    server.ensure()
    state = server.state
    assert state is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server._alive(state):
        await asyncio.sleep(0.2)
    assert not server._alive(state)
    server.ensure()  # and the next request starts a new one
    assert server.starts == 2
    server.stop()


async def test_grammar_keeps_tool_calls_well_formed(tmp_path: Path) -> None:
    local = LocalModel(home=tmp_path, n_ctx=1024)
    tools = agent(local).tool_specs()
    try:
        response = await local.request(
            ModelRequest(
                [Message("system", "You are a support agent."), Message("user", "Order #W1?")],
                tools=tools,
                params={"max_tokens": 48, "tool_choice": "required"},
            )
        )
        log = local.server.log_path.read_text()
    finally:
        local.server.stop()
    # the packaged Q4_1 model was served from its Q4_0 copy, kept beside the server's state
    (copy,) = tmp_path.glob("SmolLM2-135M-Instruct.Q4_1.*.q4_0.gguf")
    assert f"weights {copy.name}" in log
    assert [c.name for c in response.tool_calls] == ["lookup"]
    assert isinstance(response.tool_calls[0].arguments, dict)
    assert set(response.tool_calls[0].arguments) <= {"order_id"}


def test_the_requantized_copy_holds_q4_0_weights_and_is_made_once(tmp_path: Path) -> None:
    from tether.models.local_server import requantized

    source = LocalModel(home=tmp_path).model_path
    copy = requantized(source, "q4_0", tmp_path)
    made = copy.stat().st_mtime_ns
    assert requantized(source, "q4_0", tmp_path) == copy and copy.stat().st_mtime_ns == made
    probe = (
        "import sys, llama_cpp\n"
        "m = llama_cpp.Llama(sys.argv[1], vocab_only=True, verbose=False)\n"
        "print(m.metadata['general.file_type'])"
    )
    types = {}
    for path in (source, copy):
        out = subprocess.run(
            [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=120
        )
        types[path.name] = int(out.stdout.strip())
    import llama_cpp

    assert types == {
        source.name: llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1,
        copy.name: llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    }
