"""The step loop: validation, decisions, approvals, waiting, budgets and bad input."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import hashlib
import json
import threading
import time
from typing import Any, Literal

import pydantic
import pytest

from tether import Agent, Limits, ScriptedModel, ToolContext, ToolError, call, tool
from tether.builtins import ask_human
from tether.engine import Runtime, rebuild_state
from tether.engine.state import CallStage
from tether.errors import InvalidEdit
from tether.journal import Store, verify_chain
from tether.journal.events import decision_of, request_of
from tether.models.scripted import raw_call
from tether.policy import Decision, Limit, PastCall, Proposal, rule

EXECUTED: list[tuple[str, Any]] = []


@tool
def lookup(order_id: str) -> dict[str, Any]:
    """Look up an order."""
    if order_id == "missing":
        raise ToolError("order missing not found")
    return {"order_id": order_id, "status": "pending", "total": 30}


@tool
def slow_lookup(key: str) -> dict[str, Any]:
    """A slow read (to observe parallelism)."""
    time.sleep(0.2)
    return {"key": key, "thread": threading.get_ident()}


@tool(effect="write")
def update_address(order_id: str, address: str) -> str:
    """Change the shipping address."""
    EXECUTED.append(("update_address", address))
    return "updated"


@tool(effect="irreversible")
def refund(ctx: ToolContext, order_id: str, amount: float) -> str:
    """Refund money."""
    EXECUTED.append(("refund", amount))
    return f"refunded {amount}"


@tool
def huge() -> str:
    """Returns 10 MB of text."""
    return "y" * 10_000_000


@rule("refund-cap", tools=["refund"])
def refund_cap(p: Proposal) -> Decision | None:
    return Decision.deny("refunds above 50 need a supervisor") if p.args["amount"] > 50 else None


@rule("no-po-box", tools=["update_address"])
def no_po_box(p: Proposal) -> Decision | None:
    if "PO BOX" in p.args["address"].upper():
        return Decision.escalate("PO boxes need a human check")
    return None


def make_agent(**kw: Any) -> Agent:
    base: dict[str, Any] = dict(
        name="t",
        instructions="test agent",
        tools=[lookup, slow_lookup, update_address, refund, huge, ask_human],
        policy=[refund_cap, no_po_box],
    )
    base.update(kw)
    return Agent(**base)


@pytest.fixture(autouse=True)
def _clear() -> None:
    EXECUTED.clear()


def runtime(store: Store, script: list[Any]) -> Runtime:
    return Runtime(store, model=ScriptedModel(script))


def types(store: Store, run_id: str) -> list[str]:
    return [e.type for e in store.events(run_id)]


def payloads(store: Store, run_id: str, type_: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run_id) if e.type == type_]


async def test_simple_run_succeeds_and_journal_verifies(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [call("lookup", order_id="A"), "It is pending."])
    result = await rt.run(make_agent(), "where is A?")
    assert result.status == "succeeded" and result.output == "It is pending."
    events = sqlite_store.events(result.run_id)
    assert verify_chain(result.run_id, events) is None
    assert types(sqlite_store, result.run_id) == [
        "run_started",
        "model_response",
        "tool_proposed",
        "tool_finished",
        "model_response",
        "run_finished",
    ]
    # each response records what was asked and opens its step
    responses = [e for e in events if e.type == "model_response"]
    assert [e.step for e in responses] == [1, 2]
    assert [e.payload["request"]["messages"] for e in responses] == [2, 4]
    assert responses[0].payload["request"]["tools"] == len(make_agent().tools)
    # a plainly allowed read: its proposal carries the allow, its result follows
    (proposed,) = payloads(sqlite_store, result.run_id, "tool_proposed")
    (finished,) = payloads(sqlite_store, result.run_id, "tool_finished")
    assert proposed["args"] == {"order_id": "A"} and proposed["effect"] == "read"
    assert proposed["decision"] == "allow" and proposed["rule"] and proposed["reason"]
    assert finished["ok"] is True and "pending" in finished["content"]
    assert "args" not in finished and "decision" not in finished  # one shape per fact
    folded = rebuild_state(result.run_id, events[:4])
    assert folded.calls[0].decision == "allow" and folded.calls[0].stage is CallStage.DONE
    assert folded.call_counts == {"lookup" + '{"order_id":"A"}': 1}


KEY = "sk-proj-" + "Z" * 32


async def test_a_secret_in_the_input_is_masked_after_the_agent_was_found_clean(
    sqlite_store: Store,
) -> None:
    """An agent's snapshot is checked for secrets once; every later run still checks its
    input, and the system prompt the model sees is the agent's instructions."""
    agent = make_agent(instructions="Résumé of a long policy ☃")
    for text in ("first run", f"use {KEY} please", f"again {KEY}"):
        result = await runtime(sqlite_store, ["ok"]).run(agent, text)
        (started,) = payloads(sqlite_store, result.run_id, "run_started")
        assert KEY not in json.dumps(started) and "instructions" not in started
        assert started["agent"]["instructions"] == agent.instructions
        assert started["input"] == text.replace(KEY, "[REDACTED:openai_key]")
        state = rebuild_state(result.run_id, sqlite_store.events(result.run_id))
        assert state.messages[0].content == agent.instructions
        assert KEY not in state.messages[1].content


