"""Smoke tests of the compounding and cost benches on one or two tasks."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))

from examples.support_desk import data

pytestmark = pytest.mark.skipif(not data.available(), reason="τ²-bench retail data not found")


def _bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_compounding_trials_of_one_task() -> None:
    bench = _bench("compounding")
    trials = bench.run_unit("0", (0.0, 0.05), 2, 7)
    systems = sorted({(t.system, t.rate) for t in trials})
    assert systems == [("bare", 0.0), ("bare", 0.05), ("tether", 0.0), ("tether", 0.05),
                       ("tether-careful", 0.05)]  # fmt: skip
    clean = [t for t in trials if t.rate == 0.0]
    assert all(t.passed and not t.faulty and not t.faults for t in clean)
    summary = bench.summarise([t for t in trials if t.system == "tether"], 2)
    assert summary.passk == 1.0 and summary.wrong_breaking == 0


async def test_the_bare_loop_executes_a_policy_breaking_call_tether_denies() -> None:
    """A wrong order id of another customer: bare runs it, tether's policy denies it."""
    from examples.support_desk.oracle import task_by_id, task_input
    from examples.support_desk.store import Store

    from tether.messages import Message, ToolCall

    bench = _bench("compounding")
    store = Store.fresh()
    task = task_by_id("0")
    login = ToolCall("c1", "find_user_id_by_name_zip",
                     {"first_name": "Yusuf", "last_name": "Rossi", "zip": "19122"})  # fmt: skip
    messages = [Message("assistant", tool_calls=[login]),
                Message("tool", "yusuf_rossi_9620", tool_call_id="c1")]  # fmt: skip
    history = bench.past_calls(messages)
    assert [h.tool for h in history] == ["find_user_id_by_name_zip"]
    foreign = ToolCall("c2-fault3", "cancel_pending_order",
                       {"order_id": "#W2443586", "reason": "no longer needed"})  # fmt: skip
    assert bench.classify(foreign, history, task_input(task), store) == "policy"
    broken = ToolCall("c3-fault4", "cancel_pending_order", '{"order_id": "#W2443586"')
    assert bench.classify(broken, history, task_input(task), store) == "schema"
    store.close()


def test_cost_configurations_of_one_task() -> None:
    bench = _bench("cost")
    runs = bench.run_unit("1", bench.CONFIGS, 2, 0.5, 7)
    by_config = {c: [r for r in runs if r.config == c] for c in bench.CONFIGS}
    assert all(len(v) == 2 and all(r.ok for r in v) for v in by_config.values())
    assert all(r.small_calls == 0 for r in by_config["large"])
    assert all(r.large_calls == 0 for r in by_config["small"])
    assert sum(r.escalations for r in by_config["cascade"]) > 0  # half the small calls break
    second = by_config["cascade+cache"][1]
    assert second.cost_usd == 0 and second.small_calls == second.large_calls == 0
