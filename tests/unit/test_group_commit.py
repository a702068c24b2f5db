"""Journal flushing: read-only work is group-committed, side effects never wait."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tether import (
    Agent,
    Limits,
    ModelRequest,
    ModelResponse,
    ScriptedModel,
    ToolCall,
    ToolContext,
    call,
    tool,
)
from tether.engine import Runtime
from tether.journal import Store, writer

SEEN: dict[str, Any] = {}


def durable_types(path: Path) -> list[str]:
    """What another process would find in the journal right now."""
    other = Store(str(path))
    try:
        run_id = other.list_runs()[0].id
        return [e.type for e in other.events(run_id)]
    finally:
        other.close()


@tool
def look(key: str) -> str:
    """A read."""
    return f"value of {key}"


class SlowModel:
    """Answers after a pause; on its second call, records what is already on disk."""

    name = "slow"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls = 0

    async def request(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        if self.calls == 1:
            return ModelResponse(tool_calls=[ToolCall("c1", "look", {"key": "a"})])
        await asyncio.sleep(0.2)  # a slow model: the loop is idle meanwhile
        SEEN["while_waiting"] = durable_types(self.path)
        return ModelResponse(text="done")


async def test_finished_read_steps_are_written_while_the_model_thinks(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    runtime = Runtime(Store(str(path)), model=SlowModel(path))
    result = await runtime.run(Agent(name="g", instructions="x", tools=[look]), "go")
    assert result.ok
    # step 1 (a read) reached the disk within the flush interval, before step 2 ended
    assert "tool_finished" in SEEN["while_waiting"]
    assert "run_finished" not in SEEN["while_waiting"]


@tool(effect="write")
def write(ctx: ToolContext, key: str) -> str:
    """A write that checks its own intent is already durable."""
    SEEN["during_write"] = durable_types(SEEN["path"])
    return "written"


async def test_a_side_effect_runs_only_after_its_intent_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    SEEN["path"] = path
    agent = Agent(name="w", instructions="x", tools=[look, write], limits=Limits(max_repeats=10))
    script = [call("look", key="a"), call("write", key="a"), "ok"]
    result = await Runtime(Store(str(path)), model=ScriptedModel(script)).run(agent, "go")
    assert result.ok
    during = SEEN["during_write"]
    assert during[-1] == "tool_started" and during.count("tool_finished") == 1  # the read's


class FirstCallSlowModel:
    """Its first answer takes a while; meanwhile it records whether the run is on record."""

    name = "slow-first"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def request(self, request: ModelRequest) -> ModelResponse:
        await asyncio.sleep(0.2)
        other = Store(str(self.path))
        try:
            runs = other.list_runs()
            SEEN["first_call"] = [(r.status, [e.type for e in other.events(r.id)]) for r in runs]
        finally:
            other.close()
        return ModelResponse(text="done")


async def test_a_run_is_on_record_within_the_interval_even_during_a_slow_first_call(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    result = await Runtime(Store(str(path)), model=FirstCallSlowModel(path)).run(
        Agent(name="s", instructions="x"), "go"
    )
    assert result.ok
    assert SEEN["first_call"] == [("running", ["run_started"])]


async def test_a_run_that_ends_within_the_interval_is_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "FLUSH_INTERVAL", 30.0)  # however slow this machine is
    store = Store(str(tmp_path / "j.db"))
    writes: list[tuple[int, bool]] = []
    original = store.write_group

    def counted(group: Any) -> Any:
        writes.extend((len(w.events), w.new_run is not None) for w in group)
        return original(group)

    store.write_group = counted  # type: ignore[method-assign]
    script = [call("look", key="a"), call("look", key="b"), "done"]
    agent = Agent(name="q", instructions="x", tools=[look])
    result = await Runtime(store, model=ScriptedModel(script)).run(agent, "go")
    assert result.ok
    events = store.events(result.run_id)
    assert writes == [(len(events), True)]  # the row and every event, written once
    record = store.get_run(result.run_id)
    assert record.status == "succeeded" and record.steps == 3 and record.output == "done"


class SleepyModel:
    """Takes 50 ms to answer."""

    name = "sleepy"

    async def request(self, request: ModelRequest) -> ModelResponse:
        await asyncio.sleep(0.05)
        return ModelResponse(text="done")


async def test_a_step_summary_counts_the_model_time_before_the_response(tmp_path: Path) -> None:
    from tether.cli.runs import step_summary

    store = Store(str(tmp_path / "j.db"))
    result = await Runtime(store, model=SleepyModel()).run(Agent(name="z", instructions="x"), "go")
    (step,) = step_summary(store.events(result.run_id))
    assert step["step"] == 1 and step["ms"] >= 45  # the response is journaled after the wait


async def test_events_are_hashed_when_flushed_and_watchers_see_them_hashed(tmp_path: Path) -> None:
    """Events are folded when emitted and hashed (sealed) when flushed, across several flushes;
    an ``on_event`` watcher gets each event hashed, as the journal will hold it."""
    from tether.journal import verify_chain

    store = Store(str(tmp_path / "j.db"))
    path = tmp_path / "j.db"
    seen: list[Any] = []
    for watch in (False, True):
        runtime = Runtime(store, model=SlowModel(path))
        if watch:
            runtime.on_event = seen.append
        result = await runtime.run(Agent(name="g", instructions="x", tools=[look]), "go")
        assert result.ok
        stored = store.events(result.run_id)
        assert verify_chain(result.run_id, stored) is None
        assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert seen == stored and all(e.hash for e in seen)


async def test_a_group_of_awaited_commits_wakes_the_event_loop_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every wake-up of the loop from the writer thread is a switch of the interpreter's lock:
    the runs awaiting one group's commit are told together, one call for their loop."""
    import threading
    import time

    from tether.journal import GENESIS, RunRecord, make_event
    from tether.journal.writes import JournalWrite

    store = Store(str(tmp_path / "t.db"))
    loop = asyncio.get_running_loop()
    wakeups: list[str] = []
    original = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "tether-journal-writer":
            wakeups.append(getattr(callback, "__name__", repr(callback)))
        return original(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    try:
        writes = []
        for i in range(20):
            now = time.time()
            record = RunRecord(
                f"r{i}",
                "a",
                "1",
                None,
                "running",
                {},
                None,
                None,
                None,
                0,
                0,
                0,
                0.0,
                None,
                None,
                None,
                now,
                now,
            )
            store.create_run(record)
            event = make_event(f"r{i}", 1, "feedback", 0, now, {"m": i}, GENESIS)
            writes.append(JournalWrite([event]))
        with store._lock:  # the writer waits on its first group; the rest queue up behind it
            waiting = [asyncio.ensure_future(store.committer.commit(w)) for w in writes]
            await asyncio.sleep(0.05)
        await asyncio.gather(*waiting)
        assert store.committer.writes == 20
        assert 1 < store.committer.groups < 20  # they were grouped
        assert len(wakeups) == store.committer.groups  # one wake-up a group, not a write
        assert all(store.events(f"r{i}") for i in range(20))
    finally:
        store.close()