@pytest.mark.parametrize("raw", [False, True], ids=["object", "json-text"])
async def test_the_policy_and_the_journal_see_the_same_masked_arguments(
    sqlite_store: Store, raw: bool
) -> None:
    """Arguments are masked before the policy decides, whether the model sent them as an object
    or as JSON text, and a clean call's arguments reach the policy unchanged."""
    seen: list[dict[str, Any]] = []

    @rule("watch", tools=["lookup"])
    def watch(p: Proposal) -> Decision | None:
        seen.append(dict(p.args))
        return None

    secret = {"order_id": f"A {KEY}"}
    calls = [raw_call("lookup", json.dumps(secret)) if raw else call("lookup", **secret)]
    script = [call("lookup", order_id="B"), calls, "ok"]
    result = await runtime(sqlite_store, script).run(make_agent(policy=[watch]), "go")
    masked = {"order_id": "A [REDACTED:openai_key]"}
    assert seen == [{"order_id": "B"}, masked]
    journaled = [p["args"] for p in payloads(sqlite_store, result.run_id, "tool_proposed")]
    assert journaled == [{"order_id": "B"}, masked]
    state = rebuild_state(result.run_id, sqlite_store.events(result.run_id))
    assert [c.args for c in state.history] == journaled


async def test_every_part_of_a_step_from_outside_is_checked_for_secrets(
    sqlite_store: Store,
) -> None:
    """The check reads what came from the model, the tool and the rules, not the engine's own
    fields; a secret in any of them is masked in the journal and in the next prompt."""
    from tether.messages import ModelResponse, ToolCall

    @tool
    def leaky(order_id: str) -> str:
        """Return a credential by mistake."""
        return f"order {order_id} was paid with {KEY}"

    @rule("chatty", tools=["leaky", "lookup"])
    def chatty(p: Proposal) -> Decision | None:
        return Decision.allow(f"allowed after checking {KEY}")

    said = ModelResponse(
        text=f"I see {KEY}", tool_calls=[ToolCall("c1", "leaky", {"order_id": "A"})]
    )
    rt = runtime(sqlite_store, [said, call("lookup", order_id="B"), "done"])
    result = await rt.run(make_agent(tools=[leaky, lookup], policy=[chatty]), "go")
    assert result.ok
    events = sqlite_store.events(result.run_id)
    assert KEY not in json.dumps([e.payload for e in events])
    response = next(e.payload for e in events if e.type == "model_response")
    leaked, clean = (e.payload for e in events if e.type == "tool_finished")
    assert response["response"]["text"] == "I see [REDACTED:openai_key]"
    assert leaked["content"] == "order A was paid with [REDACTED:openai_key]"
    # a clean result whose allow quotes a secret: the reason alone gives it away
    assert json.loads(clean["content"])["order_id"] == "B"
    reasons = [e.payload["reason"] for e in events if e.type == "tool_proposed"]
    assert reasons == ["allowed after checking [REDACTED:openai_key]"] * 2
    last_prompt = rt.model.requests[-1].messages  # type: ignore[union-attr]
    assert KEY not in json.dumps([m.to_dict() for m in last_prompt])


async def test_a_secret_in_the_agent_itself_is_masked_in_every_run(sqlite_store: Store) -> None:
    agent = make_agent(instructions=f"Call the API with {KEY}.")
    for _ in range(2):
        result = await runtime(sqlite_store, ["ok"]).run(agent, "go")
        (started,) = payloads(sqlite_store, result.run_id, "run_started")
        assert KEY not in json.dumps(started)
        assert "[REDACTED:openai_key]" in started["agent"]["instructions"]


async def test_a_read_that_will_not_simply_run_journals_its_proposal_first(
    sqlite_store: Store,
) -> None:
    """Paused (or refused by a limit), a read's proposal is an event of its own, before the
    event that stops it; resuming then runs it once and counts it once."""
    sqlite_store.set_paused("t", True, by="ops", reason="incident")
    rt = runtime(sqlite_store, [call("lookup", order_id="A"), call("lookup", order_id="A"), "ok"])
    result = await rt.run(make_agent(), "go")
    assert result.status == "waiting_input"
    assert types(sqlite_store, result.run_id)[-2:] == ["tool_proposed", "input_requested"]
    sqlite_store.set_paused("t", False, by="ops")
    result = await rt.resume(result.run_id, make_agent())
    assert result.ok
    events = sqlite_store.events(result.run_id)
    assert verify_chain(result.run_id, events) is None
    assert [e.type for e in events].count("tool_proposed") == 2  # once per call, not per resume
    state = rebuild_state(result.run_id, events)
    assert state.call_counts == {"lookup" + '{"order_id":"A"}': 2}


async def test_identical_reads_in_one_turn_each_count_once(sqlite_store: Store) -> None:
    turn = [call("lookup", order_id="A"), call("lookup", order_id="A")]
    result = await runtime(sqlite_store, [turn, "ok"]).run(make_agent(), "go")
    events = sqlite_store.events(result.run_id)
    assert [e.type for e in events].count("tool_finished") == 2
    assert rebuild_state(result.run_id, events).call_counts == {"lookup" + '{"order_id":"A"}': 2}
    run = sqlite_store.get_run(result.run_id)
    assert run.status == "succeeded" and run.steps == 2 and run.input_tokens > 0


async def test_decisions_other_than_allow_are_events_of_their_own(sqlite_store: Store) -> None:
    rt = runtime(
        sqlite_store,
        [call("lookup", order_id="A"), call("refund", order_id="A", amount=5000), "ok"],
    )
    result = await rt.run(make_agent(), "refund A")
    events = sqlite_store.events(result.run_id)
    decided = [decision_of(e.data) for e in events]
    kinds = [d.decision for d in decided if d is not None]
    assert kinds[0] == "allow" and len(kinds) == 2 and kinds[1] != "allow"
    assert [e.type for e in events if e.type == "policy_decision"] == ["policy_decision"]


def _journal(run_id: str, bodies: list[tuple[str, int, dict[str, Any]]]) -> list[Any]:
    """Events of a run as an older version would have written them (type, step, payload)."""
    from tether.journal.chain import GENESIS, make_event

    events, prev = [], GENESIS
    for seq, (type_, step, body) in enumerate(bodies, start=1):
        ev = make_event(run_id, seq, type_, step, 1.0 + seq, body, prev)
        events.append(ev)
        prev = ev.hash
    return events


def test_older_journals_with_a_request_event_and_a_decision_per_call_still_fold() -> None:
    """Journals written before requests and allows were folded into other events."""
    run_id = "r" * 32
    bodies: list[tuple[str, int, dict[str, Any]]] = [
        ("run_started", 0, {"agent": {}, "instructions": "be brief", "input": "hi"}),
        ("model_request", 1, {"model": "m", "messages": 2, "tools": 1}),
        (
            "model_response",
            1,
            {
                "response": {
                    "text": "",
                    "tool_calls": [{"id": "c1", "name": "lookup", "arguments": {"order_id": "A"}}],
                    "usage": {"input_tokens": 3},
                }
            },
        ),
        (
            "tool_proposed",
            1,
            {"call_id": "c1", "tool": "lookup", "effect": "read", "args": {"order_id": "A"}},
        ),
        (
            "policy_decision",
            1,
            {
                "call_id": "c1",
                "tool": "lookup",
                "decision": "allow",
                "rule": "effect-default",
                "reason": "reads are allowed",
            },
        ),
        ("tool_finished", 1, {"call_id": "c1", "ok": True, "content": "pending"}),
    ]
    events = _journal(run_id, bodies)
    state = rebuild_state(run_id, events)
    assert state.step == 1 and state.model_requests == 1 and state.input_tokens == 3
    assert state.calls[0].decision == "allow" and state.calls[0].stage is CallStage.DONE
    assert [request_of(e.data) is not None for e in events].count(True) == 1
    assert [decision_of(e.data) is not None for e in events].count(True) == 1


@tool
def note(topic: str) -> str:
    """Return a note as text (text that looks like JSON stays text)."""
    return f'{{"topic": "{topic}"}}'


@tool
def nothing() -> None:
    """Return nothing."""


async def test_results_are_journaled_once_and_rules_read_them_back(sqlite_store: Store) -> None:
    seen: list[list[tuple[str, bool, Any]]] = []

    @rule("look-back", tools=["update_address"])
    def look_back(p: Proposal) -> Decision | None:
        seen.append([(c.tool, c.ok, c.result) for c in p.history])
        return None

    script: list[Any] = [
        [call("lookup", order_id="A"), call("note", topic="x"), call("nothing")],
        call("lookup", order_id="missing"),
        call("update_address", order_id="A", address="1 Main St"),
        "done",
    ]
    agent = make_agent(tools=[lookup, note, nothing, update_address], policy=[look_back])
    result = await runtime(sqlite_store, script).run(agent, "go")
    assert result.ok, result.reason
    expected = [
        ("lookup", True, {"order_id": "A", "status": "pending", "total": 30}),
        ("note", True, '{"topic": "x"}'),
        ("nothing", True, None),
        ("lookup", False, None),
    ]
    assert seen == [expected]
    finished = payloads(sqlite_store, result.run_id, "tool_finished")
    assert all("result" not in f for f in finished)  # the content alone holds the result
    assert [f.get("result_form") for f in finished] == ["json", "text", "json", None, "text"]
    # a resumed run's rules see what the live run's saw
    state = rebuild_state(result.run_id, sqlite_store.events(result.run_id))
    assert [(c.tool, c.ok, c.result) for c in state.history][:4] == expected
    assert state.history[0] == PastCall("lookup", {"order_id": "A"}, True, expected[0][2])


def test_older_journals_with_a_result_beside_the_content_still_fold() -> None:
    run_id = "o" * 32
    call_ = {"id": "c1", "name": "lookup", "arguments": {"order_id": "A"}}
    bodies: list[tuple[str, int, dict[str, Any]]] = [
        ("run_started", 0, {"agent": {"instructions": "be brief"}, "input": "hi"}),
        ("model_response", 1, {"response": {"text": "", "tool_calls": [call_]}}),
        (
            "tool_finished",
            1,
            {
                "call_id": "c1",
                "tool": "lookup",
                "effect": "read",
                "args": {"order_id": "A"},
                "decision": "allow",
                "rule": "effect-default",
                "reason": "read tool",
                "ok": True,
                "content": '{"order_id":"A"}',
                "result": {"order_id": "A"},
            },
        ),
    ]
    events = _journal(run_id, bodies)
    state = rebuild_state(run_id, events)
    assert [(c.tool, c.result) for c in state.history] == [("lookup", {"order_id": "A"})]


async def test_read_calls_in_one_turn_run_in_parallel(sqlite_store: Store) -> None:
    calls = [call("slow_lookup", key=str(i)) for i in range(4)]
    rt = runtime(sqlite_store, [calls, "done"])
    started = time.perf_counter()
    result = await rt.run(make_agent(), "go")
    elapsed = time.perf_counter() - started
    assert result.ok
    finished = payloads(sqlite_store, result.run_id, "tool_finished")
    results = [json.loads(f["content"]) for f in finished]
    assert len({r["thread"] for r in results}) > 1  # ran on several threads
    assert elapsed < 0.2 * 4  # not one after another
    # results are journaled in the order the model proposed them
    assert [r["key"] for r in results] == ["0", "1", "2", "3"]


async def test_unknown_tool_is_fed_back_and_run_continues(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [call("delete_everything"), "ok"])
    result = await rt.run(make_agent(), "go")
    assert result.ok
    failure = payloads(sqlite_store, result.run_id, "validation_failed")[0]
    assert "unknown tool 'delete_everything'" in failure["error"] and "lookup" in failure["error"]
    state = rebuild_state(result.run_id, sqlite_store.events(result.run_id))
    assert any(m.role == "tool" and "unknown tool" in m.content for m in state.messages)


async def test_malformed_json_arguments(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [raw_call("lookup", '{"order_id": "A"'), "ok"])
    result = await rt.run(make_agent(), "go")
    assert result.ok
    error = payloads(sqlite_store, result.run_id, "validation_failed")[0]["error"]
    assert "not valid JSON" in error


async def test_wrong_argument_types(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [call("refund", order_id="A", amount="lots"), call("lookup"), "ok"])
    result = await rt.run(make_agent(), "go")
    assert result.ok
    errors = [p["error"] for p in payloads(sqlite_store, result.run_id, "validation_failed")]
    assert "amount" in errors[0] and "valid number" in errors[0]
    assert "order_id" in errors[1] and "required" in errors[1].lower()
    assert EXECUTED == []


@tool(effect="write")
def tag(order_id: str, labels: dict[str, Any]) -> str:
    """Attach free-form labels to an order."""
    EXECUTED.append(("tag", labels))
    return "tagged"


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_numbers_are_invalid_arguments(store: Store, number: str) -> None:
    """``NaN`` passes ``amount > 50`` and JSON cannot hold it: the model is told, nothing runs,
    no approval waits on it, and the journal stays valid JSON."""
    rt = runtime(
        store,
        [
            raw_call("refund", '{"order_id": "A", "amount": ' + number + "}"),
            call("tag", order_id="A", labels={"score": float(number.replace("1e999", "inf"))}),
            "ok",
        ],
    )
    result = await rt.run(make_agent(tools=[refund, tag]), "go")
    assert result.ok
    errors = [p["error"] for p in payloads(store, result.run_id, "validation_failed")]
    assert len(errors) == 2
    assert "amount" in errors[0] and "finite number" in errors[0]
    assert "labels.score" in errors[1] and "finite number" in errors[1]
    assert EXECUTED == [] and store.list_approvals(status=None) == []
    assert not any(e.type == "tool_proposed" for e in store.events(result.run_id))


async def test_oversized_tool_result_is_truncated_and_kept(sqlite_store: Store) -> None:
    agent = make_agent(limits=Limits(max_tool_result_chars=50_000))
    rt = runtime(sqlite_store, [call("huge"), "ok"])
    result = await rt.run(agent, "go")
    assert result.ok
    finished = payloads(sqlite_store, result.run_id, "tool_finished")[0]
    assert finished["full_result_chars"] == 10_000_000
    assert len(finished["content"]) < 51_000 and "truncated" in finished["content"]
    assert sqlite_store.get_blob(finished["full_result_blob"]) == "y" * 10_000_000
    # the model saw only the truncated text
    last_request = rt.model.requests[-1]  # type: ignore[attr-defined]
    assert max(len(m.content) for m in last_request.messages) < 51_000


async def test_tool_error_is_fed_back(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [call("lookup", order_id="missing"), "sorry"])
    result = await rt.run(make_agent(), "go")
    finished = payloads(sqlite_store, result.run_id, "tool_finished")[0]
    assert finished["ok"] is False and "not found" in finished["content"]


async def test_deny_reason_reaches_the_model(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [call("refund", order_id="A", amount=80), "cannot"])
    result = await rt.run(make_agent(), "go")
    assert result.ok and EXECUTED == []
    decision = payloads(sqlite_store, result.run_id, "policy_decision")[0]
    assert decision == {
        "call_id": decision["call_id"],
        "tool": "refund",
        "decision": "deny",
        "reason": "refunds above 50 need a supervisor",
        "rule": "refund-cap",
    }
    seen = rt.model.requests[-1].messages  # type: ignore[attr-defined]
    assert "refunds above 50 need a supervisor" in seen[-1].content


async def test_escalate_stops_the_run(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [call("update_address", order_id="A", address="PO Box 9"), "x"])
    result = await rt.run(make_agent(), "go")
    assert result.status == "escalated" and "PO boxes" in (result.reason or "")
    assert EXECUTED == []
    assert sqlite_store.get_run(result.run_id).status == "escalated"


async def test_write_is_allowed_by_default(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [call("update_address", order_id="A", address="1 Main St"), "ok"])
    result = await rt.run(make_agent(), "go")
    assert result.ok and EXECUTED == [("update_address", "1 Main St")]


async def test_approve_then_resume_executes_once(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [call("refund", order_id="A", amount=20), "done"])
    agent = make_agent()
    result = await rt.run(agent, "go")
    assert result.status == "waiting_approval" and EXECUTED == []
    approval = sqlite_store.list_approvals()[0]
    assert approval.tool == "refund" and approval.args == {"order_id": "A", "amount": 20.0}
    rt.approve(approval.id, by="alice")
    result = await rt.resume(result.run_id, agent)
    assert result.ok and EXECUTED == [("refund", 20.0)]
    decided = payloads(sqlite_store, result.run_id, "approval_decided")[0]
    assert decided["by"] == "alice" and decided["status"] == "approved"
    # resuming a finished run does nothing more
    await rt.resume(result.run_id, agent)
    assert EXECUTED == [("refund", 20.0)]


async def test_resume_records_whether_the_agent_is_the_one_that_started(
    sqlite_store: Store,
) -> None:
    script = [call("refund", order_id="A", amount=20), "done"]
    agent = make_agent(instructions="Résumé: be kind ☃")  # non-ASCII, as UTF-8 in the hash
    first = await runtime(sqlite_store, script).run(agent, "go")
    second = await runtime(sqlite_store, script).run(agent, "go again")
    rt = runtime(sqlite_store, ["done", "done"])
    for approval in sqlite_store.list_approvals():
        rt.approve(approval.id, by="alice")
    await rt.resume(first.run_id, agent)
    changed = make_agent(instructions="Résumé: be brief")
    await rt.resume(second.run_id, changed)
    assert payloads(sqlite_store, first.run_id, "run_resumed")[0]["same_agent"] is True
    assert payloads(sqlite_store, second.run_id, "run_resumed")[0]["same_agent"] is False
    # a run started by an older version recorded the hash of ASCII-escaped JSON
    legacy_text = json.dumps(agent.snapshot(), sort_keys=True, separators=(",", ":"))
    legacy = hashlib.sha256(legacy_text.encode()).hexdigest()
    assert legacy != agent.fingerprint() and agent.has_fingerprint(legacy)
    assert not changed.has_fingerprint(legacy)


async def test_edit_then_policy_denies(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [call("refund", order_id="A", amount=20), "done"])
    agent = make_agent()
    result = await rt.run(agent, "go")
    approval = sqlite_store.list_approvals()[0]
    # the edit is checked before it is recorded: refused with the rule's reason, still pending
    with pytest.raises(InvalidEdit, match="refund-cap: refunds above 50 need a supervisor"):
        rt.approve(approval.id, by="alice", edit={"order_id": "A", "amount": 90}, agent=agent)
    assert sqlite_store.get_approval(approval.id).status == "pending"
    with pytest.raises(InvalidEdit, match="amount"):
        rt.approve(approval.id, by="alice", edit={"order_id": "A", "amount": "lots"}, agent=agent)
    assert sqlite_store.get_approval(approval.id).status == "pending"
    rt.approve(approval.id, by="alice", edit={"order_id": "A", "amount": 15}, agent=agent)
    result = await rt.resume(result.run_id, agent)
    assert result.ok and EXECUTED == [("refund", 15.0)]
    recheck = [
        p for p in payloads(sqlite_store, result.run_id, "policy_decision") if p.get("recheck")
    ]
    assert recheck[0]["decision"] == "allow" and recheck[0]["args"]["amount"] == 15


async def test_edit_recorded_past_the_check_is_still_rechecked(sqlite_store: Store) -> None:
    """An edit written to the store directly (not through Runtime.approve) is re-checked by
    the run: the policy still denies it."""
    rt = runtime(sqlite_store, [call("refund", order_id="A", amount=20), "done"])
    agent = make_agent()
    result = await rt.run(agent, "go")
    approval = sqlite_store.list_approvals()[0]
    over_cap = {"order_id": "A", "amount": 90}
    sqlite_store.decide_approval(
        approval.id, status="edited", decided_by="alice", reason=None, edited_args=over_cap
    )
    result = await rt.resume(result.run_id, agent)
    assert result.ok and EXECUTED == []
    recheck = [
        p for p in payloads(sqlite_store, result.run_id, "policy_decision") if p.get("recheck")
    ]
    assert recheck[0]["decision"] == "deny" and recheck[0]["rule"] == "refund-cap"


async def test_reject_reason_reaches_the_model(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [call("refund", order_id="A", amount=20), "understood"])
    agent = make_agent()
    result = await rt.run(agent, "go")
    rt.reject(sqlite_store.list_approvals()[0].id, reason="customer already got a voucher", by="bo")
    result = await rt.resume(result.run_id, agent)
    assert result.ok and EXECUTED == []
    seen = rt.model.requests[-1].messages  # type: ignore[attr-defined]
    assert "customer already got a voucher" in seen[-1].content


async def test_shadow_mode_never_executes(sqlite_store: Store) -> None:
    agent = make_agent(autonomy={"refund": "shadow", "update_address": "shadow"})
    rt = runtime(
        sqlite_store,
        [
            call("refund", order_id="A", amount=20),
            call("update_address", order_id="A", address="x"),
            "done",
        ],
    )
    result = await rt.run(agent, "go")
    assert result.ok and EXECUTED == []
    assert sqlite_store.list_approvals(status=None) == []
    finished = payloads(sqlite_store, result.run_id, "tool_finished")
    assert all(f["shadow"] for f in finished) and len(finished) == 2


async def test_autonomy_approve_makes_writes_wait(sqlite_store: Store) -> None:
    agent = make_agent(autonomy={"update_address": "approve"})
    rt = runtime(sqlite_store, [call("update_address", order_id="A", address="x"), "done"])
    result = await rt.run(agent, "go")
    assert result.status == "waiting_approval" and EXECUTED == []


async def test_ask_human_waits_for_an_answer(sqlite_store: Store) -> None:
    agent = make_agent()
    rt = runtime(sqlite_store, [call("ask_human", question="Refund in cash?"), "ok, cash"])
    result = await rt.run(agent, "go")
    assert result.status == "waiting_input"
    assert result.waiting_for and result.waiting_for["question"] == "Refund in cash?"
    rt.answer(result.run_id, "yes, cash", by="carol")
    result = await rt.resume(result.run_id, agent)
    assert result.ok
    seen = rt.model.requests[-1].messages  # type: ignore[attr-defined]
    assert "yes, cash" in seen[-1].content


async def test_repeated_failures_ask_a_human(sqlite_store: Store) -> None:
    agent = make_agent(limits=Limits(max_consecutive_failures=3))
    rt = runtime(sqlite_store, [call("nope1"), call("nope2"), call("nope3"), "gave up"])
    result = await rt.run(agent, "go")
    assert result.status == "waiting_input" and result.waiting_for
    assert result.waiting_for["kind"] == "failures"
    rt.answer(result.run_id, "just say you gave up")
    assert (await rt.resume(result.run_id, agent)).ok


async def test_loop_is_nudged_then_escalated(sqlite_store: Store) -> None:
    agent = make_agent(limits=Limits(max_repeats=2, max_consecutive_failures=10))
    script = [call("lookup", order_id="A") for _ in range(10)]
    rt = runtime(sqlite_store, script)
    result = await rt.run(agent, "go")
    assert result.status == "escalated" and "loop" in (result.reason or "")
    executed = payloads(sqlite_store, result.run_id, "tool_finished")
    assert len(executed) == 2  # the third identical call is refused, the fourth stops the run
    assert len(payloads(sqlite_store, result.run_id, "feedback")) == 1


async def test_max_steps_ends_as_budget_exceeded(sqlite_store: Store) -> None:
    agent = make_agent(limits=Limits(max_steps=3, max_repeats=100))
    rt = runtime(sqlite_store, [call("lookup", order_id=str(i)) for i in range(10)])
    result = await rt.run(agent, "go")
    assert result.status == "budget_exceeded" and "step limit" in (result.reason or "")
    assert result.steps == 3


class Answer(pydantic.BaseModel):
    reply: str
    tags: list[str]


async def test_output_schema_is_enforced_with_feedback(sqlite_store: Store) -> None:
    agent = make_agent(output_type=Answer)
    good = json.dumps({"reply": "hi", "tags": ["x"]})
    rt = runtime(sqlite_store, ["not json", "```json\n" + good + "\n```"])
    result = await rt.run(agent, "go")
    assert result.ok and result.output == {"reply": "hi", "tags": ["x"]}
    assert payloads(sqlite_store, result.run_id, "validation_failed")[0]["kind"] == "output"


async def test_output_schema_gives_up_after_retries(sqlite_store: Store) -> None:
    agent = make_agent(output_type=Answer, limits=Limits(max_output_retries=1))
    rt = runtime(sqlite_store, ["nope", "{}", "never"])
    result = await rt.run(agent, "go")
    assert result.status == "failed" and "final output invalid" in (result.reason or "")


async def test_model_error_fails_the_run_cleanly(sqlite_store: Store) -> None:
    rt = runtime(sqlite_store, [call("lookup", order_id="A")])  # then the script runs out
    result = await rt.run(make_agent(), "go")
    assert result.status == "failed" and "no responses left" in (result.reason or "")
    assert "model_error" in types(sqlite_store, result.run_id)
    assert verify_chain(result.run_id, sqlite_store.events(result.run_id)) is None


async def test_kill_switch_stops_tool_execution(sqlite_store: Store) -> None:
    agent = make_agent()
    sqlite_store.set_paused("t", True, by="ops", reason="incident")
    rt = runtime(sqlite_store, [call("update_address", order_id="A", address="x"), "done"])
    result = await rt.run(agent, "go")
    assert result.status == "waiting_input" and EXECUTED == []
    assert (await rt.resume(result.run_id, agent)).status == "waiting_input"  # still paused
    sqlite_store.set_paused("t", False, by="ops")
    result = await rt.resume(result.run_id, agent)
    assert result.ok and EXECUTED == [("update_address", "x")]


async def test_kill_switch_is_shared_by_reads_but_every_write_reads_the_store(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries: list[str] = []
    original, every = sqlite_store._read_paused, sqlite_store.switches
    monkeypatch.setattr(sqlite_store, "_read_paused", lambda a: queries.append(a) or original(a))
    monkeypatch.setattr(sqlite_store, "switches", lambda: queries.append("*") or every())
    agent = make_agent()
    rt = runtime(sqlite_store, [call("lookup", order_id="A"), "ok"])
    assert (await rt.run(agent, "go")).ok and queries == ["t"]
    # another runtime on the same store (a worker may make one per job) reuses the recent value
    other = runtime(sqlite_store, [call("lookup", order_id="B"), "ok"])
    assert (await other.run(agent, "go")).ok and queries == ["t"]
    # paused from elsewhere (another process's store): a read may miss it for up to a second...
    elsewhere = Store(sqlite_store.url)
    elsewhere.set_paused("t", True, by="ops", reason="incident")
    elsewhere.close()
    rt.model = ScriptedModel([call("update_address", order_id="A", address="x"), "done"])
    result = await rt.run(agent, "go")
    # ...but a write always asks the store (one reading of every switch, shared by the runs
    # that ask at that moment), and sees the pause at once
    assert queries == ["t", "*"]
    assert result.status == "waiting_input" and EXECUTED == []


async def test_concurrent_writes_share_one_fresh_kill_switch_reading(store: Store) -> None:
    """Many runs at their side effects at once: one query serves them all, and each still sees
    a reading made after it asked (a pause set before is seen by every one of them)."""
    from tether.engine.switches import SwitchReader

    reader = SwitchReader(store)
    store.set_paused("t", True, by="ops", reason="incident")
    answers = await asyncio.gather(*[reader.read("t") for _ in range(50)])
    assert {a[0] for a in answers} == {True} and 1 <= reader.readings <= 2
    store.set_paused("t", False, by="ops")
    assert await reader.read("t") == (False, "")  # a new reading: the earlier one is stale


async def test_a_run_asking_during_a_reading_waits_for_the_next_one(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading under way started before a later run asked, so that run is served by the next
    reading (and sees a pause set in between); cancelling one waiting run leaves the others."""
    import threading

    from tether.engine.switches import SwitchReader

    reader = SwitchReader(sqlite_store)
    started, release = threading.Event(), threading.Event()
    read = sqlite_store.switches

    def slow() -> dict[str, tuple[bool, str]]:
        switches = read()
        started.set()
        release.wait(5)
        return switches

    monkeypatch.setattr(sqlite_store, "switches", slow)
    first = asyncio.ensure_future(reader.read("t"))
    await asyncio.to_thread(started.wait, 5)  # the first reading is under way, unpaused
    sqlite_store.set_paused("t", True, by="ops", reason="incident")
    later = [asyncio.ensure_future(reader.read("t")) for _ in range(3)]
    await asyncio.sleep(0.01)
    later[0].cancel()
    monkeypatch.setattr(sqlite_store, "switches", read)
    release.set()
    assert await first == (False, "")  # read before the pause
    assert [await f for f in later[1:]] == [(True, "paused by ops: incident")] * 2
    assert later[0].cancelled()
    assert reader.readings == 2  # one for the first, one for all who asked during it


async def test_counter_limit_denies_past_the_cap(sqlite_store: Store) -> None:
    limit = Limit(
        "addr-changes",
        tools=frozenset({"update_address"}),
        max_count=2,
        key=lambda p: p.args["order_id"],
    )
    agent = make_agent(policy=[limit])
    script = [call("update_address", order_id="A", address=f"{i} St") for i in range(3)] + ["ok"]
    result = await runtime(sqlite_store, script).run(agent, "go")
    assert result.ok and len(EXECUTED) == 2
    denied = [
        p
        for p in payloads(sqlite_store, result.run_id, "policy_decision")
        if p["decision"] == "deny"
    ]
    assert denied[0]["rule"] == "addr-changes" and "limit" in denied[0]["reason"]


async def test_empty_input_is_a_usage_error(sqlite_store: Store) -> None:
    from tether.errors import UsageError

    with pytest.raises(UsageError):
        await runtime(sqlite_store, ["x"]).run(make_agent(), "   ")


@tool
def book(
    n: int,
    when: datetime.date,
    amount: decimal.Decimal,
    tags: list[str],
    kind: Literal["a", "b"] = "a",
    note: str | None = None,
) -> str:
    """Book something."""
    return "ok"
